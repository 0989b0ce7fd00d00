package amqp10

import (
	"context"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/delayq"
)

// delayed returns p as it is published to wait out its delay: to the delay exchange for
// its exchange and delay (see package delayq), declared over management on first use,
// after checking that its exchange exists (RabbitMQ would drop what it dead-letters to a
// missing one).
func (c *Conn) delayed(ctx context.Context, p *backend.Publishing) (*backend.Publishing, error) {
	if p.Expiration > 0 {
		return nil, backend.Errorf(backend.Unsupported, "carrot/amqp10: a delayed message cannot also expire: RabbitMQ drops the expiration of a message it dead-letters")
	}
	if p.Delay > delayq.Max {
		return nil, backend.Errorf(backend.Invalid, "carrot/amqp10: delay %v is longer than RabbitMQ's longest, %v", p.Delay, delayq.Max)
	}
	bucket := delayq.Bucket(p.Delay)
	name := delayq.Name(p.Exchange, bucket)
	if _, ok := c.delays.Load(name); !ok {
		if p.Exchange != "" {
			if err := c.exchangeExists(ctx, p.Exchange); err != nil {
				return nil, err
			}
		}
		if err := c.declareExchange(ctx, backend.Exchange{Name: name, Kind: backend.Fanout, Durable: true}); err != nil {
			return nil, err
		}
		q := backend.Queue{Name: name, Durable: true, Args: map[string]any{"x-message-ttl": bucket, "x-dead-letter-exchange": p.Exchange}}
		if err := c.declareQueue(ctx, q); err != nil {
			return nil, err
		}
		if err := c.bind(ctx, backend.Binding{Exchange: name, Queue: name}); err != nil {
			return nil, err
		}
		c.delays.Store(name, true)
	}
	d := *p
	d.Exchange = name
	d.Delay = 0
	return &d, nil
}
