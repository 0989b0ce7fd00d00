package flowtest

import (
	"errors"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// FetchAck fetches one message from queue with conn, waiting up to ten seconds for one to
// arrive (a message published through another connection may reach the queue a moment
// after its confirm), acks it and returns it. It fails t on any other error.
func FetchAck(t testing.TB, conn *carrot.Conn, queue string) *carrot.Message {
	t.Helper()
	ctx := t.Context()
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: queue, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
}
