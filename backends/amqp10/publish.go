package amqp10

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
)

// publisher is the connection's one sending link, on a session of its own. Its target is
// null: each message carries its address in the to property, so that one link serves
// every exchange, and a message to a missing exchange is rejected alone instead of
// failing the attach (and the session). One goroutine waits for the outcomes, in the
// order the messages went out.
type publisher struct {
	gen     uint64
	session *amqp.Session
	sender  *amqp.Sender
	waits   chan wait
	dead    chan struct{} // closed when the link failed
}

// wait is a sent message waiting for its outcome.
type wait struct {
	receipt   amqp.SendReceipt
	exchange  string
	mandatory bool
	done      func(error)
}

// publisher returns the live sending link, attaching one if needed.
func (c *Conn) publisher(ctx context.Context) (*publisher, error) {
	_, gen, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	if p := c.pub.Load(); p != nil && p.gen == gen && !p.isDead() {
		return p, nil
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if p := c.pub.Load(); p != nil && p.gen == gen && !p.isDead() {
		return p, nil
	}
	s, gen, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	snd, err := s.NewSender(ctx, "", &amqp.SenderOptions{
		SettlementMode:              amqp.SenderSettleModeUnsettled.Ptr(),
		RequestedReceiverSettleMode: amqp.ReceiverSettleModeFirst.Ptr(),
	})
	if err != nil {
		closeQuietly(s)
		return nil, err
	}
	p := &publisher{gen: gen, session: s, sender: snd, waits: make(chan wait, 4096), dead: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.answer(c.done)
	}()
	if old := c.pub.Swap(p); old != nil {
		old.kill()
	}
	return p, nil
}

func (p *publisher) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// kill marks the link failed and closes its session.
func (p *publisher) kill() {
	select {
	case <-p.dead:
	default:
		close(p.dead)
		closeQuietly(p.session)
	}
}

// answer turns outcomes into the publishes' results, in order, until the Conn closes.
func (p *publisher) answer(done <-chan struct{}) {
	for {
		var w wait
		select {
		case w = <-p.waits:
		case <-done:
			for { // what is left fails: the connection is closing
				select {
				case w := <-p.waits:
					w.done(errClosed)
				default:
					return
				}
			}
		}
		state, err := w.receipt.Wait(context.Background())
		w.done(outcome(state, err, w.exchange, w.mandatory))
	}
}

// outcome turns a delivery state into the result of a publish.
func outcome(state amqp.DeliveryState, err error, exchange string, mandatory bool) error {
	if err != nil {
		return backend.Errorf(backend.Unavailable, "carrot/amqp10: the link closed before the broker settled the message: %w", err)
	}
	switch s := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateReleased:
		// RabbitMQ releases a message that no queue took.
		if mandatory {
			return backend.Errorf(backend.Unroutable, "carrot/amqp10: the broker released the message: no queue is bound to exchange %q with a matching key", exchange)
		}
		return nil
	case *amqp.StateRejected:
		if s.Error != nil {
			if s.Error.Condition == amqp.ErrCondNotFound {
				return backend.Errorf(backend.NotFound, "carrot/amqp10: exchange %q: %w", exchange, s.Error)
			}
			return backend.Errorf(backend.Refused, "carrot/amqp10: the broker rejected the message: %w", s.Error)
		}
		return backend.Errorf(backend.Refused, "carrot/amqp10: the broker rejected the message")
	case *amqp.StateModified:
		return backend.Errorf(backend.Refused, "carrot/amqp10: the broker did not take the message (modified)")
	}
	return backend.Errorf(backend.Unknown, "carrot/amqp10: unexpected outcome %T", state)
}

// Publish publishes and waits for the broker's outcome.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	result := make(chan error, 1)
	c.PublishAsync(ctx, p, func(err error) { result <- err })
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync sends the message in the caller's goroutine, waiting for a connection if
// there is none, and answers through done when the broker settles it. A message the
// broker releases is unroutable; one it rejects for a missing exchange is not found.
func (c *Conn) PublishAsync(ctx context.Context, p *backend.Publishing, done func(error)) {
	msg := message(p)
	for {
		pub, err := c.publisher(ctx)
		if err != nil {
			done(err)
			return
		}
		receipt, err := pub.sender.SendWithReceipt(ctx, msg, nil)
		if err != nil {
			if ctx.Err() != nil {
				done(ctx.Err())
				return
			}
			if linkGone(err) {
				pub.kill()
				if !c.closed.Load() {
					continue // nothing was sent: send on the next link
				}
			}
			done(err)
			return
		}
		if !p.Confirm {
			done(nil)
			return
		}
		select {
		case pub.waits <- wait{receipt: receipt, exchange: p.Exchange, mandatory: p.Mandatory, done: done}:
		case <-c.done:
			done(errClosed)
		}
		return
	}
}

// linkGone reports whether err says that a link, its session or its connection ended.
func linkGone(err error) bool {
	var ce *amqp.ConnError
	var se *amqp.SessionError
	var le *amqp.LinkError
	return errors.As(err, &ce) || errors.As(err, &se) || errors.As(err, &le)
}

// address returns the address of a message published to exchange with key.
func address(exchange, key string) string {
	switch {
	case exchange == "":
		return "/queues/" + escape(key)
	case key == "":
		return "/exchanges/" + escape(exchange)
	}
	return "/exchanges/" + escape(exchange) + "/" + escape(key)
}

// addresses remembers the addresses computed so far, up to maxAddresses, so that
// publishing to the same place again costs no escaping.
var (
	addresses    sync.Map // exchange \x00 key → address
	addressCount atomic.Int32
)

const maxAddresses = 4096

func cachedAddress(exchange, key string) string {
	k := exchange + "\x00" + key
	if a, ok := addresses.Load(k); ok {
		return a.(string)
	}
	a := address(exchange, key)
	if addressCount.Add(1) <= maxAddresses {
		addresses.Store(k, a)
	}
	return a
}

// message converts a publishing for go-amqp: header durable, priority and ttl; properties
// message-id, correlation-id, reply-to, content-type, content-encoding, creation-time and
// to; headers as application-properties; the body as one data section.
func message(p *backend.Publishing) *amqp.Message {
	x := &struct { // one allocation for the message and its parts
		m    amqp.Message
		h    amqp.MessageHeader
		pr   amqp.MessageProperties
		to   string
		data [1][]byte
	}{}
	x.to = cachedAddress(p.Exchange, p.RoutingKey)
	x.h = amqp.MessageHeader{Durable: p.Persistent, Priority: p.Priority, TTL: p.Expiration}
	x.pr.To = &x.to
	x.data[0] = p.Body
	if x.data[0] == nil {
		x.data[0] = []byte{}
	}
	x.m = amqp.Message{Header: &x.h, Properties: &x.pr, Data: x.data[:]}
	m := &x.m
	pr := m.Properties
	if p.MessageID != "" {
		pr.MessageID = p.MessageID
	}
	if p.CorrelationID != "" {
		pr.CorrelationID = p.CorrelationID
	}
	if p.ReplyTo != "" {
		pr.ReplyTo = &p.ReplyTo
	}
	if p.ContentType != "" {
		pr.ContentType = &p.ContentType
	}
	if p.ContentEncoding != "" {
		pr.ContentEncoding = &p.ContentEncoding
	}
	if !p.Timestamp.IsZero() {
		pr.CreationTime = &p.Timestamp
	}
	if len(p.Headers) > 0 {
		m.ApplicationProperties = p.Headers
	}
	return m
}
