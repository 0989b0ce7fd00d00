package conformance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot"
)

func handlerCases() []testCase {
	return []testCase{
		{name: "HandlerNoneAfterContext", doc: "once Run's context ends no handler starts, and messages received but not handled go back unsettled", run: testHandlerNoneAfterContext},
		{name: "HandlerShutdownInside", doc: "a handler that calls Shutdown on its own consumer does not deadlock: Shutdown returns and Run ends", run: testHandlerShutdownInside},
		{name: "HandlerCloseInside", doc: "a handler that calls Close on its consumer or its connection does not deadlock", run: testHandlerCloseInside},
		{name: "HandlerMiddleware", doc: "middleware wraps the handlers in order, and what it returns (an error, a panic) is what the consumer acts on", run: testHandlerMiddleware},
		{name: "HandlerAutoSettle", doc: "with AutoSettle a handler that returns nil has its message acked, and one that fails has it requeued", run: testHandlerAutoSettle},
		{name: "HandlerStallWarning", doc: "messages returned unsettled by their handlers past StallWarning are logged once, naming the queue", run: testHandlerStallWarning},
		{name: "HandlerFailuresLogLimited", doc: "handler failures are logged at most about once a second, saying how many were not", run: testHandlerFailuresLogLimited},
		{name: "PublishWarm", doc: "Warm checks a publisher's exchange (ErrNotFound if missing) and readies it; publishing after works", run: testPublishWarm},
		{name: "PublishWindow", doc: "with MaxInFlight, PublishAsync keeps no more messages in flight than that, waiting for answers, in order", run: testPublishWindow},
		{name: "HandlerOnSettle", doc: "OnSettle reports each settlement once with its outcome, whoever settled: handler, AutoSettle, the retry policy, a fetch's caller", run: testHandlerOnSettle},
		{name: "HandlerPublishHooks", doc: "publish hooks see each message before it is sent, may add headers, and see the broker's outcome after", run: testHandlerPublishHooks},
	}
}

func testHandlerMiddleware(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	var (
		mu    sync.Mutex
		trace []string
	)
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		trace = append(trace, s)
	}
	named := func(name string) func(carrot.Handler) carrot.Handler {
		return func(next carrot.Handler) carrot.Handler {
			return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				note(name + " in")
				if string(m.Body) == name+" fails" {
					return errors.New(name + " says no")
				}
				if string(m.Body) == name+" panics" && !m.Redelivered() {
					panic(name + " panicked")
				}
				err := next.Receive(ctx, m)
				note(name + " out")
				return err
			})
		}
	}
	handled := make(chan string, 10)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		Middleware: []func(carrot.Handler) carrot.Handler{named("outer"), named("inner")},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			note("handler")
			if err := m.Ack(ctx); err != nil {
				return err
			}
			handled <- string(m.Body)
			return nil
		}),
	}, q)
	r := e.start(c)
	e.publish("", q, "plain")
	if got := wait(e, handled); got != "plain" {
		e.t.Fatalf("handled %q, want plain", got)
	}
	var got string
	e.eventually("the middleware returned", func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = strings.Join(trace, ", ")
		return len(trace) >= 5
	})
	if want := "outer in, inner in, handler, inner out, outer out"; got != want {
		e.t.Errorf("calls: %s; want %s", got, want)
	}
	// An error or a panic from a middleware is the handler's failure: the message is
	// requeued, and the second delivery goes through.
	e.publish("", q, "inner panics")
	if got := wait(e, handled); got != "inner panics" {
		e.t.Errorf("handled %q, want the message whose first delivery panicked", got)
	}
	e.stop(r)
}

