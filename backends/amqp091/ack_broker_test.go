package amqp091_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// TestAckWaitingWhenQueueDeleted acks a message, then deletes its queue while the ack
// waits to be sent (ack_delay is long): Run ends with ErrNotFound, and the connection
// lives on: the waiting ack never reaches the channel once it is closed (RabbitMQ ends the
// whole connection, 504 CHANNEL_ERROR expected 'channel.open', for a frame on a channel
// it has closed).
func TestAckWaitingWhenQueueDeleted(t *testing.T) {
	ctx := t.Context()
	conn := open(t, "ack_delay=300ms")
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
	received := make(chan struct{}, 1)
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: q, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			received <- struct{}{}
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "acked, then its queue deleted"); err != nil {
		t.Fatal(err)
	}
	<-received
	if err := conn.DeleteQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, carrot.ErrNotFound) {
			t.Errorf("Run on a deleted queue = %v, want ErrNotFound", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after its queue was deleted")
	}
	time.Sleep(600 * time.Millisecond) // past the ack delay
	if s := conn.State(); !s.Connected || s.Recoveries > 0 {
		t.Errorf("connection state %+v after the queue's deletion; want connected, never lost", s)
	}
}
