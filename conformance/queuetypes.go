package conformance

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/carrot-go/carrot"
)

// queueTypeCases are the behaviours of quorum queues, streams, single active consumers
// and consumer timeouts, and of backends without them.
func queueTypeCases() []testCase {
	return []testCase{
		{name: "QueueTypesRefused", doc: "a queue type or queue setting the backend does not report is an ErrUnsupported error, and nothing is declared", run: testQueueTypesRefused},
		{name: "QuorumDeliveryLimit", doc: "a quorum queue dead-letters a message returned more often than its delivery limit", needs: need("Quorum and DeadLetter", func(c carrot.Capabilities) bool { return c.Quorum && c.DeadLetter }), run: testQuorumDeliveryLimit},
		{name: "StreamOffsets", doc: "a stream is read from its first message, from an offset, from a time, or from the next message, and keeps what was read", needs: need("Streams", func(c carrot.Capabilities) bool { return c.Streams }), run: testStreamOffsets},
		{name: "StreamRecover", doc: "a stream's consumer whose connection was cut reads on where it was, not from its start offset again", needs: need("Streams", func(c carrot.Capabilities) bool { return c.Streams }), run: testStreamRecover},
		{name: "SingleActiveConsumer", doc: "one consumer of a single-active-consumer queue receives; the next takes over when it closes, with what it left", needs: need("SingleActiveConsumer", func(c carrot.Capabilities) bool { return c.SingleActiveConsumer }), run: testSingleActiveConsumer},
	}
}

func testQueueTypesRefused(e *env) {
	for _, c := range []struct {
		what string
		has  bool
		q    carrot.Queue
	}{
		{"quorum queues", e.caps.Quorum, carrot.Queue{Type: carrot.QuorumQueue}},
		{"streams", e.caps.Streams, carrot.Queue{Type: carrot.StreamQueue}},
		{"single active consumer", e.caps.SingleActiveConsumer, carrot.Queue{SingleActiveConsumer: true}},
		{"consumer timeouts", e.caps.ConsumerTimeout, carrot.Queue{ConsumerTimeout: time.Minute}},
	} {
		if c.has {
			continue
		}
		c.q.Name = e.name("refused")
		_, err := e.conn.DeclareQueue(e.ctx, c.q)
		if !errors.Is(err, carrot.ErrUnsupported) {
			e.t.Errorf("declaring a queue with %s, which the backend does not report: %v, want ErrUnsupported", c.what, err)
		}
		_, err = e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: c.q.Name, Passive: true})
		if !errors.Is(err, carrot.ErrNotFound) {
			e.t.Errorf("after the refused declaration with %s, a passive declaration: %v, want ErrNotFound", c.what, err)
		}
	}
	if !e.caps.Streams {
		_, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{
			Queues:       []carrot.Queue{{Name: e.queue(carrot.Queue{Name: "q"}), Passive: true}},
			StreamOffset: carrot.FromFirst,
		})
		if !errors.Is(err, carrot.ErrUnsupported) {
			e.t.Errorf("a consumer with a StreamOffset on a backend without streams: %v, want ErrUnsupported", err)
		}
	}
	// Settings for one type on a queue of another are refused everywhere.
	_, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: e.name("mixed"), MaxAge: time.Hour})
	if !errors.Is(err, carrot.ErrInvalid) {
		e.t.Errorf("a classic queue with a stream's MaxAge: %v, want ErrInvalid", err)
	}
}

func testQuorumDeliveryLimit(e *env) {
	dlx := e.exchange(carrot.Fanout, "dlx")
	dead := e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx, Kind: carrot.Fanout}})
	q := e.queue(carrot.Queue{Name: "q", Type: carrot.QuorumQueue, DeliveryLimit: 2, DeadLetterExchange: dlx})
	e.publish("", q, "m")
	c := e.consumer(q)
	for i := 1; i <= 3; i++ {
		m := e.fetchFrom(c)
		if string(m.Body) != "m" {
			e.t.Fatalf("delivery %d: got %q, want %q", i, m.Body, "m")
		}
		if got := m.DeliveryCount(); got != i {
			e.t.Errorf("delivery %d: DeliveryCount() = %d", i, got)
		}
		if err := m.Requeue(e.ctx); err != nil {
			e.t.Fatalf("requeue %d: %v", i, err)
		}
	}
	// Returned a third time, past its limit of 2: dead-lettered.
	m := e.fetchEventually(dead, "the message is dead-lettered")
	if string(m.Body) != "m" {
		e.t.Errorf("dead-lettered %q, want %q", m.Body, "m")
	}
	e.ack(m)
	e.expectEmpty(q)
}