func testHandlerPublishHooks(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	type outcome struct {
		body string
		err  error
		ctx  any
	}
	after := make(chan outcome, 4)
	type key struct{}
	hooks := []carrot.PublishHook{
		{Before: func(ctx context.Context, m *carrot.Message) context.Context {
			if m.Headers == nil {
				m.Headers = carrot.Table{}
			}
			m.Headers["trace-id"] = "t-1"
			return context.WithValue(ctx, key{}, "from before")
		}},
		{After: func(ctx context.Context, m *carrot.Message, err error) {
			after <- outcome{string(m.Body), err, ctx.Value(key{})}
		}},
	}
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q, Hooks: hooks})
	m := &carrot.Message{Body: []byte("hooked")}
	if err := p.Publish(e.ctx, m); err != nil {
		e.t.Fatal(err)
	}
	if o := wait(e, after); o.body != "hooked" || o.err != nil || o.ctx != "from before" {
		e.t.Errorf("After saw %+v, want the message, no error and Before's context", o)
	}
	if m.Headers != nil {
		e.t.Errorf("Before changed the caller's message: headers %v", m.Headers)
	}
	if got := e.fetch(q); got.Headers["trace-id"] != "t-1" {
		e.t.Errorf("the message arrived with headers %v, want Before's trace-id", got.Headers)
	} else {
		e.ack(got)
	}
	// PublishAsync, and a failure.
	if err := p.PublishAsync(e.ctx, &carrot.Message{Body: []byte("async")}).Wait(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	if o := wait(e, after); o.body != "async" || o.err != nil {
		e.t.Errorf("After of PublishAsync saw %+v", o)
	}
	lost := e.publisher(carrot.PublisherOptions{RoutingKey: e.name("nowhere"), Hooks: hooks})
	if err := lost.Publish(e.ctx, &carrot.Message{Body: []byte("unroutable")}); !errors.Is(err, carrot.ErrUnroutable) {
		e.t.Errorf("publish with no route = %v", err)
	}
	if o := wait(e, after); o.body != "unroutable" || !errors.Is(o.err, carrot.ErrUnroutable) {
		e.t.Errorf("After of an unroutable publish saw %+v, want ErrUnroutable", o)
	}
}

func testHandlerNoneAfterContext(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for _, body := range []string{"one", "two", "three"} {
		e.publish("", q, body)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var handled atomic.Int32
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Prefetch: 3, Handler: carrot.HandlerFunc(func(hctx context.Context, m *carrot.Message) error {
		handled.Add(1)
		cancel() // the caller is done after one
		return m.Ack(context.WithoutCancel(hctx))
	})}, q)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	if err := e.wait(done); !errors.Is(err, context.Canceled) {
		e.t.Errorf("Run = %v, want context.Canceled", err)
	}
	if n := handled.Load(); n != 1 {
		e.t.Errorf("%d handlers ran, want 1: none may start after the context ended", n)
	}
	// Delivered before Run stopped or not, the others wait in the queue, in order.
	for _, want := range []string{"two", "three"} {
		if got := e.fetchBody(q); got != want {
			e.t.Errorf("left in the queue: %q, want %q", got, want)
		}
	}
	e.expectEmpty(q)
}

func testHandlerShutdownInside(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "stop")
	shutdown := make(chan error, 1)
	var c *carrot.Consumer
	c = e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		if err := m.Ack(ctx); err != nil {
			return err
		}
		shutdown <- c.Shutdown(ctx)
		return nil
	})}, q)
	done := make(chan error, 1)
	go func() { done <- c.Run(e.ctx) }()
	if err := e.wait(shutdown); err != nil {
		e.t.Errorf("Shutdown from a handler = %v, want nil", err)
	}
	if err := e.wait(done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Shutdown from a handler = %v, want ErrClosed", err)
	}
	e.expectEmpty(q)
}

func testHandlerCloseInside(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "close the consumer")
	closed := make(chan error, 1)
	var c *carrot.Consumer
	c = e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		closed <- c.Close() // unsettled: the message goes back
		return nil
	})}, q)
	done := make(chan error, 1)
	go func() { done <- c.Run(e.ctx) }()
	if err := e.wait(closed); err != nil {
		e.t.Errorf("Close from a handler = %v, want nil", err)
	}
	if err := e.wait(done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Close from a handler = %v, want ErrClosed", err)
	}
	e.expectRedelivered(q, "close the consumer")

	// The whole connection, from a handler of one of its consumers.
	conn := e.open()
	e.publish("", q, "close the connection")
	closed = make(chan error, 1)
	c2 := e.consumerOn(conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		closed <- conn.Close()
		return nil
	})}, q)
	done = make(chan error, 1)
	go func() { done <- c2.Run(e.ctx) }()
	if err := e.wait(closed); err != nil {
		e.t.Errorf("Conn.Close from a handler = %v, want nil", err)
	}
	if err := e.wait(done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Conn.Close from a handler = %v, want ErrClosed", err)
	}
	e.expectRedelivered(q, "close the connection")
}

