package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/goleak"

	"github.com/carrot-go/carrot"
)

// feedHandler is carrot 0.4's FeedConsumer: a handler type with a Receive method.
type feedHandler struct {
	got chan<- string
}

func (h feedHandler) Receive(ctx context.Context, m *carrot.Message) error {
	var data map[string]string
	if err := m.Decode(&data); err != nil {
		return err
	}
	err := m.Ack(ctx) // before telling: the test stops the consumer once told
	h.got <- data["import_feed"]
	return err
}

func testConsumeHandler(e *env) {
	feed := e.typed(carrot.Queue{Name: "feed", Exchange: carrot.Exchange{Name: e.name("feed")}, RoutingKey: "importer"})
	e.queue(feed) // for the cleanup; the consumer declares it again, as carrot 0.4's does
	feed.Name = e.name(feed.Name)
	got := make(chan string, 3)
	c, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{feed}, Handler: feedHandler{got: got}})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	r := e.start(c)
	p := e.publisher(carrot.PublisherOptions{Exchange: feed.Exchange.Name, RoutingKey: "importer"})
	urls := []string{"http://cnn.com/rss/edition.rss", "http://example.com/a", "http://example.com/b"}
	for _, u := range urls {
		if err := p.Send(e.ctx, map[string]string{"import_feed": u}); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, want := range urls {
		if got := wait(e, got); got != want {
			e.t.Errorf("handler got %q, want %q", got, want)
		}
	}
	e.stop(r)
	e.expectEmpty(feed.Name)
}

func testConsumeCallbacks(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	c := e.consumer(q)
	calls := make(chan string, 4)
	c.Register(func(ctx context.Context, m *carrot.Message) error {
		calls <- "first:" + string(m.Body)
		return nil
	})
	c.Register(func(ctx context.Context, m *carrot.Message) error {
		err := m.Ack(ctx)
		calls <- "second:" + string(m.Body)
		return err
	})
	r := e.start(c)
	e.publish("", q, "a")
	e.publish("", q, "b")
	for _, want := range []string{"first:a", "second:a", "first:b", "second:b"} {
		if got := wait(e, calls); got != want {
			e.t.Errorf("got call %q, want %q", got, want)
		}
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testUnackedAfterConsumerClose(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	e.publish("", q, "two")
	held, c, r := e.holding(q, 0, 2)
	first, second := wait(e, held), wait(e, held)
	if err := c.Close(); err != nil {
		e.t.Fatalf("close consumer: %v", err)
	}
	if err := e.wait(r.done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Close returned %v, want ErrClosed", err)
	}
	r.done <- nil
	e.expectRedelivered(q, "one", "two")
	if err := first.Ack(e.ctx); err == nil {
		e.t.Errorf("acking a message its closed consumer gave back = nil, want an error")
	}
	second.Requeue(e.ctx)
	e.expectEmpty(q)
}

func testSeveralQueues(e *env) {
	x := e.exchange(carrot.Direct, "x")
	news := e.typed(carrot.Queue{Name: e.name("news"), Exchange: carrot.Exchange{Name: x}, RoutingKey: "news"})
	sport := e.typed(carrot.Queue{Name: e.name("sport"), Exchange: carrot.Exchange{Name: x}, RoutingKey: "sport"})
	e.deleteQueueLater(news.Name)
	e.deleteQueueLater(sport.Name)
	got := make(chan string, 4)
	c, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{news, sport},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			err := m.Ack(ctx)
			got <- m.Queue() + ":" + string(m.Body)
			return err
		}),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if names := c.Queues(); !slices.Equal(names, []string{news.Name, sport.Name}) {
		e.t.Errorf("Queues() = %v", names)
	}

	// Fetch tries the queues in order.
	e.publish(x, "sport", "match")
	e.publish(x, "news", "election")
	for _, want := range []string{news.Name + ":election", sport.Name + ":match"} {
		m := e.fetchFrom(c)
		if got := m.Queue() + ":" + string(m.Body); got != want {
			e.t.Errorf("Fetch got %q, want %q", got, want)
		}
		e.ack(m)
	}

	// Run reads both.
	r := e.start(c)
	e.publish(x, "news", "budget")
	e.publish(x, "sport", "race")
	received := []string{wait(e, got), wait(e, got)}
	slices.Sort(received)
	if want := []string{news.Name + ":budget", sport.Name + ":race"}; !slices.Equal(received, want) {
		e.t.Errorf("Run received %v, want %v", received, want)
	}
	e.stop(r)
}

