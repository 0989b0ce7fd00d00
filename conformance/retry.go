package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/carrot-go/carrot"
)

func retryCases() []testCase {
	return []testCase{
		{name: "RetryPolicyRefused", doc: "a retry policy with negative limits, or MaxDeliveries without a dead-letter destination, is an ErrInvalid error; one whose exchange does not exist ErrNotFound", run: testRetryPolicyRefused},
		{name: "RetryBackoffByDefault", doc: "by default a message whose handler always fails is retried after a backoff, not in a hot loop", needs: need("Delay", func(c carrot.Capabilities) bool { return c.Delay }), run: testRetryBackoffByDefault},
		{name: "RetryDeadLetter", doc: "a failing message is delivered MaxDeliveries times, spaced by the backoff, while the messages behind it flow, then dead-lettered with headers saying why", needs: need("Delay and DeadLetter", func(c carrot.Capabilities) bool { return c.Delay && c.DeadLetter }), run: testRetryDeadLetter},
	}
}

func testRetryPolicyRefused(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	for _, p := range []carrot.RetryPolicy{
		{MaxDeliveries: -1},
		{MinBackoff: -time.Second},
		{MinBackoff: time.Minute, MaxBackoff: time.Second},
		{MaxDeliveries: 3}, // the queue has no dead-letter exchange
	} {
		if _, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}, Retry: p}); !errors.Is(err, carrot.ErrInvalid) {
			e.t.Errorf("NewConsumer with retry policy %+v = %v, want ErrInvalid", p, err)
		}
	}
	missing := carrot.RetryPolicy{MaxDeliveries: 3, DeadLetterExchange: e.name("missing")}
	if _, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}, Retry: missing}); !errors.Is(err, carrot.ErrNotFound) {
		e.t.Errorf("NewConsumer with a dead-letter exchange that does not exist = %v, want ErrNotFound", err)
	}
}

func testRetryBackoffByDefault(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "always fails")
	var mu sync.Mutex
	deliveries := 0
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		mu.Lock()
		deliveries++
		mu.Unlock()
		return errors.New("always")
	})}, q)
	r := e.start(c)
	e.eventually("the first delivery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return deliveries > 0
	})
	time.Sleep(1400 * time.Millisecond)
	e.stop(r)
	mu.Lock()
	defer mu.Unlock()
	// The default backoff starts at 1s (half of it at least, with jitter), then doubles:
	// the second delivery comes 0.5s to 1s after the first, the third 1s to 2s after that.
	if deliveries > 3 {
		e.t.Errorf("%d deliveries in the 1.4s after the first, want at most 3: the default retry waits a second and more", deliveries)
	}
}

func testRetryDeadLetter(e *env) {
	const backoff = time.Second
	dlx := e.exchange(carrot.Fanout, "dlx")
	dlq := e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx, Kind: carrot.Fanout}})
	q := e.queue(carrot.Queue{Name: "q", DeadLetterExchange: dlx})
	var (
		mu      sync.Mutex
		poison  []time.Time // its deliveries
		counts  []int       // their DeliveryCount
		flowed  []time.Time // the others, handled
		started = time.Now()
	)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{
		Retry: carrot.RetryPolicy{MaxDeliveries: 3, MinBackoff: backoff, MaxBackoff: backoff},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if string(m.Body) == "poison" {
				poison = append(poison, time.Now())
				counts = append(counts, m.DeliveryCount())
				if m.Exchange() != "" || m.RoutingKey != q {
					e.t.Errorf("delivery %d of the failing message: exchange %q, key %q; want the original ones", len(poison), m.Exchange(), m.RoutingKey)
				}
				return errors.New("poisoned")
			}
			flowed = append(flowed, time.Now())
			return m.Ack(context.WithoutCancel(ctx))
		}),
	}, q)
	poisonMsg := &carrot.Message{RoutingKey: q, Body: []byte("poison"), Type: "poison.type", AppID: "poison-app", UserID: e.userID(),
		MessageID: "poison-1", CorrelationID: "c-1", ContentType: "text/plain", Headers: carrot.Table{"app-header": "kept"}}
	if e.caps.NestedHeaders {
		poisonMsg.Headers["nested"] = carrot.Table{"list": []any{int64(1), "two"}}
	}
	e.publishMessage("", poisonMsg)
	const n = 100
	for i := range n {
		e.publish("", q, fmt.Sprint(i))
	}
	r := e.start(c)
	dead := e.consumer(dlq)
	var m *carrot.Message
	e.eventually("the failing message in the dead-letter queue", func() bool {
		var err error
		m, err = dead.Fetch(e.ctx)
		return err == nil
	})
	e.stop(r)
	mu.Lock()
	defer mu.Unlock()
	if len(poison) != 3 || !slices.Equal(counts, []int{1, 2, 3}) {
		e.t.Errorf("the failing message was delivered %d times with delivery counts %v, want 3: 1, 2, 3", len(poison), counts)
	}
	for i := 1; i < len(poison); i++ {
		if gap := poison[i].Sub(poison[i-1]); gap < backoff/2 {
			e.t.Errorf("delivery %d came %v after the last, less than the backoff of %v (with jitter, half of it)", i+1, gap, backoff)
		}
	}
	if len(flowed) != n {
		e.t.Errorf("%d of the %d messages behind it were handled", len(flowed), n)
	} else if len(poison) >= 2 && flowed[n-1].After(poison[1]) {
		e.t.Errorf("the messages behind the failing one were handled %v after the start, after its second delivery at %v: they waited for it", flowed[n-1].Sub(started), poison[1].Sub(started))
	}
	want := map[string]any{"carrot-error": "poisoned", "carrot-deliveries": int64(3), "carrot-queue": q, "carrot-exchange": "", "carrot-routing-key": q}
	for k, v := range want {
		if got := m.Headers[k]; fmt.Sprint(got) != fmt.Sprint(v) {
			e.t.Errorf("dead-lettered header %s = %v (%T), want %v", k, got, got, v)
		}
	}
	if _, ok := m.Headers["carrot-first-failure"].(time.Time); !ok || string(m.Body) != "poison" {
		e.t.Errorf("dead-lettered %q with headers %v, want the failing message with carrot-first-failure", m.Body, m.Headers)
	}
	if m.Type != poisonMsg.Type || m.AppID != poisonMsg.AppID || m.UserID != poisonMsg.UserID || m.MessageID != poisonMsg.MessageID ||
		m.CorrelationID != poisonMsg.CorrelationID || m.ContentType != poisonMsg.ContentType || m.Headers["app-header"] != "kept" {
		e.t.Errorf("dead-lettered message %+v lost properties or headers of the one published, %+v", m, poisonMsg)
	}
	if e.caps.NestedHeaders && fmt.Sprint(m.Headers["nested"]) != "map[list:[1 two]]" {
		e.t.Errorf("dead-lettered nested header = %#v, want the one published", m.Headers["nested"])
	}
	e.ack(m)
	e.expectEmpty(q)
}
