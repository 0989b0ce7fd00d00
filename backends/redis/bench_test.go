package redis_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/benchtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The benchmarks run raw go-redis and carrot side by side, on the same Redis and stream,
// in alternating rounds, and report each one's rate, allocations and CPU time per message,
// and carrot's rate as a share of raw go-redis's doing the equivalent stream commands,
// both sides with the same window of 256 messages:
//
//   - publish from one goroutine: raw XADD pipelined 256 a round trip; carrot
//     PublishAsync with 256 messages in flight;
//   - publish from 256 goroutines, each waiting for its message: raw XADD; carrot Publish;
//   - consume: raw XREADGROUP COUNT 256, its XACK pipelined with the next read; carrot's
//     Consumer with prefetch 256, acking each message in its handler.
//
// Each side's every round is checked: exactly the messages sent are in the stream, or
// were received, and the queue is empty after it. Run them with a fixed count of messages:
//
//	CARROT_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchtime 50000x ./backends/redis/
const window = 256

// benchBroker returns a raw client, a carrot connection in a namespace of the benchmark's
// own, and a queue declared in it with its stream key.
func benchBroker(b *testing.B) (*goredis.Client, *carrot.Conn, string, string) {
	base := testbroker.URL(b, testbroker.Redis)
	ns := fmt.Sprintf("carrot-bench-%d", time.Now().UnixNano())
	opts, err := goredis.ParseURL(base)
	if err != nil {
		b.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	b.Cleanup(func() {
		iter := raw.Scan(context.Background(), 0, "{"+ns+"}:*", 1000).Iterator()
		for iter.Next(context.Background()) {
			raw.Del(context.Background(), iter.Val())
		}
		raw.Close()
	})
	conn, err := carrot.Open(b.Context(), base+"?namespace="+ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	q, err := conn.DeclareQueue(b.Context(), carrot.Queue{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return raw, conn, q, "{" + ns + "}:s:" + q
}

// checked wraps a Side so that the round after it checks what it left: want(b, n) runs,
// untimed, in the next call of prepare (SideBySide calls it once more after the last
// round).
type checked struct {
	last func(b *testing.B) // the check of the side that ran last, or nil
}

func (k *checked) side(run benchtest.Side, want func(b *testing.B, n int)) benchtest.Side {
	return func(b *testing.B, n int) {
		run(b, n)
		k.last = func(b *testing.B) { want(b, n) }
	}
}

func (k *checked) check(b *testing.B) {
	if k.last != nil {
		k.last(b)
		k.last = nil
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			raw, conn, q, stream := benchBroker(b)
			body := make([]byte, size)
			var k checked
			// Exactly the n messages published are in the stream, none read.
			added := func(b *testing.B, n int) {
				if got, err := raw.XLen(b.Context(), stream).Result(); err != nil || got != int64(n) {
					b.Fatalf("stream holds %d messages (%v), want %d", got, err, n)
				}
			}
			prepare := func(b *testing.B, n int) {
				k.check(b)
				if _, err := conn.Purge(b.Context(), q); err != nil {
					b.Fatal(err)
				}
				if got, err := raw.XLen(b.Context(), stream).Result(); err != nil || got != 0 {
					b.Fatalf("purged stream holds %d messages (%v), want none", got, err)
				}
			}
			benchtest.SideBySide(b, prepare, []benchtest.Contestant{
				{Name: "raw", Run: k.side(rawPublisher(raw, stream, q, body), added)},
				{Name: "carrot-async", Run: k.side(benchtest.CarrotAsyncPublisher(conn, q, body, window), added)},
				{Name: "raw-goroutines", Run: k.side(rawGoroutinesPublisher(raw, stream, q, body), added)},
				{Name: "carrot", Run: k.side(benchtest.CarrotPublisher(conn, q, body, window), added)},
			}, [2]string{"carrot-async", "raw"}, [2]string{"carrot", "raw-goroutines"})
		})
	}
}

// rawFields are the fields carrot gives a message of body published to queue q through
// the default exchange.
func rawFields(q string, body []byte) []any {
	return []any{"k", q, "b", body, "ct", "application/octet-stream", "p", "1"}
}

// rawPublisher adds messages with the fields carrot gives them, pipelined, window a
// round trip, from one goroutine.
func rawPublisher(raw *goredis.Client, stream, q string, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		p := raw.Pipeline()
		for sent := 0; sent < n; {
			for i := 0; i < window && sent < n; i++ {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: rawFields(q, body)})
				sent++
			}
			if _, err := p.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// rawGoroutinesPublisher adds the same messages from 256 goroutines, each waiting for
// its XADD: go-redis used the way carrot's Publish is.
func rawGoroutinesPublisher(raw *goredis.Client, stream, q string, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range window {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := raw.XAdd(b.Context(), &goredis.XAddArgs{Stream: stream, Values: rawFields(q, body)}).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

func BenchmarkConsumeAck(b *testing.B) {
	raw, conn, q, stream := benchBroker(b)
	body := make([]byte, 100)
	var k checked
	var received atomic.Int64 // by the side that ran last
	// Exactly n messages were received, and the queue holds nothing: none pending, none
	// unread.
	consumed := func(b *testing.B, n int) {
		if got := received.Load(); got != int64(n) {
			b.Fatalf("received %d messages, want %d", got, n)
		}
		groups, err := raw.XInfoGroups(b.Context(), stream).Result()
		if err != nil || len(groups) != 1 {
			b.Fatalf("groups of the stream: %v, %v", groups, err)
		}
		if g := groups[0]; g.Pending != 0 || g.Lag != 0 {
			b.Fatalf("after consuming: %d messages pending, %d unread; want none", g.Pending, g.Lag)
		}
	}
	fill := func(b *testing.B, n int) {
		k.check(b)
		received.Store(0)
		if err := conn.DeleteQueue(b.Context(), q); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.DeclareQueue(b.Context(), carrot.Queue{Name: q}); err != nil {
			b.Fatal(err)
		}
		rawPublisher(raw, stream, q, body)(b, n)
	}
	benchtest.SideBySide(b, fill, []benchtest.Contestant{
		{Name: "raw", Run: k.side(rawConsumer(raw, stream, &received), consumed)},
		{Name: "carrot", Run: k.side(carrotConsumer(conn, q, &received), consumed)},
	}, [2]string{"carrot", "raw"})
}

// rawConsumer reads window messages at a time through the queue's group, and acks each
// batch with one XACK sent in the same round trip as the next read, as carrot does.
func rawConsumer(raw *goredis.Client, stream string, received *atomic.Int64) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		ids := make([]string, 0, window)
		p := raw.Pipeline()
		args := &goredis.XReadGroupArgs{Group: "carrot", Consumer: "raw", Streams: []string{stream, ">"}, Count: window, Block: time.Second}
		for received.Load() < int64(n) {
			if len(ids) > 0 {
				p.XAck(ctx, stream, "carrot", ids...)
			}
			read := p.XReadGroup(ctx, args)
			if _, err := p.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			ids = ids[:0]
			for _, m := range read.Val()[0].Messages {
				ids = append(ids, m.ID)
			}
			received.Add(int64(len(ids)))
		}
		if err := raw.XAck(ctx, stream, "carrot", ids...).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// carrotConsumer consumes n messages of q with a Consumer at prefetch window, acking each
// in its handler, and counts them.
func carrotConsumer(conn *carrot.Conn, q string, received *atomic.Int64) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx, stop := context.WithCancel(b.Context())
		defer stop()
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:   []carrot.Queue{{Name: q, Passive: true}},
			Prefetch: window,
			Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				if err := m.Ack(ctx); err != nil {
					b.Error(err)
				}
				if received.Add(1) == int64(n) {
					stop()
				}
				return nil
			}),
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Run(ctx); err != nil && ctx.Err() == nil {
			b.Error(err)
		}
		if err := c.Close(); err != nil {
			b.Error(err)
		}
	}
}
