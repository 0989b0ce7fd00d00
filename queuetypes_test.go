package carrot_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
)

// typedConn reports every queue type and setting, and records the queues it is asked to
// declare, for the core's checks of them.
type typedConn struct {
	backend.Conn
	declared chan backend.Queue
}

func (c typedConn) Capabilities() backend.Capabilities {
	caps := c.Conn.Capabilities()
	caps.Quorum, caps.Streams, caps.SingleActiveConsumer, caps.ConsumerTimeout = true, true, true, true
	return caps
}

func (c typedConn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	select {
	case c.declared <- q:
	default:
	}
	return c.Conn.DeclareQueue(ctx, q)
}

// TestQueueTypeSettings checks that the settings of each queue type reach the backend as
// given, and that those that do not fit the queue's type are refused before it.
func TestQueueTypeSettings(t *testing.T) {
	ctx := t.Context()
	declared := make(chan backend.Queue, 1)
	conn := wrapped(t, func(b backend.Conn) backend.Conn { return typedConn{Conn: b, declared: declared} })

	valid := []carrot.Queue{
		{Name: "quorum", Type: carrot.QuorumQueue, Replicas: 3, DeliveryLimit: 5, DeadLetterExchange: "dlx", DeadLetterStrategy: carrot.AtLeastOnce, SingleActiveConsumer: true, ConsumerTimeout: time.Minute},
		{Name: "stream", Type: carrot.StreamQueue, Replicas: 2, MaxAge: 24 * time.Hour, MaxBytes: 1 << 30},
		{Name: "classic", Type: carrot.ClassicQueue, SingleActiveConsumer: true},
	}
	for _, q := range valid {
		if _, err := conn.DeclareQueue(ctx, q); err != nil {
			t.Errorf("declare %s: %v", q.Name, err)
			continue
		}
		got := <-declared
		want := backend.Queue{Name: q.Name, Durable: true, Type: q.Type, Replicas: q.Replicas, DeliveryLimit: q.DeliveryLimit,
			DeadLetterExchange: q.DeadLetterExchange, DeadLetterStrategy: q.DeadLetterStrategy, MaxAge: q.MaxAge, MaxBytes: q.MaxBytes,
			SingleActiveConsumer: q.SingleActiveConsumer, ConsumerTimeout: q.ConsumerTimeout}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("declare %s: the backend got %+v, want %+v", q.Name, got, want)
		}
	}

	for _, tc := range []struct {
		why string
		q   carrot.Queue
	}{
		{"unknown type", carrot.Queue{Type: "lazy"}},
		{"transient quorum queue", carrot.Queue{Type: carrot.QuorumQueue, Transient: true}},
		{"exclusive stream", carrot.Queue{Type: carrot.StreamQueue, Exclusive: true}},
		{"auto-delete quorum queue", carrot.Queue{Type: carrot.QuorumQueue, AutoDelete: true}},
		{"replicas of a classic queue", carrot.Queue{Replicas: 3}},
		{"delivery limit of a stream", carrot.Queue{Type: carrot.StreamQueue, DeliveryLimit: 3}},
		{"dead-letter strategy of a classic queue", carrot.Queue{DeadLetterStrategy: carrot.AtLeastOnce, DeadLetterExchange: "dlx"}},
		{"at-least-once without a dead-letter exchange", carrot.Queue{Type: carrot.QuorumQueue, DeadLetterStrategy: carrot.AtLeastOnce}},
		{"unknown dead-letter strategy", carrot.Queue{Type: carrot.QuorumQueue, DeadLetterStrategy: "twice", DeadLetterExchange: "dlx"}},
		{"max age of a quorum queue", carrot.Queue{Type: carrot.QuorumQueue, MaxAge: time.Hour}},
		{"max bytes of a classic queue", carrot.Queue{MaxBytes: 1}},
		{"max age in part of a second", carrot.Queue{Type: carrot.StreamQueue, MaxAge: 1500 * time.Millisecond}},
		{"negative delivery limit", carrot.Queue{Type: carrot.QuorumQueue, DeliveryLimit: -1}},
		{"negative replicas", carrot.Queue{Type: carrot.QuorumQueue, Replicas: -1}},
		{"consumer timeout in part of a millisecond", carrot.Queue{ConsumerTimeout: time.Microsecond}},
		{"stream with a message TTL", carrot.Queue{Type: carrot.StreamQueue, MessageTTL: time.Second}},
		{"stream with a max length", carrot.Queue{Type: carrot.StreamQueue, MaxLength: 10}},
		{"stream with dead-lettering", carrot.Queue{Type: carrot.StreamQueue, DeadLetterExchange: "dlx"}},
		{"stream with a single active consumer", carrot.Queue{Type: carrot.StreamQueue, SingleActiveConsumer: true}},
	} {
		tc.q.Name = "refused"
		if _, err := conn.DeclareQueue(ctx, tc.q); !errors.Is(err, carrot.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.why, err)
		}
		select {
		case q := <-declared:
			t.Errorf("%s: the backend was asked to declare %+v", tc.why, q)
		default:
		}
	}

	// Consumers of a stream: offsets, and what a stream cannot do.
	stream := carrot.Queue{Name: "stream", Type: carrot.StreamQueue, Passive: true}
	for _, tc := range []struct {
		why  string
		opts carrot.ConsumerOptions
	}{
		{"NoAck on a stream", carrot.ConsumerOptions{Queues: []carrot.Queue{stream}, NoAck: true}},
		{"negative offset", carrot.ConsumerOptions{Queues: []carrot.Queue{stream}, StreamOffset: carrot.FromOffset(-1)}},
		{"negative offset, queue of unknown type", carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "stream", Passive: true}}, StreamOffset: carrot.FromOffset(-1)}},
		{"zero time", carrot.ConsumerOptions{Queues: []carrot.Queue{stream}, StreamOffset: carrot.FromTime(time.Time{})}},
		{"offset on a quorum queue", carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "quorum", Type: carrot.QuorumQueue, Passive: true}}, StreamOffset: carrot.FromFirst}},
	} {
		if _, err := conn.NewConsumer(ctx, tc.opts); !errors.Is(err, carrot.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.why, err)
		}
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{stream}, StreamOffset: carrot.FromNext})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrUnsupported) {
		t.Errorf("Fetch from a stream: %v, want ErrUnsupported", err)
	}
}
