package amqp10_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/amqp10"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestSessionLimitOf reads channel-max from open frames encoded in the ways a broker may.
func TestSessionLimitOf(t *testing.T) {
	open := func(list ...byte) []byte { return append([]byte{0x00, 0x53, 0x10}, list...) }
	id := []byte{0xa1, 0x03, 'a', 'b', 'c'}
	fields := func(fs ...[]byte) []byte {
		var b []byte
		for _, f := range fs {
			b = append(b, f...)
		}
		return append([]byte{0xc0, byte(len(b) + 1), byte(len(fs))}, b...)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want int
	}{
		{"RabbitMQ 4", open(fields(id, []byte{0x40}, []byte{0x70, 0, 2, 0, 0}, []byte{0x60, 0, 63})...), 64},
		{"small max-frame-size and a hostname", open(fields(id, []byte{0xa1, 1, 'h'}, []byte{0x52, 200}, []byte{0x60, 0, 7})...), 8},
		{"ulong descriptor, list32", append([]byte{0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x10, 0xd0, 0, 0, 0, 16, 0, 0, 0, 4}, append(append(id, 0x40, 0x43), 0x60, 0, 0)...), 1},
		{"channel-max null", open(fields(id, []byte{0x40}, []byte{0x40}, []byte{0x40})...), 65536},
		{"channel-max absent", open(fields(id)...), 65536},
		{"not an open", append([]byte{0x00, 0x53, 0x11}, fields(id)...), 0},
		{"a field of another type", open(fields(id, []byte{0x40}, []byte{0x80, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{0x60, 0, 7})...), 0},
		{"cut short", open(fields(id, []byte{0x40}, []byte{0x70, 0, 2, 0, 0}, []byte{0x60, 0, 63})...)[:12], 0},
	} {
		if got := amqp10.SessionLimitOf(tc.body); got != tc.want {
			t.Errorf("%s: sessionLimit = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSessionLimit fills a connection's sessions on a broker that allows few: the call
// that finds no room gets ErrUnsupported, the connection stays up for the rest, and a
// session given back makes room again.
func TestSessionLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker of its own; not in -short mode")
	}
	ctx := t.Context()
	broker := testbroker.Start(t, testbroker.RabbitMQ4) // its own: the test lowers its limit
	const limit = 6
	if _, err := broker.Exec(ctx, "rabbitmqctl", "eval", fmt.Sprintf("application:set_env(rabbit, session_max_per_connection, %d).", limit)); err != nil {
		t.Fatal(err)
	}
	conn, err := carrot.Open(ctx, broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var before *amqp.Conn
	conn.As(&before)
	// The management link pair and the publisher take one session each, every queue
	// fetched from one more.
	var queues []string
	var refused error
	for i := range limit + 1 {
		q := declare(t, conn, carrot.Queue{Name: fmt.Sprintf("%s.%d", uniqueName(t), i)})
		queues = append(queues, q)
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Send(ctx, "m"); err != nil {
			t.Fatal(err)
		}
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Fetch(ctx)
		if err != nil {
			refused = err
			break
		}
		m.Ack(ctx)
	}
	if !errors.Is(refused, carrot.ErrUnsupported) || !strings.Contains(fmt.Sprint(refused), fmt.Sprintf("allows %d sessions", limit)) {
		t.Fatalf("fetching from %d queues on a connection that allows %d sessions: error %v, want ErrUnsupported naming the limit", len(queues), limit, refused)
	}
	if n := len(queues); n != limit-1 {
		t.Errorf("the fetch from queue %d found no room, want queue %d (the management link pair and the publisher take one session each)", n, limit-1)
	}
	// A queue deleted gives back the session its fetches had.
	if err := conn.DeleteQueue(ctx, queues[0]); err != nil {
		t.Fatal(err)
	}
	last := queues[len(queues)-1]
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: last, Passive: true}}})
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatalf("fetch after a session was given back: %v", err)
	}
	if m.Redelivered() {
		t.Error("the message came redelivered: the connection was lost on the way")
	}
	m.Ack(ctx)
	// Consumers that begin together past the limit: those with room run, the others'
	// Run returns the error.
	for _, q := range queues[1:3] {
		if err := conn.DeleteQueue(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	extra := declare(t, conn, carrot.Queue{Name: uniqueName(t) + ".extra"})
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 4)
	for range 4 {
		cons, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: extra, Passive: true}},
			Handler: carrot.HandlerFunc(func(context.Context, *carrot.Message) error { return nil })})
		if err != nil {
			t.Fatal(err)
		}
		go func() { ran <- cons.Run(runCtx) }()
	}
	next := func() error {
		select {
		case err := <-ran:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
	for range 2 {
		if err := next(); !errors.Is(err, carrot.ErrUnsupported) {
			t.Errorf("Run of a consumer with no session left = %v, want ErrUnsupported", err)
		}
	}
	stop()
	for range 2 {
		if err := next(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run of a consumer with a session = %v, want it to run until canceled", err)
		}
	}
	var after *amqp.Conn
	if conn.As(&after); after != before {
		t.Error("the connection was replaced on the way")
	}
}

// TestLostSessions counts every channel number as lost to an unanswered begin: the next
// session ends the connection as unavailable, and a new connection works.
func TestLostSessions(t *testing.T) {
	ctx := t.Context()
	opts, err := amqp10.ParseURL(testbroker.URL(t, testbroker.RabbitMQ4))
	if err != nil {
		t.Fatal(err)
	}
	k := amqp10.NewConnector(opts)
	bc, err := k.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	conn := bc.(*amqp10.Conn)
	conn.LoseAllSessions()
	err = conn.DeclareQueue(ctx, backend.Queue{Name: uniqueName(t), Passive: true})
	if backend.CodeOf(err) != backend.Unavailable || !strings.Contains(fmt.Sprint(err), "never answered") {
		t.Fatalf("a session with every number lost = %v, want Unavailable naming the lost begins", err)
	}
	select {
	case <-conn.Done():
	default:
		t.Fatal("the connection is still up")
	}
	carrotConn, err := carrot.Connect(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	defer carrotConn.Close()
	declare(t, carrotConn, carrot.Queue{Name: uniqueName(t)})
}
