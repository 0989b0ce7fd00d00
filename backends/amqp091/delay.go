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
	if p.Expiration > 0 {
		return nil, backend.Errorf(backend.Unsupported, "carrot/amqp091: a delayed message cannot also expire: RabbitMQ drops the expiration of a message it dead-letters")
	}
	if p.Delay > delayq.Max {
		return nil, backend.Errorf(backend.Invalid, "carrot/amqp091: delay %v is longer than RabbitMQ's longest, %v", p.Delay, delayq.Max)
	}
	bucket := delayq.Bucket(p.Delay)
	name := delayq.Name(p.Exchange, bucket)
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
	}
	d := *p
	d.Exchange = name
	d.Delay = 0
	return &d, nil
}
