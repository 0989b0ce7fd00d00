package carrot

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/carrot-go/carrot/backend"
)

// ExchangeKind is the routing algorithm of an exchange: the backend interface's own type.
type ExchangeKind = backend.ExchangeKind

// The exchange kinds of AMQP 0-9-1, which every backend supports.
const (
	// Direct routes a message to the queues bound with a key equal to its routing key.
	Direct = backend.Direct
	// Fanout routes a message to every queue bound to the exchange.
	Fanout = backend.Fanout
	// Topic routes a message to the queues bound with a pattern matching its routing key.
	// Keys are words separated by dots; in a pattern "*" matches exactly one word and "#"
	// zero or more, so "*.stock.#" matches "usd.stock" and "eur.stock.db" but not
	// "stock.nasdaq".
	Topic = backend.Topic
)

// Exchange describes an exchange. Messages are published to exchanges, which route them to
// the queues bound to them. Exchanges are durable unless Transient is set, as in carrot 0.4.
//
// Names of exchanges and queues, routing keys and binding keys are at most 255 bytes of
// valid UTF-8, as AMQP 0-9-1 requires; carrot refuses others with [ErrInvalid] on every
// backend, before the broker sees them.
type Exchange struct {
	Name       string
	Kind       ExchangeKind // Direct when empty
	Transient  bool         // the exchange does not survive a broker restart
	AutoDelete bool         // the exchange is deleted when its last binding is removed
	Passive    bool         // do not create the exchange: only check that it exists
	Args       Table        // backend-specific arguments
}

// Queue describes a queue, and how to bind it. Queues are durable unless Transient is set,
// as in carrot 0.4.
//
// As carrot 0.4's Consumer does, declaring a Queue declares its Exchange (when it has a Name)
// and binds the queue to it with RoutingKey. Bindings adds more bindings, to exchanges
// declared elsewhere; a message that matches several bindings of one queue arrives there
// once.
type Queue struct {
	Name       string
	Exchange   Exchange
	RoutingKey string
	Bindings   []Binding // the Queue field of each is ignored

	Transient  bool // the queue does not survive a broker restart
	Exclusive  bool // only this connection may use the queue; it is deleted when the connection closes
	AutoDelete bool // the queue is deleted when its last consumer goes away
	Passive    bool // do not create the queue, its exchange or bindings: only check that the queue exists

	MessageTTL           time.Duration // messages expire after this long in the queue
	MaxLength            int           // beyond this many messages the oldest are dropped or dead-lettered
	MaxPriority          uint8         // deliver messages of higher Priority first, up to this one
	DeadLetterExchange   string        // where rejected, expired and dropped messages go
	DeadLetterRoutingKey string        // their routing key there; empty keeps the original one

	// Type is the kind of queue, on a backend that has several (RabbitMQ:
	// Capabilities().Quorum and Streams); empty for the backend's default. Quorum queues
	// and streams are replicated on several nodes of a cluster, and always durable, never
	// exclusive or auto-delete. A backend without the type refuses it with
	// [ErrUnsupported]; it is never declared as another kind.
	Type QueueType

	// Replicas is, for a quorum queue or a stream, on how many nodes of the cluster it is
	// first placed; zero for the broker's default.
	Replicas int

	// DeliveryLimit is, for a quorum queue, how many times a message may be delivered:
	// returned once more (requeued, or its consumer gone), it is dead-lettered, or dropped.
	// Zero is the broker's default: none on RabbitMQ 3, 20 on RabbitMQ 4.
	DeliveryLimit int

	// DeadLetterStrategy is, for a quorum queue with a DeadLetterExchange, how dead
	// letters move: [AtMostOnce] (the default) drops one whose move fails; [AtLeastOnce]
	// keeps it in the queue until the queues it goes to have confirmed it, at the cost
	// of publishes beyond MaxLength being refused rather than the oldest dropped.
	DeadLetterStrategy DeadLetterStrategy

	// MaxAge and MaxBytes are a stream's retention: its oldest messages are discarded,
	// a segment at a time, once older than MaxAge (whole seconds) or beyond MaxBytes in
	// all. Zero for no limit; RabbitMQ keeps a stream for ever without one.
	MaxAge   time.Duration
	MaxBytes int64

	// SingleActiveConsumer makes one consumer of the queue at a time receive its messages,
	// in order; when it goes, the next one takes over, with the messages it left
	// unsettled. Capabilities().SingleActiveConsumer says whether the backend can.
	SingleActiveConsumer bool

	// ConsumerTimeout is how long a message delivered to a consumer may stay unsettled:
	// past it, the broker ends the consumer's channel and the message goes back to the
	// queue (carrot's Consumer then subscribes again). Whole milliseconds; zero for the
	// broker's default (RabbitMQ: 30 minutes). Capabilities().ConsumerTimeout says whether
	// the backend honours it (RabbitMQ from 3.12).
	ConsumerTimeout time.Duration

	Args Table // backend-specific arguments, such as RabbitMQ's "x-overflow"
}

