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
// and carrot's rate as a share of raw go-redis's doing the equivalent stream commands:
// pipelined XADD, 100 a round trip, for publishing from one goroutine (carrot: PublishAsync
// with a window); XADD from 256 goroutines (carrot: Publish); XREADGROUP of 100 then one
// XACK of them for consuming. Run them with a fixed count of messages:
//
//	CARROT_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench . -benchtime 200000x ./backends/redis/

const pipelined = 100 // raw commands per round trip; carrot's consumers' prefetch

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

func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{100, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			raw, conn, q, stream := benchBroker(b)
			body := make([]byte, size)
			purge := func(b *testing.B, n int) {
				if _, err := conn.Purge(b.Context(), q); err != nil {
					b.Fatal(err)
				}
			}
			benchtest.SideBySide(b, purge, []benchtest.Contestant{
				{Name: "raw", Run: rawPublisher(raw, stream, q, body)},
				{Name: "carrot-async", Run: benchtest.CarrotAsyncPublisher(conn, q, body, 2048)},
				{Name: "raw-goroutines", Run: rawGoroutinesPublisher(raw, stream, q, body)},
				{Name: "carrot", Run: benchtest.CarrotPublisher(conn, q, body, 256)},
			}, [2]string{"carrot-async", "raw"}, [2]string{"carrot", "raw-goroutines"}, [2]string{"carrot", "raw"})
		})
	}
}

// rawPublisher adds messages with the fields carrot gives them, pipelined.
func rawPublisher(raw *goredis.Client, stream, q string, body []byte) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		for sent := 0; sent < n; {
			p := raw.Pipeline()
			for i := 0; i < pipelined && sent < n; i++ {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"k", q, "b", body, "ct", "application/octet-stream", "p", "1"}})
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
		for range 256 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := raw.XAdd(b.Context(), &goredis.XAddArgs{Stream: stream, Values: []any{"k", q, "b", body, "ct", "application/octet-stream", "p", "1"}}).Err(); err != nil {
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
	fill := func(b *testing.B, n int) {
		if err := conn.DeleteQueue(b.Context(), q); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.DeclareQueue(b.Context(), carrot.Queue{Name: q}); err != nil {
			b.Fatal(err)
		}
		rawPublisher(raw, stream, q, body)(b, n)
	}
	benchtest.SideBySide(b, fill, []benchtest.Contestant{
		{Name: "raw", Run: rawConsumer(raw, stream)},
		{Name: "carrot", Run: benchtest.CarrotConsumer(conn, q, pipelined)},
	}, [2]string{"carrot", "raw"})
}

// rawConsumer reads 100 messages at a time through the queue's group and acks them with
// one XACK.
func rawConsumer(raw *goredis.Client, stream string) benchtest.Side {
	return func(b *testing.B, n int) {
		ctx := b.Context()
		ids := make([]string, 0, pipelined)
		for got := 0; got < n; {
			res, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "carrot", Consumer: "raw", Streams: []string{stream, ">"}, Count: pipelined, Block: time.Second}).Result()
			if err != nil {
				b.Fatal(err)
			}
			ids = ids[:0]
			for _, m := range res[0].Messages {
				ids = append(ids, m.ID)
			}
			if err := raw.XAck(ctx, stream, "carrot", ids...).Err(); err != nil {
				b.Fatal(err)
			}
			got += len(ids)
		}
	}
}
