package memory_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/internal/benchtest"
)

// The size of the messages of BenchmarkEndToEnd, and its publish window and prefetch.
const size, window = 100, 256

// BenchmarkEndToEnd runs messages of 100 bytes from one publishing goroutine to one
// consumer, end to end, through a plain Go channel (raw) and through carrot on the
// in-process broker (carrot), side by side in alternating rounds, and reports each one's
// rate, allocations and CPU time per message, peak resident memory, and carrot's rate as a
// share of the channel's. Run it with a fixed count of messages:
//
//	go test -run '^$' -bench EndToEnd -benchtime 1000000x ./backends/memory/
//
// The rounds are few and long (benchtest.MinRounds), so that the publisher can run ahead
// of the consumer as far as flow control lets it (max_depth, 100,000 messages). The peak
// memory is that of one more run of each side with all the messages at once, untimed,
// measured with Linux's /proc/self/clear_refs (and left out elsewhere).
//
// raw: the publisher sends each message by value, a [100]byte copied into the channel and
// out of it (so that, as with carrot, neither side sees the other's changes), on a channel
// buffered as deep as the broker's flow control lets a queue grow; the consumer receives
// it and checks it (there is nothing to ack).
//
// carrot: the publisher sends with PublishAsync, keeping a window of 256 messages in
// flight (PublisherOptions.MaxInFlight), and checks every confirmation; a Consumer with
// a prefetch of 256 acks each message in its handler. The round ends when the handler
// has had every message; the count must be exact and the queue empty.
func BenchmarkEndToEnd(b *testing.B) {
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i)
	}
	conn, err := carrot.Open(b.Context(), "memory://")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(b.Context(), carrot.Queue{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	benchtest.SideBySideWith(b, benchtest.Options{Rounds: benchtest.MinRounds, PeakRSS: true}, benchtest.Filled(conn, q, nil), []benchtest.Contestant{
		{Name: "raw", Run: rawEndToEnd(body, memory.DefaultMaxDepth)},
		{Name: "carrot", Run: carrotEndToEnd(conn, q, body, window)},
	}, [2]string{"carrot", "raw"})
}

// rawEndToEnd sends n copies of body by value on a channel of depth messages from one
// goroutine, and receives them in another.
func rawEndToEnd(body []byte, depth int) benchtest.Side {
	var msg [size]byte
	copy(msg[:], body)
	return func(b *testing.B, n int) {
		ch := make(chan [size]byte, depth)
		go func() {
			for range n {
				ch <- msg
			}
		}()
		for range n {
			if m := <-ch; m != msg {
				b.Fatalf("got %x, want %x", m, msg)
			}
		}
	}
}

// carrotEndToEnd publishes n copies of body to queue with PublishAsync, window in flight,
// while a Consumer with a prefetch of window acks each message.
func carrotEndToEnd(conn *carrot.Conn, queue string, body []byte, window int) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx, stop := context.WithCancel(b.Context())
		defer stop()
		var got atomic.Int64
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:   []carrot.Queue{{Name: queue, Passive: true}},
			Prefetch: window,
			Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				if len(m.Body) != len(body) {
					b.Errorf("got a message of %d bytes, want %d", len(m.Body), len(body))
				}
				err := m.Ack(ctx)
				if err != nil {
					b.Error(err)
				}
				if got.Add(1) == int64(n) {
					stop()
				}
				return err
			}),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ran := make(chan error, 1)
		go func() { ran <- c.Run(ctx) }()

		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: queue, MaxInFlight: window})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msg := &carrot.Message{ContentType: carrot.Binary, Body: body}
		inFlight := make([]*carrot.Confirmation, window) // a ring
		for i := range n {
			if cf := inFlight[i%window]; cf != nil {
				if err := cf.Err(); err != nil {
					b.Fatal(err)
				}
			}
			inFlight[i%window] = p.PublishAsync(b.Context(), msg)
		}
		for _, cf := range inFlight {
			if cf != nil {
				if err := cf.Err(); err != nil {
					b.Fatal(err)
				}
			}
		}

		if err := <-ran; !errors.Is(err, context.Canceled) {
			b.Fatalf("Run returned %v, want %v", err, context.Canceled)
		}
		if got := got.Load(); got != int64(n) {
			b.Fatalf("the handler got %d messages, want %d", got, n)
		}
		if left, err := conn.Purge(b.Context(), queue); err != nil || left != 0 {
			b.Fatalf("%d messages were left in the queue (%v), want none", left, err)
		}
	}
}
