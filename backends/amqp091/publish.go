package amqp091

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

// publisher is a channel in confirm mode that many publishes share, each waiting for its
// own confirm. One goroutine, listen, reads the channel's returns and confirms: amqp091-go
// hands both over in the order RabbitMQ sent them, and RabbitMQ sends a mandatory
// message's return before its confirm, so when listen sees a confirm it has already seen
// the return that goes with it.
type publisher struct {
	ch         *amqp.Channel
	confirming bool

	mu sync.Mutex // serializes publishes, so that delivery tags follow the order of writes

	wmu     sync.Mutex
	waiters map[uint64]*waiter // by delivery tag
	dead    error              // why the channel closed, once it has

	returned []amqp.Return // returns whose confirm has not come yet; listen's alone
}

// waiter is a publish waiting for its confirm.
type waiter struct {
	exchange string
	msg      *backend.Message // nil once its Publish stopped waiting
	result   chan error       // receives the outcome; nil when nobody waits
}

// publisher returns the live publishing channel, opening one if needed.
func (c *Conn) publisher(ctx context.Context) (*publisher, error) {
	c.pubMu.Lock()
	pc := c.pub
	c.pubMu.Unlock()
	if pc != nil && !pc.isDead() {
		return pc, nil
	}
	ch, err := c.openChannel(ctx)
	if err != nil {
		return nil, err
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if c.pub != nil && !c.pub.isDead() { // another publish opened one meanwhile
		go ch.Close()
		return c.pub, nil
	}
	pc = &publisher{ch: ch, confirming: !c.opts.NoConfirms, waiters: make(map[uint64]*waiter)}
	if pc.confirming {
		noWait := false
		if err := ch.Confirm(noWait); err != nil {
			ch.Close()
			return nil, err
		}
	}
	// Returns must not be buffered: see the type's documentation. Confirms may be.
	returns := ch.NotifyReturn(make(chan amqp.Return))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 256))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		pc.listen(returns, confirms, closes)
	}()
	c.pub = pc
	return pc, nil
}

func (pc *publisher) isDead() bool {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	return pc.dead != nil
}

// Publish waits for the connection, checks that the exchange exists, publishes, and with
// p.Confirm waits for the broker's confirm, or the return of an unroutable message. A
// message written to a channel that then closes is an Unavailable error: it may or may not
// have reached the broker.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	if p.Confirm && c.opts.NoConfirms {
		return backend.Errorf(backend.Unsupported, "carrot/amqp091: confirms are off (URL option confirms=false)")
	}
	if err := c.checkExchange(ctx, p.Exchange); err != nil {
		return err
	}
	msg := publishing(&p.Message)
	for {
		pc, err := c.publisher(ctx)
		if err != nil {
			return err
		}
		w, err := pc.publish(p, msg)
		if err != nil {
			if channelGone(err) && ctx.Err() == nil {
				continue // nothing was written: try the next channel
			}
			return err
		}
		if w == nil || w.result == nil {
			return nil
		}
		select {
		case err := <-w.result:
			if backend.CodeOf(err) == backend.NotFound {
				c.topo.setKnown(p.Exchange, false)
			}
			return err
		case <-ctx.Done():
			pc.abandon(w)
			return ctx.Err()
		}
	}
}

// publish writes one message and registers for its confirm.
func (pc *publisher) publish(p *backend.Publishing, msg amqp.Publishing) (*waiter, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var w *waiter
	var tag uint64
	if pc.confirming {
		w = &waiter{exchange: p.Exchange, msg: &p.Message}
		if p.Confirm {
			w.result = make(chan error, 1)
		}
		tag = pc.ch.GetNextPublishSeqNo()
		pc.wmu.Lock()
		if pc.dead != nil {
			pc.wmu.Unlock()
			return nil, pc.dead
		}
		pc.waiters[tag] = w
		pc.wmu.Unlock()
	}
	immediate := false
	if err := pc.ch.Publish(p.Exchange, p.RoutingKey, p.Mandatory, immediate, msg); err != nil {
		if w != nil {
			pc.wmu.Lock()
			delete(pc.waiters, tag)
			pc.wmu.Unlock()
		}
		return nil, err
	}
	return w, nil
}

