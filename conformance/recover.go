package conformance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/carrot-go/carrot"
)

// recoverCases lists the behaviours of a connection whose network breaks. Each opens a
// connection through the harness's Breaker, and the others of the subtest are unaffected.
func recoverCases() []testCase {
	return []testCase{
		{name: "RecoverConsume", doc: "a consumer resumes after a cut: nothing is lost, and the messages it held come again flagged redelivered", run: testRecoverConsume},
		{name: "RecoverTopology", doc: "after a cut, the exchange, queue (exclusive, when the backend has them) and binding declared on the connection are there again", run: testRecoverTopology},
		{name: "RecoverPublish", doc: "publishes made while the broker is unreachable complete once it is back, or fail at their deadline with ErrUnavailable", run: testRecoverPublish},
		{name: "RecoverSettle", doc: "settling a message after its connection was lost is an ErrUnavailable error, and the message comes again", run: testRecoverSettle},
		{name: "RecoverRepeatedCuts", doc: "ten cuts in a row: the connection recovers each time, and publishing and consuming on it lose nothing", run: testRecoverRepeatedCuts},
		{name: "RecoverStall", doc: "while the network stalls, calls return when their context ends; afterwards the connection works", run: testRecoverStall},
		{name: "RecoverClose", doc: "Close returns promptly while the broker is unreachable, and ends the calls waiting for it", run: testRecoverClose},
	}
}

// closeWithin bounds how long Close may take during an outage: it must not wait for the
// broker, whose answer never comes.
const closeWithin = 5 * time.Second

// awaitLost waits until conn has noticed that its connection is gone.
func (e *env) awaitLost(conn *carrot.Conn) {
	e.t.Helper()
	e.eventually("the connection is lost", func() bool { return !conn.State().Connected })
}

// awaitRecovered waits until conn has recovered more than before times.
func (e *env) awaitRecovered(conn *carrot.Conn, before int) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("the connection has recovered %d times", before+1), func() bool {
		s := conn.State()
		return s.Connected && s.Recoveries > before
	})
}

// cut cuts conn's network and waits until it has recovered.
func (e *env) cut(conn *carrot.Conn, b Breaker) {
	e.t.Helper()
	before := conn.State().Recoveries
	b.Cut()
	e.awaitRecovered(conn, before)
}

// delivery is what a test handler saw of one message.
type delivery struct {
	body        string
	redelivered bool
	acked       bool
}

// recorder is a handler that acks every message but those it is told to hold, and records
// what it saw.
type recorder struct {
	hold func(m *carrot.Message) bool // nil holds nothing

	mu     sync.Mutex
	seen   []delivery
	held   chan string
	change chan struct{} // closed, and replaced, on every delivery
}

func newRecorder(hold func(m *carrot.Message) bool) *recorder {
	return &recorder{hold: hold, held: make(chan string, 100), change: make(chan struct{})}
}

func (r *recorder) Receive(ctx context.Context, m *carrot.Message) error {
	d := delivery{body: string(m.Body), redelivered: m.Redelivered()}
	var err error
	if r.hold != nil && r.hold(m) {
		r.held <- d.body // left in flight, never settled
	} else {
		err = m.Ack(ctx) // may fail if the connection was just lost: the message comes again
		d.acked = err == nil
	}
	r.mu.Lock()
	r.seen = append(r.seen, d)
	close(r.change)
	r.change = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// acked returns the bodies acked so far, each once, and whether each was redelivered at
// its acked delivery.
func (r *recorder) acked() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool)
	for _, d := range r.seen {
		if d.acked {
			out[d.body] = out[d.body] || d.redelivered
		}
	}
	return out
}

// awaitAcked waits until every body of want has been acked.
func (e *env) awaitAcked(r *recorder, want ...string) map[string]bool {
	e.t.Helper()
	for {
		r.mu.Lock()
		change := r.change
		r.mu.Unlock()
		got := r.acked()
		missing := 0
		for _, w := range want {
			if _, ok := got[w]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case <-change:
		case <-e.ctx.Done():
			e.t.Fatalf("timed out after %v with %d of %d messages acked (acked: %v)", e.r.h.Timeout, len(want)-missing, len(want), slices.Sorted(maps.Keys(got)))
		}
	}
}

func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}

