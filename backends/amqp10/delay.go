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
	bucket, name, err := delayq.Plan("carrot/amqp10", p)
	if err != nil {
		return nil, err
	}
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
		delayq.Remember(c.opts.String(), p.Exchange, name)
	}
	return delayq.Redirect(p, name), nil
}
