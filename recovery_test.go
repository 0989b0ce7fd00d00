package carrot_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
)

// events collects what a Conn reports to OnEvent.
type events struct {
	mu  sync.Mutex
	all []carrot.Event
}

func (e *events) add(ev carrot.Event) {
	e.mu.Lock()
	e.all = append(e.all, ev)
	e.mu.Unlock()
}

func (e *events) kinds() []carrot.EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []carrot.EventKind
	for _, ev := range e.all {
		out = append(out, ev.Kind)
	}
	return out
}

// faulty opens a connection to a memory broker of the test's own through a link the test
// breaks, with fast reconnection.
func faulty(t *testing.T, ev *events) (*carrot.Conn, *memory.Link) {
	t.Helper()
	link := new(memory.Link)
	d := carrot.Dialer{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	if ev != nil {
		d.OnEvent = ev.add
	}
	conn, err := d.Connect(t.Context(), memory.NewConnector(&memory.Options{Name: t.Name(), Link: link}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		link.Unblock()
		conn.Close()
	})
	return conn, link
}

// until polls cond for up to ten seconds.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRecoveryStateEventsPing(t *testing.T) {
	ctx := t.Context()
	var ev events
	conn, link := faulty(t, &ev)
	if s := conn.State(); !s.Connected || s.Recoveries != 0 || s.Err != nil {
		t.Fatalf("State() after Open = %+v, want connected", s)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("Ping while connected = %v", err)
	}

	link.Block()
	until(t, "some reconnection attempts failed", func() bool { return conn.State().Attempts >= 2 })
	s := conn.State()
	if s.Connected || !errors.Is(s.Err, carrot.ErrUnavailable) && !strings.Contains(fmt.Sprint(s.Err), "blocked") || s.Since.IsZero() {
		t.Errorf("State() during the outage = %+v, want not connected, with the last attempt's error", s)
	}
	if err := conn.Ping(ctx); !errors.Is(err, carrot.ErrUnavailable) {
		t.Errorf("Ping during the outage = %v, want ErrUnavailable", err)
	}

	link.Unblock()
	until(t, "the connection is restored", func() bool { return conn.State().Connected })
	if s := conn.State(); s.Recoveries != 1 || s.Err != nil || s.Attempts != 0 {
		t.Errorf("State() after recovery = %+v, want connected, one recovery", s)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Errorf("Ping after recovery = %v", err)
	}
	// The restored event follows the swap to the new connection.
	until(t, "the restored event", func() bool { return slices.Contains(ev.kinds(), carrot.EventRestored) })
	kinds := ev.kinds()
	if len(kinds) < 4 || kinds[0] != carrot.EventLost || kinds[len(kinds)-1] != carrot.EventRestored ||
		slices.ContainsFunc(kinds[1:len(kinds)-1], func(k carrot.EventKind) bool { return k != carrot.EventAttemptFailed }) {
		t.Errorf("events %v, want lost, attempts failed, restored", kinds)
	}
	ev.mu.Lock()
	last := ev.all[len(ev.all)-1]
	ev.mu.Unlock()
	if last.Attempt != len(kinds)-1 || last.Conn != conn {
		t.Errorf("restored after attempt %d (conn %p), want %d (%p)", last.Attempt, last.Conn, len(kinds)-1, conn)
	}
	conn.Close()
	if s := conn.State(); s.Connected || !s.Closed {
		t.Errorf("State() after Close = %+v", s)
	}
	if err := conn.Ping(ctx); !errors.Is(err, carrot.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
}

// recordingConn records the topology calls made on it.
type recordingConn struct {
	backend.Conn
	calls *[]string
	mu    *sync.Mutex
}

func (r recordingConn) note(s string) {
	r.mu.Lock()
	*r.calls = append(*r.calls, s)
	r.mu.Unlock()
}

func (r recordingConn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	r.note("exchange " + x.Name)
	return r.Conn.DeclareExchange(ctx, x)
}

func (r recordingConn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	r.note("queue " + q.Name)
	return r.Conn.DeclareQueue(ctx, q)
}

func (r recordingConn) Bind(ctx context.Context, b backend.Binding) error {
	r.note("bind " + b.Queue + " " + b.Exchange + " " + b.Key)
	return r.Conn.Bind(ctx, b)
}

// TestReplayOrder checks that recovery declares the recorded topology again in order
// (exchanges, queues, bindings, each in the order declared), without what was deleted.
func TestReplayOrder(t *testing.T) {
	ctx := t.Context()
	link := new(memory.Link)
	mem := memory.NewConnector(&memory.Options{Link: link})
	var mu sync.Mutex
	var calls []string
	conn, err := carrot.Connect(ctx, backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		b, err := mem.Connect(ctx)
		if err != nil {
			return nil, err
		}
		return recordingConn{Conn: b, calls: &calls, mu: &mu}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(conn.DeclareExchange(ctx, carrot.Exchange{Name: "b", Kind: carrot.Topic}))
	must(conn.DeclareExchange(ctx, carrot.Exchange{Name: "a"}))
	must(conn.DeclareExchange(ctx, carrot.Exchange{Name: "gone"}))
	_, err = conn.DeclareQueue(ctx, carrot.Queue{Name: "q2", Exchange: carrot.Exchange{Name: "a"}, RoutingKey: "k"})
	must(err)
	_, err = conn.DeclareQueue(ctx, carrot.Queue{Name: "q1", Exclusive: true, Bindings: []carrot.Binding{{Exchange: "b", Key: "#"}}})
	must(err)
	_, err = conn.DeclareQueue(ctx, carrot.Queue{Name: "passive", Passive: true})
	if !errors.Is(err, carrot.ErrNotFound) {
		t.Fatalf("passive declaration of a missing queue = %v", err)
	}
	_, err = conn.DeclareQueue(ctx, carrot.Queue{Name: "q3"})
	must(err)
	must(conn.Bind(ctx, carrot.Binding{Exchange: "gone", Queue: "q3"}))
	must(conn.DeleteExchange(ctx, "gone"))
	must(conn.Unbind(ctx, carrot.Binding{Exchange: "a", Queue: "q2", Key: "k"}))
	must(conn.Bind(ctx, carrot.Binding{Exchange: "a", Queue: "q2", Key: "k2"}))

	mu.Lock()
	calls = nil
	mu.Unlock()
	link.Cut()
	until(t, "the connection is restored", func() bool { return conn.State().Recoveries == 1 })
	want := []string{"exchange b", "exchange a", "queue q2", "queue q1", "queue q3", "bind q1 b #", "bind q2 a k2"}
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("replayed %q, want %q", got, want)
	}
}

// TestReplayRefused checks that a recorded declaration the broker now refuses is
// reported and skipped, and that recovery goes on.
func TestReplayRefused(t *testing.T) {
	ctx := t.Context()
	var ev events
	conn, link := faulty(t, &ev)
	other, err := carrot.Open(ctx, "memory://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	defer func() { // the named broker outlives the test: leave it empty for the next run (-count)
		other.DeleteQueue(context.Background(), "q")
		other.DeleteExchange(context.Background(), "x")
	}()
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: "x"}}); err != nil {
		t.Fatal(err)
	}
	// Meanwhile, another client makes the exchange another kind.
	if err := other.DeleteExchange(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := other.DeclareExchange(ctx, carrot.Exchange{Name: "x", Kind: carrot.Fanout}); err != nil {
		t.Fatal(err)
	}
	link.Cut()
	until(t, "the connection is restored", func() bool { return conn.State().Recoveries == 1 })
	var refused *carrot.Event
	ev.mu.Lock()
	for i, e := range ev.all {
		if e.Kind == carrot.EventReplayRefused {
			refused = &ev.all[i]
		}
	}
	ev.mu.Unlock()
	if refused == nil || !errors.Is(refused.Err, carrot.ErrMismatch) || !strings.Contains(refused.Err.Error(), `exchange "x"`) {
		t.Errorf("events %v: want a refused replay of exchange x with ErrMismatch, got %v", ev.kinds(), refused)
	}
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q", Passive: true}); err != nil {
		t.Errorf("the queue after a refused exchange: %v", err)
	}
}

