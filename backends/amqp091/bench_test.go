package amqp091_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/benchtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The benchmarks run raw amqp091-go and carrot side by side, on the same broker and queue,
// in alternating rounds, and report each one's rate, allocations and CPU time per message,
// and carrot's rate as a share of raw amqp091-go's used the same way: one goroutine
// keeping a window of unconfirmed publishes (raw, carrot-async), or one goroutine per
// publish in flight, each waiting for its confirm (raw-goroutines, carrot). Run them with
// a fixed count of messages:
//
//	go test -run '^$' -bench . -benchtime 20000x ./backends/amqp091/

const inFlight = 256 // publishes awaiting confirms; the consumers' prefetch

// benchBroker returns the broker URL, a raw connection and a carrot connection to it, and
// a durable queue declared for the benchmark.
func benchBroker(b *testing.B) (*amqp.Connection, *carrot.Conn, string) {
	url := testbroker.URL(b, testbroker.RabbitMQ)
	raw, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	conn, err := carrot.Open(b.Context(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	q, err := conn.DeclareQueue(b.Context(), carrot.Queue{Name: fmt.Sprintf("carrot-bench.%d", time.Now().UnixNano())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.DeleteQueue(context.Background(), q) })
	return raw, conn, q
}

func BenchmarkPublishConfirmed(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			raw, conn, q := benchBroker(b)
			body := make([]byte, size)
			benchtest.SideBySide(b, benchtest.Published(conn, q), []benchtest.Contestant{
				{Name: "raw", Run: rawPublisher(raw, q, body)},
				{Name: "carrot-async", Run: benchtest.CarrotAsyncPublisher(conn, q, body, inFlight)},
				{Name: "raw-goroutines", Run: rawGoroutinesPublisher(raw, q, body)},
				{Name: "carrot", Run: benchtest.CarrotPublisher(conn, q, body, inFlight)},
			}, [2]string{"carrot-async", "raw"}, [2]string{"carrot", "raw-goroutines"}, [2]string{"carrot", "raw"})
		})
	}
}

// rawPublisher publishes persistent messages on one confirm-mode channel, keeping
// inFlight unconfirmed, as a careful amqp091-go program does.
func rawPublisher(conn *amqp.Connection, q string, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		ch := confirmChannel(b, conn)
		defer ch.Close()
		window := make([]*amqp.DeferredConfirmation, 0, inFlight)
		msg := amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: body}
		for range n {
			if len(window) == inFlight {
				if !window[0].Wait() {
					b.Fatal("nack")
				}
				window = window[1:]
			}
			dc, err := ch.PublishWithDeferredConfirm("", q, true, false, msg)
			if err != nil {
				b.Fatal(err)
			}
			window = append(window, dc)
		}
		for _, dc := range window {
			if !dc.Wait() {
				b.Fatal("nack")
			}
		}
	}
}

// confirmChannel opens a channel in confirm mode.
func confirmChannel(b *testing.B, conn *amqp.Connection) *amqp.Channel {
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	return ch
}

// rawGoroutinesPublisher publishes the same messages as benchtest.CarrotPublisher, from
// inFlight goroutines sharing one confirm-mode channel, each waiting for its own confirm:
// amqp091-go used the way carrot's Publish is.
func rawGoroutinesPublisher(conn *amqp.Connection, q string, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		ch := confirmChannel(b, conn)
		defer ch.Close()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				msg := amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: body}
				for next.Add(1) <= int64(n) {
					dc, err := ch.PublishWithDeferredConfirm("", q, true, false, msg)
					if err != nil {
						b.Error(err)
						return
					}
					if !dc.Wait() {
						b.Error("nack")
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

func BenchmarkConsumeAck(b *testing.B) {
	raw, conn, q := benchBroker(b)
	body := make([]byte, 100)
	benchtest.SideBySide(b, benchtest.Filled(conn, q, rawPublisher(raw, q, body)), []benchtest.Contestant{
		{Name: "raw", Run: rawConsumer(raw, q, 1)},
		{Name: "raw-multiple", Run: rawConsumer(raw, q, 50)},
		{Name: "carrot", Run: benchtest.CarrotConsumer(conn, q, inFlight)},
	}, [2]string{"carrot", "raw"}, [2]string{"carrot", "raw-multiple"})
}

// rawConsumer consumes n messages at prefetch inFlight, acking every one (every 1), or
// every few with multiple set, as a program that batches its acks by hand does.
func rawConsumer(conn *amqp.Connection, q string, every int) benchtest.Side {
	return func(b *testing.B, n int) {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		defer ch.Close()
		if err := ch.Qos(inFlight, 0, false); err != nil {
			b.Fatal(err)
		}
		deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			d := <-deliveries
			if (i+1)%every != 0 && i != n-1 {
				continue
			}
			if err := d.Ack(every > 1); err != nil {
				b.Fatal(err)
			}
		}
	}
}
