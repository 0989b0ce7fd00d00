package conformance

import (
	"errors"
	"fmt"
	"time"

	"github.com/carrot-go/carrot"
)

// testInspectQueue checks Conn.InspectQueue through a queue's life: the counts the
// backend's InspectQueue capability names are right at each step, the others are -1,
// nothing is taken from the queue, and a missing queue is an ErrNotFound error.
func testInspectQueue(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.expectStats(q, "empty", stats{0, 0, 0})
	for i := range 5 {
		e.publish("", q, fmt.Sprint(i))
	}
	e.expectStats(q, "after publishing 5", stats{5, 0, 0})
	e.expectStats(q, "inspected again: inspecting takes nothing", stats{5, 0, 0})

	held, _, r := e.holding(q, 2, 5)
	m0, m1 := wait(e, held), wait(e, held)
	e.expectStats(q, "with a consumer holding 2 of them, its prefetch", stats{3, 2, 1})
	e.ack(m0)
	e.ack(m1)
	m2, m3 := wait(e, held), wait(e, held) // carrot delivers them once the acks made room
	// A backend may send an ack a little after Ack returned (see Message.Ack): the acks of
	// m0 and m1 may reach the broker after m2 and m3 came.
	e.eventuallyStats(q, "after 2 acks, with the consumer holding the next 2", stats{1, 2, 1})
	e.ack(m2)
	e.ack(m3)
	e.stop(r)
	e.eventuallyStats(q, "after 4 acks and the consumer stopped", stats{1, 0, 0})

	m4 := e.fetch(q)
	if string(m4.Body) != "4" {
		e.t.Fatalf("fetched %q, want %q", m4.Body, "4")
	}
	// Consumers not checked: RabbitMQ's quorum queues count the channel that fetched.
	e.expectStats(q, "with the last one fetched and not settled", stats{0, 1, -1})
	e.ack(m4)
	e.eventuallyStats(q, "after every message was acked", stats{0, 0, 0})

	missing := e.name("missing")
	if st, err := e.conn.InspectQueue(e.ctx, missing); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("InspectQueue of a missing queue returned %+v, %v; want an ErrNotFound error", st, err)
	}
}

// stats is what a test expects of a queue: ready, unacked, consumers.
type stats struct {
	ready, unacked int64
	consumers      int
}

// statsDiff says how got differs from want in the counts the backend reports (and where
// a count it does not report is not -1), or "" when it does not. A count wanted -1 is
// not checked.
func (e *env) statsDiff(got carrot.QueueStats, want stats) string {
	counts := e.caps.InspectQueue
	var diff string
	check := func(name string, count carrot.QueueCounts, got, want int64) {
		switch {
		case !counts.Has(count) && got != -1:
			diff += fmt.Sprintf("; %s is %d, want -1: the backend does not report it", name, got)
		case counts.Has(count) && got != want && want != -1:
			diff += fmt.Sprintf("; %s is %d, want %d", name, got, want)
		}
	}
	check("Ready", carrot.ReadyCount, got.Ready, want.ready)
	check("Unacked", carrot.UnackedCount, got.Unacked, want.unacked)
	check("Consumers", carrot.ConsumerCount, int64(got.Consumers), int64(want.consumers))
	if diff == "" {
		return ""
	}
	return diff[2:]
}

// expectStats checks the counts of queue now.
func (e *env) expectStats(queue, when string, want stats) {
	e.t.Helper()
	got, err := e.conn.InspectQueue(e.ctx, queue)
	if err != nil {
		e.t.Fatalf("%s: InspectQueue: %v", when, err)
	}
	if diff := e.statsDiff(got, want); diff != "" {
		e.t.Errorf("%s: InspectQueue returned %+v: %s (the backend reports %v)", when, got, diff, e.caps.InspectQueue)
	}
}

// eventuallyStats waits until the counts of queue are want, failing the subtest if the
// harness timeout passes first: for counts the broker updates on its own time, such as
// acks it applies after they were sent, or a consumer it forgets after it was canceled.
func (e *env) eventuallyStats(queue, when string, want stats) {
	e.t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := e.conn.InspectQueue(e.ctx, queue)
		if err != nil {
			e.t.Fatalf("%s: InspectQueue: %v", when, err)
		}
		diff := e.statsDiff(got, want)
		if diff == "" {
			return
		}
		select {
		case <-tick.C:
		case <-e.ctx.Done():
			e.t.Fatalf("%s: InspectQueue still returned %+v after %v: %s (the backend reports %v)", when, got, e.r.h.Timeout, diff, e.caps.InspectQueue)
		}
	}
}
