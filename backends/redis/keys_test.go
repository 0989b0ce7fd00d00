package redis_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// namespaceOf returns the namespace of a URL made by namespaced.
func namespaceOf(url string) string {
	return strings.SplitN(strings.SplitN(url, "namespace=", 2)[1], "&", 2)[0]
}

// TestNULInKeys binds with keys and patterns that hold a NUL byte, as routing keys may:
// a message goes where its whole key matches, never where only the part before the NUL
// would, and unbinding or deleting removes such bindings whole. Exchange and queue names
// with a NUL are refused, before Redis sees them.
func TestNULInKeys(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis))
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rdb goredis.UniversalClient
	conn.As(&rdb)
	prefix := "{" + namespaceOf(url) + "}:"

	for _, tc := range []struct {
		kind       carrot.ExchangeKind
		binding    string
		match      []string // routing keys that reach the queue
		mismatch   []string // routing keys that reach no queue
		deleteWhat string   // "queue", "exchange" or "unbind": how the binding goes
	}{
		{carrot.Direct, "a\x00b", []string{"a\x00b"}, []string{"a", "b", "a\x00", "\x00b", "a\x00b\x00"}, "unbind"},
		{carrot.Topic, "*.\x00.#", []string{"k.\x00", "k.\x00.z.y"}, []string{"k", "k.\x00x", "\x00.k", "k.z"}, "queue"},
		{carrot.Topic, "\x00", []string{"\x00"}, []string{"", "\x00\x00", "\x00.a"}, "exchange"},
		{carrot.Direct, "\x00\x00", []string{"\x00\x00"}, []string{"\x00", ""}, "queue"},
	} {
		name := strings.ToLower(string(tc.kind)) + "-" + tc.deleteWhat
		t.Run(name, func(t *testing.T) {
			x, q := "x-"+name, "q-"+name
			if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: q, Exchange: carrot.Exchange{Name: x, Kind: tc.kind}, RoutingKey: tc.binding}); err != nil {
				t.Fatalf("declare with binding key %q: %v", tc.binding, err)
			}
			p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: x})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, key := range tc.match {
				if err := p.Publish(ctx, &carrot.Message{RoutingKey: key, Body: []byte(key)}); err != nil {
					t.Fatalf("publish with key %q: %v", key, err)
				}
				m, err := c.Fetch(ctx)
				if err != nil {
					t.Fatalf("fetch the message published with key %q: %v", key, err)
				}
				if m.RoutingKey != key || string(m.Body) != key {
					t.Errorf("got routing key %q, body %q; want %q", m.RoutingKey, m.Body, key)
				}
				m.Ack(ctx)
			}
			for _, key := range tc.mismatch {
				if err := p.Publish(ctx, &carrot.Message{RoutingKey: key}); !errors.Is(err, carrot.ErrUnroutable) {
					t.Errorf("publish with key %q, binding %q: got %v, want an error wrapping ErrUnroutable", key, tc.binding, err)
				}
			}

			switch tc.deleteWhat {
			case "unbind":
				err = conn.Unbind(ctx, carrot.Binding{Exchange: x, Queue: q, Key: tc.binding})
			case "queue":
				err = conn.DeleteQueue(ctx, q)
			case "exchange":
				err = conn.DeleteExchange(ctx, x)
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.deleteWhat, err)
			}
			// Both halves of the binding are gone: the exchange's, and the queue's.
			for _, k := range []string{prefix + "b:" + x, prefix + "qb:" + q} {
				if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
					t.Errorf("after %s, key %q: exists %d (%v), want gone", tc.deleteWhat, k, n, err)
				}
			}
			if tc.deleteWhat != "exchange" {
				p2, _ := conn.NewPublisher(carrot.PublisherOptions{Exchange: x})
				defer p2.Close()
				if err := p2.Publish(ctx, &carrot.Message{RoutingKey: tc.match[0]}); !errors.Is(err, carrot.ErrUnroutable) {
					t.Errorf("publish with key %q after %s: got %v, want an error wrapping ErrUnroutable", tc.match[0], tc.deleteWhat, err)
				}
			}
		})
	}

	t.Run("names", func(t *testing.T) {
		if err := conn.DeclareExchange(ctx, carrot.Exchange{Name: "x\x00y", Kind: carrot.Topic}); !errors.Is(err, carrot.ErrInvalid) || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("declare exchange with a NUL: got %v, want an error wrapping ErrInvalid that names the NUL", err)
		}
		if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q\x00"}); !errors.Is(err, carrot.ErrInvalid) || !strings.Contains(err.Error(), "NUL") {
			t.Errorf("declare queue with a NUL: got %v, want an error wrapping ErrInvalid that names the NUL", err)
		}
		// Such a queue cannot exist: the default exchange routes its name nowhere.
		p, _ := conn.NewPublisher(carrot.PublisherOptions{})
		defer p.Close()
		if err := p.Publish(ctx, &carrot.Message{RoutingKey: "q\x00"}); !errors.Is(err, carrot.ErrUnroutable) {
			t.Errorf("publish to queue %q: got %v, want an error wrapping ErrUnroutable", "q\x00", err)
		}
		var keys []string
		iter := rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			if strings.Contains(iter.Val(), "\x00") {
				keys = append(keys, iter.Val())
			}
		}
		if len(keys) > 0 {
			t.Errorf("keys with a NUL in their name: %q", keys)
		}
	})
}