// QueueType is a kind of queue; see [Queue].Type.
type QueueType = backend.QueueType

// The queue types, of RabbitMQ (see the backends' capabilities).
const (
	// ClassicQueue is a queue on one node.
	ClassicQueue = backend.Classic
	// QuorumQueue is a queue replicated on several nodes with Raft: a message is
	// confirmed once a majority has it, and the queue stays available while a majority of
	// its nodes is.
	QuorumQueue = backend.Quorum
	// StreamQueue is a replicated append-only log: consumers read it from an offset
	// ([ConsumerOptions].StreamOffset) and settling a message does not remove it; its
	// retention (MaxAge, MaxBytes) does. A stream is read by consuming only (Fetch is
	// refused), with acks: NoAck is refused, and Requeue and Reject do nothing but
	// settle.
	StreamQueue = backend.Stream
)

// DeadLetterStrategy says how a quorum queue moves its dead letters; see [Queue].
type DeadLetterStrategy = backend.DeadLetterStrategy

// The dead-letter strategies of quorum queues.
const (
	AtMostOnce  = backend.AtMostOnce
	AtLeastOnce = backend.AtLeastOnce
)

// StreamOffset is where a consumer starts reading a stream queue; see
// [ConsumerOptions].StreamOffset.
type StreamOffset = backend.StreamOffset

// Where to start reading a stream.
var (
	// FromFirst starts at the oldest message the stream keeps.
	FromFirst = StreamOffset{Kind: backend.OffsetFirst}
	// FromLast starts at the last chunk the stream wrote (a few of the latest messages).
	FromLast = StreamOffset{Kind: backend.OffsetLast}
	// FromNext starts at the next message written: the broker's default.
	FromNext = StreamOffset{Kind: backend.OffsetNext}
)

// FromOffset starts at the message at offset n of the stream (the first is 0), or at
// the oldest kept if n has been discarded.
func FromOffset(n int64) StreamOffset { return StreamOffset{Kind: backend.OffsetAt, Offset: n} }

// FromTime starts at the first message the stream took at t or later; RabbitMQ keeps
// arrival times per chunk, to the second over AMQP 0-9-1, so a few messages from just
// before t may come first.
func FromTime(t time.Time) StreamOffset { return StreamOffset{Kind: backend.OffsetTime, Time: t} }

// Binding routes the messages published to Exchange whose routing key matches Key to
// Queue: the backend interface's own type.
type Binding = backend.Binding

// maxName is the longest name, routing key or short property AMQP 0-9-1 can carry.
const maxName = 255

// checkShort validates what AMQP 0-9-1 carries as a short string (a name, a routing key,
// a short property): at most maxName bytes of UTF-8. what names it in the error.
func checkShort(op, what, s string) error {
	if len(s) > maxName {
		return invalidf(op, "%s is %d bytes long, more than %d", what, len(s), maxName)
	}
	if !utf8.ValidString(s) {
		return invalidf(op, "%s is not valid UTF-8", what)
	}
	return nil
}

// checkName validates an exchange or queue name; empty is allowed only where it means the
// default exchange.
func checkName(op, what, name string, emptyOK bool) error {
	if name == "" && !emptyOK {
		return invalidf(op, "%s name is empty", what)
	}
	return checkShort(op, what+" name", name)
}

// checkKey validates a routing key or binding pattern.
func checkKey(op, key string) error { return checkShort(op, "routing key", key) }

func checkBinding(op string, b Binding) error {
	if err := checkName(op, "queue", b.Queue, false); err != nil {
		return err
	}
	if b.Exchange == "" {
		return invalidf(op, "cannot bind to the default exchange")
	}
	if err := checkName(op, "exchange", b.Exchange, false); err != nil {
		return err
	}
	return checkKey(op, b.Key)
}

