package amqp091

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

var _ backend.Inspector = (*Conn)(nil)

// InspectQueue declares the queue passively on the control channel: RabbitMQ's
// queue.declare-ok carries its ready messages and its consumers. AMQP 0-9-1 has no count
// of unacknowledged messages (only RabbitMQ's management tools have one): Unacked is -1.
// A missing queue closes the control channel, which the next call replaces.
func (c *Conn) InspectQueue(ctx context.Context, name string) (backend.QueueStats, error) {
	var q amqp.Queue
	err := c.control(ctx, func(ch *amqp.Channel) error {
		var err error
		durable, autoDelete, exclusive, noWait := false, false, false, false // ignored by a passive declaration
		q, err = ch.QueueDeclarePassive(name, durable, autoDelete, exclusive, noWait, nil)
		return err
	})
	if err != nil {
		return backend.QueueStats{}, err
	}
	return backend.QueueStats{Ready: int64(q.Messages), Unacked: -1, Consumers: q.Consumers}, nil
}
