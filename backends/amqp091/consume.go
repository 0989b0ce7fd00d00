package amqp091

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/rabbitargs"
)

// Get fetches one message with basic.get on a channel kept for gets; its unsettled
// messages are settled on that channel. A get from a queue that does not exist closes that
// channel, and RabbitMQ requeues the messages got on it and not yet settled.
func (c *Conn) Get(ctx context.Context, queue string, autoAck bool) (*backend.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.getMu.Lock()
	defer c.getMu.Unlock()
	if c.get == nil || c.get.IsClosed() {
		ch, err := c.openChannel(ctx)
		if err != nil {
			return nil, err
		}
		c.get = ch
	}
	ch := c.get
	var d amqp.Delivery
	var ok bool
	c.getting.Store(&queue)
	err, abandoned := call(ctx, func() error {
		var err error
		d, ok, err = ch.Get(queue, autoAck)
		return err
	})
	if abandoned {
		go ch.Close() // a message it got meanwhile goes back to the queue
		c.get = nil
		return nil, err
	}
	if err != nil {
		if ch.IsClosed() {
			c.get = nil
		}
		if c.conn.IsClosed() {
			return nil, refusedGet(queue, c.lostUnder(func(m *malformed) bool { return m.get }))
		}
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	var st *settler
	if !autoAck {
		st = &settler{c: c, ch: ch, tag: d.DeliveryTag}
	}
	return delivery(&d, st), nil
}

// Consume subscribes to a queue on a channel of its own, with basic.qos set to the
// prefetch.
func (c *Conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	if opts.Prefetch == 0 {
		opts.Prefetch = c.opts.Prefetch
	}
	s := &subscription{c: c, opts: opts, tag: opts.Tag}
	if s.tag == "" {
		s.tag = fmt.Sprintf("carrot-%d", tagSeq.Add(1))
	}
	c.subsMu.Lock()
	c.subs[s.tag] = s
	c.subsMu.Unlock()
	if err := s.subscribe(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// refusedGet returns the error of a basic.get that the connection ended under: err, or,
// when RabbitMQ closed the connection with 540 NOT_IMPLEMENTED, as it does for a
// basic.get from a stream, an Unsupported error, which the core does not retry on the
// next connection (where the get would end it again).
func refusedGet(queue string, err error) error {
	if ae, ok := errors.AsType[*amqp.Error](err); ok && ae.Code == amqp.NotImplemented {
		return backend.Errorf(backend.Unsupported, "carrot/amqp091: RabbitMQ cannot get a message from queue %q (a stream is read by consuming): %w", queue, ae)
	}
	return err
}

// subscription is a consumer on its own channel.
type subscription struct {
	c    *Conn
	opts backend.ConsumeOptions
	tag  string

	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	acks       *acker // of ch

	poisoned atomic.Bool // the connection ended on a message of this subscription
}

var tagSeq atomic.Uint64

// subscribe opens a channel and starts consuming on it, returning early if ctx ends
// first (the channel is then closed).
func (s *subscription) subscribe(ctx context.Context) error {
	ch, err := s.c.openChannel(ctx)
	if err != nil {
		return err
	}
	var deliveries <-chan amqp.Delivery
	err, abandoned := call(ctx, func() error {
		prefetchSize, global := 0, false
		if !s.opts.AutoAck {
			if err := ch.Qos(s.opts.Prefetch, prefetchSize, global); err != nil {
				return err
			}
		}
		exclusive, noLocal, noWait := false, false, false
		var args amqp.Table
		if v, ok := rabbitargs.Offset(s.opts.Offset); ok {
			args = amqp.Table{"x-stream-offset": v} // a time.Time goes as a timestamp
		}
		var err error
		deliveries, err = ch.Consume(s.opts.Queue, s.tag, s.opts.AutoAck, exclusive, noLocal, noWait, args)
		return err
	})
	if err != nil {
		go ch.Close() // an abandoned consume ends with it
		if abandoned {
			return err
		}
		return s.c.channelError(err)
	}
	s.ch, s.deliveries = ch, deliveries
	if !s.opts.AutoAck {
		s.acks = newAcker(ch, s.opts.Prefetch, s.c.opts.AckDelay)
	}
	return nil
}

// channelError returns err, or the connection's error if the connection ended under it.
func (c *Conn) channelError(err error) error {
	if c.conn.IsClosed() && channelGone(err) {
		return c.gone()
	}
	return err
}

// Receive returns the next delivery. When the broker cancels the consumer or closes its
// channel, it subscribes again on a new channel; if the queue is gone, that is a NotFound
// error. When the connection ends, it returns an Unavailable error, or a Malformed one if
// amqp091-go could not parse a message of this subscription.
func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	for {
		if s.deliveries == nil {
			if err := s.subscribe(ctx); err != nil {
				return nil, err
			}
		}
		select {
		case d, ok := <-s.deliveries:
			if ok {
				var st *settler
				if !s.opts.AutoAck {
					st = &settler{c: s.c, tag: d.DeliveryTag, acks: s.acks}
				}
				return delivery(&d, st), nil
			}
			// Closed by the broker (a queue deleted), or with the connection: the old
			// channel's unsettled messages are requeued. Its acks waiting are sent first,
			// and none after the close.
			ch, acks := s.ch, s.acks
			go func() {
				if acks != nil {
					acks.end()
				}
				ch.Close()
			}()
			s.ch, s.deliveries, s.acks = nil, nil, nil
			if s.c.conn.IsClosed() {
				return nil, s.c.lostUnder(func(*malformed) bool { return s.poisoned.Load() })
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close sends the acks waiting to be sent, then cancels the consumer and closes its
// channel; RabbitMQ requeues what it delivered and was not settled.
func (s *subscription) Close() error {
	s.c.subsMu.Lock()
	delete(s.c.subs, s.tag)
	s.c.subsMu.Unlock()
	if s.ch == nil || s.c.conn.IsClosed() {
		return nil
	}
	if s.acks != nil {
		s.acks.close()
	}
	err := s.ch.Close()
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}

// settler acks, requeues or rejects one delivery on the channel that delivered it: at
// once for a get, through the channel's acker for a subscription.
type settler struct {
	c    *Conn
	ch   *amqp.Channel // of a get
	tag  uint64
	acks *acker // of a subscription's channel, nil for gets
}

func (s *settler) Settle(ctx context.Context, o backend.Outcome) error {
	if s.c.conn.IsClosed() {
		return backend.Errorf(backend.Unavailable, "carrot/amqp091: the connection that delivered the message ended; RabbitMQ requeued it: %w", s.c.gone())
	}
	if s.acks != nil {
		return s.acks.settle(s.tag, o)
	}
	return settleErr(send(s.ch, s.tag, o))
}

// send sends outcome o of the delivery with tag on ch, an ack for that delivery alone.
func send(ch *amqp.Channel, tag uint64, o backend.Outcome) error {
	switch o {
	case backend.Ack:
		multiple := false
		return ch.Ack(tag, multiple)
	case backend.Requeue, backend.Reject:
		return ch.Reject(tag, o == backend.Requeue)
	}
	return backend.Errorf(backend.Invalid, "carrot/amqp091: unknown outcome %v", o)
}

// settleErr classifies the error of settling on a channel: one that closed is Unavailable,
// since RabbitMQ requeued what it delivered.
func settleErr(err error) error {
	if err != nil && channelGone(err) {
		return backend.Errorf(backend.Unavailable, "carrot/amqp091: the channel that delivered the message closed; RabbitMQ requeued it: %w", err)
	}
	return err
}

// delivery converts an amqp091-go delivery.
func delivery(d *amqp.Delivery, s *settler) *backend.Delivery {
	bd := &backend.Delivery{
		Message: backend.Message{
			Body:            d.Body,
			RoutingKey:      d.RoutingKey,
			ContentType:     d.ContentType,
			ContentEncoding: d.ContentEncoding,
			Headers:         headers(d.Headers),
			Persistent:      d.DeliveryMode == amqp.Persistent,
			Priority:        d.Priority,
			MessageID:       d.MessageId,
			CorrelationID:   d.CorrelationId,
			ReplyTo:         d.ReplyTo,
			Type:            d.Type,
			AppID:           d.AppId,
			UserID:          d.UserId,
		},
		Exchange:    d.Exchange,
		Redelivered: d.Redelivered,
		Raw:         *d,
	}
	if bd.Body == nil {
		bd.Body = []byte{}
	}
	if !d.Timestamp.IsZero() {
		bd.Timestamp = d.Timestamp.UTC()
	}
	if ms, err := strconv.ParseInt(d.Expiration, 10, 64); err == nil && ms > 0 {
		bd.Expiration = time.Duration(ms) * time.Millisecond
	}
	// Quorum queues count earlier failed deliveries in x-delivery-count, and streams
	// give each message's offset in x-stream-offset: the broker's, not the publisher's
	// headers, they become DeliveryCount and Offset.
	if n, ok := bd.Headers["x-delivery-count"].(int64); ok {
		bd.DeliveryCount = int(n) + 1
		delete(bd.Headers, "x-delivery-count")
	}
	if n, ok := bd.Headers["x-stream-offset"].(int64); ok {
		bd.Offset, bd.InStream = n, true
		delete(bd.Headers, "x-stream-offset")
	}
	if len(bd.Headers) == 0 {
		bd.Headers = nil
	}
	if s != nil {
		bd.Settler = s
	}
	return bd
}

// headers converts an AMQP table to carrot's header types: every integer to int64, every
// float to float64, timestamps to UTC, decimals to float64, nested tables (such as
// RabbitMQ's x-death) to map[string]any and arrays to []any, converted inside too.
func headers(t amqp.Table) map[string]any {
	if len(t) == 0 {
		return nil
	}
	return nestedTable(t)
}

// nestedTable converts a table, empty or not, to map[string]any.
func nestedTable(t amqp.Table) map[string]any {
	h := make(map[string]any, len(t))
	for k, v := range t {
		h[k] = headerValue(v)
	}
	return h
}

func headerValue(v any) any {
	switch v := v.(type) {
	case int8:
		return int64(v)
	case uint8:
		return int64(v)
	case int16:
		return int64(v)
	case uint16:
		return int64(v)
	case int32:
		return int64(v)
	case uint32:
		return int64(v)
	case int:
		return int64(v)
	case float32:
		return float64(v)
	case time.Time:
		return v.UTC()
	case amqp.Decimal:
		return float64(v.Value) / pow10(v.Scale)
	case amqp.Table:
		return nestedTable(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = headerValue(x)
		}
		return out
	}
	return v
}

func pow10(n uint8) float64 {
	f := 1.0
	for range n {
		f *= 10
	}
	return f
}
