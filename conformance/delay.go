package conformance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/carrot-go/carrot"
)

// delaySlack is what the Delay cases allow beyond a backend's DelayPrecision for a
// delivery to arrive: the time to reach a consumer on a loaded machine.
const delaySlack = 2 * time.Second

func delayCases() []testCase {
	hasDelay := need("Delay", func(c carrot.Capabilities) bool { return c.Delay })
	return []testCase{
		{name: "DelayRefused", doc: "a negative delay is an ErrInvalid error, and a delay the backend cannot honour an ErrUnsupported one; nothing is sent", run: testDelayRefused},
		{name: "DelayHidden", doc: "a delayed message is not delivered before its delay, and is within the backend's precision after it", needs: hasDelay, run: testDelayHidden},
		{name: "DelayThroughExchanges", doc: "a delayed message is routed by direct, topic and fanout exchanges as any other, with its routing key", needs: hasDelay, run: testDelayThroughExchanges},
		{name: "DelayDoesNotBlock", doc: "messages published after a delayed one are delivered while it waits", needs: hasDelay, run: testDelayDoesNotBlock},
	}
}

func testDelayRefused(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("x"), Delay: -time.Second}); !errors.Is(err, carrot.ErrInvalid) {
		e.t.Errorf("publish with a negative delay = %v, want ErrInvalid", err)
	}
	if !e.caps.Delay {
		if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("x"), Delay: time.Second}); !errors.Is(err, carrot.ErrUnsupported) {
			e.t.Errorf("publish with a delay on a backend without the Delay capability = %v, want ErrUnsupported", err)
		}
	}
	e.expectEmpty(q)
}

func testDelayHidden(e *env) {
	const delay = 500 * time.Millisecond
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	start := time.Now()
	if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("later"), Delay: delay}); err != nil {
		e.t.Fatal(err)
	}
	published := time.Now()
	e.publish("", q, "now")
	if got := e.fetchBody(q); got != "now" {
		e.t.Errorf("first fetch got %q, want the message without a delay", got)
	}
	// Not before its delay: whatever a fetch finds before then must not be it.
	c := e.consumer(q)
	for time.Since(start) < delay-50*time.Millisecond {
		m, err := c.Fetch(e.ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if time.Since(start) < delay {
			e.t.Fatalf("%q delivered %v after it was published with a delay of %v", m.Body, time.Since(start).Round(time.Millisecond), delay)
		}
		e.ack(m)
		return
	}
	// Then within the precision.
	arrived := make(chan time.Time, 1)
	consumer := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		at := time.Now()
		err := m.Ack(ctx) // before the test stops Run, canceling ctx
		arrived <- at
		return err
	})}, q)
	r := e.start(consumer)
	at := wait(e, arrived)
	e.stop(r)
	if at.Before(start.Add(delay)) {
		e.t.Errorf("delivered %v after the publish started, before its delay of %v", at.Sub(start), delay)
	}
	e.t.Logf("delivered %v after its delay", at.Sub(published)-delay)
	if late := at.Sub(published) - delay; late > e.caps.DelayPrecision+delaySlack {
		e.t.Errorf("delivered %v after its delay, more than the precision of %v (and %v of slack)", late, e.caps.DelayPrecision, delaySlack)
	}
	e.expectEmpty(q)
}

func testDelayDoesNotBlock(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("delayed"), Delay: time.Second}); err != nil {
		e.t.Fatal(err)
	}
	const n = 100
	for i := range n {
		e.publish("", q, fmt.Sprint(i))
	}
	got := make(chan string, n+1)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		err := m.Ack(ctx) // before the test stops Run, canceling ctx
		got <- string(m.Body)
		return err
	})}, q)
	r := e.start(c)
	for i := range n {
		if b := wait(e, got); b != fmt.Sprint(i) {
			e.t.Fatalf("message %d: got %q; the ones published after the delayed message come first, in order", i, b)
		}
	}
	if b := wait(e, got); b != "delayed" {
		e.t.Errorf("last: got %q, want the delayed message", b)
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testDelayThroughExchanges(e *env) {
	for _, kind := range []carrot.ExchangeKind{carrot.Direct, carrot.Topic, carrot.Fanout} {
		x := e.exchange(kind, "x-"+string(kind))
		q := e.queue(carrot.Queue{Name: "q-" + string(kind), Exchange: carrot.Exchange{Name: x, Kind: kind}, RoutingKey: "a.b"})
		other := e.queue(carrot.Queue{Name: "other-" + string(kind), Exchange: carrot.Exchange{Name: x, Kind: kind}, RoutingKey: "c.d"})
		p := e.publisher(carrot.PublisherOptions{Exchange: x})
		if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("delayed " + string(kind)), RoutingKey: "a.b", Delay: 100 * time.Millisecond}); err != nil {
			e.t.Fatalf("%s: %v", kind, err)
		}
		m := e.fetchEventually(q, "the delayed message through the "+string(kind)+" exchange")
		if string(m.Body) != "delayed "+string(kind) || m.RoutingKey != "a.b" || m.Exchange() != x {
			e.t.Errorf("%s: got %q with key %q from exchange %q", kind, m.Body, m.RoutingKey, m.Exchange())
		}
		e.ack(m)
		if kind == carrot.Fanout {
			e.ack(e.fetchEventually(other, "the delayed message in the other queue of the fanout exchange"))
		} else {
			e.expectEmpty(other)
		}
	}
}

// fetchEventually fetches from queue until a message comes, failing the subtest if the
// harness timeout passes first.
func (e *env) fetchEventually(queue, what string) *carrot.Message {
	e.t.Helper()
	c := e.consumer(queue)
	var m *carrot.Message
	e.eventually(what, func() bool {
		var err error
		m, err = c.Fetch(e.ctx)
		return err == nil
	})
	return m
}
