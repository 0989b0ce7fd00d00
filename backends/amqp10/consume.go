package amqp10

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/rabbitargs"
)

// Consume attaches a receiver to "/queues/NAME" on a session of its own, with link credit
// as the prefetch: the broker sends no more unsettled messages than the credit, and
// go-amqp gives credit back as messages are settled.
func (c *Conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	if opts.Prefetch == 0 {
		opts.Prefetch = c.opts.Prefetch
	}
	s := &subscription{c: c, opts: opts}
	if err := s.attach(ctx); err != nil {
		return nil, err
	}
	c.subsMu.Lock()
	c.subs[s] = struct{}{}
	c.subsMu.Unlock()
	return s, nil
}

// subscription is a consumer of one queue.
type subscription struct {
	c        *Conn
	opts     backend.ConsumeOptions
	session  *amqp.Session
	receiver *amqp.Receiver
	closed   chan struct{}
	quorum   bool        // the queue counts deliveries
	poisoned atomic.Bool // the connection ended on a message of this queue the broker could not convert
}

// attach attaches the receiver. After a connection ended on a message the broker could
// not convert, receivers attach one at a time, each followed by a probe window, so that
// the next such end names its receiver.
func (s *subscription) attach(ctx context.Context) error {
	info, err := s.c.queueInfo(ctx, s.opts.Queue)
	if err != nil {
		return err
	}
	s.quorum = info.quorum
	if probe := s.c.probe; probe != nil {
		select {
		case probe <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := s.attachLink(ctx); err != nil {
			<-probe
			return err
		}
		s.c.probing.Store(s)
		time.AfterFunc(probeWindow, func() {
			s.c.probing.CompareAndSwap(s, nil)
			<-probe
		})
		return nil
	}
	return s.attachLink(ctx)
}

func (s *subscription) attachLink(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		sess, err := s.c.session(ctx)
		if err != nil {
			return err
		}
		mode := amqp.SenderSettleModeUnsettled
		if s.opts.AutoAck {
			mode = amqp.SenderSettleModeSettled
		}
		var filters []amqp.LinkFilter
		if v, ok := rabbitargs.Offset(s.opts.Offset); ok {
			filters = append(filters, amqp.NewLinkFilter(streamOffsetFilter, 0, v))
		}
		r, err := sess.NewReceiver(ctx, "/queues/"+escape(s.opts.Queue), &amqp.ReceiverOptions{
			Credit:                    int32(s.opts.Prefetch),
			RequestedSenderSettleMode: mode.Ptr(),
			SettlementMode:            amqp.ReceiverSettleModeFirst.Ptr(),
			Filters:                   filters,
		})
		if err != nil {
			s.c.closeSession(sess)
			if gerr := s.c.gone(); gerr != nil {
				return gerr
			}
			if attempt < 3 && s.c.ErrorCode(err) == backend.Unavailable && ctx.Err() == nil {
				continue // the broker ended the session: attach on a new one
			}
			return err
		}
		s.session, s.receiver = sess, r
		if s.closed == nil {
			s.closed = make(chan struct{})
		}
		return nil
	}
}

// Receive returns the next message. When the broker detaches the link, it attaches again,
// and returns a NotFound error if the queue is gone; when the connection ends, it returns
// an Unavailable error.
func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	for {
		if s.receiver == nil {
			if err := s.attach(ctx); err != nil {
				return nil, err
			}
		}
		r := s.receiver
		msg, err := r.Receive(ctx, nil)
		if err == nil {
			var st *settler
			if !s.opts.AutoAck {
				st = &settler{receiver: r, msg: msg, closed: s.closed}
			}
			return delivery(msg, st, s.quorum), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.c.closeSession(s.session)
		s.receiver, s.session = nil, nil
		if gerr := s.c.gone(); gerr != nil {
			if s.poisoned.Load() {
				return nil, s.c.Err() // Malformed
			}
			return nil, gerr
		}
		if code := s.c.ErrorCode(err); code != backend.Unavailable && code != backend.NotFound {
			return nil, err
		}
		// Gone with the connection, or detached by the broker (a deleted queue: the
		// attach that follows says so).
	}
}

// Close detaches the receiver; RabbitMQ requeues what it delivered and was not settled.
func (s *subscription) Close() error {
	s.c.subsMu.Lock()
	delete(s.c.subs, s)
	s.c.subsMu.Unlock()
	if s.closed != nil {
		close(s.closed)
	}
	if s.receiver == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.receiver.Close(ctx)
	err := s.c.endSession(ctx, s.session)
	if linkGone(err) {
		err = nil
	}
	return err
}

// settler settles one delivery on the link that delivered it.
type settler struct {
	receiver *amqp.Receiver
	msg      *amqp.Message
	closed   <-chan struct{} // the subscription's, nil for gets
}

