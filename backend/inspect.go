package backend

import (
	"context"
	"strings"
)

// An Inspector is a Conn that can tell how many messages a queue holds and how many
// consumers read it, without taking any message. carrot's Conn.InspectQueue uses it; for
// a Conn that does not implement it, or whose [Capabilities.InspectQueue] is empty,
// InspectQueue is an Unsupported error.
type Inspector interface {
	// InspectQueue returns the counts of the named queue, as the broker has them now. The
	// counts named in Capabilities.InspectQueue are set, unless the broker could not say
	// this time (each backend documents when), and the others are -1. A queue that does
	// not exist is a NotFound error. It may be called concurrently.
	InspectQueue(ctx context.Context, name string) (QueueStats, error)
}

// QueueStats is what a broker says of a queue at one moment. A count that is not known
// is -1, as the ContentLength of net/http: check for it before adding counts up. The
// counts are a snapshot: messages move between them as they are delivered and settled,
// and a broker may count some of them a moment late.
type QueueStats struct {
	// Ready is how many messages wait in the queue to be delivered: not those delivered
	// and not settled, nor those delayed (see Message.Delay) that have yet to enter it.
	Ready int64
	// Unacked is how many messages were delivered to consumers or fetched and are not
	// settled yet.
	Unacked int64
	// Consumers is how many subscriptions (consumers started with Conn.Consume) read the
	// queue, from any connection; fetching with Get is not one.
	Consumers int
}

// QueueCounts is a set of the counts of [QueueStats]; see [Capabilities.InspectQueue].
type QueueCounts uint8

const (
	// ReadyCount is QueueStats.Ready.
	ReadyCount QueueCounts = 1 << iota
	// UnackedCount is QueueStats.Unacked.
	UnackedCount
	// ConsumerCount is QueueStats.Consumers.
	ConsumerCount

	// AllCounts is every count.
	AllCounts = ReadyCount | UnackedCount | ConsumerCount
)

// Has reports whether s holds every count of c.
func (s QueueCounts) Has(c QueueCounts) bool { return s&c == c }

// String names the counts of s, as "ready, unacked, consumers"; "none" for the empty set.
func (s QueueCounts) String() string {
	var names []string
	for _, c := range []struct {
		count QueueCounts
		name  string
	}{{ReadyCount, "ready"}, {UnackedCount, "unacked"}, {ConsumerCount, "consumers"}} {
		if s.Has(c.count) {
			names = append(names, c.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
