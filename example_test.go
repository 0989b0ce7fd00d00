package carrot_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
)

// The feed-import example of carrot 0.4 (Python): a consumer declares queue "feed", bound to exchange
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

// Polling a queue with Fetch instead of a consume loop, as carrot 0.4's consumer.fetch().
func ExampleConsumer_Fetch() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	feed := carrot.Queue{Name: "feed", Exchange: carrot.Exchange{Name: "feed"}, RoutingKey: "importer"}
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{feed}})
	if err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "feed", RoutingKey: "importer"})
	if err != nil {
		log.Fatal(err)
	}
	publisher.Send(ctx, map[string]string{"import_feed": "http://cnn.com/rss/edition.rss"})

	for {
		message, err := consumer.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			fmt.Println("No messages waiting on the queue.")
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		var data map[string]string
		if err := message.Decode(&data); err != nil {
			message.Reject(ctx)
			continue
		}
		fmt.Println("Fetched:", data["import_feed"])
		message.Ack(ctx)
	}
	// Output:
	// Fetched: http://cnn.com/rss/edition.rss
	// No messages waiting on the queue.
}

// FeedConsumer is the Go form of carrot 0.4's FeedConsumer subclass: a handler type.
type FeedConsumer struct {
	imported chan<- string
}

func (f FeedConsumer) Receive(ctx context.Context, m *carrot.Message) error {
	var data struct {
		Action  string `json:"action"`
		FeedURL string `json:"feed_url"`
	}
	if err := m.Decode(&data); err != nil {
		return err // rejected: it will never decode
	}
	if data.Action != "import_feed" {
		return fmt.Errorf("unknown action: %s", data.Action) // requeued and logged
	}
	f.imported <- data.FeedURL
	return m.Ack(ctx)
}

// FeedPublisher is carrot 0.4's FeedPublisher: a Publisher with a method of its own.
type FeedPublisher struct{ *carrot.Publisher }

func (f FeedPublisher) ImportFeed(ctx context.Context, feedURL string) error {
	return f.Send(ctx, map[string]string{"action": "import_feed", "feed_url": feedURL})
}

// The subclassing example of carrot 0.4: a consumer type and a publisher type.
func Example_handlerType() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	imported := make(chan string, 1)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:  []carrot.Queue{{Name: "feed", Exchange: carrot.Exchange{Name: "feed"}, RoutingKey: "importer"}},
		Handler: FeedConsumer{imported: imported},
	})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- consumer.Run(runCtx) }()

	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "feed", RoutingKey: "importer"})
	if err != nil {
		log.Fatal(err)
	}
	if err := (FeedPublisher{p}).ImportFeed(ctx, "http://cnn.com/rss/edition.rss"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("imported", <-imported)
	stop()
	<-done
	// Output: imported http://cnn.com/rss/edition.rss
}

// Decoded hands the handler the decoded value, like carrot 0.4's callback(message_data, message).
func ExampleDecoded() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	type Order struct {
		ID    int
		Items []string
	}
	runCtx, stop := context.WithCancel(ctx)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "orders"}},
		Handler: carrot.Decoded(func(ctx context.Context, o Order, m *carrot.Message) error {
			fmt.Printf("order %d: %v\n", o.ID, o.Items)
			defer stop()
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "orders"}) // the default exchange
	if err != nil {
		log.Fatal(err)
	}
	p.Send(ctx, Order{ID: 7, Items: []string{"carrots", "leeks"}})
	consumer.Run(runCtx)
	// Output: order 7: [carrots leeks]
}

// A topic exchange routes on patterns: "*" is exactly one word, "#" zero or more.
func Example_topic() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	stocks := carrot.Exchange{Name: "stocks", Kind: carrot.Topic}
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "stock-news", Exchange: stocks, RoutingKey: "*.stock.#"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "stocks", AllowUnroutable: true})
	if err != nil {
		log.Fatal(err)
	}
	for _, key := range []string{"usd.stock", "eur.stock.db", "stock.nasdaq"} {
		p.Publish(ctx, &carrot.Message{RoutingKey: key, Body: []byte(key)})
	}
	for {
		m, err := consumer.Fetch(ctx)
		if err != nil {
			break
		}
		fmt.Println(string(m.Body))
		m.Ack(ctx)
	}
	// Output:
	// usd.stock
	// eur.stock.db
}