// exchangeKind returns the kind of exchange k names: Direct when empty.
func exchangeKind(k ExchangeKind) (ExchangeKind, bool) {
	switch k {
	case "":
		return Direct, true
	case Direct, Fanout, Topic:
		return k, true
	}
	return "", false
}

// backend validates x and converts it for the backend.
func (x Exchange) backend(op string, caps Capabilities) (backend.Exchange, error) {
	if x.Name == "" {
		return backend.Exchange{}, invalidf(op, "the default exchange cannot be declared")
	}
	if err := checkName(op, "exchange", x.Name, false); err != nil {
		return backend.Exchange{}, err
	}
	kind, ok := exchangeKind(x.Kind)
	if !ok {
		return backend.Exchange{}, invalidf(op, "unknown exchange kind %q (want direct, fanout or topic)", x.Kind)
	}
	if x.AutoDelete && !caps.AutoDelete {
		return backend.Exchange{}, unsupportedf(op, "the backend does not support auto-delete exchanges")
	}
	args, err := normalizeArgs(x.Args)
	if err != nil {
		return backend.Exchange{}, invalidf(op, "argument %w", err)
	}
	return backend.Exchange{
		Name:       x.Name,
		Kind:       kind,
		Durable:    !x.Transient,
		AutoDelete: x.AutoDelete,
		Passive:    x.Passive,
		Args:       args,
	}, nil
}

// backend validates q and converts it and its bindings for the backend.
func (q Queue) backend(op string, caps Capabilities) (backend.Queue, []Binding, error) {
	var bq backend.Queue
	if err := checkName(op, "queue", q.Name, false); err != nil {
		return bq, nil, err
	}
	need := []struct {
		set  bool
		have bool
		what string
	}{
		{q.Exclusive, caps.Exclusive, "exclusive queues"},
		{q.AutoDelete, caps.AutoDelete, "auto-delete queues"},
		{q.MessageTTL != 0, caps.QueueMessageTTL, "a queue message TTL"},
		{q.MaxLength != 0, caps.MaxLength, "a queue max length"},
		{q.MaxPriority != 0, caps.Priority, "priority queues"},
		{q.DeadLetterExchange != "" || q.DeadLetterRoutingKey != "", caps.DeadLetter, "dead-lettering"},
	}
	for _, n := range need {
		if n.set && !n.have {
			return bq, nil, unsupportedf(op, "the backend does not support %s", n.what)
		}
	}
	if err := q.checkType(op, caps); err != nil {
		return bq, nil, err
	}
	if q.MessageTTL < 0 || q.MessageTTL%time.Millisecond != 0 {
		return bq, nil, invalidf(op, "message TTL %v is not a whole, positive number of milliseconds", q.MessageTTL)
	}
	if q.MaxLength < 0 {
		return bq, nil, invalidf(op, "max length %d is negative", q.MaxLength)
	}
	if err := checkName(op, "dead-letter exchange", q.DeadLetterExchange, true); err != nil {
		return bq, nil, err
	}
	if err := checkKey(op, q.DeadLetterRoutingKey); err != nil {
		return bq, nil, err
	}
	args, err := normalizeArgs(q.Args)
	if err != nil {
		return bq, nil, invalidf(op, "argument %w", err)
	}
	bq = backend.Queue{
		Name:                 q.Name,
		Durable:              !q.Transient,
		Exclusive:            q.Exclusive,
		AutoDelete:           q.AutoDelete,
		Passive:              q.Passive,
		MessageTTL:           q.MessageTTL,
		MaxLength:            q.MaxLength,
		MaxPriority:          q.MaxPriority,
		DeadLetterExchange:   q.DeadLetterExchange,
		DeadLetterRoutingKey: q.DeadLetterRoutingKey,
		Type:                 q.Type,
		Replicas:             q.Replicas,
		DeliveryLimit:        q.DeliveryLimit,
		DeadLetterStrategy:   q.DeadLetterStrategy,
		MaxAge:               q.MaxAge,
		MaxBytes:             q.MaxBytes,
		SingleActiveConsumer: q.SingleActiveConsumer,
		ConsumerTimeout:      q.ConsumerTimeout,
		Args:                 args,
	}
	if q.Passive {
		return bq, nil, nil
	}
	var bindings []Binding
	if q.Exchange.Name != "" {
		bindings = append(bindings, Binding{Exchange: q.Exchange.Name, Queue: q.Name, Key: q.RoutingKey})
	}
	for _, b := range q.Bindings {
		b.Queue = q.Name
		bindings = append(bindings, b)
	}
	for _, b := range bindings {
		if err := checkBinding(op, b); err != nil {
			return bq, nil, err
		}
	}
	return bq, bindings, nil
}