// Settle accepts (ack), modifies with delivery-failed (requeue: the broker counts a
// failed delivery where it can) or rejects (dead-letter or drop).
func (st *settler) Settle(ctx context.Context, o backend.Outcome) error {
	select {
	case <-st.closed:
		return backend.Errorf(backend.Closed, "carrot/amqp10: the consumer closed; the broker requeued the message")
	default:
	}
	var err error
	switch o {
	case backend.Ack:
		err = st.receiver.AcceptMessage(ctx, st.msg)
	case backend.Requeue:
		err = st.receiver.ModifyMessage(ctx, st.msg, &amqp.ModifyMessageOptions{DeliveryFailed: true})
	case backend.Reject:
		err = st.receiver.RejectMessage(ctx, st.msg, nil)
	default:
		return backend.Errorf(backend.Invalid, "carrot/amqp10: unknown outcome %v", o)
	}
	if err != nil && linkGone(err) {
		return backend.Errorf(backend.Unavailable, "carrot/amqp10: the link that delivered the message ended; the broker requeued it: %w", err)
	}
	return err
}

// streamOffsetFilter is the name and descriptor of RabbitMQ's source filter that says
// where a receiver starts reading a stream.
const streamOffsetFilter = "rabbitmq:stream-offset-spec"

// delivery converts a received message. RabbitMQ annotates messages with the exchange
// and routing key they were published with.
func delivery(m *amqp.Message, st *settler, quorum bool) *backend.Delivery {
	d := &backend.Delivery{Raw: m}
	if len(m.Data) == 1 {
		d.Body = m.Data[0]
	} else {
		d.Body = bytes.Join(m.Data, nil)
	}
	if d.Body == nil {
		switch v := m.Value.(type) {
		case []byte:
			d.Body = v
		case string:
			d.Body = []byte(v)
		default:
			d.Body = []byte{}
		}
	}
	if h := m.Header; h != nil {
		d.Persistent = h.Durable
		d.Priority = h.Priority
		d.Expiration = h.TTL
		d.Redelivered = !h.FirstAcquirer
	}
	if p := m.Properties; p != nil {
		d.MessageID = id(p.MessageID)
		d.CorrelationID = id(p.CorrelationID)
		if p.ReplyTo != nil {
			d.ReplyTo = *p.ReplyTo
		}
		if p.ContentType != nil {
			d.ContentType = *p.ContentType
		}
		if p.ContentEncoding != nil {
			d.ContentEncoding = *p.ContentEncoding
		}
		if p.CreationTime != nil {
			d.Timestamp = p.CreationTime.UTC()
		}
		d.UserID = string(p.UserID)
		if p.GroupID != nil {
			d.AppID = *p.GroupID
		}
	}
	if a := m.Annotations; a != nil {
		d.Exchange, _ = a["x-exchange"].(string)
		d.RoutingKey, _ = a["x-routing-key"].(string)
		d.Type, _ = a[annotationType].(string)
		if off, ok := a["x-stream-offset"]; ok { // streams give each message's offset
			d.Offset, d.InStream = integer(off), true
		}
	}
	if quorum { // quorum queues count earlier deliveries in x-delivery-count, absent at first
		d.DeliveryCount = int(integer(m.Annotations["x-delivery-count"])) + 1
	}
	if len(m.ApplicationProperties) > 0 {
		d.Headers = make(map[string]any, len(m.ApplicationProperties))
		for k, v := range m.ApplicationProperties {
			d.Headers[k] = headerValue(v)
		}
	}
	if st != nil {
		d.Settler = st
	}
	return d
}

// id renders a message or correlation id, which AMQP 1.0 lets be a string, a number, a
// UUID or bytes.
func id(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	case amqp.UUID:
		return v.String()
	case uint64:
		return strconv.FormatUint(v, 10)
	}
	return ""
}

// integer returns the value of an AMQP integer of any width.
func integer(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int16:
		return int64(n)
	case int8:
		return int64(n)
	case uint64:
		return int64(n)
	case uint32:
		return int64(n)
	case uint16:
		return int64(n)
	case uint8:
		return int64(n)
	}
	return 0
}

// headerValue converts an application property to carrot's header types. Maps and lists,
// which AMQP 1.0 does not allow there but RabbitMQ 4 passes on from other AMQP 1.0
// clients, become map[string]any (keys that are not strings or symbols formatted) and
// []any, converted inside too.
func headerValue(v any) any {
	switch n := v.(type) {
	case int8, int16, int32, uint8, uint16, uint32, uint64:
		return integer(n)
	case float32:
		return float64(n)
	case time.Time:
		return n.UTC()
	case amqp.Symbol:
		return string(n)
	case amqp.UUID:
		return n.String()
	case map[string]any:
		t := make(map[string]any, len(n))
		for k, e := range n {
			t[k] = headerValue(e)
		}
		return t
	case map[any]any:
		t := make(map[string]any, len(n))
		for k, e := range n {
			key, ok := headerValue(k).(string)
			if !ok {
				key = fmt.Sprint(k)
			}
			t[key] = headerValue(e)
		}
		return t
	case []any:
		l := make([]any, len(n))
		for i, e := range n {
			l[i] = headerValue(e)
		}
		return l
	}
	return v
}