func testCompetingConsumers(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	const n = 10
	for i := range n {
		e.publish("", q, fmt.Sprint(i))
	}
	var (
		mu       sync.Mutex
		got      = map[int][]string{}
		total    atomic.Int32
		all      = make(chan struct{})
		firsts   = make(chan struct{}, 2)
		bothHave = make(chan struct{})
	)
	// Each consumer holds its first message until both have one: with a prefetch of 1,
	// the second consumer can only get a message if the first does not hoard them.
	handler := func(id int) carrot.HandlerFunc {
		return func(ctx context.Context, m *carrot.Message) error {
			mu.Lock()
			got[id] = append(got[id], string(m.Body))
			first := len(got[id]) == 1
			mu.Unlock()
			if first {
				firsts <- struct{}{}
				select {
				case <-bothHave:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			err := m.Ack(ctx)
			if total.Add(1) == n {
				close(all)
			}
			return err
		}
	}
	c1 := e.consumerOn(e.conn, carrot.ConsumerOptions{Prefetch: 1, Handler: handler(1)}, q)
	c2 := e.consumerOn(e.open(), carrot.ConsumerOptions{Prefetch: 1, Handler: handler(2)}, q)
	r1, r2 := e.start(c1), e.start(c2)
	wait(e, firsts)
	wait(e, firsts)
	close(bothHave)
	wait(e, all)
	e.stop(r1)
	e.stop(r2)

	seen := map[string]int{}
	for _, body := range append(slices.Clone(got[1]), got[2]...) {
		seen[body]++
	}
	for i := range n {
		if seen[fmt.Sprint(i)] != 1 {
			e.t.Errorf("message %d delivered %d times; consumers got %v and %v", i, seen[fmt.Sprint(i)], got[1], got[2])
		}
	}
	if len(seen) != n {
		e.t.Errorf("consumers got %v and %v, want the %d messages published", got[1], got[2], n)
	}
	e.expectEmpty(q)
}

func testPrefetch(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for i := range 5 {
		e.publish("", q, fmt.Sprint(i))
	}
	held, _, r := e.holding(q, 2, 5)
	m0, m1 := wait(e, held), wait(e, held)
	if string(m0.Body) != "0" || string(m1.Body) != "1" {
		e.t.Fatalf("consumer got %q and %q first, want %q and %q", m0.Body, m1.Body, "0", "1")
	}
	// The consumer holds two, its prefetch: the third is still in the queue for others.
	other := e.consumer(q)
	third := e.fetchFrom(other)
	if string(third.Body) != "2" {
		e.t.Fatalf("another consumer fetched %q, want %q: the first one took more than its prefetch of 2", third.Body, "2")
	}
	e.ack(m0)
	e.ack(m1)
	m3, m4 := wait(e, held), wait(e, held)
	if string(m3.Body) != "3" || string(m4.Body) != "4" {
		e.t.Errorf("after acking two, the consumer got %q and %q, want %q and %q", m3.Body, m4.Body, "3", "4")
	}
	e.ack(m3)
	e.ack(m4)
	e.ack(third)
	e.stop(r)
	e.expectEmpty(q)
}

func testFIFO(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	const n = 200
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	for i := range n {
		if err := p.Send(e.ctx, i); err != nil {
			e.t.Fatal(err)
		}
	}
	var got []int
	done := make(chan struct{})
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.Decoded(func(ctx context.Context, v int, m *carrot.Message) error {
		err := m.Ack(ctx)
		got = append(got, v)
		if len(got) == n {
			close(done)
		}
		return err
	})}, q)
	r := e.start(c)
	wait(e, done)
	e.stop(r)
	for i, v := range got {
		if v != i {
			e.t.Fatalf("message %d is %d: out of order (%v)", i, v, got)
		}
	}
}