func testHandlerAutoSettle(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "fine")
	e.publish("", q, "fails once")
	handled := make(chan string, 4)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{AutoSettle: true, Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		handled <- string(m.Body)
		if string(m.Body) == "fails once" && !m.Redelivered() {
			return errors.New("not yet")
		}
		return nil // no Ack: AutoSettle does it
	})}, q)
	r := e.start(c)
	for _, want := range []string{"fine", "fails once", "fails once"} {
		if got := wait(e, handled); got != want {
			e.t.Errorf("handled %q, want %q", got, want)
		}
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testHandlerStallWarning(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "held")
	var logs lockedBuffer
	var kept atomic.Pointer[carrot.Message]
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		StallWarning: 50 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			kept.Store(m) // settled later, elsewhere
			return nil
		}),
	}, q)
	r := e.start(c)
	e.eventually("the stall warning", func() bool { return strings.Contains(logs.String(), "held past the stall warning") })
	time.Sleep(200 * time.Millisecond) // four more checks: still one warning
	if n := strings.Count(logs.String(), "held past the stall warning"); n != 1 || !strings.Contains(logs.String(), q) {
		e.t.Errorf("%d warnings, want one naming %s:\n%s", n, q, logs.String())
	}
	e.ack(kept.Load())
	e.stop(r)
	e.expectEmpty(q)
}

func testHandlerFailuresLogLimited(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	const n = 50
	for i := range n {
		e.publish("", q, fmt.Sprint(i))
	}
	var logs lockedBuffer
	var handled atomic.Int32
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			if !m.Redelivered() {
				return errors.New("first delivery fails")
			}
			err := m.Ack(ctx) // before the test stops Run, canceling ctx
			handled.Add(1)
			return err
		}),
	}, q)
	start := time.Now()
	r := e.start(c)
	e.eventually("every message handled on its second delivery", func() bool { return handled.Load() == n })
	e.stop(r)
	lines := strings.Count(logs.String(), "handler failed")
	if limit := 2 + int(time.Since(start)/time.Second); lines > limit {
		e.t.Errorf("%d failures logged in %v, want at most %d (one a second)", lines, time.Since(start).Round(time.Millisecond), limit)
	}
	if lines == 0 {
		e.t.Error("no failure logged")
	}
	e.expectEmpty(q)
}

func testPublishWindow(e *env) {
	const window, n = 4, 100
	q := e.queue(carrot.Queue{Name: "q"})
	var inFlight, most atomic.Int32
	count := carrot.PublishHook{
		Before: func(ctx context.Context, m *carrot.Message) context.Context {
			if now := inFlight.Add(1); now > most.Load() {
				most.Store(now)
			}
			return ctx
		},
		After: func(ctx context.Context, m *carrot.Message, err error) { inFlight.Add(-1) },
	}
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q, MaxInFlight: window, Hooks: []carrot.PublishHook{count}})
	confirms := make([]*carrot.Confirmation, n)
	for i := range n {
		confirms[i] = p.PublishAsync(e.ctx, &carrot.Message{Body: []byte(fmt.Sprint(i))})
	}
	for i, c := range confirms {
		if err := c.Wait(e.ctx); err != nil {
			e.t.Fatalf("message %d: %v", i, err)
		}
	}
	if m := most.Load(); m > window {
		e.t.Errorf("%d messages were in flight at once, more than MaxInFlight %d", m, window)
	}
	for i := range n {
		if got := e.fetchBody(q); got != fmt.Sprint(i) {
			e.t.Fatalf("message %d: got %q", i, got)
		}
	}
	if _, err := e.conn.NewPublisher(carrot.PublisherOptions{MaxInFlight: -1}); !errors.Is(err, carrot.ErrInvalid) {
		e.t.Errorf("NewPublisher with a negative MaxInFlight = %v, want ErrInvalid", err)
	}
}

