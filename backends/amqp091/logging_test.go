package amqp091

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestFlowControlLogged opens a connection with a carrot.Dialer's logger, through a proxy
// that then sends the client, as RabbitMQ does when a resource alarm goes off and clears,
// connection.blocked and connection.unblocked (the shared broker's alarms are left
// alone): the backend's notices reach the Dialer's logger, without the credentials.
func TestFlowControlLogged(t *testing.T) {
	broker := testbroker.URL(t, testbroker.RabbitMQ)
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	p := newInjector(t, u.Host)
	u.Host = p.addr
	h := new(captured)
	d := carrot.Dialer{Logger: slog.New(h)}
	conn, err := d.Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	const reason = "low on memory (a test)"
	p.inject(rawMethod(0, 10, 60, rawShortstr(reason)), rawMethod(0, 10, 61))
	want := []string{
		fmt.Sprintf("carrot/amqp091: broker flow control blocked=true reason=%q broker=amqp://%s/", reason, p.addr),
		fmt.Sprintf("carrot/amqp091: broker flow control blocked=false reason=\"\" broker=amqp://%s/", p.addr),
	}
	got := h.wait(t, len(want), "carrot/amqp091: broker flow control")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the Dialer's logger got:\n%q\nwant:\n%q", got, want)
	}
	if pw, _ := u.User.Password(); pw != "" && strings.Contains(strings.Join(h.all(), "\n"), pw) {
		t.Errorf("a line shows the password:\n%s", strings.Join(h.all(), "\n"))
	}
}

// injector is a proxy to a broker that writes frames of its own to the clients, between
// the broker's frames.
type injector struct {
	addr string
	mu   sync.Mutex
	to   []net.Conn // the clients, each written under mu, one frame at a time
}

func newInjector(t *testing.T, upstream string) *injector {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &injector{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	t.Cleanup(func() {
		l.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, client, server)
			connsMu.Unlock()
			p.mu.Lock()
			p.to = append(p.to, client)
			p.mu.Unlock()
			wg.Go(func() {
				io.Copy(server, client)
				server.Close()
			})
			wg.Go(func() {
				p.forward(client, server)
				client.Close()
			})
		}
	})
	return p
}

// forward copies the broker's frames to the client, whole.
func (p *injector) forward(client, server net.Conn) {
	r := bufio.NewReader(server)
	for {
		var h [7]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		frame := make([]byte, 7+int(binary.BigEndian.Uint32(h[3:]))+1)
		copy(frame, h[:])
		if _, err := io.ReadFull(r, frame[7:]); err != nil {
			return
		}
		p.mu.Lock()
		_, err := client.Write(frame)
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// inject writes frames to every client.
func (p *injector) inject(frames ...[]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.to {
		for _, f := range frames {
			c.Write(f)
		}
	}
}

// captured is a slog.Handler that keeps the records it is given as text: the message,
// then each attribute as key=value.
type captured struct {
	mu    sync.Mutex
	lines []string
}

func (h *captured) Enabled(context.Context, slog.Level) bool { return true }

func (h *captured) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		v := a.Value.String()
		if a.Value.Kind() == slog.KindString {
			v = fmt.Sprintf("%q", v)
			if !strings.ContainsAny(a.Value.String(), " \"=") && a.Value.String() != "" {
				v = a.Value.String()
			}
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, v)
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *captured) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captured) WithGroup(string) slog.Handler      { return h }

func (h *captured) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

// wait returns the first n lines that start with prefix, once there are n, failing t if
// they do not come within 10 seconds.
func (h *captured) wait(t *testing.T, n int, prefix string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		for _, l := range h.all() {
			if strings.HasPrefix(l, prefix) {
				got = append(got, l)
			}
		}
		if len(got) >= n {
			return got[:n]
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d lines starting %q within 10s, want %d; all lines:\n%s", len(got), prefix, n, strings.Join(h.all(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