func testPurge(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for i := range 5 {
		e.publish("", q, fmt.Sprint(i))
	}
	if n, err := e.conn.Purge(e.ctx, q); n != 5 || err != nil {
		e.t.Errorf("Purge = %d, %v; want 5, nil", n, err)
	}
	e.expectEmpty(q)
	e.publish("", q, "again")
	c := e.consumer(q)
	if n, err := c.Purge(e.ctx); n != 1 || err != nil {
		e.t.Errorf("Consumer.Purge = %d, %v; want 1, nil", n, err)
	}
	if n, err := c.Purge(e.ctx); n != 0 || err != nil {
		e.t.Errorf("Purge of an empty queue = %d, %v; want 0, nil", n, err)
	}
}

func testCancelRun(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error { return m.Ack(ctx) })}, q)
	e.stop(e.start(c))

	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if err := c.Run(ctx); err != context.Canceled {
		e.t.Errorf("Run with a canceled context = %v, want context.Canceled", err)
	}
}

func testCancelFetchPublish(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "waiting")
	c := e.consumer(q)
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})

	canceled, cancel := context.WithCancel(e.ctx)
	cancel()
	expired, cancel := context.WithTimeout(e.ctx, -1)
	defer cancel()
	for _, ctx := range []struct {
		ctx  context.Context
		want error
	}{{canceled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		if m, err := c.Fetch(ctx.ctx); err != ctx.want {
			e.t.Errorf("Fetch with a done context = %v, %v; want %v", m, err, ctx.want)
		}
		if err := p.Send(ctx.ctx, "not sent"); err != ctx.want {
			e.t.Errorf("Send with a done context = %v, want %v", err, ctx.want)
		}
	}
	if got := e.fetchBody(q); got != "waiting" {
		e.t.Errorf("got %q, want %q", got, "waiting")
	}
	e.expectEmpty(q)
}

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testFailingHandler checks that a message whose handler fails with fail is requeued,
// redelivered, and the failure logged with logged in it.
func testFailingHandler(e *env, fail func() error, logged string) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	var calls atomic.Int32
	redelivered := make(chan bool, 1)
	var log lockedBuffer
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			if calls.Add(1) == 1 {
				return fail()
			}
			err := m.Ack(ctx) // before telling: the test stops the consumer once told
			redelivered <- m.Redelivered()
			return err
		}),
	}, q)
	r := e.start(c)
	if !wait(e, redelivered) {
		e.t.Error("the message delivered again after its handler failed is not flagged redelivered")
	}
	e.stop(r)
	if !strings.Contains(log.String(), logged) {
		e.t.Errorf("the consumer's log does not mention the failure %q:\n%s", logged, log.String())
	}
	e.expectEmpty(q)
}

func testHandlerError(e *env) {
	testFailingHandler(e, func() error { return errors.New("handler failed on purpose") }, "handler failed on purpose")
}

func testHandlerPanic(e *env) {
	testFailingHandler(e, func() error { panic("handler panicked on purpose") }, "handler panicked on purpose")
}

func testDecodedRejects(e *env) {
	var dlq string
	q := e.typed(carrot.Queue{Name: "q"})
	if e.caps.DeadLetter {
		dlx := e.exchange(carrot.Fanout, "dlx")
		dlq = e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx, Kind: carrot.Fanout}})
		q.DeadLetterExchange = dlx
	}
	qn := e.queue(q)
	e.publishMessage("", &carrot.Message{RoutingKey: qn, ContentType: carrot.JSON, Body: []byte("{broken")})
	e.publishMessage("", &carrot.Message{RoutingKey: qn, ContentType: carrot.JSON, Body: []byte(`{"n": 1}`)})
	got := make(chan int, 2)
	var log lockedBuffer
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Handler: carrot.Decoded(func(ctx context.Context, v struct{ N int }, m *carrot.Message) error {
			err := m.Ack(ctx)
			got <- v.N
			return err
		}),
	}, qn)
	r := e.start(c)
	if n := wait(e, got); n != 1 {
		e.t.Errorf("handler got %d, want 1 (the broken message never reaches it)", n)
	}
	e.stop(r)
	e.expectEmpty(qn)
	if !strings.Contains(log.String(), "rejected") {
		e.t.Errorf("the consumer's log does not say the broken message was rejected:\n%s", log.String())
	}
	if dlq != "" {
		if body := e.fetchBody(dlq); body != "{broken" {
			e.t.Errorf("dead-lettered %q, want the broken message", body)
		}
	}
}

