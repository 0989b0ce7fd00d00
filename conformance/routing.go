package conformance

import (
	"context"
	"errors"
	"fmt"

	"github.com/carrot-go/carrot"
)

// route is one row of a routing table: is a message with key routed by a binding with
// pattern?
type route struct {
	pattern, key string
	match        bool
}

var directRoutes = []route{
	{"a", "a", true},
	{"a", "b", false},
	{"a", "A", false},
	{"", "", true},
	{"", "a", false},
	{"a.b", "a.b", true},
	{"a.*", "a.b", false}, // no wildcards in a direct exchange
	{"#", "a", false},
}

var fanoutRoutes = []route{
	{"a", "a", true},
	{"a", "b", true},
	{"", "anything.at.all", true},
	{"#", "", true},
}

// topicRoutes are the edge cases peers got wrong; RabbitMQ agrees with every row.
var topicRoutes = []route{
	{"*.stock.#", "usd.stock", true},
	{"*.stock.#", "eur.stock.db", true},
	{"*.stock.#", "stock.nasdaq", false},
	{"a.#", "a", true},
	{"a.#", "a.b.c", true},
	{"a.#", "b.a", false},
	{"#", "", true},
	{"#", "a.b.c", true},
	{"a.#.b", "a.b", true},
	{"a.#.b", "a.x.y.b", true},
	{"a.#.b", "a.b.c", false},
	{"#.a", "a", true},
	{"#.a", "a.x", false},
	{"*", "a", true},
	{"*", "", false},
	{"*", "a.b", false},
	{"a.*", "a", false},
	{"a.*.#", "a.b", true},
	{"a.*.#", "a", false},
	{"#.b.#", "a.b.c", true},
	{"a.b", "a.b", true},
	{"a.b", "a.bc", false},
	{"a", "A", false},
}

func testRoutingDirect(e *env) { testRoutes(e, carrot.Direct, directRoutes) }
func testRoutingFanout(e *env) { testRoutes(e, carrot.Fanout, fanoutRoutes) }
func testRoutingTopic(e *env)  { testRoutes(e, carrot.Topic, topicRoutes) }

// sentinelKey routes the message published after the one under test, so that a message
// that was not routed shows as the sentinel arriving first, without waiting for nothing.
const sentinelKey = "carrot-sentinel"

func testRoutes(e *env, kind carrot.ExchangeKind, routes []route) {
	for _, r := range routes {
		e.sub(fmt.Sprintf("pattern=%s,key=%s", r.pattern, r.key), func(e *env) {
			x := e.exchange(kind, "x")
			q := e.queue(carrot.Queue{Name: "q", Bindings: []carrot.Binding{
				{Exchange: x, Key: r.pattern},
				{Exchange: x, Key: sentinelKey},
			}})
			p := e.publisher(carrot.PublisherOptions{Exchange: x, AllowUnroutable: true})
			for _, m := range []struct{ key, body string }{{r.key, "routed"}, {sentinelKey, "sentinel"}} {
				if err := p.Publish(e.ctx, &carrot.Message{RoutingKey: m.key, Body: []byte(m.body)}); err != nil {
					e.t.Fatalf("publish with key %q: %v", m.key, err)
				}
			}
			want := []string{"sentinel"}
			if r.match {
				want = []string{"routed", "sentinel"}
			}
			for _, w := range want {
				if got := e.fetchBody(q); got != w {
					e.t.Fatalf("%s exchange, binding %q, key %q: got %q, want %q (match %v)", kind, r.pattern, r.key, got, w, r.match)
				}
			}
			e.expectEmpty(q)
		})
	}
	if kind == carrot.Fanout {
		e.sub("every-queue", func(e *env) {
			x := e.exchange(carrot.Fanout, "x")
			q1 := e.queue(carrot.Queue{Name: "q1", Exchange: carrot.Exchange{Name: x, Kind: carrot.Fanout}})
			q2 := e.queue(carrot.Queue{Name: "q2", Exchange: carrot.Exchange{Name: x, Kind: carrot.Fanout}, RoutingKey: "other"})
			e.publish(x, "k", "to all")
			for _, q := range []string{q1, q2} {
				if got := e.fetchBody(q); got != "to all" {
					e.t.Errorf("queue %s got %q, want %q", q, got, "to all")
				}
			}
		})
	}
}

func testRoutingDefaultExchange(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "direct to the queue")
	if got := e.fetchBody(q); got != "direct to the queue" {
		e.t.Errorf("got %q", got)
	}
}

