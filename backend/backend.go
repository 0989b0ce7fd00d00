// Package backend defines the contract between carrot and the message brokers it talks to.
//
// Users of carrot do not import this package; they import the root package and open a
// connection from a URL. Backend authors implement [Driver], [Connector], [Conn] and
// [Subscription] here and register the driver with carrot.Register in their package's init
// function, the way database/sql drivers register with sql.Register.
//
// # Division of labour
//
// The portable layer (package carrot) owns every invariant: it validates names and
// properties, encodes and decodes bodies, normalises header values, makes sure a delivery is
// settled at most once, runs the consume loop, handles shutdown, turns backend errors into
// carrot's sentinel errors, and recovers from a lost connection. A backend does the broker
// I/O and nothing else:
//
//   - it receives only validated input (names no longer than 255 bytes, header values of the
//     types listed on [Message], an Expiration in whole milliseconds, a Timestamp in whole
//     seconds);
//   - it returns its client's errors as they are and classifies them in [Conn.ErrorCode];
//   - it reports what it supports in [Capabilities]; carrot refuses operations that need a
//     capability the backend lacks, so a backend never fakes one;
//   - it refuses, before sending, what it knows its broker would refuse in a way that hurts
//     other calls (a message larger than the broker takes, a header the protocol cannot
//     carry), and classifies what the broker refuses because of one message as that
//     message's failure ([TooLarge], [Invalid], [Refused]), never as [Unavailable], which
//     carrot retries.
//
// # Connections and recovery
//
// A [Conn] is one connection to a broker, as a database/sql/driver.Conn is. When it breaks
// (the network fails, the broker closes it or restarts, or the broker lost the state the
// connection relies on), it closes its [Conn.Done] channel, says why in [Conn.Err], and
// fails every call promptly with an error classified as [Unavailable]. It never reconnects
// by itself. carrot then opens a new Conn with the [Connector], declares again the
// exchanges, queues and bindings it recorded, resumes the subscriptions that were running
// and lets publishes retry, once, for every backend. A backend keeps only what is specific
// to its protocol: how a subscription starts, and what happens to the deliveries of a lost
// connection (the broker delivers them again; settling them is an [Unavailable] error).
//
// This package imports only the standard library.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// A Driver makes connectors from URLs.
type Driver interface {
	// OpenConnector parses rawURL and returns a Connector for the broker it names, without
	// connecting. The URL's scheme is one the driver was registered under; its query
	// options are the driver's to define, and unknown options must be an error classified
	// as Invalid. Errors must not contain the URL's password.
	OpenConnector(rawURL string) (Connector, error)
}

// A ConfigDriver is a Driver that also takes settings from the program that opens a URL,
// beside those in the URL, such as the logger of a carrot.Dialer. carrot calls
// OpenConnectorConfig instead of OpenConnector when a driver has it; a driver without it
// is opened with OpenConnector and logs where it likes.
type ConfigDriver interface {
	Driver
	// OpenConnectorConfig is OpenConnector, with cfg's settings for the connector and the
	// connections it opens.
	OpenConnectorConfig(rawURL string, cfg Config) (Connector, error)
}

// Config holds the settings a program gives a backend beside its URL; see [ConfigDriver].
type Config struct {
	// Logger receives what the backend logs, and what its client library logs where the
	// backend can route it. Never nil. A backend logs failures at most about once a
	// second each, and never a password.
	Logger *slog.Logger
}

// A Connector opens connections to one broker with fixed settings, as a
// database/sql/driver.Connector does. carrot calls Connect for its first connection and
// again for each reconnection; the connections of one Connector share what they must
// (such as an in-process broker, or the names of the consumers whose deliveries a lost
// connection left behind).
type Connector interface {
	// Connect opens one connection. It makes one attempt, bounded by ctx, and never
	// retries on its own; an attempt of a Connector with several addresses (the nodes of
	// a cluster) may try each once, the first that opens giving the connection. An error
	// is classified with [CodeOf]: Invalid when the broker refused the settings or does
	// not speak the protocol (wrong credentials, an unknown virtual host, a port that
	// answers in another protocol), so that retrying is pointless; Unavailable, or no
	// code, when the broker could not be reached. Connect may be called concurrently with
	// the use of connections it returned before.
	Connect(ctx context.Context) (Conn, error)
}

