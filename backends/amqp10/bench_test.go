package amqp10_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/amqp10"
	"github.com/carrot-go/carrot/internal/benchtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The benchmarks run raw go-amqp and carrot side by side, on the same RabbitMQ 4 and
// queue, in alternating rounds, and report each one's rate, allocations and CPU time per
// message, and carrot's rate as a share of raw go-amqp's used the same way: one goroutine
// keeping a window of sends awaiting their outcome (raw, carrot-async), or one goroutine
// per send in flight (raw-goroutines, carrot); a receiver with credit 256 accepting each
// message. Run them with a fixed count of messages:
//
//	CARROT_TEST_AMQP10_URL=amqp10://guest:guest@127.0.0.1:5673/ go test -run '^$' -bench . -benchtime 60000x ./backends/amqp10/

const inFlight = 256

// benchBroker returns a raw go-amqp session on a connection of its own and a carrot
// connection to the broker, and a durable queue declared for the benchmark.
func benchBroker(b *testing.B) (*amqp.Session, *carrot.Conn, string) {
	url := testbroker.URL(b, testbroker.RabbitMQ4)
	o, err := amqp10.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := amqp.Dial(b.Context(), "amqp://"+o.Addrs[0], &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(o.Username, o.Password), HostName: "vhost:" + o.Vhost})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	session, err := raw.NewSession(b.Context(), nil)
	if err != nil {
		b.Fatal(err)
	}
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
	return session, conn, q
}

func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			session, conn, q := benchBroker(b)
			body := make([]byte, size)
			sender, err := session.NewSender(b.Context(), "/queues/"+q, nil)
			if err != nil {
				b.Fatal(err)
			}
			benchtest.SideBySide(b, benchtest.Published(conn, q), []benchtest.Contestant{
				{Name: "raw", Run: rawPublisher(sender, body)},
				{Name: "carrot-async", Run: benchtest.CarrotAsyncPublisher(conn, q, body, inFlight)},
				{Name: "raw-goroutines", Run: rawGoroutinesPublisher(sender, body)},
				{Name: "carrot", Run: benchtest.CarrotPublisher(conn, q, body, inFlight)},
			}, [2]string{"carrot-async", "raw"}, [2]string{"carrot", "raw-goroutines"}, [2]string{"carrot", "raw"})
		})
	}
}

// rawMessage is the message the raw contestants send, as carrot sends its own.
func rawMessage(body []byte) *amqp.Message {
	ct := "application/octet-stream"
	return &amqp.Message{Header: &amqp.MessageHeader{Durable: true}, Properties: &amqp.MessageProperties{ContentType: &ct}, Data: [][]byte{body}}
}

// rawPublisher sends from one goroutine, keeping inFlight sends awaiting their outcome.
func rawPublisher(sender *amqp.Sender, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		msg := rawMessage(body)
		window := make([]amqp.SendReceipt, 0, inFlight)
		wait := func(r amqp.SendReceipt) {
			state, err := r.Wait(ctx)
			if _, ok := state.(*amqp.StateAccepted); !ok || err != nil {
				b.Fatalf("outcome %v, %v", state, err)
			}
		}
		for range n {
			if len(window) == inFlight {
				wait(window[0])
				window = window[1:]
			}
			r, err := sender.SendWithReceipt(ctx, msg, nil)
			if err != nil {
				b.Fatal(err)
			}
			window = append(window, r)
		}
		for _, r := range window {
			wait(r)
		}
	}
}

// rawGoroutinesPublisher sends from inFlight goroutines, each waiting for its outcome.
func rawGoroutinesPublisher(sender *amqp.Sender, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				msg := rawMessage(body)
				for next.Add(1) <= int64(n) {
					if err := sender.Send(b.Context(), msg, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

func BenchmarkConsumeAccept(b *testing.B) {
	session, conn, q := benchBroker(b)
	body := make([]byte, 100)
	sender, err := session.NewSender(b.Context(), "/queues/"+q, nil)
	if err != nil {
		b.Fatal(err)
	}
	benchtest.SideBySide(b, benchtest.Filled(conn, q, rawPublisher(sender, body)), []benchtest.Contestant{
		{Name: "raw", Run: rawConsumer(session, q)},
		{Name: "carrot", Run: benchtest.CarrotConsumer(conn, q, inFlight)},
	}, [2]string{"carrot", "raw"})
}

// rawConsumer receives n messages with credit inFlight, accepting each.
func rawConsumer(session *amqp.Session, q string) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		r, err := session.NewReceiver(ctx, "/queues/"+q, &amqp.ReceiverOptions{Credit: inFlight})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close(ctx)
		for range n {
			m, err := r.Receive(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.AcceptMessage(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
}