// checkType validates q's type and the fields that go with one: each is refused with
// ErrUnsupported by a backend without it, and with ErrInvalid where the type does not have
// it, rather than declared as something else.
func (q Queue) checkType(op string, caps Capabilities) error {
	switch q.Type {
	case "":
	case ClassicQueue:
		if !caps.Quorum && !caps.Streams {
			return unsupportedf(op, "the backend has one type of queue: leave Type empty")
		}
	case QuorumQueue:
		if !caps.Quorum {
			return unsupportedf(op, "the backend does not support quorum queues")
		}
	case StreamQueue:
		if !caps.Streams {
			return unsupportedf(op, "the backend does not support stream queues")
		}
	default:
		return invalidf(op, "unknown queue type %q (want classic, quorum or stream)", q.Type)
	}
	if !caps.SingleActiveConsumer && q.SingleActiveConsumer {
		return unsupportedf(op, "the backend does not support single active consumer")
	}
	if !caps.ConsumerTimeout && q.ConsumerTimeout != 0 {
		return unsupportedf(op, "the backend does not support a queue consumer timeout")
	}
	replicated := q.Type == QuorumQueue || q.Type == StreamQueue
	if replicated && (q.Transient || q.Exclusive || q.AutoDelete) {
		return invalidf(op, "a %s queue is durable, never transient, exclusive or auto-delete", q.Type)
	}
	only := []struct {
		set  bool
		what string
		typ  QueueType
	}{
		{q.Replicas != 0, "Replicas", ""},
		{q.DeliveryLimit != 0, "DeliveryLimit", QuorumQueue},
		{q.DeadLetterStrategy != "", "DeadLetterStrategy", QuorumQueue},
		{q.MaxAge != 0, "MaxAge", StreamQueue},
		{q.MaxBytes != 0, "MaxBytes", StreamQueue},
	}
	for _, o := range only {
		if o.set && (o.typ == "" && !replicated || o.typ != "" && q.Type != o.typ) {
			want := "a quorum or stream queue"
			if o.typ != "" {
				want = "a " + string(o.typ) + " queue"
			}
			return invalidf(op, "%s is for %s, and the queue's type is %q", o.what, want, q.Type)
		}
	}
	if q.Type == StreamQueue {
		for _, o := range []struct {
			set  bool
			what string
		}{
			{q.MessageTTL != 0, "MessageTTL (use MaxAge)"},
			{q.MaxLength != 0, "MaxLength (use MaxBytes)"},
			{q.MaxPriority != 0, "MaxPriority"},
			{q.DeadLetterExchange != "" || q.DeadLetterRoutingKey != "", "dead-lettering"},
			{q.SingleActiveConsumer, "SingleActiveConsumer"},
		} {
			if o.set {
				return invalidf(op, "a stream queue has no %s", o.what)
			}
		}
	}
	switch {
	case q.Replicas < 0:
		return invalidf(op, "Replicas %d is negative", q.Replicas)
	case q.DeliveryLimit < 0:
		return invalidf(op, "DeliveryLimit %d is negative", q.DeliveryLimit)
	case q.MaxBytes < 0:
		return invalidf(op, "MaxBytes %d is negative", q.MaxBytes)
	case q.MaxAge < 0 || q.MaxAge%time.Second != 0:
		return invalidf(op, "MaxAge %v is not a whole, positive number of seconds", q.MaxAge)
	case q.ConsumerTimeout < 0 || q.ConsumerTimeout%time.Millisecond != 0:
		return invalidf(op, "ConsumerTimeout %v is not a whole, positive number of milliseconds", q.ConsumerTimeout)
	}
	switch q.DeadLetterStrategy {
	case "", AtMostOnce:
	case AtLeastOnce:
		if q.DeadLetterExchange == "" {
			return invalidf(op, "DeadLetterStrategy %s needs a DeadLetterExchange", q.DeadLetterStrategy)
		}
	default:
		return invalidf(op, "unknown DeadLetterStrategy %q (want %s or %s)", q.DeadLetterStrategy, AtMostOnce, AtLeastOnce)
	}
	return nil
}

// generatedName returns a unique queue name, for queues declared without one.
func generatedName() string {
	var b [12]byte
	rand.Read(b[:])
	return fmt.Sprintf("carrot.gen-%s", hex.EncodeToString(b[:]))
}