// A Conn is one connection to a broker. All its methods may be called concurrently.
//
// When the connection ends, lost or closed, its Done channel is closed; from then on every
// call fails promptly with an error ErrorCode classifies as Unavailable, or Closed once
// Close was called, and blocked calls return likewise. A Conn never reconnects.
type Conn interface {
	// Capabilities reports what the connection supports. It must not change over the life
	// of the Conn.
	Capabilities() Capabilities

	// DeclareExchange creates an exchange, or checks that an existing one has the same
	// kind and flags. With Passive set it only checks that the exchange exists.
	DeclareExchange(ctx context.Context, x Exchange) error

	// DeleteExchange removes an exchange and its bindings. Deleting an exchange that does
	// not exist is not an error.
	DeleteExchange(ctx context.Context, name string) error

	// DeclareQueue creates a queue, or checks that an existing one has the same flags and
	// arguments. With Passive set it only checks that the queue exists.
	DeclareQueue(ctx context.Context, q Queue) error

	// DeleteQueue removes a queue, its bindings and its messages. Deleting a queue that does
	// not exist is not an error.
	DeleteQueue(ctx context.Context, name string) error

	// Bind routes messages published to b.Exchange whose routing key matches b.Key to
	// b.Queue. Binding twice with the same key is not an error.
	Bind(ctx context.Context, b Binding) error

	// Unbind removes a binding. Removing a binding that does not exist is not an error.
	Unbind(ctx context.Context, b Binding) error

	// Publish sends a message to an exchange. When p.Confirm is set, Publish returns only
	// after the broker has taken responsibility for the message (a publisher confirm, an
	// accepted outcome, a completed write), or with an error if it refused it. When
	// p.Mandatory is set and the message matched no queue, Publish returns an error that
	// ErrorCode classifies as [Unroutable]. A message the connection was lost under, whose
	// fate is unknown, is an Unavailable error; a message the broker refused because of
	// what it is must not be. Publish must not keep p or p.Body after it returns.
	Publish(ctx context.Context, p *Publishing) error

	// Get removes one message from the head of a queue and returns it, or returns nil, nil
	// at once when the queue is empty; it never waits for a message to arrive. With autoAck
	// set the message is settled on delivery and the returned Delivery has no Settler.
	// Otherwise the message stays unacknowledged until it is settled, or until the Conn
	// ends, when it goes back to its queue.
	Get(ctx context.Context, queue string, autoAck bool) (*Delivery, error)

	// Consume starts delivering messages from a queue. The broker must not hand the
	// subscription more than opts.Prefetch unsettled messages at a time (unless AutoAck is
	// set, or Prefetch is 0 for no limit).
	Consume(ctx context.Context, opts ConsumeOptions) (Subscription, error)

	// Purge removes every ready message from a queue and returns how many it removed.
	// Messages delivered but not yet settled are not counted and not removed.
	Purge(ctx context.Context, queue string) (int, error)

	// Done returns a channel that is closed when the connection has ended: lost, or closed
	// by Close.
	Done() <-chan struct{}

	// Err returns why the connection ended once Done is closed, and nil before. The error
	// is classified by ErrorCode: Unavailable for a lost connection, Malformed when it was
	// lost because the client could not read a message the broker sent, Closed after Close.
	Err() error

	// ErrorCode classifies an error returned by any method of this Conn, its
	// Subscriptions or its Settlers.
	ErrorCode(err error) Code

	// As sets target to the underlying client value it points to, if the backend has one of
	// that type, and reports whether it did. Each backend lists the types it supports.
	As(target any) bool

	// Close closes the connection. Unsettled deliveries go back to their queues, exclusive
	// queues declared on this connection are deleted. Close is called once, after every
	// Subscription of the Conn has been closed, also when the connection was lost; it must
	// return promptly when the broker cannot be reached.
	Close() error
}

