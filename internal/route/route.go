// Package route routes messages through an exchange as RabbitMQ does, for the backends
// that route themselves (memory and redis): a direct exchange to the queues bound with a
// key equal to the message's routing key, a fanout exchange to every bound queue, a topic
// exchange to the queues bound with a pattern that matches the key (see package topic).
// Any other kind routes as direct. A queue bound several ways that match gets the message
// once.
//
// The default exchange (""), which routes to the queue named by the key, is the
// backend's: it is a look-up in its own table of queues.
package route

import (
	"slices"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/topic"
)

// Exchange is the routing of one exchange: its kind and its bindings to queues of type Q,
// in the order they were made. The zero value, with Kind set, is an exchange without
// bindings. An Exchange is not safe for concurrent changes; Route may be called
// concurrently with itself.
type Exchange[Q comparable] struct {
	Kind     backend.ExchangeKind
	bindings []binding[Q]
}

type binding[Q comparable] struct {
	queue   Q
	key     string
	pattern topic.Pattern // for a topic exchange
}

// Bind binds queue with key, unless it is bound with that key already.
func (x *Exchange[Q]) Bind(queue Q, key string) {
	for _, b := range x.bindings {
		if b.queue == queue && b.key == key {
			return
		}
	}
	x.Add(queue, key)
}

// Add binds queue with key without looking for the same binding, for a caller that
// knows it is new: a topology loaded from a set.
func (x *Exchange[Q]) Add(queue Q, key string) {
	b := binding[Q]{queue: queue, key: key}
	if x.Kind == backend.Topic {
		b.pattern = topic.Compile(key)
	}
	x.bindings = append(x.bindings, b)
}

// Unbind removes the binding of queue with key, and reports whether there was one.
func (x *Exchange[Q]) Unbind(queue Q, key string) bool {
	return x.remove(func(b binding[Q]) bool { return b.queue == queue && b.key == key })
}

// UnbindQueue removes every binding of queue, and reports whether there was one.
func (x *Exchange[Q]) UnbindQueue(queue Q) bool {
	return x.remove(func(b binding[Q]) bool { return b.queue == queue })
}

func (x *Exchange[Q]) remove(del func(binding[Q]) bool) bool {
	n := len(x.bindings)
	x.bindings = slices.DeleteFunc(x.bindings, del)
	return len(x.bindings) < n
}

// Len returns the number of bindings.
func (x *Exchange[Q]) Len() int { return len(x.bindings) }

// Route appends to qs the queues a message with routing key goes to, in the order of
// their first matching binding, and skips those qs holds already: each queue is in the
// result once. It allocates nothing when qs has room for them (and, for a topic exchange,
// when the patterns have no wildcard).
func (x *Exchange[Q]) Route(qs []Q, key string) []Q {
	for i := range x.bindings {
		b := &x.bindings[i]
		var match bool
		switch x.Kind {
		case backend.Fanout:
			match = true
		case backend.Topic:
			match = b.pattern.Match(key)
		default:
			match = b.key == key
		}
		if match && !slices.Contains(qs, b.queue) {
			qs = append(qs, b.queue)
		}
	}
	return qs
}
