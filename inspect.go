package carrot

import (
	"context"
	"fmt"

	"github.com/carrot-go/carrot/backend"
)

// QueueStats is what a broker says of a queue at one moment: its ready and unacknowledged
// messages and its consumers. A count the backend does not know is -1; see
// [backend.QueueStats].
type QueueStats = backend.QueueStats

// QueueCounts is a set of the counts of [QueueStats]: the type of
// [Capabilities].InspectQueue, which says what [Conn.InspectQueue] reports.
type QueueCounts = backend.QueueCounts

// The counts of QueueStats, for [Capabilities].InspectQueue.
const (
	ReadyCount    = backend.ReadyCount    // QueueStats.Ready
	UnackedCount  = backend.UnackedCount  // QueueStats.Unacked
	ConsumerCount = backend.ConsumerCount // QueueStats.Consumers
	AllCounts     = backend.AllCounts     // every count
)

// InspectQueue returns how many messages a queue holds, ready and delivered but not yet
// settled, and how many consumers read it, without taking or moving any message. The
// counts Capabilities().InspectQueue names are set (but for what a backend documents it
// cannot always say); the others are -1:
//
//   - memory:// reports all three, exactly;
//   - redis:// reports all three, from the queue's stream and consumer group;
//   - amqp:// (RabbitMQ over AMQP 0-9-1) reports ready messages and consumers, from a
//     passive queue.declare; not unacknowledged messages, which only RabbitMQ's
//     management tools count;
//   - amqp10:// (RabbitMQ 4) reports ready messages and consumers, from its management
//     node; not unacknowledged messages.
//
// A queue that does not exist is an [ErrNotFound] error; a backend that cannot inspect
// queues gives an [ErrUnsupported] error. Like the other calls of a Conn, InspectQueue
// waits within ctx for a connection that is being recovered.
func (c *Conn) InspectQueue(ctx context.Context, name string) (QueueStats, error) {
	op := fmt.Sprintf("inspect queue %q", name)
	if err := checkName(op, "queue", name, false); err != nil {
		return QueueStats{}, err
	}
	if c.Capabilities().InspectQueue == 0 {
		return QueueStats{}, unsupportedf(op, "the backend of %s cannot inspect queues", c.name)
	}
	var st QueueStats
	err := c.do(ctx, op, true, func(g *generation) error {
		in, ok := g.b.(backend.Inspector)
		if !ok || g.caps.InspectQueue == 0 {
			return unsupportedf(op, "the backend of %s cannot inspect queues", c.name)
		}
		var err error
		st, err = in.InspectQueue(ctx, name)
		st = only(g.caps.InspectQueue, st)
		return err
	})
	if err != nil {
		return QueueStats{}, err
	}
	return st, nil
}

// only returns st with the counts outside s, and any negative count, set to -1: the
// portable layer keeps the promise that a count not reported is -1.
func only(s QueueCounts, st QueueStats) QueueStats {
	if !s.Has(ReadyCount) || st.Ready < 0 {
		st.Ready = -1
	}
	if !s.Has(UnackedCount) || st.Unacked < 0 {
		st.Unacked = -1
	}
	if !s.Has(ConsumerCount) || st.Consumers < 0 {
		st.Consumers = -1
	}
	return st
}

// capabilities returns what b reports, but no queue inspection for a Conn that is not a
// backend.Inspector (a wrapper that does not pass it on, say), so that Capabilities
// never promises what InspectQueue cannot do.
func capabilities(b backend.Conn) Capabilities {
	caps := b.Capabilities()
	if _, ok := b.(backend.Inspector); !ok {
		caps.InspectQueue = 0
	}
	return caps
}