// abandon releases the message of a publish that stopped waiting: the caller may reuse it.
func (pc *publisher) abandon(w *waiter) {
	pc.wmu.Lock()
	w.msg = nil
	pc.wmu.Unlock()
}

// listen matches returns and confirms to publishes until the channel closes.
func (pc *publisher) listen(returns <-chan amqp.Return, confirms <-chan amqp.Confirmation, closes <-chan *amqp.Error) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pc.returned = append(pc.returned, r)
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			pc.confirm(cf)
		case err, ok := <-closes:
			if !ok || err == nil {
				err = amqp.ErrClosed
			}
			pc.fail(err)
			// Keep draining until amqp091-go closes the other notification channels, so
			// that its reader never waits on this goroutine.
			for returns != nil || confirms != nil {
				select {
				case _, ok := <-returns:
					if !ok {
						returns = nil
					}
				case _, ok := <-confirms:
					if !ok {
						confirms = nil
					}
				}
			}
			return
		}
	}
}

// confirm settles the publish of one confirm.
func (pc *publisher) confirm(cf amqp.Confirmation) {
	pc.wmu.Lock()
	w := pc.waiters[cf.DeliveryTag]
	delete(pc.waiters, cf.DeliveryTag)
	var err error
	if w != nil && len(pc.returned) > 0 && returnOf(&pc.returned[0], w) {
		r := pc.returned[0]
		pc.returned = pc.returned[1:]
		err = backend.Errorf(backend.Unroutable, "carrot/amqp091: message returned by the broker: %d %s (exchange %q, routing key %q)", r.ReplyCode, r.ReplyText, r.Exchange, r.RoutingKey)
	} else if !cf.Ack {
		err = backend.Errorf(backend.Refused, "carrot/amqp091: the broker nacked the message (exchange %q)", w.exchangeName())
	}
	pc.wmu.Unlock()
	if w != nil && w.result != nil {
		w.result <- err
	}
}

func (w *waiter) exchangeName() string {
	if w == nil {
		return "?"
	}
	return w.exchange
}

// returnOf reports whether r is the return of w's message. Returns arrive in publishing
// order, each before its own confirm, so only the oldest return can be w's; comparing the
// content tells whether it is (two messages alike in all these are routed alike).
func returnOf(r *amqp.Return, w *waiter) bool {
	if r.Exchange != w.exchange {
		return false
	}
	if w.msg == nil { // its Publish gave up waiting; the exchange must do
		return true
	}
	m := w.msg
	return r.RoutingKey == m.RoutingKey && r.MessageId == m.MessageID && r.CorrelationId == m.CorrelationID &&
		r.ContentType == m.ContentType && bytes.Equal(r.Body, m.Body)
}

// fail ends every publish waiting on a channel that closed. A 404 naming another exchange
// than a publish's own was not that publish's fault: it is Unavailable, and may be retried.
func (pc *publisher) fail(cause *amqp.Error) {
	pc.wmu.Lock()
	pc.dead = cause
	waiters := pc.waiters
	pc.waiters = nil
	pc.wmu.Unlock()
	culprit, named := missingExchange(cause)
	for _, w := range waiters {
		if w.result == nil {
			continue
		}
		code := backend.Unavailable
		if named && culprit == w.exchange {
			code = backend.NotFound
		}
		w.result <- backend.Errorf(code, "carrot/amqp091: the publishing channel closed before the broker confirmed the message: %w", cause)
	}
}

// publishing converts a message for amqp091-go.
func publishing(m *backend.Message) amqp.Publishing {
	p := amqp.Publishing{
		Headers:         amqp.Table(m.Headers),
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Transient,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationID,
		ReplyTo:         m.ReplyTo,
		MessageId:       m.MessageID,
		Timestamp:       m.Timestamp,
		Body:            m.Body,
	}
	if m.Persistent {
		p.DeliveryMode = amqp.Persistent
	}
	if m.Expiration > 0 {
		p.Expiration = strconv.FormatInt(int64(m.Expiration/time.Millisecond), 10)
	}
	return p
}
