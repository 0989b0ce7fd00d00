package amqp10

import (
	"context"

	"github.com/carrot-go/carrot/backend"
)

var _ backend.Inspector = (*Conn)(nil)

// InspectQueue asks RabbitMQ's management node (GET /queues/NAME), whose answer carries
// the queue's ready messages (message_count) and its consumers (consumer_count), but no
// count of unacknowledged messages: Unacked is -1. RabbitMQ counts as a consumer the
// receiver a connection keeps attached to a queue it fetched from; this connection's own
// is not counted.
func (c *Conn) InspectQueue(ctx context.Context, name string) (backend.QueueStats, error) {
	// Under getMu, so that no Get attaches or detaches this connection's receiver for
	// the queue between the answer and the count of it.
	c.getMu.Lock()
	defer c.getMu.Unlock()
	path := "/queues/" + escape(name)
	r, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return backend.QueueStats{}, err
	}
	if err := check("GET", path, r, 200); err != nil {
		return backend.QueueStats{}, err
	}
	st := backend.QueueStats{Ready: -1, Unacked: -1, Consumers: -1}
	if n, ok := field(r.body, "message_count"); ok {
		st.Ready = n
	}
	if n, ok := field(r.body, "consumer_count"); ok {
		st.Consumers = int(n)
		if c.getters[name] != nil && st.Consumers > 0 {
			st.Consumers--
		}
	}
	return st, nil
}
