package carrot_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/carrot-go/carrot"
)

// PublishAsync keeps many messages in flight from one goroutine, and MaxInFlight bounds
// them: with 64 sent and not yet confirmed, PublishAsync waits for a confirm before it
// sends the next, so the loop needs no window of its own however long the stream.
func ExamplePublisher_PublishAsync() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "events"}); err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "events", MaxInFlight: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer publisher.Close()

	confirmations := make([]*carrot.Confirmation, 0, 1000)
	for i := range 1000 {
		m := &carrot.Message{Body: []byte(strconv.Itoa(i))}
		confirmations = append(confirmations, publisher.PublishAsync(ctx, m))
	}
	confirmed := 0
	for _, c := range confirmations {
		if err := c.Wait(ctx); err != nil {
			log.Fatal(err)
		}
		confirmed++
	}
	fmt.Println("confirmed:", confirmed)

	n, err := conn.Purge(ctx, "events")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("in the queue:", n)
	// Output:
	// confirmed: 1000
	// in the queue: 1000
}

// csvCodec is a codec of text/csv: it encodes [][]string records.
type csvCodec struct{}

func (csvCodec) ContentType() string { return "text/csv" }

func (csvCodec) Encode(v any) ([]byte, error) {
	records, ok := v.([][]string)
	if !ok {
		return nil, fmt.Errorf("csv: cannot encode a %T", v)
	}
	var b bytes.Buffer
	if err := csv.NewWriter(&b).WriteAll(records); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func (csvCodec) Decode(body []byte, v any) error {
	p, ok := v.(*[][]string)
	if !ok {
		return fmt.Errorf("csv: cannot decode into a %T", v)
	}
	records, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		return err
	}
	*p = records
	return nil
}

// RegisterCodec adds a codec for a content type: a Publisher whose ContentType names it
// encodes with it, and Decode picks it for messages of that type.
func ExampleRegisterCodec() {
	carrot.RegisterCodec(csvCodec{})

	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "prices"}},
		Accept: []string{"text/csv"}, // Decode refuses any other content type
	})
	if err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "prices", ContentType: "text/csv"})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Send(ctx, [][]string{{"carrots", "1.20"}, {"leeks", "2.10"}}); err != nil {
		log.Fatal(err)
	}

	m, err := consumer.Fetch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	var prices [][]string
	if err := m.Decode(&prices); err != nil {
		log.Fatal(err)
	}
	fmt.Println("content type:", m.ContentType)
	for _, p := range prices {
		fmt.Println(p[0], p[1])
	}
	if err := m.Ack(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// content type: text/csv
	// carrots 1.20
	// leeks 2.10
}

// OpenEnv opens the broker that the CARROT_URL environment variable names, so that a
// deployment picks the broker and the code does not change.
func ExampleOpenEnv() {
	// A deployment sets CARROT_URL; this example sets it for itself.
	os.Setenv(carrot.EnvURL, "memory://orders")
	defer os.Unsetenv(carrot.EnvURL)

	ctx := context.Background()
	conn, err := carrot.OpenEnv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Println("connected to", conn)
	// Output: connected to memory://orders
}

// After MaxDeliveries failed deliveries, a message is dead-lettered: published to the
// policy's DeadLetterExchange, and from there to the dead-letter queue bound to it, with
// headers that say why.
func ExampleRetryPolicy_deadLetterQueue() {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	// The dead-letter queue, bound to the exchange the policy names; declaring it first
	// declares the exchange, which must exist when the failing consumer is made.
	dead, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{
		Name: "invoices.dead", Exchange: carrot.Exchange{Name: "invoices.dlx", Kind: carrot.Fanout},
	}}})
	if err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "invoices"}},
		Retry: carrot.RetryPolicy{
			MaxDeliveries:      2,
			MinBackoff:         10 * time.Millisecond,
			MaxBackoff:         10 * time.Millisecond,
			DeadLetterExchange: "invoices.dlx",
		},
		Logger: slog.New(slog.DiscardHandler), // the failures are logged otherwise
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			fmt.Println("delivery", m.DeliveryCount(), "fails")
			if m.DeliveryCount() == 2 {
				defer stop()
			}
			return errors.New("no such customer")
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	publisher, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "invoices"})
	if err != nil {
		log.Fatal(err)
	}
	if err := publisher.Send(ctx, map[string]int{"invoice": 42}); err != nil {
		log.Fatal(err)
	}
	if err := consumer.Run(runCtx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}

	// Consume the dead letter from its queue.
	deadCtx, gotIt := context.WithCancel(ctx)
	dead.Register(func(ctx context.Context, m *carrot.Message) error {
		fmt.Println("dead letter:", string(m.Body))
		for _, h := range []string{"carrot-error", "carrot-deliveries", "carrot-queue", "carrot-routing-key"} {
			fmt.Printf("  %s: %v\n", h, m.Headers[h])
		}
		gotIt()
		return m.Ack(ctx)
	})
	if err := dead.Run(deadCtx); !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	// Output:
	// delivery 1 fails
	// delivery 2 fails
	// dead letter: {"invoice":42}
	//   carrot-error: no such customer
	//   carrot-deliveries: 2
	//   carrot-queue: invoices
	//   carrot-routing-key: invoices
}
