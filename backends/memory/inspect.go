package memory

import (
	"context"

	"github.com/carrot-go/carrot/backend"
)

var _ backend.Inspector = (*Conn)(nil)

// InspectQueue counts, exactly, the queue's ready messages (those a consumer took and
// has not handed out yet are unacknowledged), its unsettled deliveries to consumers and
// fetches, and its subscriptions.
func (c *Conn) InspectQueue(ctx context.Context, name string) (backend.QueueStats, error) {
	if err := c.lock(ctx); err != nil {
		return backend.QueueStats{}, err
	}
	defer c.b.mu.Unlock()
	q, err := c.queue(name)
	if err != nil {
		return backend.QueueStats{}, err
	}
	unacked := int64(q.fetched)
	for s := range q.subs {
		if !s.opts.AutoAck {
			unacked += s.unsettled.Load()
		}
	}
	return backend.QueueStats{Ready: int64(q.ready()), Unacked: unacked, Consumers: q.consumers}, nil
}
