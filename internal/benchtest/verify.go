package benchtest

import (
	"testing"

	"github.com/carrot-go/carrot"
)

// Published returns a prepare function for publishing benchmarks: it checks that queue
// holds exactly the messages the last run published (none before the first run), then
// empties it.
func Published(conn *carrot.Conn, queue string) func(b *testing.B, n int) {
	last := 0
	return func(b *testing.B, n int) {
		got, err := conn.Purge(b.Context(), queue)
		if err != nil {
			b.Fatal(err)
		}
		if got != last {
			b.Fatalf("the queue held %d messages after a run that published %d", got, last)
		}
		last = n
	}
}

// Filled returns a prepare function for consuming benchmarks: it checks that queue is
// empty, every message of the last run consumed and acked, then puts n messages in it
// with fill (nil for runs that publish their own).
func Filled(conn *carrot.Conn, queue string, fill Side) func(b *testing.B, n int) {
	return func(b *testing.B, n int) {
		left, err := conn.Purge(b.Context(), queue)
		if err != nil {
			b.Fatal(err)
		}
		if left != 0 {
			b.Fatalf("%d messages left in the queue after a run that should have acked them all", left)
		}
		if n > 0 && fill != nil {
			fill(b, n)
		}
	}
}