// A Conn recovers a lost connection on its own: here the memory backend's Link cuts it,
// and the Conn connects again, declares its queue again and goes on. OnEvent reports
// each step.
func ExampleDialer() {
	ctx := context.Background()
	link := new(memory.Link) // stands for the network; a real one breaks on its own
	restored := make(chan struct{})
	d := carrot.Dialer{
		OnEvent: func(e carrot.Event) {
			fmt.Println("connection", e.Kind)
			if e.Kind == carrot.EventRestored {
				close(restored)
			}
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	conn, err := d.Connect(ctx, memory.NewConnector(&memory.Options{Link: link}))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "jobs", Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}

	link.Cut() // the exclusive queue goes with the connection
	<-restored
	fmt.Println("connected:", conn.State().Connected, "recoveries:", conn.State().Recoveries)

	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		log.Fatal(err)
	}
	err = p.Send(ctx, "after the cut") // the queue was declared again
	fmt.Println("published:", err)
	// Output:
	// connection lost
	// connection restored
	// connected: true recoveries: 1
	// published: <nil>
}

// Middleware wraps every handler of a consumer, and publish hooks every publish: here to
// carry a correlation id from the publishing side to the handler's context, and to time
// each message.
func ExampleConsumerOptions_middleware() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	type correlationKey struct{}
	correlate := func(next carrot.Handler) carrot.Handler {
		return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			id, _ := m.Headers["correlation-id"].(string)
			return next.Receive(context.WithValue(ctx, correlationKey{}, id), m)
		})
	}
	timed := func(next carrot.Handler) carrot.Handler {
		return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			start := time.Now()
			err := next.Receive(ctx, m)
			_ = time.Since(start) // to a metric
			return err
		})
	}
	runCtx, stop := context.WithCancel(ctx)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:     []carrot.Queue{{Name: "orders"}},
		Middleware: []func(carrot.Handler) carrot.Handler{timed, correlate},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			fmt.Printf("order %s, correlation id %s\n", m.Body, ctx.Value(correlationKey{}))
			stop()
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		log.Fatal(err)
	}

	publisher, err := conn.NewPublisher(carrot.PublisherOptions{
		RoutingKey: "orders",
		Hooks: []carrot.PublishHook{{
			Before: func(ctx context.Context, m *carrot.Message) context.Context {
				m.Headers = carrot.Table{"correlation-id": "c-42"}
				return ctx
			},
			After: func(ctx context.Context, m *carrot.Message, err error) {
				if err != nil {
					log.Printf("publish failed: %v", err)
				}
			},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Publish(ctx, &carrot.Message{Body: []byte("#1")}); err != nil {
		log.Fatal(err)
	}
	if err := consumer.Run(runCtx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	// Output: order #1, correlation id c-42
}

// A message published with a Delay is delivered once the delay has passed; those
// published after it do not wait for it.
func ExampleMessage_delay() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "reminders"}}})
	if err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "reminders"})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Publish(ctx, &carrot.Message{Body: []byte("in 100ms"), Delay: 100 * time.Millisecond}); err != nil {
		log.Fatal(err)
	}
	if err := publisher.Publish(ctx, &carrot.Message{Body: []byte("now")}); err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
		fmt.Println(string(m.Body))
		if string(m.Body) == "in 100ms" {
			stop()
		}
		return m.Ack(ctx)
	})
	if err := consumer.Run(runCtx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	// Output:
	// now
	// in 100ms
}

// A handler that fails has its message retried after a backoff, then, after
// MaxDeliveries, dead-lettered with headers saying why.
func ExampleRetryPolicy() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	dead, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{
		Name: "payments.dead", Exchange: carrot.Exchange{Name: "payments.dlx", Kind: carrot.Fanout},
	}}})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "payments", DeadLetterExchange: "payments.dlx"}},
		Retry:  carrot.RetryPolicy{MaxDeliveries: 3, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		Logger: slog.New(slog.DiscardHandler),
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			fmt.Println("delivery", m.DeliveryCount())
			if m.DeliveryCount() == 3 {
				defer stop()
			}
			return errors.New("card declined")
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "payments"})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Send(ctx, map[string]int{"cents": 1999}); err != nil {
		log.Fatal(err)
	}
	if err := consumer.Run(runCtx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	m, err := dead.Fetch(ctx)
	for errors.Is(err, carrot.ErrEmpty) { // the dead letter is published as Run returns
		time.Sleep(time.Millisecond)
		m, err = dead.Fetch(ctx)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dead-lettered:", m.Headers["carrot-error"], "after", m.Headers["carrot-deliveries"], "deliveries")
	// Output:
	// delivery 1
	// delivery 2
	// delivery 3
	// dead-lettered: card declined after 3 deliveries
}
