package carrot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// RetryPolicy says what a [Consumer] does with a message whose handlers failed (returned
// an error or panicked without settling it).
//
// The message is published again to its queue alone, with a delay that doubles with each
// failure from MinBackoff up to MaxBackoff, with jitter, and the delivery that failed is
// acked: the messages behind it in the queue flow meanwhile, and its deliveries are
// counted on every backend (in the header "carrot-deliveries"), even where the broker
// counts nothing. The message comes back with its exchange and routing key, flagged
// redelivered, and [Message.DeliveryCount] says which delivery it is. After MaxDeliveries
// deliveries in all, a failure dead-letters it instead: to DeadLetterExchange, or to the
// dead-letter exchange its queue was declared with, with its routing key and these
// headers saying why: "carrot-error" (the last error's text), "carrot-deliveries",
// "carrot-queue", "carrot-exchange", "carrot-routing-key" and "carrot-first-failure" (a
// time). This needs the backend's Delay capability; without it, or when the
// copy cannot be published, the failed delivery is kept unsettled for the backoff, then
// requeued. The copy has the message's properties; headers carrot cannot publish (such as
// RabbitMQ's x-death, from the broker, and tables and lists on a backend without the
// NestedHeaders capability) are left out of it, and so is a UserID the broker would refuse
// from this connection (another user's, see [Message].UserID). A body that does not decode
// ([*DecodeError]) is rejected, not retried.
type RetryPolicy struct {
	// MaxDeliveries is how many deliveries a message gets before a failure dead-letters
	// it, the first included. Zero retries for ever, never dropping a message.
	MaxDeliveries int

	// MinBackoff is the delay before the first retry, 1s when zero; MaxBackoff the
	// longest, 1m when zero. Each retry waits twice as long as the last, with jitter.
	MinBackoff, MaxBackoff time.Duration

	// DeadLetterExchange is where a message goes after its last failure, an exchange that
	// must exist when the Consumer is made ([ErrNotFound] otherwise); empty means the
	// dead-letter exchange of its queue, as declared by this connection. A policy with
	// MaxDeliveries needs one or the other ([ErrInvalid] otherwise).
	DeadLetterExchange string
}

// The headers carrot sets on messages it retries or dead-letters.
const (
	hdrRetry        = "carrot-retry" // on the copies of retries only
	hdrDeliveries   = "carrot-deliveries"
	hdrExchange     = "carrot-exchange"
	hdrRoutingKey   = "carrot-routing-key"
	hdrError        = "carrot-error"
	hdrQueue        = "carrot-queue"
	hdrFirstFailure = "carrot-first-failure"
)

// check validates the policy for a consumer of queues on c: its dead-letter exchange, if
// it names one, must exist.
func (p *RetryPolicy) check(ctx context.Context, op string, c *Conn, queues []string) error {
	switch {
	case p.MaxDeliveries < 0:
		return invalidf(op, "retry policy: MaxDeliveries %d is negative", p.MaxDeliveries)
	case p.MinBackoff < 0 || p.MaxBackoff < 0:
		return invalidf(op, "retry policy: a backoff is negative")
	case p.MaxBackoff > 0 && p.MinBackoff > p.MaxBackoff:
		return invalidf(op, "retry policy: MinBackoff %v is longer than MaxBackoff %v", p.MinBackoff, p.MaxBackoff)
	}
	if p.MaxDeliveries == 0 {
		return nil
	}
	if p.DeadLetterExchange != "" {
		return c.DeclareExchange(ctx, Exchange{Name: p.DeadLetterExchange, Passive: true})
	}
	for _, q := range queues {
		if x, _, ok := c.topo.deadLetter(q); !ok || x == "" {
			return invalidf(op, "retry policy: MaxDeliveries needs a dead-letter destination, and queue %q has no dead-letter exchange declared by this connection: set RetryPolicy.DeadLetterExchange or Queue.DeadLetterExchange", q)
		}
	}
	return nil
}

// backoff returns the wait before the retry that follows delivery n (1 for the first).
func (p *RetryPolicy) backoff(n int) time.Duration {
	return backoff(cmp.Or(p.MinBackoff, time.Second), cmp.Or(p.MaxBackoff, time.Minute), n)
}