func testSeveralBindings(e *env) {
	topic := e.exchange(carrot.Topic, "topic")
	direct := e.exchange(carrot.Direct, "direct")
	q := e.queue(carrot.Queue{Name: "q", Bindings: []carrot.Binding{
		{Exchange: topic, Key: "a.*"},
		{Exchange: topic, Key: "*.b"},
		{Exchange: direct, Key: "k"},
	}})
	pt := e.publisher(carrot.PublisherOptions{Exchange: topic, AllowUnroutable: true})
	for _, key := range []string{"a.b", "a.c", "c.b", "c.c"} {
		if err := pt.Publish(e.ctx, &carrot.Message{RoutingKey: key, Body: []byte(key)}); err != nil {
			e.t.Fatal(err)
		}
	}
	e.publish(direct, "k", "k")
	for _, want := range []string{"a.b", "a.c", "c.b", "k"} { // "a.b" once, "c.c" not at all
		if got := e.fetchBody(q); got != want {
			e.t.Fatalf("got %q, want %q", got, want)
		}
	}
	e.expectEmpty(q)

	// Unbinding one binding leaves the others.
	if err := e.conn.Unbind(e.ctx, carrot.Binding{Exchange: topic, Queue: q, Key: "a.*"}); err != nil {
		e.t.Fatalf("unbind: %v", err)
	}
	for _, key := range []string{"a.c", "c.b"} {
		if err := pt.Publish(e.ctx, &carrot.Message{RoutingKey: key, Body: []byte(key)}); err != nil {
			e.t.Fatal(err)
		}
	}
	if got := e.fetchBody(q); got != "c.b" {
		e.t.Errorf("after unbinding \"a.*\": got %q, want %q", got, "c.b")
	}
	e.expectEmpty(q)
}

func testUnroutable(e *env) {
	x := e.exchange(carrot.Direct, "x")
	q := e.queue(carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: x}, RoutingKey: "bound"})
	strict := e.publisher(carrot.PublisherOptions{Exchange: x})
	for _, key := range []string{"unbound", ""} {
		if err := strict.Publish(e.ctx, &carrot.Message{RoutingKey: key, Body: []byte("lost?")}); !errors.Is(err, carrot.ErrUnroutable) {
			e.t.Errorf("publish with key %q matching no binding = %v, want ErrUnroutable", key, err)
		}
	}
	toQueue := e.publisher(carrot.PublisherOptions{RoutingKey: e.name("no-such-queue")})
	if err := toQueue.Send(e.ctx, "lost?"); !errors.Is(err, carrot.ErrUnroutable) {
		e.t.Errorf("publish to the default exchange for a missing queue = %v, want ErrUnroutable", err)
	}
	loose := e.publisher(carrot.PublisherOptions{Exchange: x, AllowUnroutable: true})
	if err := loose.Publish(e.ctx, &carrot.Message{RoutingKey: "unbound", Body: []byte("dropped")}); err != nil {
		e.t.Errorf("publish allowed to be unroutable = %v, want nil", err)
	}
	// The connection is still good, and routable messages still go through.
	if err := strict.Publish(e.ctx, &carrot.Message{RoutingKey: "bound", Body: []byte("kept")}); err != nil {
		e.t.Fatalf("publish after unroutable ones: %v", err)
	}
	if got := e.fetchBody(q); got != "kept" {
		e.t.Errorf("got %q, want %q", got, "kept")
	}
	e.expectEmpty(q)
}

func testMissingExchange(e *env) {
	p := e.publisher(carrot.PublisherOptions{Exchange: e.name("missing"), AllowUnroutable: true})
	if err := p.Send(e.ctx, "x"); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("publish to a missing exchange = %v, want ErrNotFound", err)
	}
	// The connection survives the broker's complaint.
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "after")
	if got := e.fetchBody(q); got != "after" {
		e.t.Errorf("got %q, want %q", got, "after")
	}
}

func testGeneratedQueueName(e *env) {
	var names []string
	for range 2 {
		name, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Exclusive: e.caps.Exclusive})
		if err != nil {
			e.t.Fatalf("declare a queue without a name: %v", err)
		}
		e.deleteQueueLater(name)
		names = append(names, name)
	}
	if names[0] == "" || names[0] == names[1] {
		e.t.Fatalf("generated names %q and %q, want two different names", names[0], names[1])
	}
	e.publish("", names[1], "hello")
	if got := e.fetchBody(names[1]); got != "hello" {
		e.t.Errorf("got %q", got)
	}
}