func testPublishWarm(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	missing, err := e.conn.NewPublisher(carrot.PublisherOptions{Exchange: e.name("missing")})
	if err != nil {
		e.t.Fatal(err)
	}
	defer missing.Close()
	if err := missing.Warm(e.ctx); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("Warm of a publisher to a missing exchange = %v, want ErrNotFound", err)
	}
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Warm(e.ctx); err != nil {
		e.t.Fatalf("Warm = %v", err)
	}
	if err := p.Send(e.ctx, "after warming"); err != nil {
		e.t.Fatal(err)
	}
	if got := e.fetchBody(q); got != `"after warming"` {
		e.t.Errorf("got %q", got)
	}
	p.Close()
	if err := p.Warm(e.ctx); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Warm after Close = %v, want ErrClosed", err)
	}
}

func testHandlerOnSettle(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for _, id := range []string{"ack", "requeue", "reject", "fail", "auto"} {
		e.publishMessage("", &carrot.Message{RoutingKey: q, MessageID: id})
	}
	type settlement struct {
		id      string
		outcome carrot.Outcome
	}
	var (
		mu  sync.Mutex
		got = map[settlement]int{}
	)
	onSettle := func(ctx context.Context, m *carrot.Message, o carrot.Outcome, err error) {
		if err != nil {
			e.t.Errorf("settling %s (%v): %v", m.MessageID, o, err)
		}
		mu.Lock()
		got[settlement{m.MessageID, o}]++
		mu.Unlock()
	}
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		AutoSettle: true,
		Retry:      carrot.RetryPolicy{MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		OnSettle:   onSettle,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			switch m.MessageID {
			case "ack":
				return m.Ack(ctx)
			case "requeue":
				if !m.Redelivered() {
					return m.Requeue(ctx)
				}
				return m.Ack(ctx)
			case "reject":
				return m.Reject(ctx)
			case "fail":
				if m.DeliveryCount() <= 1 && !m.Redelivered() {
					return errors.New("failing once, on purpose")
				}
			}
			return nil
		}),
	}, q)
	r := e.start(c)
	want := map[settlement]int{
		{"ack", carrot.Acked}:        1,
		{"requeue", carrot.Requeued}: 1,
		{"requeue", carrot.Acked}:    1,
		{"reject", carrot.Rejected}:  1,
		{"fail", carrot.Retried}:     1,
		{"fail", carrot.Acked}:       1, // by AutoSettle, on its second delivery
		{"auto", carrot.Acked}:       1,
	}
	total := func(m map[settlement]int) (n int) {
		for _, v := range m {
			n += v
		}
		return n
	}
	e.eventually("every message settled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total(got) >= total(want)
	})
	e.stop(r)
	// A fetched message is reported when its caller settles it, once.
	e.publishMessage("", &carrot.Message{RoutingKey: q, MessageID: "fetched"})
	m := e.fetchFrom(e.consumerOn(e.conn, carrot.ConsumerOptions{OnSettle: onSettle}, q))
	if err := m.Ack(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	want[settlement{"fetched", carrot.Acked}] = 1
	if err := m.Requeue(e.ctx); !errors.Is(err, carrot.ErrAlreadySettled) {
		e.t.Errorf("requeue after ack = %v, want ErrAlreadySettled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range want {
		if got[k] != n {
			e.t.Errorf("message %s settled with %v %d times, want %d", k.id, k.outcome, got[k], n)
		}
	}
	for k, n := range got {
		if want[k] == 0 {
			e.t.Errorf("message %s settled with %v %d times, want never", k.id, k.outcome, n)
		}
	}
	e.expectEmpty(q)
}
