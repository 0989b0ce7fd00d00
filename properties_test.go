package carrot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
)

// TestRetryCopyOnAnotherBackend dead-letters, from a connection whose backend takes only
// alice's UserID and no nested headers, a message bob published with a nested header: the
// copy keeps every property it can publish, leaves out bob's UserID and the nested header,
// and is published rather than requeued.
func TestRetryCopyOnAnotherBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mem := memory.NewConnector(&memory.Options{Name: t.Name()})
	plain, err := carrot.Connect(ctx, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	alice, err := carrot.Connect(ctx, backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		b, err := mem.Connect(ctx)
		if err != nil {
			return nil, err
		}
		caps := b.Capabilities()
		caps.UserID, caps.NestedHeaders = "alice", false
		return capsConn{Conn: b, caps: caps}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()

	dead := carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: "dlx", Kind: carrot.Fanout}}
	if _, err := plain.DeclareQueue(ctx, dead); err != nil {
		t.Fatal(err)
	}
	p, err := plain.NewPublisher(carrot.PublisherOptions{RoutingKey: "work"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.DeclareQueue(ctx, carrot.Queue{Name: "work"}); err != nil {
		t.Fatal(err)
	}
	err = p.Publish(ctx, &carrot.Message{Body: []byte("bob's"), Type: "t", AppID: "a", UserID: "bob",
		Headers: carrot.Table{"flat": "kept", "nested": carrot.Table{"k": "v"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := alice.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "work", Passive: true}},
		Retry:  carrot.RetryPolicy{MaxDeliveries: 1, DeadLetterExchange: "dlx"},
		Handler: carrot.HandlerFunc(func(context.Context, *carrot.Message) error {
			return errors.New("fails")
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() { stop(); <-done }()

	dc, err := plain.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "dead", Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	var m *carrot.Message
	for m == nil {
		if m, err = dc.Fetch(ctx); errors.Is(err, carrot.ErrEmpty) {
			time.Sleep(5 * time.Millisecond)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if string(m.Body) != "bob's" || m.Type != "t" || m.AppID != "a" || m.UserID != "" ||
		m.Headers["flat"] != "kept" || m.Headers["nested"] != nil || m.Headers["carrot-error"] != "fails" {
		t.Errorf("dead-lettered copy %q: Type %q, AppID %q, UserID %q, headers %v; want bob's with t, a, no UserID, flat kept and nested left out",
			m.Body, m.Type, m.AppID, m.UserID, m.Headers)
	}
}