// A Pinger is a Conn that can check that its broker answers. carrot's Conn.Ping uses it
// when the backend implements it.
type Pinger interface {
	// Ping makes one round trip to the broker, bounded by ctx.
	Ping(ctx context.Context) error
}

// An AsyncPublisher is a Conn that can publish without blocking its caller until the
// broker answers, so that one goroutine keeps many messages in flight. For a Conn that
// does not implement it, carrot's PublishAsync calls Publish.
type AsyncPublisher interface {
	// PublishAsync starts publishing p as Publish does, and calls done with what Publish
	// would have returned. Messages of calls from one goroutine reach a queue in the
	// order of the calls. done is called exactly once, from any goroutine, possibly
	// before PublishAsync returns, and it must not block; the Conn may use p and p.Body
	// until it calls done, not after. ctx bounds the sending; a sent message waits for the
	// broker's answer, or the end of the connection. PublishAsync may be called
	// concurrently.
	PublishAsync(ctx context.Context, p *Publishing, done func(error))
}

// A PublishWarmer is a Conn that can open ahead of the first publish what publishing
// needs (a channel in confirm mode, a link), so that the first publish does not pay for
// it. For a Conn that does not implement it, warming a Publisher only checks its exchange.
type PublishWarmer interface {
	// WarmPublish opens what publishing needs, if not open yet, bounded by ctx. It may be
	// called concurrently.
	WarmPublish(ctx context.Context) error
}

// A Lister is a Conn that can list the exchanges and queues its broker holds. For a Conn
// that does not implement it, carrot's List is an Unsupported error.
type Lister interface {
	// List returns the exchanges (but the default one) and the queues the broker holds,
	// each sorted by name, as they were declared. It may be called concurrently.
	List(ctx context.Context) ([]Exchange, []Queue, error)
}

// A Subscription delivers messages from one queue, in the order the broker hands them out.
type Subscription interface {
	// Receive blocks until a message arrives, ctx is done, or the subscription fails. It
	// returns ctx.Err() unwrapped when ctx is done. When the connection ends, Receive
	// returns an error classified as Unavailable, or as Malformed when the client could not
	// read a message of this subscription (the connection may have ended because of it):
	// carrot then subscribes again on a new connection, and stops after a few Malformed
	// errors in a row. Receive is never called concurrently with itself or with Close.
	Receive(ctx context.Context) (*Delivery, error)

	// Close stops the subscription. Messages it delivered that are not yet settled go back
	// to the queue, flagged as redelivered; settling them afterwards returns an error.
	// Close is called once, after the last Receive has returned.
	Close() error
}

// A Settler settles one delivery.
type Settler interface {
	// Settle acknowledges, requeues or rejects the delivery. It is called at most once per
	// delivery, and may be called concurrently with the settling of other deliveries, with
	// Receive and with Get. When the connection that delivered it has ended, Settle returns
	// promptly with an Unavailable error: the broker delivers the message again.
	//
	// An Ack may return before it reaches the broker, to be sent later with others, as
	// long as it is sent within a bounded delay, stated in the backend's documentation,
	// and before the Close of the subscription that delivered it returns. An ack lost with
	// the connection before it was sent leaves its message to be delivered again, flagged
	// redelivered.
	Settle(ctx context.Context, o Outcome) error
}

// An Outcome is how a consumer settles a delivery.
type Outcome int

const (
	// Ack removes the message from its queue: it was handled.
	Ack Outcome = iota
	// Requeue puts the message back in its queue, to be delivered again with the
	// redelivered flag set.
	Requeue
	// Reject removes the message from its queue without handling it. The broker sends it
	// to the queue's dead-letter exchange if it has one, and drops it otherwise.
	Reject
)

