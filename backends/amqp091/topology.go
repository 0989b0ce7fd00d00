package amqp091

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/declared"
)

// topology records what the Conn declared, to declare it again on a new connection, and
// the exchanges known to exist, so that a publish to a missing exchange is caught before
// RabbitMQ closes the publishing channel over it.
type topology struct {
	declared.Topology
	known sync.Map // exchanges that exist, by name, beside the default one; read on every publish
}

func (t *topology) exchangeKnown(name string) bool {
	if name == "" {
		return true
	}
	_, ok := t.known.Load(name)
	return ok
}

func (t *topology) setKnown(name string, exists bool) {
	if exists {
		t.known.Store(name, true)
	} else {
		t.known.Delete(name)
	}
}

// redeclare declares the recorded topology on a new connection: exchanges, then queues,
// then bindings. An entity the broker refuses (another client declared it differently
// meanwhile) is logged and skipped; a connection failure is returned.
func (t *topology) redeclare(conn *amqp.Connection, log *slog.Logger) error {
	exchanges, queues, bindings := t.Snapshot()

	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			ch.Close()
		}
	}()
	do := func(what string, fn func(ch *amqp.Channel) error) error {
		if ch == nil || ch.IsClosed() {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return err
			}
		}
		err := fn(ch)
		if err != nil && !conn.IsClosed() {
			log.Error("carrot/amqp091: could not declare again after reconnecting", "what", what, "error", err)
			return nil
		}
		return err
	}
	for _, x := range exchanges {
		if err := do(fmt.Sprintf("exchange %q", x.Name), func(ch *amqp.Channel) error { return declareExchange(ch, x) }); err != nil {
			return err
		}
	}
	for _, q := range queues {
		if err := do(fmt.Sprintf("queue %q", q.Name), func(ch *amqp.Channel) error { return declareQueue(ch, q) }); err != nil {
			return err
		}
	}
	for _, b := range bindings {
		if err := do(fmt.Sprintf("binding of queue %q to exchange %q with key %q", b.Queue, b.Exchange, b.Key), func(ch *amqp.Channel) error {
			return ch.QueueBind(b.Queue, b.Key, b.Exchange, false, nil)
		}); err != nil {
			return err
		}
	}
	return nil
}

func declareExchange(ch *amqp.Channel, x backend.Exchange) error {
	internal, noWait := false, false
	if x.Passive {
		return ch.ExchangeDeclarePassive(x.Name, string(x.Kind), x.Durable, x.AutoDelete, internal, noWait, nil)
	}
	return ch.ExchangeDeclare(x.Name, string(x.Kind), x.Durable, x.AutoDelete, internal, noWait, amqp.Table(x.Args))
}

func declareQueue(ch *amqp.Channel, q backend.Queue) error {
	noWait := false
	if q.Passive {
		_, err := ch.QueueDeclarePassive(q.Name, q.Durable, q.AutoDelete, q.Exclusive, noWait, nil)
		return err
	}
	args, err := queueArgs(q)
	if err != nil {
		return err
	}
	_, err = ch.QueueDeclare(q.Name, q.Durable, q.AutoDelete, q.Exclusive, noWait, args)
	return err
}

// queueArgs returns the RabbitMQ arguments for q's fields and its own Args.
func queueArgs(q backend.Queue) (amqp.Table, error) {
	args := amqp.Table(maps.Clone(q.Args))
	set := func(key string, v any) error {
		if args == nil {
			args = amqp.Table{}
		}
		if _, dup := args[key]; dup {
			return backend.Errorf(backend.Invalid, "carrot/amqp091: queue %q sets %s both in a field and in Args", q.Name, key)
		}
		args[key] = v
		return nil
	}
	for _, a := range []struct {
		set bool
		key string
		v   any
	}{
		{q.MessageTTL > 0, "x-message-ttl", int64(q.MessageTTL / time.Millisecond)},
		{q.MaxLength > 0, "x-max-length", int64(q.MaxLength)},
		{q.MaxPriority > 0, "x-max-priority", int64(q.MaxPriority)},
		{q.DeadLetterExchange != "", "x-dead-letter-exchange", q.DeadLetterExchange},
		{q.DeadLetterRoutingKey != "", "x-dead-letter-routing-key", q.DeadLetterRoutingKey},
	} {
		if a.set {
			if err := set(a.key, a.v); err != nil {
				return nil, err
			}
		}
	}
	return args, nil
}

func (c *Conn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	err := c.control(ctx, func(ch *amqp.Channel) error { return declareExchange(ch, x) })
	if err != nil {
		return err
	}
	c.topo.setKnown(x.Name, true)
	c.topo.AddExchange(x)
	return nil
}

func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	ifUnused, noWait := false, false
	err := c.control(ctx, func(ch *amqp.Channel) error { return ch.ExchangeDelete(name, ifUnused, noWait) })
	if c.ErrorCode(err) == backend.NotFound {
		err = nil
	}
	if err != nil {
		return err
	}
	c.topo.setKnown(name, false)
	c.topo.DeleteExchange(name)
	return nil
}

func (c *Conn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	if err := c.control(ctx, func(ch *amqp.Channel) error { return declareQueue(ch, q) }); err != nil {
		return err
	}
	c.topo.AddQueue(q)
	return nil
}

func (c *Conn) DeleteQueue(ctx context.Context, name string) error {
	ifUnused, ifEmpty, noWait := false, false, false
	err := c.control(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(name, ifUnused, ifEmpty, noWait)
		return err
	})
	if c.ErrorCode(err) == backend.NotFound {
		err = nil
	}
	if err != nil {
		return err
	}
	c.topo.DeleteQueue(name)
	return nil
}

func (c *Conn) Bind(ctx context.Context, b backend.Binding) error {
	noWait := false
	if err := c.control(ctx, func(ch *amqp.Channel) error { return ch.QueueBind(b.Queue, b.Key, b.Exchange, noWait, nil) }); err != nil {
		return err
	}
	c.topo.AddBinding(b)
	return nil
}

func (c *Conn) Unbind(ctx context.Context, b backend.Binding) error {
	err := c.control(ctx, func(ch *amqp.Channel) error { return ch.QueueUnbind(b.Queue, b.Key, b.Exchange, nil) })
	if c.ErrorCode(err) == backend.NotFound {
		err = nil // the queue or exchange is gone, and the binding with it
	}
	if err != nil {
		return err
	}
	c.topo.DeleteBinding(b)
	return nil
}

func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	var n int
	noWait := false
	err := c.control(ctx, func(ch *amqp.Channel) error {
		var err error
		n, err = ch.QueuePurge(queue, noWait)
		return err
	})
	return n, err
}

// checkExchange makes sure an exchange exists before publishing to it: RabbitMQ answers a
// publish to a missing exchange by closing the channel, failing every publish in flight
// on it. A passive declaration on the control channel fails alone.
func (c *Conn) checkExchange(ctx context.Context, name string) error {
	if c.topo.exchangeKnown(name) {
		return nil
	}
	err := c.control(ctx, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclarePassive(name, "", false, false, false, false, nil)
	})
	if err != nil {
		return err
	}
	c.topo.setKnown(name, true)
	return nil
}

// missingExchange returns the exchange a 404 channel error names, if it names one.
func missingExchange(err error) (string, bool) {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
		return "", false
	}
	_, rest, ok := strings.Cut(ae.Reason, "no exchange '")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "'")
	return name, ok
}
