// Package rabbitargs turns carrot's queue and consumer settings into the "x-" arguments
// RabbitMQ reads, for the amqp091 and amqp10 backends, which send them in
// queue.declare and basic.consume, or in requests of the AMQP 1.0 management API.
package rabbitargs

import (
	"fmt"
	"maps"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// Queue returns the arguments for q's fields and its own Args. A field whose argument is
// in Args too is an error of code Invalid, whose text starts with name
// ("carrot/amqp091"). Numbers are int64, durations whole milliseconds but MaxAge, which
// is a number of seconds with the unit "s", as RabbitMQ writes it.
func Queue(name string, q backend.Queue) (map[string]any, error) {
	args := maps.Clone(q.Args)
	if args == nil {
		args = map[string]any{}
	}
	atLeastOnce := q.DeadLetterStrategy == backend.AtLeastOnce
	for _, a := range []struct {
		set bool
		key string
		v   any
	}{
		{q.Type != "", "x-queue-type", string(q.Type)},
		{q.MessageTTL > 0, "x-message-ttl", q.MessageTTL.Milliseconds()},
		{q.MaxLength > 0, "x-max-length", int64(q.MaxLength)},
		{q.MaxPriority > 0, "x-max-priority", int64(q.MaxPriority)},
		{q.DeadLetterExchange != "", "x-dead-letter-exchange", q.DeadLetterExchange},
		{q.DeadLetterRoutingKey != "", "x-dead-letter-routing-key", q.DeadLetterRoutingKey},
		{q.Replicas > 0 && q.Type == backend.Quorum, "x-quorum-initial-group-size", int64(q.Replicas)},
		{q.Replicas > 0 && q.Type == backend.Stream, "x-initial-cluster-size", int64(q.Replicas)},
		{q.DeliveryLimit > 0, "x-delivery-limit", int64(q.DeliveryLimit)},
		{q.DeadLetterStrategy != "", "x-dead-letter-strategy", string(q.DeadLetterStrategy)},
		// RabbitMQ moves dead letters at least once only in a queue that refuses
		// publishes beyond its length, rather than dropping its oldest messages.
		{atLeastOnce, "x-overflow", "reject-publish"},
		{q.MaxAge > 0, "x-max-age", fmt.Sprintf("%ds", int64(q.MaxAge/time.Second))},
		{q.MaxBytes > 0, "x-max-length-bytes", q.MaxBytes},
		{q.SingleActiveConsumer, "x-single-active-consumer", true},
		{q.ConsumerTimeout > 0, "x-consumer-timeout", q.ConsumerTimeout.Milliseconds()},
	} {
		if !a.set {
			continue
		}
		if v, dup := args[a.key]; dup {
			if a.key == "x-overflow" && v == "reject-publish" {
				continue
			}
			return nil, backend.Errorf(backend.Invalid, "%s: queue %q sets %s both in a field and in Args", name, q.Name, a.key)
		}
		args[a.key] = a.v
	}
	return args, nil
}

// Offset returns the value of RabbitMQ's stream offset ("x-stream-offset" in
// basic.consume, the "rabbitmq:stream-offset-spec" filter in AMQP 1.0) for o, and false
// for the broker's default: a string, an int64, or a time.Time, which the caller sends
// as a timestamp.
func Offset(o backend.StreamOffset) (any, bool) {
	switch o.Kind {
	case backend.OffsetFirst:
		return "first", true
	case backend.OffsetLast:
		return "last", true
	case backend.OffsetNext:
		return "next", true
	case backend.OffsetAt:
		return o.Offset, true
	case backend.OffsetTime:
		return o.Time, true
	}
	return nil, false
}
