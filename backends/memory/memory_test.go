package memory_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
)

func TestConformance(t *testing.T) {
	url := "memory://" + t.Name() // one broker, shared by the suite's connections
	conformance.Run(t, conformance.Harness{
		URL:  url,
		Open: func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
			link := new(memory.Link)
			conn, err := carrot.Connect(ctx, memory.NewConnector(&memory.Options{Name: t.Name(), Link: link}))
			return conn, link, err
		},
	})
}

// TestManyGoroutines publishes and consumes from many goroutines on shared connections at
// once; run with -race, it checks the broker's locking, and that every message arrives
// exactly once.
func TestManyGoroutines(t *testing.T) {
	ctx := t.Context()
	url := "memory://" + t.Name()
	const publishers, perPublisher, consumers = 8, 250, 4
	pubConn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pubConn.Close()
	topic := carrot.Exchange{Name: "events", Kind: carrot.Topic}
	queue := carrot.Queue{Name: "all", Exchange: topic, RoutingKey: "#", Bindings: []carrot.Binding{{Exchange: "events", Key: "p.*"}}}
	if _, err := pubConn.DeclareQueue(ctx, queue); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	seen := make(map[string]int)
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	var runs sync.WaitGroup
	for i := range consumers {
		conn, err := carrot.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:      []carrot.Queue{queue},
			Prefetch:    1 + i,
			Concurrency: 1 + i%3,
			Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				if m.DeliveryCount() == 1 && len(m.Body)%7 == 0 {
					return m.Requeue(ctx) // some go round twice
				}
				mu.Lock()
				seen[string(m.Body)]++
				if len(seen) == publishers*perPublisher {
					close(done)
				}
				mu.Unlock()
				return m.Ack(ctx)
			}),
		})
		if err != nil {
			t.Fatal(err)
		}
		runs.Go(func() { c.Run(runCtx) })
	}

	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Go(func() {
			pub, err := pubConn.NewPublisher(carrot.PublisherOptions{Exchange: "events", RoutingKey: fmt.Sprintf("p.%d", p)})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range perPublisher {
				if err := pub.Send(ctx, fmt.Sprintf("%d-%d", p, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	pubs.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute): // reported below
	}
	stop()
	runs.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != publishers*perPublisher {
		t.Errorf("received %d distinct messages, want %d", len(seen), publishers*perPublisher)
	}
	for body, n := range seen {
		if n != 1 {
			t.Errorf("message %s handled %d times", body, n)
		}
	}
}

// TestFlowControl publishes to a queue nobody reads through a connection with
// max_depth=10: the eleventh publish waits, and goes through once a message is taken.
func TestFlowControl(t *testing.T) {
	ctx := t.Context()
	conn, err := carrot.Open(ctx, "memory://"+t.Name()+"?max_depth=10")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	for i := range 10 {
		if err := p.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := p.Send(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a full queue = %v, want it to wait until its context ends", err)
	}
	published := make(chan error, 1)
	go func() { published <- p.Send(ctx, 10) }()
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m.Ack(ctx)
	if err := <-published; err != nil {
		t.Fatalf("the waiting publish, once a message was taken: %v", err)
	}
	if n, err := conn.Purge(ctx, q); n != 10 || err != nil {
		t.Errorf("purge = %d, %v; want the 10 the queue held", n, err)
	}
	// A queue with a max length drops its oldest instead.
	capped, _ := conn.DeclareQueue(ctx, carrot.Queue{Name: "capped", MaxLength: 5})
	cp, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: capped})
	for i := range 20 {
		if err := cp.Send(ctx, i); err != nil {
			t.Fatalf("publish %d to a queue with a max length: %v", i, err)
		}
	}
}

// TestTakenNotDelivered closes a consumer whose subscription took five messages in one
// batch and handed out only the first: that one comes back redelivered, the four it never
// handed out come back as they were, all in their order.
func TestTakenNotDelivered(t *testing.T) {
	ctx := t.Context()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	for i := range 5 {
		if err := p.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan *carrot.Message, 1)
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:   []carrot.Queue{{Name: q, Passive: true}},
		Prefetch: 10,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- m
			<-ctx.Done() // holds the message until the consumer closes
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	if m := <-got; string(m.Body) != "0" {
		t.Fatalf("the handler got %q first, want %q", m.Body, "0")
	}
	c.Close()
	if err := <-ran; !errors.Is(err, carrot.ErrClosed) {
		t.Fatalf("Run = %v, want ErrClosed", err)
	}

	f, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	for i := range 5 {
		m, err := f.Fetch(ctx)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		first := i == 0
		if string(m.Body) != fmt.Sprint(i) || m.Redelivered() != first || m.DeliveryCount() != 1+btoi(first) {
			t.Errorf("fetch %d got %q, redelivered %v, delivery count %d; want %q, %v, %d", i, m.Body, m.Redelivered(), m.DeliveryCount(), fmt.Sprint(i), first, 1+btoi(first))
		}
		m.Ack(ctx)
	}
	if _, err := f.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("fetch after the five = %v, want ErrEmpty", err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSharedBodies publishes through a fanout exchange to two queues, which share the
// broker's copy of each body, acks every message of one queue, publishes more, and checks
// that the other queue still has its bodies intact: a body is reused only once the last
// queue that holds it is done with it.
func TestSharedBodies(t *testing.T) {
	ctx := t.Context()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fan := carrot.Exchange{Name: "fan", Kind: carrot.Fanout}
	a, _ := conn.DeclareQueue(ctx, carrot.Queue{Name: "a", Exchange: fan})
	b, _ := conn.DeclareQueue(ctx, carrot.Queue{Name: "b", Exchange: fan})
	direct, _ := conn.DeclareQueue(ctx, carrot.Queue{Name: "direct"})
	body := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 100) }
	fanout, _ := conn.NewPublisher(carrot.PublisherOptions{Exchange: "fan"})
	toDirect, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: direct})
	const n = 300
	for i := range n {
		if err := fanout.Publish(ctx, &carrot.Message{Body: body(i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain := func(queue string, from int) {
		c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: queue, Passive: true}}, Prefetch: 50})
		defer c.Close()
		for i := range n {
			m, err := c.Fetch(ctx)
			if err != nil {
				t.Fatalf("queue %s, message %d: %v", queue, i, err)
			}
			if want := body(from + i); !bytes.Equal(m.Body, want) {
				t.Fatalf("queue %s, message %d: body %x..., want %x...", queue, i, m.Body[:4], want[:4])
			}
			m.Ack(ctx)
		}
	}
	drain(a, 0)
	for i := range n {
		if err := toDirect.Publish(ctx, &carrot.Message{Body: body(n + i)}); err != nil {
			t.Fatal(err)
		}
	}
	drain(b, 0)
	drain(direct, n)
}

