package carrot_test

import (
	"context"
	"fmt"
	"log"

	"github.com/carrot-go/carrot"
	_ "github.com/carrot-go/carrot/backends/memory"
)

// The seed's feed-import example: a consumer declares queue "feed", bound to exchange
// "feed" with routing key "importer"; a publisher sends it a JSON message.
func Example() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{
			Name:       "feed",
			Exchange:   carrot.Exchange{Name: "feed"},
			RoutingKey: "importer",
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
		var data map[string]string
		if err := m.Decode(&data); err != nil {
			return err
		}
		fmt.Println("Got feed import message for:", data["import_feed"])
		err := m.Ack(ctx)
		stop() // one message is enough for the example
		return err
	})

	publisher, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "feed", RoutingKey: "importer"})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Send(ctx, map[string]string{"import_feed": "http://cnn.com/rss/edition.rss"}); err != nil {
		log.Fatal(err)
	}
	publisher.Close()

	consumer.Run(runCtx) // the consumer loop, until stop is called
	// Output: Got feed import message for: http://cnn.com/rss/edition.rss
}