func (o Outcome) String() string {
	switch o {
	case Ack:
		return "ack"
	case Requeue:
		return "requeue"
	case Reject:
		return "reject"
	}
	return "outcome(?)"
}

// ExchangeKind is the routing algorithm of an exchange. The names are those of AMQP 0-9-1.
type ExchangeKind string

const (
	// Direct routes a message to the queues bound with a key equal to its routing key.
	Direct ExchangeKind = "direct"
	// Fanout routes a message to every bound queue, whatever its routing key.
	Fanout ExchangeKind = "fanout"
	// Topic routes a message to the queues bound with a pattern that matches its routing
	// key: words are separated by dots, "*" matches exactly one word and "#" zero or more.
	Topic ExchangeKind = "topic"
)

// Exchange describes an exchange to declare.
type Exchange struct {
	Name       string
	Kind       ExchangeKind // never empty
	Durable    bool         // survives a broker restart
	AutoDelete bool         // deleted when its last binding is removed
	Passive    bool         // only check that it exists
	Args       map[string]any
}

// Queue describes a queue to declare. Zero values mean "not set".
type Queue struct {
	Name       string
	Durable    bool // survives a broker restart
	Exclusive  bool // used by the declaring connection only, deleted when it closes
	AutoDelete bool // deleted when its last consumer goes away
	Passive    bool // only check that it exists

	MessageTTL           time.Duration // messages expire after this long in the queue
	MaxLength            int           // the oldest messages are dropped (or dead-lettered) beyond this many
	MaxPriority          uint8         // the queue delivers higher priorities first, up to this one
	DeadLetterExchange   string        // where rejected, expired and dropped messages go
	DeadLetterRoutingKey string        // their routing key there; empty keeps the original key

	// Type is the kind of queue; empty for the broker's default. The core sends a type, and
	// the fields below, only to a backend whose Capabilities report them, and has checked
	// that they fit the type.
	Type                 QueueType
	Replicas             int                // quorum and stream: nodes the queue is first placed on; 0 for the broker's default
	DeliveryLimit        int                // quorum: deliveries after which a returned message is dead-lettered or dropped; 0 for the broker's default
	DeadLetterStrategy   DeadLetterStrategy // quorum: how dead letters are moved; empty for at-most-once
	MaxAge               time.Duration      // stream: segments older than this are discarded; whole seconds, 0 for none
	MaxBytes             int64              // stream: the oldest segments are discarded beyond this size; 0 for none
	SingleActiveConsumer bool               // one consumer at a time receives; the next takes over when it goes
	ConsumerTimeout      time.Duration      // a delivery unsettled this long ends its consumer's channel; whole ms, 0 for the broker's default

	// Args holds broker-specific arguments, such as RabbitMQ's "x-queue-type". A backend
	// returns an error for arguments it does not understand.
	Args map[string]any
}

// Binding routes messages from an exchange to a queue.
type Binding struct {
	Exchange string
	Queue    string
	Key      string // the routing key (direct), pattern (topic), or ignored (fanout)
}

// Message is the content and properties of a message, as published and as delivered.
//
// Header values are of the types string, []byte, bool, int64, float64, time.Time (UTC,
// whole seconds) or nil, or, only for a backend with the NestedHeaders capability,
// map[string]any (a nested table) and []any (a list) holding values of these types, nested
// at most 32 deep; carrot converts other integer and float types before they reach a
// backend, and backends return these types on delivery.
type Message struct {
	Body            []byte
	RoutingKey      string
	ContentType     string
	ContentEncoding string
	Headers         map[string]any
	Persistent      bool
	Priority        uint8
	Expiration      time.Duration // per-message time to live, whole milliseconds; 0 for none
	MessageID       string
	CorrelationID   string
	ReplyTo         string
	Timestamp       time.Time // whole seconds; zero for none
	Type            string    // the message's type name, such as "order.created"
	AppID           string    // the application that published it
	UserID          string    // the user that published it; see [Capabilities].UserID

	// Delay, when publishing, is how long the message stays out of sight before its
	// queues deliver it, whole milliseconds; 0 for at once. Only with the Delay capability.
	Delay time.Duration
}