func testRecoverConsume(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	bodies := numbered(20)
	for _, b := range bodies {
		e.publish("", q, b)
	}
	f, breaker := e.faulty()
	first := true
	var mu sync.Mutex
	rec := newRecorder(func(m *carrot.Message) bool {
		mu.Lock()
		defer mu.Unlock()
		if string(m.Body) == "5" && first {
			first = false
			return true
		}
		return false
	})
	c := e.consumerOn(f, carrot.ConsumerOptions{Handler: rec}, q)
	r := e.start(c)
	held := wait(e, rec.held)
	e.cut(f, breaker)
	got := e.awaitAcked(rec, bodies...)
	if !got[held] {
		e.t.Errorf("message %q, held unsettled when the connection was cut, was acked without the redelivered flag", held)
	}
	e.stop(r)
	e.expectOnlyDuplicates(q, got)
}

// expectOnlyDuplicates checks that what is left in queue are messages already acked,
// flagged redelivered, and removes them: delivery is at least once, and an ack that went
// with a lost connection (or was batched for it) leaves its message to come again.
// acked holds the bodies acked (with whether one of their acks was of a redelivery).
func (e *env) expectOnlyDuplicates(queue string, acked map[string]bool) {
	e.t.Helper()
	c := e.consumer(queue)
	for {
		m, err := c.Fetch(e.ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			return
		}
		if err != nil {
			e.t.Fatalf("fetch: %v", err)
		}
		if _, ok := acked[string(m.Body)]; !ok || !m.Redelivered() {
			e.t.Errorf("left in the queue: %q (redelivered %v); want only messages acked before, flagged redelivered", m.Body, m.Redelivered())
		}
		e.ack(m)
	}
}

func testRecoverTopology(e *env) {
	f, breaker := e.faulty()
	x := e.name("x")
	q := e.queueOn(f, carrot.Queue{
		Name:       "q",
		Exclusive:  e.caps.Exclusive, // the queue the broker deletes with its connection
		Transient:  true,
		Exchange:   carrot.Exchange{Name: x, Kind: carrot.Topic, Transient: true},
		RoutingKey: "a.#",
	})
	e.cut(f, breaker)
	// Published elsewhere, mandatory: an error if the binding or the queue is missing.
	e.publish(x, "a.b", "after the cut")
	c := e.consumerOn(f, carrot.ConsumerOptions{}, q)
	var m *carrot.Message
	e.eventually("the message reaches the exclusive queue declared again", func() bool {
		var err error
		m, err = c.Fetch(e.ctx)
		if err != nil && !errors.Is(err, carrot.ErrEmpty) {
			e.t.Fatalf("fetch from the exclusive queue after the cut: %v", err)
		}
		return err == nil
	})
	if string(m.Body) != "after the cut" {
		e.t.Errorf("got %q, want %q", m.Body, "after the cut")
	}
	e.ack(m)
}

func testRecoverPublish(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	f, breaker := e.faulty()
	p := e.publisherOn(f, carrot.PublisherOptions{RoutingKey: q})
	breaker.Block()
	e.awaitLost(f)

	short, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	if err := p.Send(short, "too late"); !errors.Is(err, carrot.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		e.t.Errorf("publish whose deadline passed during the outage = %v, want an error wrapping ErrUnavailable and context.DeadlineExceeded", err)
	}

	bodies := numbered(5)
	errs := make(chan error, len(bodies))
	for _, b := range bodies {
		go func() { errs <- p.Publish(e.ctx, &carrot.Message{Body: []byte(b)}) }()
	}
	async := make(chan *carrot.Confirmation, 1)
	go func() { async <- p.PublishAsync(e.ctx, &carrot.Message{Body: []byte("async")}) }() // waits for a connection
	time.Sleep(100 * time.Millisecond)                                                     // let them wait for the connection
	breaker.Unblock()
	for range bodies {
		if err := e.wait(errs); err != nil {
			e.t.Errorf("publish waiting for the connection = %v, want nil once it is back", err)
		}
	}
	if err := wait(e, async).Wait(e.ctx); err != nil {
		e.t.Errorf("PublishAsync waiting for the connection = %v, want nil once it is back", err)
	}
	rec := newRecorder(nil)
	r := e.start(e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: rec}, q))
	e.awaitAcked(rec, append(bodies, "async")...)
	e.stop(r)
}

