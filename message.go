package carrot

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/carrot-go/carrot/backend"
)

// Table holds message headers and declaration arguments.
//
// Header values are of the types every backend carries unchanged: string, []byte, bool,
// int64, float64, time.Time and nil; and, on backends with the NestedHeaders capability
// (see [Capabilities]), nested tables (map[string]any) and lists ([]any) of values of these
// types, nested at most 32 deep, as other AMQP 0-9-1 clients send them (Kombu's and
// Celery's dicts and lists). carrot converts the other integer and float types (int,
// uint8, float32, ...) to int64 and float64 when a message is published, a nested Table to
// map[string]any, and time.Time to UTC whole seconds, the precision of AMQP 0-9-1; other
// types, floats that are NaN or infinite (which RabbitMQ cannot read), and keys and
// strings that are not valid UTF-8 (which the AMQP protocols forbid; carry binary data as
// []byte) are [ErrInvalid] errors, and a table or list on a backend without NestedHeaders
// an [ErrUnsupported] error naming the header. Received messages hold the same types:
// every integer is an int64, whatever width the publisher gave it (the AMQP backends send
// integers that fit in 32 bits as signed 32-bit values, which every client reads as they
// were, and the others as 64-bit ones).
type Table map[string]any

// DeliveryMode says whether a message is written to disk by the broker.
type DeliveryMode uint8

const (
	// Transient messages are kept in memory only and lost if the broker restarts.
	Transient DeliveryMode = 1
	// Persistent messages survive a broker restart, in a durable queue. The zero
	// DeliveryMode of a published message means Persistent.
	Persistent DeliveryMode = 2
)

// Message is a message to publish, or one received from a queue.
//
// Received messages must be settled exactly once, with [Message.Ack], [Message.Requeue] or
// [Message.Reject] (unless the consumer uses NoAck). Until then the broker counts them as
// in flight; if the consumer or connection closes first, they go back to their queue.
type Message struct {
	Body            []byte
	RoutingKey      string // when publishing, empty means the Publisher's routing key
	ContentType     string // a MIME type such as "application/json"; it picks the codec for Decode
	ContentEncoding string
	Headers         Table
	DeliveryMode    DeliveryMode  // Persistent when zero
	Priority        uint8         // honoured by queues with a MaxPriority
	Expiration      time.Duration // the message expires after this long in a queue; rounded up to milliseconds
	MessageID       string
	CorrelationID   string
	ReplyTo         string
	Timestamp       time.Time // carried in whole seconds
	Type            string    // the message's type name, such as "order.created" (Kombu and Celery set it)
	AppID           string    // the application that published the message

	// UserID is the user that published the message. RabbitMQ validates it: a message
	// whose UserID is not the name the connection logged in with is refused, and carrot
	// refuses it before sending ([ErrInvalid]) where the backend knows that name (see
	// [Capabilities].UserID); the other backends carry any UserID.
	UserID string

	// Delay, when publishing, keeps the message out of sight for this long: it is
	// delivered no sooner, and within the backend's documented precision after. It needs
	// the Delay capability; see [Capabilities].
	Delay time.Duration

	d *delivery // set on received messages
}

// delivery is what carrot knows of a received message beyond its content.
type delivery struct {
	queue       string
	exchange    string
	redelivered bool
	count       int
	offset      int64 // in its stream, if inStream
	inStream    bool
	settler     backend.Settler // nil when delivered with auto-ack
	raw         any
	conn        *Conn
	gen         *generation     // the connection that delivered it
	accept      map[string]bool // nil accepts every registered codec
	settled     atomic.Bool
	returned    atomic.Bool                                     // requeued by its consumer's Close, not by the caller
	onSettle    func(*Message)                                  // bookkeeping of the consumer that received it, may be nil
	observe     func(context.Context, *Message, Outcome, error) // ConsumerOptions.OnSettle, may be nil
}

// Exchange returns the exchange a received message was published to.
func (m *Message) Exchange() string {
	if m.d == nil {
		return ""
	}
	return m.d.exchange
}

// Queue returns the queue a received message came from.
func (m *Message) Queue() string {
	if m.d == nil {
		return ""
	}
	return m.d.queue
}

// Redelivered reports whether a received message may have been delivered before: it was
// requeued, or its previous consumer went away before settling it.
func (m *Message) Redelivered() bool { return m.d != nil && m.d.redelivered }

