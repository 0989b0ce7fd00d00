package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// records is a slog.Handler that keeps what it is given, as text: the message, then each
// attribute as key=value.
type records struct {
	mu    sync.Mutex
	lines []string
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }

func (h *records) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%s", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *records) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *records) WithGroup(string) slog.Handler      { return h }

// take returns the lines logged since the last take.
func (h *records) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lines
	h.lines = nil
	return l
}

// TestLineRouter sends lines to the logger carrot gives go-redis: each reaches the
// loggers of the Connectors with a client open, each logger once, without their secrets,
// the same format once a period, and slog.Default() when no Connector has a client open.
func TestLineRouter(t *testing.T) {
	r := &lineRouter{open: make(map[*Connector]int)}
	const (
		rawA = "redis://carrot:s3cret-a@127.0.0.1:1/0"
		rawB = "redis://127.0.0.1:2/0?sentinel=127.0.0.1:3&master=m&sentinel_password=s3cret-b"
	)
	connector := func(rawURL string, logger *slog.Logger) *Connector {
		o, err := ParseURL(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		o.Logger = logger
		k := newConnector(o, rawURL)
		k.goredisLines.Period = 200 * time.Millisecond
		return k
	}
	ha, hb, hd := new(records), new(records), new(records)
	ka := connector(rawA, slog.New(ha))
	ka2 := connector(rawA, ka.opts.Logger) // the same logger
	kb := connector(rawB, slog.New(hb))
	prev := slog.Default()
	slog.SetDefault(slog.New(hd))
	defer slog.SetDefault(prev)

	untrackA, untrackA2, untrackB := r.track(ka), r.track(ka2), r.track(kb)
	ctx := context.Background()
	check := func(step string, h *records, want ...string) {
		t.Helper()
		if got := h.take(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: got\n%q\nwant\n%q", step, got, want)
		}
	}

	const dialFormat = "redis: connection pool: failed to dial %s: %v"
	dial := func() {
		r.Printf(ctx, dialFormat, rawA, errors.New("AUTH carrot:s3cret-a@127.0.0.1:1 refused; sentinel "+rawB))
	}
	dial()
	want := "WARN carrot/redis: go-redis logged line=redis: connection pool: failed to dial redis://127.0.0.1:1/0: AUTH 127.0.0.1:1 refused; sentinel redis://127.0.0.1:2/0?sentinel=127.0.0.1:3&master=m&sentinel_password=xxxxx"
	check("first line", ha, want)
	check("first line", hb, want)
	for range 3 {
		dial()
	}
	check("the same format again", ha)
	check("the same format again", hb)
	r.Printf(ctx, "redis: connection pool: conn[%d] rejected by hook", 7)
	check("another format", ha, "WARN carrot/redis: go-redis logged line=redis: connection pool: conn[7] rejected by hook")
	check("another format", hb, "WARN carrot/redis: go-redis logged line=redis: connection pool: conn[7] rejected by hook")
	time.Sleep(250 * time.Millisecond)
	dial()
	check("after the period", ha, want+" lines_not_logged=3")
	check("after the period", hb, want+" lines_not_logged=3")
	check("while Connectors are open", hd)

	untrackA()
	untrackA() // no effect: ka2 still has a client open
	r.Printf(ctx, "one %s", "a")
	check("one of two Connectors with the logger closed", ha, "WARN carrot/redis: go-redis logged line=one a")
	check("one of two Connectors with the logger closed", hb, "WARN carrot/redis: go-redis logged line=one a")
	untrackA2()
	r.Printf(ctx, "two %s", "b")
	check("both Connectors with the logger closed", ha)
	check("both Connectors with the logger closed", hb, "WARN carrot/redis: go-redis logged line=two b")
	untrackB()
	r.Printf(ctx, "three %s", "d")
	r.Printf(ctx, "three %s", "d")
	check("no Connector open", hb)
	check("no Connector open", hd, "WARN carrot/redis: go-redis logged line=three d")
	if n := len(r.open); n != 0 {
		t.Errorf("%d Connectors still known to the router after their clients closed", n)
	}
}

// TestLogFailure checks that a connection logs the same failure at most once a period,
// counting the lines held back, and without the URL's password.
func TestLogFailure(t *testing.T) {
	const raw = "redis://carrot:s3cret-pw@127.0.0.1:1/0"
	o, err := ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	h := new(records)
	o.Logger = slog.New(h)
	k := newConnector(o, raw)
	c := &Conn{k: k, log: k.opts.Logger}
	c.failures.Period = 200 * time.Millisecond

	const acks = "carrot/redis: acknowledgements failed; the messages will be delivered again"
	const expire = "carrot/redis: could not dead-letter an expired message; it will be retried after the visibility timeout"
	lost := fmt.Errorf("write to %s: broken pipe", raw)
	for range 3 {
		c.logFailure(acks, lost)
	}
	c.logFailure(expire, lost, slog.String("queue", "q"))
	time.Sleep(250 * time.Millisecond)
	c.logFailure(acks, lost)
	got := h.take()
	want := []string{
		"WARN " + acks + " error=write to redis://127.0.0.1:1/0: broken pipe",
		"WARN " + expire + " queue=q error=write to redis://127.0.0.1:1/0: broken pipe",
		"WARN " + acks + " error=write to redis://127.0.0.1:1/0: broken pipe failures_not_logged=2",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

// TestSecretURLs checks that a Connector made from Options, without a URL, keeps their
// passwords out of log lines too.
func TestSecretURLs(t *testing.T) {
	o := &Options{}
	o.Redis.Addrs = []string{"127.0.0.1:1"}
	o.Redis.Username, o.Redis.Password = "carrot", "s3cret/pw"
	o.Redis.SentinelPassword = "s3cret-sentinel"
	k := NewConnector(o)
	msg := "dial redis://carrot:s3cret%2Fpw@127.0.0.1:1 and carrot:s3cret/pw@127.0.0.1:1, sentinel :s3cret-sentinel@127.0.0.1:2"
	want := "dial redis://127.0.0.1:1 and 127.0.0.1:1, sentinel 127.0.0.1:2"
	if got := k.scrub(msg); got != want {
		t.Errorf("scrub(%q) = %q, want %q", msg, got, want)
	}
}