func testRecoverSettle(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "m")
	f, breaker := e.faulty()
	c := e.consumerOn(f, carrot.ConsumerOptions{}, q)
	m := e.fetchFrom(c)
	before := f.State().Recoveries
	breaker.Cut()
	e.awaitLost(f)
	if err := m.Ack(e.ctx); !errors.Is(err, carrot.ErrUnavailable) {
		e.t.Errorf("ack after the connection was lost = %v, want an error wrapping ErrUnavailable", err)
	}
	e.awaitRecovered(f, before)
	var again *carrot.Message
	e.eventually("the message comes again", func() bool {
		var err error
		again, err = c.Fetch(e.ctx)
		if err != nil && !errors.Is(err, carrot.ErrEmpty) {
			e.t.Fatalf("fetch after the cut: %v", err)
		}
		return err == nil
	})
	if string(again.Body) != "m" || !again.Redelivered() {
		e.t.Errorf("after the cut got %q (redelivered %v), want %q redelivered", again.Body, again.Redelivered(), "m")
	}
	e.ack(again)
	e.expectEmpty(q)
}

func testRecoverRepeatedCuts(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	f, breaker := e.faulty()
	p := e.publisherOn(f, carrot.PublisherOptions{RoutingKey: q})
	rec := newRecorder(nil)
	r := e.start(e.consumerOn(f, carrot.ConsumerOptions{Handler: rec}, q))
	var bodies []string
	for i := range 10 {
		b := strconv.Itoa(i)
		bodies = append(bodies, b)
		if err := p.Publish(e.ctx, &carrot.Message{Body: []byte(b)}); err != nil {
			e.t.Fatalf("publish before cut %d: %v", i+1, err)
		}
		e.awaitAcked(rec, b)
		e.cut(f, breaker)
	}
	if err := p.Publish(e.ctx, &carrot.Message{Body: []byte("end")}); err != nil {
		e.t.Fatalf("publish after the cuts: %v", err)
	}
	e.awaitAcked(rec, append(bodies, "end")...)
	if got := f.State().Recoveries; got < 10 {
		e.t.Errorf("State().Recoveries = %d after ten cuts, want at least 10", got)
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testRecoverStall(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	f, breaker := e.faulty()
	p := e.publisherOn(f, carrot.PublisherOptions{RoutingKey: q})
	c := e.consumerOn(f, carrot.ConsumerOptions{}, q)
	breaker.Stall()
	const deadline = 300 * time.Millisecond
	for _, call := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Publish", func(ctx context.Context) error { return p.Send(ctx, "stalled") }},
		{"Fetch", func(ctx context.Context) error { return second(c.Fetch(ctx)) }},
		{"DeclareQueue", func(ctx context.Context) error {
			return second(f.DeclareQueue(ctx, carrot.Queue{Name: q, Passive: true}))
		}},
	} {
		ctx, cancel := context.WithTimeout(e.ctx, deadline)
		done := make(chan error, 1)
		go func() { done <- call.do(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				e.t.Errorf("%s while the network stalls = %v, want an error wrapping context.DeadlineExceeded", call.name, err)
			}
		case <-time.After(deadline + closeWithin):
			e.t.Errorf("%s while the network stalls has not returned %v after its deadline", call.name, closeWithin)
		}
		cancel()
	}
	breaker.Unblock()
	if err := p.Send(e.ctx, "after"); err != nil {
		e.t.Fatalf("publish after the stall: %v", err)
	}
	// The stalled publish may have reached the broker too.
	e.eventually("the message published after the stall arrives", func() bool {
		m, err := c.Fetch(e.ctx)
		if err != nil {
			return false
		}
		e.ack(m)
		return string(m.Body) == `"after"`
	})
}

func testRecoverClose(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	f, breaker := e.faulty()
	p := e.publisherOn(f, carrot.PublisherOptions{RoutingKey: q})
	c := e.consumerOn(f, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error { return m.Ack(ctx) })}, q)
	run := make(chan error, 1)
	go func() { run <- c.Run(e.ctx) }()
	breaker.Block()
	e.awaitLost(f)
	published := make(chan error, 1)
	go func() { published <- p.Send(e.ctx, "never") }()
	time.Sleep(100 * time.Millisecond) // let the publish wait for the connection

	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case <-closed:
	case <-time.After(closeWithin):
		e.t.Fatalf("Close during an outage has not returned after %v", closeWithin)
	}
	if err := e.wait(published); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("publish waiting for the connection when it closed = %v, want ErrClosed", err)
	}
	if err := e.wait(run); !errors.Is(err, carrot.ErrClosed) {
		e.t.Errorf("Run waiting for the connection when it closed = %v, want ErrClosed", err)
	}
}