// TestPublishWindow fills a publisher's window of one with a publish that waits for room
// in a full queue (max_depth=1): another publish waits for the window until its context
// ends, and goes through once the queue has room for both. Then many goroutines share a
// window of two, and every message arrives.
func TestPublishWindow(t *testing.T) {
	ctx := t.Context()
	conn, err := carrot.Open(ctx, "memory://?max_depth=1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, _ := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q, MaxInFlight: 1})
	if err := p.Send(ctx, 0); err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() { held <- p.Send(ctx, 1) }() // waits for room in the queue, holding the window
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	// Until the goroutine holds the window, this publish may take it and wait for the
	// queue instead; either way it waits until its context ends.
	if err := p.PublishAsync(short, &carrot.Message{Body: []byte("2")}).Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish with the window or the queue full = %v, want it to wait until its context ends", err)
	}
	next := func(want string) {
		t.Helper()
		for {
			m, err := c.Fetch(ctx)
			if errors.Is(err, carrot.ErrEmpty) {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != want {
				t.Fatalf("fetched %q, want %q", m.Body, want)
			}
			m.Ack(ctx)
			return
		}
	}
	next("0")
	if err := <-held; err != nil {
		t.Fatalf("the publish that held the window: %v", err)
	}
	next("1")
	if err := p.PublishAsync(ctx, &carrot.Message{Body: []byte("3")}).Err(); err != nil {
		t.Fatal(err)
	}
	next("3")

	shared, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q, MaxInFlight: 2})
	const goroutines, each = 8, 50
	var pubs sync.WaitGroup
	for g := range goroutines {
		pubs.Go(func() {
			for i := range each {
				if err := shared.Publish(ctx, &carrot.Message{Body: fmt.Appendf(nil, "%d-%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := make(map[string]bool)
	for len(seen) < goroutines*each && !t.Failed() {
		m, err := c.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(m.Body)] {
			t.Errorf("message %s arrived twice", m.Body)
		}
		seen[string(m.Body)] = true
		m.Ack(ctx)
	}
	pubs.Wait()
}
