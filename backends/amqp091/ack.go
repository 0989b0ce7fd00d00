package amqp091

import (
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

// An acker coalesces the acks of one consumer channel. An ack is recorded and sent later,
// with others: a run of acked delivery tags that nothing unsettled precedes goes as one
// basic.ack with multiple set, naming the run's highest unsent tag; acks behind a message
// still unsettled go one by one. The waiting acks are sent when a quarter of the prefetch
// is waiting, when delay has passed since the first of them, and before the channel is
// closed. Requeues and rejects go at once.
//
// RabbitMQ requeues, flagged redelivered, what a channel delivered and had not acked when
// it closed: an ack that waits when the connection is cut is never applied, and its
// message comes again.
type acker struct {
	ch    *amqp.Channel
	batch int           // send when this many acks wait
	delay time.Duration // and at most this long after the first of them

	mu     sync.Mutex
	floor  uint64   // every tag up to floor is settled
	above  []span   // tags settled above floor+1, in order, disjoint, not adjacent
	unsent []uint64 // acked, not yet sent
	timer  *time.Timer
	closed bool // the subscription closed: no more settling
	ended  bool // the channel is being closed: settling is an Unavailable error
}

// span is the tags from lo to hi, both included.
type span struct{ lo, hi uint64 }

func newAcker(ch *amqp.Channel, prefetch int, delay time.Duration) *acker {
	a := &acker{ch: ch, batch: max(prefetch/4, 1), delay: delay}
	if delay <= 0 {
		a.batch = 1
	}
	return a
}

// settle acks, requeues or rejects the delivery with tag: an ack is recorded and sent with
// the next batch, the others are sent at once. It returns a Closed error once the
// subscription has closed, and an Unavailable one if the channel has.
func (a *acker) settle(tag uint64, o backend.Outcome) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return backend.Errorf(backend.Closed, "carrot/amqp091: the consumer closed; RabbitMQ requeued the message")
	}
	if a.ended || a.ch.IsClosed() {
		return settleErr(amqp.ErrClosed)
	}
	var err error
	switch o {
	case backend.Ack:
		a.settled(tag)
		a.unsent = append(a.unsent, tag)
		if len(a.unsent) >= a.batch {
			err = a.flushLocked()
		} else if len(a.unsent) == 1 {
			if a.timer == nil {
				a.timer = time.AfterFunc(a.delay, a.flush)
			} else {
				a.timer.Reset(a.delay)
			}
		}
	default:
		if err = send(a.ch, tag, o); err == nil {
			a.settled(tag)
		}
	}
	return settleErr(err)
}

// settled records that tag is settled, moving the floor past it and any spans it joins.
func (a *acker) settled(tag uint64) {
	if tag <= a.floor {
		return
	}
	if tag == a.floor+1 {
		a.floor = tag
		if len(a.above) > 0 && a.above[0].lo == tag+1 {
			a.floor = a.above[0].hi
			a.above = slices.Delete(a.above, 0, 1)
		}
		return
	}
	i, _ := slices.BinarySearchFunc(a.above, tag, func(s span, t uint64) int {
		switch {
		case s.hi < t:
			return -1
		case s.lo > t:
			return 1
		}
		return 0
	})
	joinsLeft := i > 0 && a.above[i-1].hi+1 == tag
	joinsRight := i < len(a.above) && a.above[i].lo == tag+1
	switch {
	case joinsLeft && joinsRight:
		a.above[i-1].hi = a.above[i].hi
		a.above = slices.Delete(a.above, i, i+1)
	case joinsLeft:
		a.above[i-1].hi = tag
	case joinsRight:
		a.above[i].lo = tag
	default:
		a.above = slices.Insert(a.above, i, span{tag, tag})
	}
}

// flush sends the waiting acks; the timer calls it.
func (a *acker) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked()
}

// flushLocked sends the waiting acks: those up to the floor as one multiple ack of the
// highest of them, the others one by one. A channel that closed meanwhile took them with
// it: RabbitMQ requeued their messages.
func (a *acker) flushLocked() error {
	if len(a.unsent) == 0 {
		return nil
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	var multiple uint64
	for _, t := range a.unsent {
		if t <= a.floor {
			multiple = max(multiple, t)
		}
	}
	var err error
	if multiple > 0 {
		err = a.ch.Ack(multiple, true)
	}
	for _, t := range a.unsent {
		if t > a.floor && err == nil {
			err = a.ch.Ack(t, false)
		}
	}
	a.unsent = a.unsent[:0]
	return err
}

// close sends the waiting acks and refuses further settling, as the subscription closes;
// the caller closes the channel next.
func (a *acker) close() { a.stop(func() { a.closed = true }) }

// end sends the waiting acks and makes further settling an Unavailable error, as the
// channel goes while the subscription lives on; the caller closes the channel next.
func (a *acker) end() { a.stop(func() { a.ended = true }) }

// stop sends the waiting acks and then marks the acker with mark, under its lock: no ack
// reaches the channel after that, for RabbitMQ ends the whole connection when a frame
// comes on a channel it has closed.
func (a *acker) stop(mark func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked()
	mark()
}