// Publishing is a message on its way to an exchange.
type Publishing struct {
	Message
	Exchange  string // "" is the default exchange, which routes to the queue named by the routing key
	Mandatory bool   // a message that matches no queue is an error, not dropped
	Confirm   bool   // wait until the broker has taken the message
}

// Delivery is a message handed to a consumer.
type Delivery struct {
	Message
	Exchange      string // the exchange it was published to
	Redelivered   bool   // it may have been delivered before
	DeliveryCount int    // how many times it has been delivered, this one included; 0 if unknown
	Offset        int64  // a stream's message: its offset in the stream
	InStream      bool   // it came from a stream, and Offset is set
	Settler       Settler
	Raw           any // the client's own delivery value, for As; may be nil
}

// ConsumeOptions says how to consume a queue.
type ConsumeOptions struct {
	Queue    string
	Prefetch int  // most unsettled deliveries at a time; 0 for no limit
	AutoAck  bool // settle messages on delivery; the deliveries have no Settler
	Tag      string

	// Offset is where a consumer of a stream queue starts reading; the zero value is the
	// broker's default (next). Set only when Capabilities().Streams.
	Offset StreamOffset
}

// QueueType is a kind of queue.
type QueueType string

// The queue types of RabbitMQ, the only broker with several.
const (
	Classic QueueType = "classic" // one node's queue
	Quorum  QueueType = "quorum"  // replicated on several nodes (Raft)
	Stream  QueueType = "stream"  // a replicated append-only log read from an offset
)

// DeadLetterStrategy says how a quorum queue moves its dead letters.
type DeadLetterStrategy string

const (
	AtMostOnce  DeadLetterStrategy = "at-most-once"  // a dead letter is dropped if the move fails
	AtLeastOnce DeadLetterStrategy = "at-least-once" // a dead letter stays until its target queues have it
)

// StreamOffset is where a consumer starts reading a stream.
type StreamOffset struct {
	Kind   OffsetKind
	Offset int64     // for OffsetAt
	Time   time.Time // for OffsetTime
}

// OffsetKind is the kind of a [StreamOffset].
type OffsetKind uint8

const (
	OffsetDefault OffsetKind = iota // the broker's default: next
	OffsetFirst                     // the oldest message the stream keeps
	OffsetLast                      // the last chunk of messages written
	OffsetNext                      // the next message written
	OffsetAt                        // the message at Offset, or the oldest kept if that is gone
	OffsetTime                      // the first message written at Time or later (to the broker's precision)
)

