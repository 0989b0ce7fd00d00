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
	for {
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
			if channelGone(err) && !ch.IsClosed() {
				return nil, err
			}
			c.get = nil
			if channelGone(err) && ctx.Err() == nil && !c.isClosed() {
				continue // the connection went: get again on the next one
			}
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		var s *settler
		if !autoAck {
			s = &settler{ch: ch, tag: d.DeliveryTag}
		}
		return delivery(&d, s), nil
	}
}

// Consume subscribes to a queue on a channel of its own, with basic.qos set to the
// prefetch. The subscription resubscribes after a reconnection.
func (c *Conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	if opts.Prefetch == 0 {
		opts.Prefetch = c.opts.Prefetch
	}
	s := &subscription{c: c, opts: opts}
	if err := s.subscribe(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// subscription is a consumer on its own channel.
type subscription struct {
	c    *Conn
	opts backend.ConsumeOptions

	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery

	closed atomic.Bool
}

var tagSeq atomic.Uint64

// subscribe opens a channel and starts consuming on it.
func (s *subscription) subscribe(ctx context.Context) error {
	for {
		ch, err := s.c.openChannel(ctx)
		if err != nil {
			return err
		}
		prefetchSize, global := 0, false
		if !s.opts.AutoAck {
			if err := ch.Qos(s.opts.Prefetch, prefetchSize, global); err != nil {
				ch.Close()
				if channelGone(err) && ctx.Err() == nil {
					continue
				}
				return err
			}
		}
		tag := s.opts.Tag
		if tag == "" {
			tag = fmt.Sprintf("carrot-%d", tagSeq.Add(1))
		}
		exclusive, noLocal, noWait := false, false, false
		deliveries, err := ch.Consume(s.opts.Queue, tag, s.opts.AutoAck, exclusive, noLocal, noWait, nil)
		if err != nil {
			ch.Close()
			if channelGone(err) && ctx.Err() == nil {
				continue
			}
			return err
		}
		s.ch, s.deliveries = ch, deliveries
		return nil
	}
}

// Receive returns the next delivery. When the channel or connection closes, or the broker
// cancels the consumer, it subscribes again; if the queue is gone, that is a NotFound
// error.
func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	for {
		if s.deliveries == nil {
			if err := s.subscribe(ctx); err != nil {
				return nil, err
			}
		}
		select {
		case d, ok := <-s.deliveries:
			if !ok {
				// Closed by the broker (a reconnection, or a queue deleted), or with
				// the connection: the old channel's unsettled messages are requeued.
				go s.ch.Close()
				s.ch, s.deliveries = nil, nil
				continue
			}
			var st *settler
			if !s.opts.AutoAck {
				st = &settler{ch: s.ch, tag: d.DeliveryTag, sub: s}
			}
			return delivery(&d, st), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close cancels the consumer and closes its channel; RabbitMQ requeues what it delivered
// and was not settled.
func (s *subscription) Close() error {
	s.closed.Store(true)
	if s.ch == nil {
		return nil
	}
	err := s.ch.Close()
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	if s.opts.Queue != "" {
		if q, ok := s.c.topo.Queue(s.opts.Queue); ok && q.AutoDelete {
			s.c.topo.DeleteQueue(s.opts.Queue) // RabbitMQ deletes it with its last consumer
		}
	}
	return err
}

// settler acks, requeues or rejects one delivery on the channel that delivered it.
type settler struct {
	ch  *amqp.Channel
	tag uint64
	sub *subscription // nil for gets
}

func (s *settler) Settle(ctx context.Context, o backend.Outcome) error {
	if s.sub != nil && s.sub.closed.Load() {
		return backend.Errorf(backend.Closed, "carrot/amqp091: the consumer closed; RabbitMQ requeued the message")
	}
	var err error
	multiple := false
	switch o {
	case backend.Ack:
		err = s.ch.Ack(s.tag, multiple)
	case backend.Requeue:
		err = s.ch.Reject(s.tag, true)
	case backend.Reject:
		err = s.ch.Reject(s.tag, false)
	default:
		return backend.Errorf(backend.Invalid, "carrot/amqp091: unknown outcome %v", o)
	}
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
	// Quorum queues count earlier failed deliveries in x-delivery-count.
	if n, ok := bd.Headers["x-delivery-count"].(int64); ok {
		bd.DeliveryCount = int(n) + 1
	}
	if s != nil {
		bd.Settler = s
	}
	return bd
}

// headers converts an AMQP table to carrot's header types: every integer to int64, every
// float to float64, timestamps to UTC; nested tables and arrays, which carrot does not
// publish but other clients and RabbitMQ itself (x-death) do, are converted inside too.
func headers(t amqp.Table) map[string]any {
	if len(t) == 0 {
		return nil
	}
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
		return headers(v)
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
