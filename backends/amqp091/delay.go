package amqp091

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/delayq"
)

// delayed returns p as it is published to wait out its delay: to the delay exchange for
// its exchange and delay (see package delayq), declared on first use.
func (c *Conn) delayed(ctx context.Context, p *backend.Publishing) (*backend.Publishing, error) {
	bucket, name, err := delayq.Plan("carrot/amqp091", p)
	if err != nil {
		return nil, err
	}
	if _, ok := c.known.Load(name); !ok {
		err := c.control(ctx, func(ch *amqp.Channel) error {
			if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
				return err
			}
			args := amqp.Table{"x-message-ttl": bucket, "x-dead-letter-exchange": p.Exchange}
			if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
				return err
			}
			return ch.QueueBind(name, "", name, false, nil)
		})
		if err != nil {
			return nil, err
		}
		c.known.Store(name, true)
		delayq.Remember(c.opts.String(), p.Exchange, name)
	}
	return delayq.Redirect(p, name), nil
}