func testDeclareIdempotent(e *env) {
	x := carrot.Exchange{Name: e.name("x"), Kind: carrot.Topic}
	q := e.typed(carrot.Queue{Name: "q", Exchange: x, RoutingKey: "a.#"})
	for range 2 {
		e.queue(q)
	}
	e.publish(x.Name, "a.b", "once")
	if got := e.fetchBody(e.name("q")); got != "once" {
		e.t.Errorf("got %q", got)
	}
	e.expectEmpty(e.name("q"))
}

func testDeclareMismatch(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	if _, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: q, Transient: true}); !errors.Is(err, carrot.ErrMismatch) {
		e.t.Errorf("redeclare a durable queue as transient = %v, want ErrMismatch", err)
	}
	x := e.exchange(carrot.Direct, "x")
	if err := e.conn.DeclareExchange(e.ctx, carrot.Exchange{Name: x, Kind: carrot.Topic}); !errors.Is(err, carrot.ErrMismatch) {
		e.t.Errorf("redeclare a direct exchange as topic = %v, want ErrMismatch", err)
	}
	// The connection survives the broker's complaints.
	e.publish("", q, "still here")
	if got := e.fetchBody(q); got != "still here" {
		e.t.Errorf("got %q", got)
	}
}

func testDeclarePassive(e *env) {
	if _, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: e.name("missing"), Passive: true}); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("passive declare of a missing queue = %v, want ErrNotFound", err)
	}
	if err := e.conn.DeclareExchange(e.ctx, carrot.Exchange{Name: e.name("missing"), Passive: true}); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("passive declare of a missing exchange = %v, want ErrNotFound", err)
	}
	q := e.queue(carrot.Queue{Name: "q"})
	if _, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: q, Passive: true}); err != nil {
		e.t.Errorf("passive declare of an existing queue = %v", err)
	}
	if err := e.conn.Bind(e.ctx, carrot.Binding{Exchange: e.name("missing"), Queue: q}); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("bind to a missing exchange = %v, want ErrNotFound", err)
	}
}

func testExclusive(e *env) {
	owner := e.open()
	q := e.queueOn(owner, carrot.Queue{Name: "q", Exclusive: true})
	if _, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: q, Passive: true}); !errors.Is(err, carrot.ErrInUse) {
		e.t.Errorf("another connection declaring an exclusive queue = %v, want ErrInUse", err)
	}
	if err := owner.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.eventually("the exclusive queue is deleted with its connection", func() bool {
		_, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: q, Passive: true})
		return errors.Is(err, carrot.ErrNotFound)
	})
}

func testAutoDelete(e *env) {
	q := e.queue(carrot.Queue{Name: "q", AutoDelete: true})
	received := make(chan struct{}, 1)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		err := m.Ack(ctx)
		received <- struct{}{}
		return err
	})}, q)
	r := e.start(c)
	e.publish("", q, "one")
	wait(e, received) // the consumer is subscribed
	e.stop(r)
	e.eventually("the auto-delete queue is deleted with its last consumer", func() bool {
		_, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: q, Passive: true})
		return errors.Is(err, carrot.ErrNotFound)
	})
}

func testPublishAsync(e *env) {
	x := e.exchange(carrot.Direct, "x")
	q := e.queue(carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: x}, RoutingKey: "bound"})
	p := e.publisher(carrot.PublisherOptions{Exchange: x, AllowUnroutable: !e.caps.Mandatory})
	const n = 100
	confirmations := make([]*carrot.Confirmation, n)
	for i := range n {
		key := "bound"
		if i%10 == 9 {
			key = "unbound"
		}
		confirmations[i] = p.PublishAsync(e.ctx, &carrot.Message{RoutingKey: key, Body: []byte(fmt.Sprint(i))})
	}
	for i, c := range confirmations {
		err := c.Wait(e.ctx)
		if i%10 == 9 && e.caps.Mandatory {
			if !errors.Is(err, carrot.ErrUnroutable) {
				e.t.Errorf("message %d, unroutable: %v, want ErrUnroutable", i, err)
			}
		} else if err != nil {
			e.t.Errorf("message %d: %v", i, err)
		}
	}
	for i := range n {
		if i%10 == 9 {
			continue
		}
		if got := e.fetchBody(q); got != fmt.Sprint(i) {
			e.t.Fatalf("got %q, want %q: PublishAsync from one goroutine must keep the order", got, fmt.Sprint(i))
		}
	}
	e.expectEmpty(q)
}
