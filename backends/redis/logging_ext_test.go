package redis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The lines carrot makes of go-redis's.
const (
	goredisMessage = "carrot/redis: go-redis logged"
	goredisHeld    = "lines_not_logged"
)

// goredisLogHelperEnv, set to the address of a closed port, makes the test binary run
// goredisLogHelper instead of the tests.
const goredisLogHelperEnv = "CARROT_GOREDIS_LOG_HELPER_ADDR"

// helperMarker separates, in the helper's stderr, what was written before carrot opened
// its first connection from what was written after.
const helperMarker = "carrot-test: opening with carrot now"

// closedPort returns the address of a port on 127.0.0.1 that nobody listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// goredisLogHelper runs in a process of its own, which imports this package: a go-redis
// client of its own dials addr, which refuses, then a carrot.Dialer whose logger writes
// JSON to stdout opens a URL with a password to addr.
func goredisLogHelper(addr string) {
	ctx := context.Background()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	rdb.Ping(ctx)
	rdb.Close()
	fmt.Fprintln(os.Stderr, helperMarker)
	d := carrot.Dialer{Logger: slog.New(slog.NewJSONHandler(os.Stdout, nil))}
	if conn, err := d.Open(ctx, "redis://carrot:s3cret-pw@"+addr+"/0"); err == nil {
		conn.Close()
		fmt.Fprintln(os.Stderr, "Open of a closed port succeeded")
		os.Exit(1)
	}
}

// TestGoredisLinesReachTheDialersLogger runs goredisLogHelper: until carrot opens its
// first connection, go-redis logs to stderr as it always did (importing the package
// changes nothing); from then on its lines go, without the password, to the logger of the
// carrot.Dialer, and no longer to stderr.
func TestGoredisLinesReachTheDialersLogger(t *testing.T) {
	addr := closedPort(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), goredisLogHelperEnv+"="+addr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	before, after, found := strings.Cut(stderr.String(), helperMarker)
	if !found {
		t.Fatalf("the helper's stderr has no %q:\n%s", helperMarker, &stderr)
	}
	const dialFailed = "connection pool: failed to dial"
	if !strings.Contains(before, dialFailed) || strings.Contains(before, goredisMessage) {
		t.Errorf("before carrot opened a connection, stderr has:\n%s\nwant go-redis's own line with %q, not carrot's", before, dialFailed)
	}
	if strings.Contains(after, dialFailed) {
		t.Errorf("after carrot opened a connection, go-redis still wrote to stderr:\n%s", after)
	}
	var routed []string
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var r struct{ Level, Msg, Line string }
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("the helper's stdout has %q, not a JSON record: %v", l, err)
		}
		if r.Msg == goredisMessage && r.Level == "WARN" && strings.Contains(r.Line, dialFailed) && strings.Contains(r.Line, addr) {
			routed = append(routed, r.Line)
		}
	}
	if len(routed) == 0 {
		t.Errorf("the Dialer's logger got no warning %q whose line says %q; it got:\n%s", goredisMessage, dialFailed, &stdout)
	}
	if out := stdout.String() + stderr.String(); strings.Contains(out, "s3cret-pw") {
		t.Errorf("the password shows:\n%s", out)
	}
}

// TestGoredisLinesDuringRecovery opens a connection with a password to a Redis of the
// test's own, then kills the server: carrot's reconnection attempts fail, many a second,
// and each makes go-redis log a failed dial. The Dialer's logger gets those lines, held
// back to one a second with the count of the others, without the password; once the
// connection is closed, it gets no more.
func TestGoredisLinesDuringRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{})
	const password = "s3cret-pw"
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	err := admin.ConfigSet(ctx, "requirepass", password).Err()
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	h := new(capture)
	d := carrot.Dialer{Logger: slog.New(h), MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	conn, err := d.Open(ctx, "redis://:"+password+"@"+srv.Addr+"/0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	h.waitFor(t, 10*time.Second, func(r capturedRecord) bool {
		return r.msg == goredisMessage && r.attrs[goredisHeld] != ""
	})
	conn.Close()
	var dials int
	for _, r := range h.take() {
		if strings.Contains(r.String(), password) {
			t.Errorf("a line shows the password: %s", r)
		}
		if r.msg != goredisMessage {
			continue
		}
		if r.level != slog.LevelWarn || !strings.Contains(r.attrs["line"], "failed to dial") {
			t.Errorf("got %s, want warnings of go-redis's failed dials", r)
		}
		dials++
	}
	if dials > 3 {
		t.Errorf("%d lines of go-redis's failed dials within about a second, want them held back", dials)
	}

	// Closed, the connection's Connector gets no more lines: another's does. (After a
	// second, so that the Connector would not hold the line back.)
	time.Sleep(1100 * time.Millisecond)
	other := new(capture)
	d2 := carrot.Dialer{Logger: slog.New(other)}
	if conn, err := d2.Open(ctx, srv.URL()); err == nil {
		conn.Close()
		t.Fatal("Open of a killed server succeeded")
	}
	if got := other.take(); !hasMessage(got, goredisMessage) {
		t.Errorf("the logger of an open that failed got %v, want go-redis's line", got)
	}
	if got := h.take(); len(got) > 0 {
		t.Errorf("the logger of a closed connection still got %v", got)
	}
}

func hasMessage(rs []capturedRecord, msg string) bool {
	for _, r := range rs {
		if r.msg == msg {
			return true
		}
	}
	return false
}

// capture is a slog.Handler that keeps the records it is given.
type capture struct {
	mu sync.Mutex
	rs []capturedRecord
}

type capturedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r capturedRecord) String() string { return fmt.Sprintf("%v %s %v", r.level, r.msg, r.attrs) }

func (h *capture) Enabled(context.Context, slog.Level) bool { return true }

func (h *capture) Handle(_ context.Context, r slog.Record) error {
	c := capturedRecord{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	r.Attrs(func(a slog.Attr) bool {
		c.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	h.rs = append(h.rs, c)
	h.mu.Unlock()
	return nil
}

func (h *capture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *capture) WithGroup(string) slog.Handler      { return h }

// take returns the records kept since the last take.
func (h *capture) take() []capturedRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	rs := h.rs
	h.rs = nil
	return rs
}

// waitFor waits until a record kept satisfies ok, failing t after timeout.
func (h *capture) waitFor(t *testing.T, timeout time.Duration, ok func(capturedRecord) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h.mu.Lock()
		for _, r := range h.rs {
			if ok(r) {
				h.mu.Unlock()
				return
			}
		}
		all := fmt.Sprint(h.rs)
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no such record within %v; got %s", timeout, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
