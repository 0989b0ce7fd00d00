package redis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/carrot-go/carrot"
	_ "github.com/carrot-go/carrot/backends/redis" // registers redis://
)

// roundTrip publishes one message to a queue of its own on the broker at url, consumes
// it, writes what it received to w, and deletes the queue.
func roundTrip(ctx context.Context, w io.Writer, url, queue string) error {
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close()

	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: queue}},
	})
	if err != nil {
		return err
	}
	defer conn.DeleteQueue(context.WithoutCancel(ctx), queue) // leave nothing behind

	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: queue}) // the default exchange
	if err != nil {
		return err
	}
	defer publisher.Close()
	if err := publisher.Send(ctx, map[string]string{"greeting": "hello over Redis"}); err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
		var data map[string]string
		if err := m.Decode(&data); err != nil {
			return err
		}
		fmt.Fprintln(w, "received:", data["greeting"])
		err := m.Ack(ctx)
		stop() // one message is enough
		return err
	})
	if err := consumer.Run(runCtx); !errors.Is(err, context.Canceled) {
		return err
	}
	return consumer.Shutdown(ctx) // the ack is applied once Shutdown returns
}

// Example publishes one message to Redis Streams and consumes it. It needs the broker at
// redis://localhost:6379/0, so go test compiles it and does not run it; TestExample runs
// roundTrip against the broker of CARROT_TEST_REDIS_URL and checks that it prints
//
//	received: hello over Redis
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := roundTrip(ctx, os.Stdout, "redis://localhost:6379/0", "carrot-example"); err != nil {
		log.Fatal(err)
	}
}