// poisonConn is a backend connection whose subscriptions to one queue fail as if the
// client could not read its messages.
type poisonConn struct {
	backend.Conn
	queue string
	fails *atomic.Int32
}

func (p poisonConn) Consume(ctx context.Context, o backend.ConsumeOptions) (backend.Subscription, error) {
	sub, err := p.Conn.Consume(ctx, o)
	if err != nil || o.Queue != p.queue {
		return sub, err
	}
	return poisonSub{sub, p.fails}, nil
}

type poisonSub struct {
	backend.Subscription
	fails *atomic.Int32
}

func (p poisonSub) Receive(ctx context.Context) (*backend.Delivery, error) {
	p.fails.Add(1)
	return nil, backend.Errorf(backend.Malformed, "cannot parse the message at the head of the queue")
}

// TestMalformedStopsRun checks that a subscription that keeps failing on a message its
// backend cannot read makes Run return ErrMalformed naming the queue, after a few tries,
// while another consumer of the same Conn goes on.
func TestMalformedStopsRun(t *testing.T) {
	ctx := t.Context()
	var fails atomic.Int32
	mem := memory.NewConnector(&memory.Options{})
	conn, err := carrot.Connect(ctx, backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		b, err := mem.Connect(ctx)
		if err != nil {
			return nil, err
		}
		return poisonConn{Conn: b, queue: "poisoned", fails: &fails}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan string, 10)
	ok, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "fine"}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- string(m.Body)
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	okRun := make(chan error, 1)
	okCtx, stop := context.WithCancel(ctx)
	go func() { okRun <- ok.Run(okCtx) }()
	bad, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:  []carrot.Queue{{Name: "poisoned"}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error { return m.Ack(ctx) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Run(ctx)
	if !errors.Is(err, carrot.ErrMalformed) || !strings.Contains(err.Error(), `"poisoned"`) {
		t.Errorf("Run on a queue whose message cannot be read = %v, want ErrMalformed naming the queue", err)
	}
	if n := fails.Load(); n != carrot.MaxMalformed {
		t.Errorf("Run tried %d times, want %d", n, carrot.MaxMalformed)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "fine"})
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("still fine")}); err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "still fine" {
		t.Errorf("the other consumer got %q", b)
	}
	stop()
	<-okRun
}