// streamReader consumes a stream from offset, handing each message on, acked.
func (e *env) streamReader(queue string, offset carrot.StreamOffset) <-chan *carrot.Message {
	e.t.Helper()
	ch := make(chan *carrot.Message, 100)
	c, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{
		Queues:       []carrot.Queue{{Name: queue, Type: carrot.StreamQueue, Passive: true}},
		StreamOffset: offset,
		Prefetch:     10,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			ch <- m
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		e.t.Fatalf("new stream consumer: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	e.start(c)
	return ch
}

// expectStream receives the messages of bodies want, in order, from ch.
func (e *env) expectStream(from string, ch <-chan *carrot.Message, want ...int) []*carrot.Message {
	e.t.Helper()
	var got []*carrot.Message
	for _, w := range want {
		m := wait(e, ch)
		got = append(got, m)
		if string(m.Body) != strconv.Itoa(w) {
			e.t.Fatalf("reading from %s: got %q, want %d", from, m.Body, w)
		}
		if _, ok := m.StreamOffset(); !ok {
			e.t.Errorf("reading from %s: message %q has no stream offset", from, m.Body)
		}
	}
	return got
}

func testStreamOffsets(e *env) {
	q := e.queue(carrot.Queue{Name: "stream", Type: carrot.StreamQueue, MaxAge: time.Hour, MaxBytes: 100 << 20})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := p.Publish(e.ctx, &carrot.Message{Body: []byte(strconv.Itoa(i))}); err != nil {
				e.t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	send(0, 5)
	// RabbitMQ keeps a time per chunk of messages, and reads a time to the second over
	// AMQP 0-9-1: leave whole seconds on both sides of the time to start from.
	time.Sleep(2 * time.Second)
	since := time.Now()
	time.Sleep(1100 * time.Millisecond)
	send(5, 10)

	first := e.expectStream("first", e.streamReader(q, carrot.FromFirst), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	off3, _ := first[3].StreamOffset()
	for i, m := range first[1:] {
		if off, _ := m.StreamOffset(); off <= off3 && i+1 > 3 || off > off3 && i+1 <= 3 {
			e.t.Errorf("message %q has offset %d, not in order after message 3's %d", m.Body, off, off3)
		}
	}
	e.expectStream(fmt.Sprintf("offset %d", off3), e.streamReader(q, carrot.FromOffset(off3)), 3, 4, 5, 6, 7, 8, 9)
	e.expectStream("a time", e.streamReader(q, carrot.FromTime(since)), 5, 6, 7, 8, 9)
	next := e.streamReader(q, carrot.FromNext)
	// The consumer is attached once it has taken a message published after it started:
	// publish until one arrives, then check the ones after it come in order.
	var m *carrot.Message
	for i := 10; m == nil; i++ {
		send(i, i+1)
		select {
		case m = <-next:
			for j := i + 1; j < i+4; j++ {
				send(j, j+1)
			}
			from, _ := strconv.Atoi(string(m.Body))
			if from < 10 {
				e.t.Fatalf("reading from next: got %q, which was in the stream before the consumer", m.Body)
			}
			e.expectStream("next", next, from+1, from+2, from+3)
		case <-time.After(100 * time.Millisecond):
		case <-e.ctx.Done():
			e.t.Fatal("reading from next: nothing arrived")
		}
	}
	// Reading took nothing away: the stream still starts at 0.
	e.expectStream("first, again", e.streamReader(q, carrot.FromFirst), 0, 1, 2)

	c, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Type: carrot.StreamQueue, Passive: true}}})
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Fetch(e.ctx); !errors.Is(err, carrot.ErrUnsupported) {
		e.t.Errorf("Fetch from a stream: %v, want ErrUnsupported", err)
	}
	_, err = e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Type: carrot.StreamQueue, Passive: true}}, NoAck: true})
	if !errors.Is(err, carrot.ErrInvalid) {
		e.t.Errorf("a NoAck consumer of a stream: %v, want ErrInvalid", err)
	}
}