// getter fetches from one queue through a receiver with manual credit, on a session of
// its own; the messages it gets are settled on it.
type getter struct {
	session  *amqp.Session
	receiver *amqp.Receiver
}

func (c *Conn) dropGetter(queue string) {
	c.getMu.Lock()
	defer c.getMu.Unlock()
	if g := c.getters[queue]; g != nil {
		c.closeSession(g.session)
		delete(c.getters, queue)
	}
}

// How long Get waits for a message before it drains the credit: for one the broker
// announced (they arrive in about a millisecond), and when it announced none, long enough
// for the credit to reach the broker before the drain does.
const (
	fetchWait = 200 * time.Millisecond
	emptyWait = 20 * time.Millisecond
)

// Get gives the queue's receiver one credit and waits for a message: long when the
// broker says the queue holds some, briefly when it says none (its count of a quorum
// queue lags). If none came, it drains the credit: a message the broker sent meanwhile
// arrives before its answer to the drain.
func (c *Conn) Get(ctx context.Context, queue string, autoAck bool) (*backend.Delivery, error) {
	info, err := c.queueInfo(ctx, queue)
	if err != nil {
		return nil, err
	}
	wait := fetchWait
	if info.messages == 0 {
		wait = emptyWait
	}
	c.getMu.Lock()
	defer c.getMu.Unlock()
	for attempt := 0; ; attempt++ {
		g, err := c.getter(ctx, queue)
		if err != nil {
			return nil, err
		}
		msg, err := g.take(ctx, wait)
		if err != nil {
			c.closeSession(g.session)
			delete(c.getters, queue)
			if gerr := c.gone(); gerr != nil {
				return nil, gerr
			}
			if attempt >= 3 || ctx.Err() != nil || c.ErrorCode(err) != backend.Unavailable {
				return nil, err
			}
			continue // the broker ended the session: attach on a new one
		}
		if msg == nil {
			return nil, nil
		}
		st := &settler{receiver: g.receiver, msg: msg}
		if autoAck {
			if err := st.Settle(ctx, backend.Ack); err != nil {
				return nil, err
			}
			st = nil
		}
		return delivery(msg, st, info.quorum), nil
	}
}

// queueInfo is what the broker says of a queue.
type queueInfo struct {
	messages int
	quorum   bool
}

// queueInfo asks the broker about a queue; a missing one is a NotFound error.
func (c *Conn) queueInfo(ctx context.Context, queue string) (queueInfo, error) {
	path := "/queues/" + escape(queue)
	r, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return queueInfo{}, err
	}
	if err := check("GET", path, r, 200); err != nil {
		return queueInfo{}, err
	}
	info := queueInfo{messages: count(r.body)}
	if m, ok := r.body.(map[string]any); ok {
		info.quorum = m["type"] == "quorum"
	}
	return info, nil
}

// getter returns the queue's receiver for gets, attaching one if needed. The caller
// holds getMu.
func (c *Conn) getter(ctx context.Context, queue string) (*getter, error) {
	if g := c.getters[queue]; g != nil {
		return g, nil
	}
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.NewReceiver(ctx, "/queues/"+escape(queue), &amqp.ReceiverOptions{
		Credit:                    -1, // manual
		RequestedSenderSettleMode: amqp.SenderSettleModeUnsettled.Ptr(),
		SettlementMode:            amqp.ReceiverSettleModeFirst.Ptr(),
	})
	if err != nil {
		c.closeSession(s)
		return nil, err
	}
	g := &getter{session: s, receiver: r}
	c.getters[queue] = g
	return g, nil
}

// take gets one message with one credit, or nil when none comes within wait.
func (g *getter) take(ctx context.Context, wait time.Duration) (*amqp.Message, error) {
	if m := g.receiver.Prefetched(); m != nil {
		return m, nil
	}
	if err := g.receiver.IssueCredit(1); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	msg, err := g.receiver.Receive(wctx, nil)
	cancel()
	if err == nil {
		return msg, nil
	}
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return nil, err
	}
	// Nothing came: take the credit back. A message the broker sent meanwhile arrives
	// before its answer to the drain.
	if err := g.receiver.DrainCredit(ctx, nil); err != nil {
		return nil, err
	}
	return g.receiver.Prefetched(), nil
}