// TestOpenClassifies checks that Open makes one attempt: a broker that refuses the
// settings is ErrInvalid, one that cannot be reached ErrUnavailable, and a dial that
// outlasts the context ends with it.
func TestOpenClassifies(t *testing.T) {
	ctx := t.Context()
	var calls atomic.Int32
	refuse := func(code backend.Code) backend.Connector {
		return backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
			calls.Add(1)
			return nil, backend.Errorf(code, "no")
		})
	}
	for _, tc := range []struct {
		code backend.Code
		want error
	}{
		{backend.Invalid, carrot.ErrInvalid},
		{backend.Unavailable, carrot.ErrUnavailable},
		{backend.Unknown, carrot.ErrUnavailable},
	} {
		calls.Store(0)
		if _, err := carrot.Connect(ctx, refuse(tc.code)); !errors.Is(err, tc.want) || calls.Load() != 1 {
			t.Errorf("Connect refused with code %v = %v after %d attempts, want %v after 1", tc.code, err, calls.Load(), tc.want)
		}
	}
	hang := backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := carrot.Connect(short, hang); !errors.Is(err, carrot.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect past its context = %v, want ErrUnavailable and context.DeadlineExceeded", err)
	}
	d := carrot.Dialer{DialTimeout: 50 * time.Millisecond}
	if _, err := d.Connect(ctx, hang); !errors.Is(err, carrot.ErrUnavailable) || !strings.Contains(err.Error(), "dial timeout") {
		t.Errorf("Connect past the dial timeout = %v, want ErrUnavailable naming the dial timeout", err)
	}
}

func TestBackoffStaysCapped(t *testing.T) {
	for _, tc := range []struct {
		lo, hi time.Duration
		n      int
		want   time.Duration // before jitter
	}{
		{time.Second, time.Minute, 1, time.Second},
		{time.Second, time.Minute, 3, 4 * time.Second},
		{time.Second, time.Minute, 7, time.Minute},
		{10 * time.Second, time.Minute, 40, time.Minute}, // 10s << 39 would overflow
		{time.Minute, time.Hour, 1000, time.Hour},
	} {
		for range 20 {
			if got := carrot.Backoff(tc.lo, tc.hi, tc.n); got < tc.want/2 || got > tc.want {
				t.Errorf("backoff(%v, %v, %d) = %v, want between %v and %v", tc.lo, tc.hi, tc.n, got, tc.want/2, tc.want)
			}
		}
	}
}

// lines is a slog.Handler that keeps the records' messages.
type lines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lines) WithGroup(string) slog.Handler      { return l }

func (l *lines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// TestDialerLogger: the Dialer's logger receives the connection's lines and its
// consumers', and an outage with many failed attempts logs one line of them, not one
// each.
func TestDialerLogger(t *testing.T) {
	ctx := t.Context()
	var log lines
	link := new(memory.Link)
	d := carrot.Dialer{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Logger: slog.New(&log)}
	conn, err := d.Connect(ctx, memory.NewConnector(&memory.Options{Name: t.Name(), Link: link}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	link.Block()
	until(t, "many reconnection attempts failed", func() bool { return conn.State().Attempts >= 20 })
	link.Unblock()
	until(t, "the connection is restored", func() bool { return conn.State().Connected })
	until(t, "the restored line", func() bool { return log.count("connection restored") == 1 })
	if n := log.count("connection lost"); n != 1 {
		t.Errorf("%d lines say the connection was lost, want 1", n)
	}
	if n := log.count("reconnection failed"); n != 1 {
		t.Errorf("%d lines for 20 or more failed attempts within a second, want 1", n)
	}

	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "q"}}, Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		stop()
		m.Reject(ctx)
		return errors.New("refused")
	})})
	if err != nil {
		t.Fatal(err)
	}
	c.Run(runCtx)
	if n := log.count("handler failed"); n != 1 {
		t.Errorf("%d handler failures logged to the Dialer's logger, want 1", n)
	}
}