// DeliveryCount returns how many times the message has been delivered, this time included:
// 1 for a message never delivered before, the count carrot keeps for a message a
// [RetryPolicy] retried, and otherwise the broker's count, or 0 when the backend does not
// count (see [Capabilities].DeliveryCount) and the message was redelivered.
func (m *Message) DeliveryCount() int {
	switch {
	case m.d == nil:
		return 0
	case m.d.count == 0 && !m.d.redelivered:
		return 1 // never delivered before
	}
	return m.d.count
}

// StreamOffset returns the offset of a message received from a stream queue, and
// whether it came from one: the position to resume at, with [FromOffset], after the
// messages handled so far.
func (m *Message) StreamOffset() (int64, bool) {
	if m.d == nil || !m.d.inStream {
		return 0, false
	}
	return m.d.offset, true
}

// Ack acknowledges a received message: it was handled and leaves its queue. It returns
// [ErrAlreadySettled] if the message was settled before, and [ErrClosed] if it was
// fetched and its Consumer closed since, putting it back in its queue. On a message
// consumed with NoAck, which the broker acknowledged on delivery, Ack does nothing.
//
// A backend may send an ack a little later, with others (the amqp091 backend within its
// ack_delay, 10ms by default, as one basic.ack with multiple set; the redis backend with
// the consumer's next read, within its block time): an Ack that returned nil is applied at the latest when the Consumer's Close or
// Shutdown returns. An ack that a lost connection took with it is never applied, and its
// message comes again, flagged redelivered: it is never lost.
func (m *Message) Ack(ctx context.Context) error { return m.settle(ctx, backend.Ack, Acked) }

// Requeue puts a received message back in its queue, to be delivered again with the
// redelivered flag set.
func (m *Message) Requeue(ctx context.Context) error {
	return m.settle(ctx, backend.Requeue, Requeued)
}

// Reject removes a received message from its queue without handling it: the broker
// dead-letters it if the queue has a dead-letter exchange, and drops it otherwise.
func (m *Message) Reject(ctx context.Context) error { return m.settle(ctx, backend.Reject, Rejected) }

// settle settles m with o, and reports it to the consumer's OnSettle as out, unless out
// is zero.
func (m *Message) settle(ctx context.Context, o backend.Outcome, out Outcome) error {
	op := o.String()
	if m.d == nil {
		return invalidf(op, "message was not received from a queue")
	}
	if m.d.settler == nil {
		if o == backend.Ack && m.d.settled.CompareAndSwap(false, true) {
			return nil // NoAck: the broker acknowledged it already
		}
		return &Error{Op: op, Kind: ErrAlreadySettled, Err: fmt.Errorf("message was consumed with NoAck")}
	}
	if !m.d.settled.CompareAndSwap(false, true) {
		if m.d.returned.Load() {
			return &Error{Op: op, Kind: ErrClosed, Err: errors.New("its consumer closed and put the message back in its queue")}
		}
		return &Error{Op: op, Kind: ErrAlreadySettled}
	}
	if m.d.onSettle != nil {
		m.d.onSettle(m)
	}
	var err error
	if g := m.d.gen; g.done() {
		// The broker took the message back with the connection: it delivers it again.
		err = &Error{Op: op, Kind: ErrUnavailable, Err: fmt.Errorf("the connection that delivered the message was lost; the broker delivers it again: %w", g.b.Err())}
	} else {
		err = m.d.conn.wrap(ctx, op, g, m.d.settler.Settle(ctx, o))
	}
	if m.d.observe != nil && out != 0 {
		m.d.observe(ctx, m, out, err)
	}
	return err
}

// isSettled reports whether the message was settled by its handler or the broker.
func (m *Message) isSettled() bool { return m.d.settled.Load() }

// Decode decodes the body into v with the codec registered for the message's content type
// (see [RegisterCodec]). A message without a content type is raw bytes. If the consumer
// does not accept the content type, Decode returns a [*DecodeError] wrapping
// [ErrUnacceptable]. A message that does not decode can still be acked, requeued or
// rejected.
func (m *Message) Decode(v any) error {
	var accept map[string]bool
	if m.d != nil {
		accept = m.d.accept
	}
	return decode(m.ContentType, m.ContentEncoding, accept, m.Body, v)
}

// As sets *target to the backend's own delivery value, if it is of that type, and reports
// whether it did. Each backend's documentation lists the types.
func (m *Message) As(target any) bool {
	if m.d == nil || m.d.raw == nil || target == nil {
		return false
	}
	t := reflect.ValueOf(target)
	if t.Kind() != reflect.Pointer || t.IsNil() {
		return false
	}
	raw := reflect.ValueOf(m.d.raw)
	if !raw.Type().AssignableTo(t.Elem().Type()) {
		return false
	}
	t.Elem().Set(raw)
	return true
}

