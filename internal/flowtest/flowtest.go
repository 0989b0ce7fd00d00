// Package flowtest runs a stream of messages through a broker while a test disrupts it,
// and checks that every message arrived: the shape of the backends' restart tests.
package flowtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/conformance"
)

// Flow is a stream of messages, the numbers 0 to Total-1, published by Publishers
// goroutines to Queue and received there by one consumer that acks each.
type Flow struct {
	Conn       *carrot.Conn
	Queue      string
	Total      int // 10,000 when zero
	Publishers int // 8 when zero
	Prefetch   int // the consumer's; the backend's default when zero

	ctx       context.Context
	t         *testing.T
	published atomic.Int64
	received  atomic.Int64
}

// Run starts the flow, calls disrupt while it runs, and waits until every message has
// arrived or ctx ends. It fails t for any message that never arrived, and logs how many
// arrived twice or more: delivery is at-least-once.
func (f *Flow) Run(ctx context.Context, t *testing.T, disrupt func(f *Flow)) {
	t.Helper()
	if f.Total == 0 {
		f.Total = 10000
	}
	if f.Publishers == 0 {
		f.Publishers = 8
	}
	f.ctx, f.t = ctx, t
	var (
		mu   sync.Mutex
		seen = make(map[int]int)
		all  = make(chan struct{})
	)
	consumer, err := f.Conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:   []carrot.Queue{{Name: f.Queue, Passive: true}},
		Prefetch: f.Prefetch,
		Handler: carrot.Decoded(func(ctx context.Context, n int, m *carrot.Message) error {
			mu.Lock()
			seen[n]++
			if seen[n] == 1 && len(seen) == f.Total {
				close(all)
			}
			mu.Unlock()
			f.received.Add(1)
			m.Ack(ctx) // a failed ack means a redelivery, counted as a duplicate
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan error, 1)
	go func() { runDone <- consumer.Run(runCtx) }()

	var pubs sync.WaitGroup
	for w := range f.Publishers {
		pubs.Go(func() {
			p, err := f.Conn.NewPublisher(carrot.PublisherOptions{RoutingKey: f.Queue})
			if err != nil {
				t.Error(err)
				return
			}
			for n := w; n < f.Total; n += f.Publishers {
				if err := p.Send(ctx, n); err != nil { // Send retries across reconnections
					t.Errorf("send %d: %v", n, err)
					return
				}
				f.published.Add(1)
			}
		})
	}

	disrupt(f)

	pubs.Wait()
	select {
	case <-all:
	case <-ctx.Done():
	}
	stop()
	<-runDone

	mu.Lock()
	defer mu.Unlock()
	var missing []int
	duplicates := 0
	for n := range f.Total {
		switch c := seen[n]; {
		case c == 0:
			missing = append(missing, n)
		case c > 1:
			duplicates += c - 1
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d messages never arrived, such as %v", len(missing), f.Total, missing[:min(10, len(missing))])
	}
	t.Logf("%d of %d messages arrived; %d duplicates (at-least-once), %d deliveries in all", f.Total-len(missing), f.Total, duplicates, f.received.Load())
}

// WaitReceived waits until at least n deliveries have arrived, failing the test if the
// flow's context ends first.
func (f *Flow) WaitReceived(n int64) {
	f.t.Helper()
	for f.received.Load() < n {
		select {
		case <-f.ctx.Done():
			f.t.Fatalf("timed out waiting for %d deliveries (published %d, received %d)", n, f.published.Load(), f.received.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Logf logs a step of the disruption with the flow's progress.
func (f *Flow) Logf(format string, args ...any) {
	f.t.Helper()
	f.t.Logf(format+" (%d published, %d received)", append(args, f.published.Load(), f.received.Load())...)
}

// Cuts returns a disruption that cuts the flow's connections n times, evenly spread over
// the stream, with cutter (such as a conformance.Proxy), and checks that the connection
// recovered each time.
func Cuts(cutter interface{ Cut() }, n int) func(f *Flow) {
	return func(f *Flow) {
		f.t.Helper()
		for i := 1; i <= n; i++ {
			f.WaitReceived(int64(f.Total * i / (n + 1)))
			before := f.Conn.State().Recoveries
			f.Logf("cut %d of %d", i, n)
			cutter.Cut()
			for f.Conn.State().Recoveries <= before {
				select {
				case <-f.ctx.Done():
					f.t.Fatalf("the connection did not recover from cut %d", i)
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
}

// Through opens a connection with open, given the address of a new conformance.Proxy in
// front of target, and returns it with the proxy, for the harnesses' OpenFaulty. The
// caller closes both; on error, Through closes the proxy.
func Through(ctx context.Context, target string, open func(ctx context.Context, addr string) (*carrot.Conn, error)) (*carrot.Conn, conformance.Breaker, error) {
	proxy := conformance.NewProxy()
	addr, err := proxy.Forward(target)
	if err == nil {
		var conn *carrot.Conn
		if conn, err = open(ctx, addr); err == nil {
			return conn, proxy, nil
		}
	}
	proxy.Close()
	return nil, nil, err
}