// retry settles m, whose handlers failed with cause, as the consumer's policy says. It
// returns what it did, for the log.
func (c *Consumer) retry(ctx context.Context, m *Message, cause error) (string, error) {
	ctx = context.WithoutCancel(ctx)
	if de := (*DecodeError)(nil); errors.As(cause, &de) {
		return "rejected", m.Reject(ctx)
	}
	p := &c.opts.Retry
	n := max(m.DeliveryCount(), 1)
	if !c.conn.Capabilities().Delay {
		return c.requeueLater(m, p.backoff(n), "")
	}
	out := retryCopy(m, n, cause, c.conn.Capabilities())
	if p.MaxDeliveries > 0 && n >= p.MaxDeliveries {
		x, key := p.DeadLetterExchange, m.RoutingKey
		if x == "" {
			var dk string
			x, dk, _ = c.conn.topo.deadLetter(m.Queue())
			if dk != "" {
				key = dk
			}
		}
		out.RoutingKey = key
		if err := c.publishCopy(ctx, x, out); err != nil {
			return c.requeueLater(m, p.backoff(n), fmt.Sprintf("dead-lettering to exchange %q failed (%v)", x, err))
		}
		return fmt.Sprintf("dead-lettered to exchange %q after %d deliveries", x, n), m.settle(ctx, backend.Ack, DeadLettered)
	}
	out.RoutingKey = m.Queue()
	out.Delay = p.backoff(n)
	out.Headers[hdrRetry] = true
	if err := c.publishCopy(ctx, "", out); err != nil {
		return c.requeueLater(m, out.Delay, fmt.Sprintf("publishing the retry failed (%v)", err))
	}
	return fmt.Sprintf("retried in %v (delivery %d)", out.Delay.Round(time.Millisecond), n), m.settle(ctx, backend.Ack, Retried)
}

// requeueLater keeps m, unsettled, for d, then requeues it: a retry where the message
// cannot be published again, which does not hold up the queue behind it (but holds a
// prefetch slot). why says why, if something failed.
func (c *Consumer) requeueLater(m *Message, d time.Duration, why string) (string, error) {
	time.AfterFunc(d, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		m.settle(ctx, backend.Requeue, Retried) // after Close or a loss, the broker has it back already
	})
	outcome := fmt.Sprintf("to be requeued in %v", d.Round(time.Millisecond))
	if why != "" {
		outcome += ", as " + why
	}
	return outcome, nil
}

// broker headers the copies of retried messages leave out: they tell of the broker's
// handling of the delivery that failed, and RabbitMQ sets them again.
var brokerHeaders = []string{"x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
	"x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count", "x-opt-deaths"}

// retryCopy returns a copy of m to publish again on a connection with caps, its headers
// saying where it comes from and why.
func retryCopy(m *Message, n int, cause error, caps Capabilities) *Message {
	h := make(Table, len(m.Headers)+6)
	for k, v := range m.Headers {
		nv, err := normalizeValue(v, 0)
		if err != nil || slices.Contains(brokerHeaders, k) {
			continue // one carrot cannot publish, from another client, is left out
		}
		switch nv.(type) {
		case map[string]any, []any:
			if !caps.NestedHeaders {
				continue
			}
		}
		h[k] = v
	}
	h[hdrDeliveries] = int64(n)
	h[hdrExchange] = m.Exchange()
	h[hdrRoutingKey] = m.RoutingKey
	h[hdrQueue] = m.Queue()
	msg := cause.Error()
	if len(msg) > 1000 {
		msg = msg[:1000] + "…"
	}
	h[hdrError] = msg
	if _, ok := h[hdrFirstFailure]; !ok {
		h[hdrFirstFailure] = time.Now()
	}
	user := m.UserID
	if caps.UserID != "" && user != caps.UserID {
		user = "" // the broker takes no other user's name from this connection
	}
	return &Message{
		Body: m.Body, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Headers: h,
		DeliveryMode: m.DeliveryMode, Priority: m.Priority, MessageID: m.MessageID,
		CorrelationID: m.CorrelationID, ReplyTo: m.ReplyTo, Timestamp: m.Timestamp,
		Type: m.Type, AppID: m.AppID, UserID: user,
	}
}

// restoreRetried gives a message published again by a retry its exchange, routing key,
// delivery count and redelivered flag back, and removes the headers that carried them.
func restoreRetried(m *Message) {
	if retry, _ := m.Headers[hdrRetry].(bool); !retry {
		return
	}
	var n int64
	switch v := m.Headers[hdrDeliveries].(type) {
	case int64:
		n = v
	case int32:
		n = int64(v)
	case int:
		n = int64(v)
	}
	if x, ok := m.Headers[hdrExchange].(string); ok {
		m.d.exchange = x
	}
	if k, ok := m.Headers[hdrRoutingKey].(string); ok {
		m.RoutingKey = k
	}
	m.d.count = max(m.d.count, int(n)+1)
	m.d.redelivered = true
	for _, k := range []string{hdrRetry, hdrDeliveries, hdrExchange, hdrRoutingKey, hdrQueue, hdrError} {
		delete(m.Headers, k)
	}
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
}

// publishCopy publishes a copy of a failed message, to exchange x: a retry to the default
// exchange, or a dead letter.
func (c *Consumer) publishCopy(ctx context.Context, x string, m *Message) error {
	p := &Publisher{conn: c.conn, op: fmt.Sprintf("republish a failed message to exchange %q", x), opts: PublisherOptions{Exchange: x}}
	return p.Publish(ctx, m)
}