// received turns a backend delivery from the connection g into a Message.
func received(c *Conn, g *generation, d *backend.Delivery, queue string, accept map[string]bool, onSettle func(*Message), observe func(context.Context, *Message, Outcome, error)) *Message {
	mode := Transient
	if d.Persistent {
		mode = Persistent
	}
	r := &struct { // one allocation for both
		m Message
		d delivery
	}{}
	r.m = Message{
		Body:            d.Body,
		RoutingKey:      d.RoutingKey,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Headers:         Table(d.Headers),
		DeliveryMode:    mode,
		Priority:        d.Priority,
		Expiration:      d.Expiration,
		MessageID:       d.MessageID,
		CorrelationID:   d.CorrelationID,
		ReplyTo:         d.ReplyTo,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppID:           d.AppID,
		UserID:          d.UserID,
		d:               &r.d,
	}
	r.d = delivery{
		queue:       queue,
		exchange:    d.Exchange,
		redelivered: d.Redelivered,
		count:       d.DeliveryCount,
		offset:      d.Offset,
		inStream:    d.InStream,
		settler:     d.Settler,
		raw:         d.Raw,
		conn:        c,
		gen:         g,
		accept:      accept,
		onSettle:    onSettle,
		observe:     observe,
	}
	restoreRetried(&r.m)
	return &r.m
}

// backend validates m and converts it for the backend, applying the publisher's defaults.
func (m *Message) backend(op string, p *Publisher) (backend.Message, error) {
	var bm backend.Message
	key := m.RoutingKey
	if key == "" {
		key = p.opts.RoutingKey
	}
	if err := checkKey(op, key); err != nil {
		return bm, err
	}
	caps := p.conn.Capabilities()
	if max := caps.MaxBodySize; max > 0 && int64(len(m.Body)) > max {
		return bm, &Error{Op: op, Kind: ErrTooLarge, Err: fmt.Errorf("body is %d bytes, the broker accepts at most %d", len(m.Body), max)}
	}
	for _, s := range []struct{ name, v string }{
		{"content type", m.ContentType},
		{"content encoding", m.ContentEncoding},
		{"message id", m.MessageID},
		{"correlation id", m.CorrelationID},
		{"reply-to", m.ReplyTo},
		{"type", m.Type},
		{"app id", m.AppID},
		{"user id", m.UserID},
	} {
		if err := checkShort(op, s.name, s.v); err != nil {
			return bm, err
		}
	}
	if u := caps.UserID; u != "" && m.UserID != "" && m.UserID != u {
		return bm, invalidf(op, "user id %q is not %q, the user the connection logged in as: the broker refuses the message", m.UserID, u)
	}
	mode := m.DeliveryMode
	if mode == 0 {
		mode = p.opts.DeliveryMode
	}
	switch mode {
	case 0, Persistent:
		bm.Persistent = true
	case Transient:
	default:
		return bm, invalidf(op, "unknown delivery mode %d", mode)
	}
	if m.Expiration < 0 {
		return bm, invalidf(op, "expiration %v is negative", m.Expiration)
	}
	if m.Delay < 0 {
		return bm, invalidf(op, "delay %v is negative", m.Delay)
	}
	if m.Delay > 0 && !caps.Delay {
		return bm, unsupportedf(op, "the backend cannot delay messages")
	}
	if max := caps.MaxDelay; max > 0 && m.Delay > max {
		return bm, invalidf(op, "delay %v is longer than the backend's longest, %v", m.Delay, max)
	}
	bm.Delay = roundUp(m.Delay, time.Millisecond)
	if m.Expiration > 0 && !caps.Expiration {
		return bm, unsupportedf(op, "the backend does not support message expiration")
	}
	headers, nested, err := normalizeTable(m.Headers)
	if err != nil {
		return bm, invalidf(op, "header %w", err)
	}
	if nested != "" && !caps.NestedHeaders {
		return bm, unsupportedf(op, "header %q holds a table or a list, which the backend cannot carry", nested)
	}
	bm.Body = m.Body
	bm.RoutingKey = key
	bm.ContentType = m.ContentType
	bm.ContentEncoding = m.ContentEncoding
	bm.Headers = headers
	bm.Priority = m.Priority
	bm.Expiration = roundUp(m.Expiration, time.Millisecond)
	bm.MessageID = m.MessageID
	bm.CorrelationID = m.CorrelationID
	bm.ReplyTo = m.ReplyTo
	bm.Type = m.Type
	bm.AppID = m.AppID
	bm.UserID = m.UserID
	if !m.Timestamp.IsZero() {
		bm.Timestamp = m.Timestamp.UTC().Truncate(time.Second)
	}
	return bm, nil
}