func testSingleActiveConsumer(e *env) {
	q := e.queue(carrot.Queue{Name: "q", SingleActiveConsumer: true})
	type delivery struct {
		who  string
		body string
	}
	got := make(chan delivery, 10)
	// a acks 0, 1 and 2 and holds the others; b acks all.
	consumer := func(who string, hold func(body string) bool) *carrot.Consumer {
		c := e.consumerOn(e.open(), carrot.ConsumerOptions{Prefetch: 2, Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- delivery{who, string(m.Body)}
			if hold(string(m.Body)) {
				return nil
			}
			return m.Ack(ctx)
		})}, q)
		e.start(c)
		return c
	}
	a := consumer("a", func(body string) bool { return body >= "3" })
	consumer("b", func(string) bool { return false })
	if e.caps.InspectQueue.Has(carrot.ConsumerCount) {
		e.eventually("both consumers are subscribed", func() bool {
			st, err := e.conn.InspectQueue(e.ctx, q)
			return err == nil && st.Consumers == 2
		})
	} else {
		time.Sleep(time.Second) // no way to see the subscriptions: give them time
	}
	for i := range 6 {
		e.publish("", q, strconv.Itoa(i))
	}
	// a, the first, is the active consumer: it gets every message, up to its prefetch,
	// where consumers that share a queue would share them.
	for _, want := range []string{"0", "1", "2", "3", "4"} {
		if d := wait(e, got); d != (delivery{"a", want}) {
			e.t.Fatalf("got %q on consumer %s, want %s on a, the active consumer", d.body, d.who, want)
		}
	}
	// a closes holding 3 and 4: b takes over, from them on, in order.
	if err := a.Close(); err != nil {
		e.t.Fatalf("close a: %v", err)
	}
	for _, want := range []string{"3", "4", "5"} {
		if d := wait(e, got); d != (delivery{"b", want}) {
			e.t.Fatalf("after a closed, got %q on consumer %s, want %s on b", d.body, d.who, want)
		}
	}
	e.eventually("the queue is empty", func() bool {
		st, err := e.conn.InspectQueue(e.ctx, q)
		return err != nil || st.Ready == 0
	})
}

func testStreamRecover(e *env) {
	q := e.queue(carrot.Queue{Name: "stream", Type: carrot.StreamQueue})
	send := func(from, to int) {
		for i := from; i < to; i++ {
			e.publish("", q, strconv.Itoa(i))
		}
	}
	send(0, 5)
	conn, b := e.faulty()
	got := make(chan string, 100)
	c, err := conn.NewConsumer(e.ctx, carrot.ConsumerOptions{
		Queues:       []carrot.Queue{{Name: q, Type: carrot.StreamQueue, Passive: true}},
		StreamOffset: carrot.FromFirst,
		Prefetch:     2,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- string(m.Body)
			return m.Ack(ctx) // fails for what the cut connection delivered
		}),
	})
	if err != nil {
		e.t.Fatalf("new stream consumer: %v", err)
	}
	defer c.Close()
	e.start(c)
	counts := map[string]int{}
	for i := range 5 {
		body := wait(e, got)
		counts[body]++
		if body != strconv.Itoa(i) {
			e.t.Fatalf("before the cut: got %q, want %d", body, i)
		}
	}
	e.cut(conn, b)
	send(5, 10)
	for counts["9"] == 0 {
		counts[wait(e, got)]++
	}
	for i := range 10 {
		if counts[strconv.Itoa(i)] == 0 {
			e.t.Errorf("message %d never came", i)
		}
	}
	if counts["0"] > 1 {
		e.t.Errorf("message 0 came %d times: the consumer read the stream from its start offset again", counts["0"])
	}
}
