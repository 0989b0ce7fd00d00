package redis_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestInspectQueue checks the counts of the cases the conformance suite does not reach:
// a backlog beyond what InspectQueue reads, the nudges of requeues, a purge that leaves
// Redis unable to reckon the backlog, and a consumer whose process went away.
func TestInspectQueue(t *testing.T) {
	ctx := t.Context()
	// Consumers idle for 300ms are taken for dead.
	url := namespaced(t, testbroker.URL(t, testbroker.Redis)) + "&visibility_timeout=300ms&block=20ms"
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expect := func(q, when string, want carrot.QueueStats) {
		t.Helper()
		got, err := conn.InspectQueue(ctx, q)
		if err != nil || got != want {
			t.Errorf("%s: InspectQueue = %+v, %v; want %+v", when, got, err, want)
		}
	}
	queue := func(name string) (string, *carrot.Publisher, *carrot.Consumer) {
		t.Helper()
		q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
		if err != nil {
			t.Fatal(err)
		}
		return q, p, c
	}
	send := func(p *carrot.Publisher, n int) {
		t.Helper()
		for i := range n {
			if err := p.Send(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	fetch := func(c *carrot.Consumer) *carrot.Message {
		t.Helper()
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("backlog", func(t *testing.T) {
		q, p, c := queue("backlog")
		send(p, 100) // beyond what the script reads: the group's lag counts them
		expect(q, "100 published", carrot.QueueStats{Ready: 100})
		m := fetch(c)
		expect(q, "one fetched", carrot.QueueStats{Ready: 99, Unacked: 1})
		if err := m.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("requeue", func(t *testing.T) {
		q, p, c := queue("requeue")
		send(p, 3)
		m := fetch(c)
		if err := m.Requeue(ctx); err != nil { // hands it to ~released, and adds a nudge
			t.Fatal(err)
		}
		expect(q, "one fetched and requeued", carrot.QueueStats{Ready: 3})
		m = fetch(c) // the requeued one, from ~released
		expect(q, "the requeued one fetched again", carrot.QueueStats{Ready: 2, Unacked: 1})
		if err := m.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("purged", func(t *testing.T) {
		q, p, c := queue("purged")
		send(p, 2)
		held := []*carrot.Message{fetch(c), fetch(c)} // in the stream, before the group's last delivered entry
		send(p, 1)
		if _, err := conn.Purge(ctx, q); err != nil { // XDEL after the last delivered entry
			t.Fatal(err)
		}
		send(p, 40)
		// Redis cannot reckon the lag, and there are too many to read: ready is unknown.
		expect(q, "40 published after a purge", carrot.QueueStats{Ready: -1, Unacked: 2})
		for _, m := range held {
			if err := m.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for range 20 {
			if err := fetch(c).Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Reading past the purged entries makes the lag known again.
		got, err := conn.InspectQueue(ctx, q)
		if err != nil || got.Ready != 20 {
			t.Errorf("20 of the 40 fetched: InspectQueue = %+v, %v; want 20 ready", got, err)
		}
	})

	t.Run("dead consumer", func(t *testing.T) {
		q, p, _ := queue("dead")
		send(p, 3)
		faulty, breaker, err := openFaulty(url)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			breaker.Unblock()
			faulty.Close()
		}()
		held := make(chan *carrot.Message, 3)
		c, err := faulty.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:   []carrot.Queue{{Name: q, Passive: true}},
			Prefetch: 1,
			Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				held <- m
				return nil
			}),
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		defer stop()
		go c.Run(runCtx)
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("the consumer received nothing")
		}
		expect(q, "a consumer holding one", carrot.QueueStats{Ready: 2, Unacked: 1, Consumers: 1})
		breaker.Block() // as if its process died: its consumer stays in the group, idle
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := conn.InspectQueue(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if got == (carrot.QueueStats{Ready: 2, Unacked: 1, Consumers: 0}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the consumer's connection was cut 10s ago: InspectQueue = %+v; want 2 ready, 1 unacked (until the visibility timeout hands it to another consumer), no consumer", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("missing", func(t *testing.T) {
		if _, err := conn.InspectQueue(ctx, "missing"); !errors.Is(err, carrot.ErrNotFound) {
			t.Errorf("InspectQueue of a missing queue = %v, want ErrNotFound", err)
		}
	})
}