func testNoAck(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for i := range 3 {
		e.publish("", q, fmt.Sprint(i))
	}
	got := make(chan *carrot.Message, 3)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{NoAck: true, Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		got <- m
		return nil
	})}, q)
	r := e.start(c)
	for i := range 3 {
		m := wait(e, got)
		if string(m.Body) != fmt.Sprint(i) {
			e.t.Errorf("got %q, want %q", m.Body, fmt.Sprint(i))
		}
		if err := m.Ack(e.ctx); err != nil {
			e.t.Errorf("Ack of a NoAck message = %v, want nil", err)
		}
		if err := m.Requeue(e.ctx); !errors.Is(err, carrot.ErrAlreadySettled) {
			e.t.Errorf("Requeue of a NoAck message = %v, want ErrAlreadySettled", err)
		}
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testShutdown(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	started, release := make(chan struct{}), make(chan struct{})
	acked := make(chan error, 1)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		close(started)
		<-release
		acked <- m.Ack(ctx)
		return nil
	})}, q)
	r := e.start(c)
	wait(e, started)
	shutdown := make(chan error, 1)
	go func() { shutdown <- c.Shutdown(e.ctx) }()
	close(release)
	if err := e.wait(shutdown); err != nil {
		e.t.Errorf("Shutdown = %v", err)
	}
	select {
	case err := <-acked:
		if err != nil {
			e.t.Errorf("the handler's Ack during Shutdown = %v, want nil", err)
		}
	default:
		e.t.Error("Shutdown returned before the handler in progress finished")
	}
	if err := e.wait(r.done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Shutdown returned %v, want ErrClosed", err)
	}
	r.done <- nil
	e.expectEmpty(q)
}

func testCloseConsumer(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error { return m.Ack(ctx) })}, q)
	r := e.start(c)
	for range 2 {
		if err := c.Close(); err != nil {
			e.t.Errorf("Close = %v, want nil", err)
		}
	}
	if err := e.wait(r.done); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after Close returned %v, want ErrClosed", err)
	}
	r.done <- nil
	if err := c.Run(e.ctx); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run on a closed consumer = %v, want ErrClosed", err)
	}
	if _, err := c.Fetch(e.ctx); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Fetch on a closed consumer = %v, want ErrClosed", err)
	}
	if _, err := c.Purge(e.ctx); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Purge on a closed consumer = %v, want ErrClosed", err)
	}
}

func testCloseConn(e *env) {
	before := goleak.IgnoreCurrent()
	conn, err := e.r.h.Open(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	q := e.queueOn(conn, carrot.Queue{Name: "q"})
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		e.t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	c, err := conn.NewConsumer(e.ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: q, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			err := m.Ack(ctx)
			got <- struct{}{}
			return err
		}),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	run := make(chan error, 1)
	go func() { run <- c.Run(e.ctx) }()
	if err := p.Send(e.ctx, "x"); err != nil {
		e.t.Fatal(err)
	}
	wait(e, got)

	for range 2 {
		if err := conn.Close(); err != nil {
			e.t.Errorf("Close = %v, want nil", err)
		}
	}
	if err := e.wait(run); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run after its connection closed returned %v, want ErrClosed", err)
	}
	calls := []struct {
		name string
		err  error
	}{
		{"Send", p.Send(e.ctx, "x")},
		{"Fetch", second(c.Fetch(e.ctx))},
		{"Run", c.Run(e.ctx)},
		{"DeclareQueue", second(conn.DeclareQueue(e.ctx, e.typed(carrot.Queue{Name: q})))},
		{"DeclareExchange", conn.DeclareExchange(e.ctx, carrot.Exchange{Name: e.name("x")})},
		{"Purge", second(conn.Purge(e.ctx, q))},
		{"NewPublisher", second(conn.NewPublisher(carrot.PublisherOptions{}))},
		{"NewConsumer", second(conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{e.typed(carrot.Queue{Name: q})}}))},
	}
	for _, call := range calls {
		if !errors.Is(call.err, carrot.ErrClosed) {
			e.t.Errorf("%s after Close = %v, want ErrClosed", call.name, call.err)
		}
	}
	if err := goleak.Find(before); err != nil {
		e.t.Errorf("goroutines left after Close: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }
