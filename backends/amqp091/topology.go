package amqp091

import (
	"context"
	"errors"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/delayq"
	"github.com/carrot-go/carrot/internal/rabbitargs"
)

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
	args, err := rabbitargs.Queue("carrot/amqp091", q)
	if err != nil {
		return err
	}
	_, err = ch.QueueDeclare(q.Name, q.Durable, q.AutoDelete, q.Exclusive, noWait, amqp.Table(args))
	return err
}

func (c *Conn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	err := c.control(ctx, func(ch *amqp.Channel) error { return declareExchange(ch, x) })
	if err != nil {
		return err
	}
	c.known.Store(x.Name, true)
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
	c.known.Delete(name)
	// The delay exchanges and queues that deliver to it, which this process declared, go
	// with it: they could only drop what they hold.
	for _, d := range delayq.Forget(c.opts.String(), name) {
		err := c.control(ctx, func(ch *amqp.Channel) error {
			if _, err := ch.QueueDelete(d, false, false, false); err != nil {
				return err
			}
			return ch.ExchangeDelete(d, false, false)
		})
		if err != nil && c.ErrorCode(err) != backend.NotFound {
			return err
		}
		c.known.Delete(d)
	}
	return nil
}

func (c *Conn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	return c.control(ctx, func(ch *amqp.Channel) error { return declareQueue(ch, q) })
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
	return err
}

func (c *Conn) Bind(ctx context.Context, b backend.Binding) error {
	noWait := false
	return c.control(ctx, func(ch *amqp.Channel) error { return ch.QueueBind(b.Queue, b.Key, b.Exchange, noWait, nil) })
}

func (c *Conn) Unbind(ctx context.Context, b backend.Binding) error {
	err := c.control(ctx, func(ch *amqp.Channel) error { return ch.QueueUnbind(b.Queue, b.Key, b.Exchange, nil) })
	if c.ErrorCode(err) == backend.NotFound {
		err = nil // the queue or exchange is gone, and the binding with it
	}
	return err
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
	if name == "" {
		return nil
	}
	if _, ok := c.known.Load(name); ok {
		return nil
	}
	err := c.control(ctx, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclarePassive(name, "", false, false, false, false, nil)
	})
	if err != nil {
		return err
	}
	c.known.Store(name, true)
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
