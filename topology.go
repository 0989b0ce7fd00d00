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

	Args Table // backend-specific arguments, such as RabbitMQ's "x-queue-type"
}

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

// generatedName returns a unique queue name, for queues declared without one.
func generatedName() string {
	var b [12]byte
	rand.Read(b[:])
	return fmt.Sprintf("carrot.gen-%s", hex.EncodeToString(b[:]))
}
