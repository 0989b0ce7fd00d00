package flowtest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// Poisoned checks what a message the backend's client cannot read does to one
// connection: a consumer of Poisoned, whose head message is such a message, gives up
// with ErrMalformed naming the queue, while a consumer of Fine on the same connection,
// and Messages publishes to Fine paced by Pace, go on and lose nothing.
type Poisoned struct {
	Conn           *carrot.Conn
	Poisoned, Fine string
	Messages       int
	Pace           time.Duration // between publishes
	GiveUpWithin   time.Duration // how soon the poisoned consumer must give up; ctx's end when zero
	StayConnected  bool          // the connection must be up at the end
}

// Run runs the check until ctx ends.
func (p *Poisoned) Run(ctx context.Context, t *testing.T) {
	t.Helper()
	var mu sync.Mutex
	got := make(map[string]int)
	all := make(chan struct{})
	good, err := p.Conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: p.Fine, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			mu.Lock()
			got[string(m.Body)]++
			if len(got) == p.Messages {
				close(all)
			}
			mu.Unlock()
			m.Ack(ctx) // an ack lost with the connection means a redelivery
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	goodCtx, stopGood := context.WithCancel(ctx)
	defer stopGood()
	goodRun := make(chan error, 1)
	go func() { goodRun <- good.Run(goodCtx) }()

	bad, err := p.Conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:  []carrot.Queue{{Name: p.Poisoned, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error { return m.Ack(ctx) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	badRun := make(chan error, 1)
	start := time.Now()
	go func() { badRun <- bad.Run(ctx) }()

	pub, err := p.Conn.NewPublisher(carrot.PublisherOptions{RoutingKey: p.Fine})
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Messages { // while the poisoned consumer fails, the connection's publishes go on
		if err := pub.Publish(ctx, &carrot.Message{Body: fmt.Append(nil, i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		time.Sleep(p.Pace)
	}
	var giveUp <-chan time.Time // never, when GiveUpWithin is zero
	if p.GiveUpWithin > 0 {
		giveUp = time.After(p.GiveUpWithin)
	}
	select {
	case err := <-badRun:
		took := time.Since(start)
		if !errors.Is(err, carrot.ErrMalformed) || !strings.Contains(err.Error(), strconv.Quote(p.Poisoned)) {
			t.Errorf("Run on the queue with the unreadable message = %v, want ErrMalformed naming the queue", err)
		}
		if p.GiveUpWithin > 0 && took > p.GiveUpWithin {
			t.Errorf("Run gave up after %v, want within %v", took, p.GiveUpWithin)
		}
		t.Logf("Run gave up after %v: %v", took.Round(time.Millisecond), err)
	case <-giveUp:
		t.Fatalf("Run on the queue with the unreadable message has not returned after %v", p.GiveUpWithin)
	case <-ctx.Done():
		t.Fatal("Run on the queue with the unreadable message did not return")
	}
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("the other consumer got %d of %d messages", len(got), p.Messages)
	}
	mu.Lock()
	duplicates := 0
	for _, c := range got {
		duplicates += c - 1
	}
	mu.Unlock()
	t.Logf("the other consumer got all %d messages, %d of them twice (redelivered across the reconnections); %d reconnections", p.Messages, duplicates, p.Conn.State().Recoveries)
	stopGood()
	if err := <-goodRun; err != context.Canceled {
		t.Errorf("the other consumer's Run = %v, want context.Canceled", err)
	}
	if p.StayConnected && !p.Conn.State().Connected {
		t.Errorf("State() = %+v, want connected once the poisoned consumer stopped", p.Conn.State())
	}
}