// Capabilities is what a connection supports. The zero value supports only what every
// backend must: direct, fanout and topic exchanges, durable and non-durable queues,
// bindings, publish, get, consume with a prefetch limit, ack, requeue, reject (as a drop),
// purge, and every message property round-tripped unchanged.
type Capabilities struct {
	Confirms        bool  // Publish with Confirm waits for the broker to take the message
	Mandatory       bool  // Publish with Mandatory reports unroutable messages
	DeadLetter      bool  // Queue.DeadLetterExchange is honoured on reject, expiry and overflow
	Expiration      bool  // Message.Expiration is honoured
	QueueMessageTTL bool  // Queue.MessageTTL is honoured
	MaxLength       bool  // Queue.MaxLength is honoured
	Priority        bool  // Queue.MaxPriority is honoured
	DeliveryCount   bool  // Delivery.DeliveryCount is set
	Exclusive       bool  // Queue.Exclusive is honoured
	AutoDelete      bool  // Queue.AutoDelete and Exchange.AutoDelete are honoured
	Persistence     bool  // durable queues and persistent messages survive a broker restart
	SharedAcross    bool  // other processes can reach the same broker (false for in-process brokers)
	MaxBodySize     int64 // the largest body the broker accepts, in bytes; 0 for no known limit
	MaxPrefetch     int   // the largest prefetch the protocol can carry; 0 for no limit

	// NestedHeaders: header values may be nested tables (map[string]any) and lists ([]any).
	// Without it carrot refuses them, with an Unsupported error naming the header.
	NestedHeaders bool

	// UserID, when not empty, is the only Message.UserID the broker takes: the user the
	// connection authenticated as (RabbitMQ refuses a message claiming another one, closing
	// the channel or link that carried it). carrot refuses any other UserID before it
	// reaches the backend. Empty means the backend carries any UserID, or cannot know the
	// user (a certificate login); the backend then classifies the broker's refusal of the
	// message as Invalid.
	UserID string

	// Delay: Message.Delay is honoured, with messages kept out of sight by the broker
	// (surviving its restart where it persists messages), never in the client's memory.
	Delay          bool
	MaxDelay       time.Duration // the longest delay; 0 for no limit
	DelayPrecision time.Duration // how much later than its delay a message may be delivered

	// InspectQueue: the counts of a queue the Conn's [Inspector] reports; empty when it
	// cannot inspect queues.
	InspectQueue QueueCounts

	// Queue types and what comes with them (see [Queue]): Quorum for quorum queues with
	// Replicas, DeliveryLimit and DeadLetterStrategy; Streams for stream queues with
	// Replicas, MaxAge, MaxBytes and consumers' Offset; either for the classic type named.
	Quorum               bool
	Streams              bool
	SingleActiveConsumer bool // Queue.SingleActiveConsumer is honoured
	ConsumerTimeout      bool // Queue.ConsumerTimeout is honoured
}

// Code classifies a backend error.
type Code int

const (
	// Unknown is an error the backend cannot classify.
	Unknown Code = iota
	// NotFound: the exchange or queue does not exist.
	NotFound
	// Mismatch: a declaration conflicts with an existing exchange or queue.
	Mismatch
	// Unroutable: a mandatory message matched no queue.
	Unroutable
	// Refused: the broker would not take a message (a negative confirm, a rejected
	// outcome, a full queue that refuses publishes).
	Refused
	// InUse: the resource is locked by another connection (an exclusive queue).
	InUse
	// TooLarge: the message is larger than the broker accepts.
	TooLarge
	// Unavailable: the connection to the broker is broken or the broker is down; the
	// operation may succeed if retried.
	Unavailable
	// Closed: the connection, subscription or delivery was closed by this process.
	Closed
	// Unsupported: the backend does not support the operation or argument.
	Unsupported
	// Invalid: the broker rejected the request as malformed.
	Invalid
	// Malformed: the client could not read a message the broker delivered (a header of a
	// type it cannot parse, say). Retrying reads the same message again.
	Malformed
)

// Errorf returns an error classified by code, with a message formatted as by fmt.Errorf
// (so %w wraps). Backends that make their own errors can use it, and classify them with
// [CodeOf] in ErrorCode. Errors from Driver.OpenConnector and Connector.Connect are
// classified this way too: a bad URL should be Invalid; an error of Connect without a code
// counts as Unavailable.
func Errorf(code Code, format string, args ...any) error {
	return &codeError{code: code, err: fmt.Errorf(format, args...)}
}

// CodeOf returns the code of the first error in err's tree made by [Errorf], or Unknown.
func CodeOf(err error) Code {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return Unknown
}

type codeError struct {
	code Code
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// ConnectorFunc adapts a function to a [Connector], for tests and for backends that wrap
// another backend's connections.
type ConnectorFunc func(ctx context.Context) (Conn, error)

// Connect calls f(ctx).
func (f ConnectorFunc) Connect(ctx context.Context) (Conn, error) { return f(ctx) }