func roundUp(d, unit time.Duration) time.Duration {
	if r := d % unit; r != 0 {
		return d + unit - r
	}
	return d
}

// maxNesting is how deep tables and lists may nest in headers, the headers table itself
// not counted: amqp091-go reads no deeper.
const maxNesting = 32

// normalizeTable returns a copy of t with every value converted to one of the types
// listed on Table, or an error naming the first key whose value cannot be. nested is the
// name of a header that holds a table or a list, if one does.
func normalizeTable(t Table) (out map[string]any, nested string, err error) {
	if len(t) == 0 {
		return nil, "", nil
	}
	out = make(map[string]any, len(t))
	for k, v := range t {
		if err := checkHeaderName(k); err != nil {
			return nil, "", err
		}
		nv, err := normalizeValue(v, 0)
		if err != nil {
			return nil, "", fmt.Errorf("%q: %w", k, err)
		}
		switch nv.(type) {
		case map[string]any, []any:
			if nested == "" || k < nested { // the first in order, for a stable error
				nested = k
			}
		}
		out[k] = nv
	}
	return out, nested, nil
}

// normalizeArgs is normalizeTable for declaration arguments, which take no tables or
// lists.
func normalizeArgs(t Table) (map[string]any, error) {
	out, nested, err := normalizeTable(t)
	if err == nil && nested != "" {
		err = fmt.Errorf("%q: a table or a list is not an argument any backend takes", nested)
	}
	return out, err
}

// checkHeaderName validates the name of a header or of an entry of a nested table: a
// short string of UTF-8.
func checkHeaderName(k string) error {
	if len(k) > maxName {
		return fmt.Errorf("name %.20q... is %d bytes long, more than %d", k, len(k), maxName)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("name %q is not valid UTF-8", k)
	}
	return nil
}

// finite returns f, or an error if it is NaN or infinite: RabbitMQ cannot read such a
// header (it closes the connection with an internal error), so no backend takes one.
func finite(f float64) (any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("value %v is not a finite number", f)
	}
	return f, nil
}

// normalizeValue converts v, depth tables or lists deep in the headers, to one of the
// types listed on Table.
func normalizeValue(v any, depth int) (any, error) {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return nil, errors.New("string is not valid UTF-8 (use []byte for binary data)")
		}
		return v, nil
	case nil, bool, int64:
		return v, nil
	case []byte:
		return append([]byte{}, v...), nil
	case time.Time:
		return v.UTC().Truncate(time.Second), nil
	case int:
		return int64(v), nil
	case int8:
		return int64(v), nil
	case int16:
		return int64(v), nil
	case int32:
		return int64(v), nil
	case uint8:
		return int64(v), nil
	case uint16:
		return int64(v), nil
	case uint32:
		return int64(v), nil
	case uint:
		if uint64(v) > math.MaxInt64 {
			return nil, fmt.Errorf("value %d does not fit in an int64", v)
		}
		return int64(v), nil
	case uint64:
		if v > math.MaxInt64 {
			return nil, fmt.Errorf("value %d does not fit in an int64", v)
		}
		return int64(v), nil
	case float32:
		return finite(float64(v))
	case float64:
		return finite(v)
	case Table:
		return normalizeNested(v, depth)
	case map[string]any:
		return normalizeNested(v, depth)
	case []any:
		if depth >= maxNesting {
			return nil, fmt.Errorf("tables and lists nest more than %d deep", maxNesting)
		}
		out := make([]any, len(v))
		for i, e := range v {
			ne, err := normalizeValue(e, depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = ne
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported type %T (want string, []byte, bool, an integer, a float, time.Time, nil, a table (map[string]any) or a list ([]any))", v)
}

// normalizeNested converts a table nested depth tables or lists deep in the headers.
func normalizeNested(t map[string]any, depth int) (any, error) {
	if depth >= maxNesting {
		return nil, fmt.Errorf("tables and lists nest more than %d deep", maxNesting)
	}
	out := make(map[string]any, len(t))
	for k, v := range t {
		if err := checkHeaderName(k); err != nil {
			return nil, err
		}
		nv, err := normalizeValue(v, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", k, err)
		}
		out[k] = nv
	}
	return out, nil
}
