package conformance

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/carrot-go/carrot"
)

// ackCases lists the behaviours of acks that a backend may send later, in batches (see
// backend.Settler): an ack that returned nil is applied by the time the consumer's Close
// returns, and one that a cut connection took with it leaves its message to come again,
// flagged redelivered.
func ackCases() []testCase {
	return []testCase{
		{name: "AckBeforeClose", doc: "every ack made before the consumer's Close is applied: after Close, the queue holds exactly the messages left unsettled", run: testAckBeforeClose},
		{name: "RecoverAcks", doc: "acks made just before a cut are applied or their messages come again flagged redelivered: nothing is lost", run: testRecoverAcks},
	}
}

// ackedLog is a handler that acks messages, from several workers at once, and records
// every delivery. Those for which hold returns true are left unsettled.
type ackedLog struct {
	hold func(n int) bool

	mu    sync.Mutex
	seen  map[int][]bool // each delivery's redelivered flag, in order, by message number
	acked map[int]bool
	count int
	all   chan struct{} // closed when count reaches want
	want  int
}

func newAckedLog(want int, hold func(n int) bool) *ackedLog {
	return &ackedLog{hold: hold, seen: make(map[int][]bool), acked: make(map[int]bool), all: make(chan struct{}), want: want}
}

func (l *ackedLog) Receive(ctx context.Context, m *carrot.Message) error {
	n, err := strconv.Atoi(string(m.Body))
	if err != nil {
		return err
	}
	acked := false
	if l.hold == nil || !l.hold(n) {
		acked = m.Ack(ctx) == nil // an ack may fail on a lost connection: the message comes again
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[n] = append(l.seen[n], m.Redelivered())
	if acked {
		l.acked[n] = true
	}
	if l.count++; l.count == l.want {
		close(l.all)
	}
	return nil
}

// publishNumbered publishes the numbers 0 to n-1 to queue, in order.
func (e *env) publishNumbered(queue string, n int) {
	e.t.Helper()
	p := e.publisher(carrot.PublisherOptions{RoutingKey: queue, MaxInFlight: 64})
	confirms := make([]*carrot.Confirmation, n)
	for i := range n {
		confirms[i] = p.PublishAsync(e.ctx, &carrot.Message{Body: []byte(strconv.Itoa(i))})
	}
	for i, c := range confirms {
		if err := c.Wait(e.ctx); err != nil {
			e.t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func testAckBeforeClose(e *env) {
	const n = 300
	q := e.queue(carrot.Queue{Name: "q"})
	e.publishNumbered(q, n)
	held := func(n int) bool { return n%7 == 3 } // gaps, so that acks run out of order
	log := newAckedLog(n, held)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: log, Prefetch: 100, Concurrency: 4, StallWarning: -1}, q)
	r := e.start(c)
	wait(e, log.all)
	e.stop(r)
	if err := c.Close(); err != nil { // at once: acks may still be waiting to go
		e.t.Fatalf("close: %v", err)
	}
	left := make(map[string]bool)
	for i := range n {
		if held(i) {
			left[strconv.Itoa(i)] = true
		}
	}
	// RabbitMQ's quorum queues over AMQP 0-9-1 may drop the acks that reach a channel
	// just before it closes (the channel holds back settlements while many are in
	// flight, and drops those when it closes): their messages come again, redelivered.
	// At least once, not exactly: the backend's documentation says so.
	quorum := e.typed(carrot.Queue{}).Type == carrot.QuorumQueue
	again := 0
	cf := e.consumer(q)
	for len(left) > 0 {
		m := e.fetchFrom(cf)
		if !left[string(m.Body)] {
			if quorum && m.Redelivered() {
				again++
				e.ack(m)
				continue
			}
			e.t.Errorf("got %q after Close; want only the %d messages left unsettled (acked messages must not come again)", m.Body, len(left))
		} else if !m.Redelivered() {
			e.t.Errorf("got %q without the redelivered flag; it was delivered before Close", m.Body)
		}
		delete(left, string(m.Body))
		e.ack(m)
	}
	for quorum { // and those that came after the last held one
		m, err := cf.Fetch(e.ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			break
		}
		if err != nil {
			e.t.Fatalf("fetch: %v", err)
		}
		if !m.Redelivered() {
			e.t.Errorf("got %q after Close without the redelivered flag", m.Body)
		}
		again++
		e.ack(m)
	}
	if again > 0 {
		e.t.Logf("quorum queue: %d acked messages came again after Close, redelivered", again)
	}
	e.expectEmpty(q)
}

func testRecoverAcks(e *env) {
	const n = 300
	q := e.queue(carrot.Queue{Name: "q"})
	e.publishNumbered(q, n)
	f, breaker := e.faulty()
	log := newAckedLog(n, nil)
	c := e.consumerOn(f, carrot.ConsumerOptions{Handler: log, Prefetch: 100, Concurrency: 4}, q)
	r := e.start(c)
	wait(e, log.all)
	e.cut(f, breaker) // at once: acks may still be waiting to go
	// What the cut took comes again, and is acked again; wait until every message has
	// been acked, then check that no message came back unflagged.
	e.eventually("every message has been acked", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.acked) == n
	})
	e.stop(r)
	if err := c.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	log.mu.Lock()
	acked := make(map[string]bool, n)
	again := 0
	for i, flags := range log.seen {
		acked[strconv.Itoa(i)] = true
		if len(flags) > 1 {
			again++
		}
		for k, redelivered := range flags[1:] {
			if !redelivered {
				e.t.Errorf("message %d came a %s time without the redelivered flag", i, ordinal(k+2))
			}
		}
	}
	log.mu.Unlock()
	e.t.Logf("%d of %d messages came again after the cut", again, n)
	e.expectOnlyDuplicates(q, acked)
}

func ordinal(n int) string {
	switch n {
	case 2:
		return "second"
	case 3:
		return "third"
	}
	return strconv.Itoa(n) + "th"
}
