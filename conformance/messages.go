package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/carrot-go/carrot"
)

// props is what a received message should carry over from the published one.
type props struct {
	RoutingKey      string
	ContentType     string
	ContentEncoding string
	Headers         carrot.Table
	DeliveryMode    carrot.DeliveryMode
	Priority        uint8
	Expiration      time.Duration
	MessageID       string
	CorrelationID   string
	ReplyTo         string
	Timestamp       time.Time
	Type            string
	AppID           string
	UserID          string
}

func propsOf(m *carrot.Message) props {
	return props{
		RoutingKey:      m.RoutingKey,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		Headers:         m.Headers,
		DeliveryMode:    m.DeliveryMode,
		Priority:        m.Priority,
		Expiration:      m.Expiration,
		MessageID:       m.MessageID,
		CorrelationID:   m.CorrelationID,
		ReplyTo:         m.ReplyTo,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppID:           m.AppID,
		UserID:          m.UserID,
	}
}

// userID returns a Message.UserID the backend takes: the one it requires, if it does.
func (e *env) userID() string {
	if e.caps.UserID != "" {
		return e.caps.UserID
	}
	return "carrot-conformance-user"
}

func testRoundTrip(e *env) {
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	bodies := []struct {
		name string
		body []byte
		mode carrot.DeliveryMode
	}{
		{"empty", []byte{}, carrot.Persistent},
		{"binary", binary, carrot.Persistent},
		{"unicode", []byte("héllo wörld, こんにちは, Привет, 🥕\u2028 end"), carrot.Transient},
		{"1MiB", big, carrot.Persistent},
	}
	ts := time.Date(2024, 2, 29, 12, 30, 45, 0, time.UTC)
	for _, b := range bodies {
		e.sub(b.name, func(e *env) {
			x := e.name("x")
			q := e.queue(carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: x}, RoutingKey: "round.trip"})
			published := &carrot.Message{
				Body:            b.body,
				RoutingKey:      "round.trip",
				ContentType:     "application/x-carrot-test; charset=binary",
				ContentEncoding: "identity",
				Headers: carrot.Table{
					"string":  "välue 🥕",
					"empty":   "",
					"bytes":   []byte{0, 1, 2, 255},
					"true":    true,
					"false":   false,
					"int":     -42,
					"minus1":  -1,
					"int32":   int32(math.MinInt32),
					"int32+":  int64(math.MaxInt32) + 1, // the smallest that needs 64 bits
					"int32-":  int64(math.MinInt32) - 1,
					"uint8":   uint8(200),
					"max":     int64(math.MaxInt64),
					"min":     int64(math.MinInt64),
					"float":   3.25,
					"float32": float32(0.5),
					"time":    ts.Add(999 * time.Millisecond), // whole seconds arrive
					"nil":     nil,
					"ünï":     "unicode key",
				},
				DeliveryMode:  b.mode,
				Priority:      7,
				MessageID:     "message-1",
				CorrelationID: "correlation-1",
				ReplyTo:       "reply-queue",
				Timestamp:     ts.In(time.FixedZone("UTC+3", 3*3600)),
				Type:          "order.created",
				AppID:         "carrot-conformance",
				UserID:        e.userID(),
			}
			want := propsOf(published)
			want.Headers = carrot.Table{
				"string": "välue 🥕", "empty": "", "bytes": []byte{0, 1, 2, 255}, "true": true, "false": false,
				"int": int64(-42), "minus1": int64(-1), "int32": int64(math.MinInt32), "uint8": int64(200),
				"int32+": int64(math.MaxInt32) + 1, "int32-": int64(math.MinInt32) - 1,
				"max": int64(math.MaxInt64), "min": int64(math.MinInt64),
				"float": 3.25, "float32": 0.5, "time": ts, "nil": nil, "ünï": "unicode key",
			}
			if e.caps.NestedHeaders {
				published.Headers["table"] = carrot.Table{"int": int8(-1), "s": "x", "list": []any{uint16(2), nil, []byte{9}, ts}, "empty": carrot.Table{}}
				published.Headers["list"] = []any{true, 2.5, map[string]any{"k": "v"}, []any{}}
				want.Headers["table"] = map[string]any{"int": int64(-1), "s": "x", "list": []any{int64(2), nil, []byte{9}, ts}, "empty": map[string]any{}}
				want.Headers["list"] = []any{true, 2.5, map[string]any{"k": "v"}, []any{}}
			}
			if e.caps.Expiration {
				published.Expiration = time.Hour
				want.Expiration = time.Hour
			}
			e.publishMessage(x, published)

			got := e.fetch(q)
			if !bytes.Equal(got.Body, b.body) {
				e.t.Errorf("body: got %d bytes, want %d bytes%s", len(got.Body), len(b.body), firstDifference(got.Body, b.body))
			}
			if diff := cmp.Diff(want, propsOf(got), cmpopts.EquateEmpty()); diff != "" {
				e.t.Errorf("properties differ (-published +received):\n%s", diff)
			}
			if got.Exchange() != x {
				e.t.Errorf("Exchange() = %q, want %q", got.Exchange(), x)
			}
			if got.Queue() != q {
				e.t.Errorf("Queue() = %q, want %q", got.Queue(), q)
			}
			if got.Redelivered() {
				e.t.Error("Redelivered() = true on the first delivery")
			}
			if e.caps.DeliveryCount && got.DeliveryCount() != 1 {
				e.t.Errorf("DeliveryCount() = %d on the first delivery, want 1", got.DeliveryCount())
			}
			e.ack(got)
			e.expectEmpty(q)
		})
	}
}

func firstDifference(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("; first difference at byte %d: got %#x, want %#x", i, a[i], b[i])
		}
	}
	return ""
}

func testFetchEmpty(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	m, err := e.consumer(q).Fetch(e.ctx)
	if !errors.Is(err, carrot.ErrEmpty) || m != nil {
		e.t.Fatalf("Fetch on an empty queue = %v, %v; want nil, ErrEmpty", m, err)
	}
}

func testAckRemoves(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	m := e.fetch(q)
	if string(m.Body) != "one" {
		e.t.Fatalf("got %q, want %q", m.Body, "one")
	}
	e.ack(m)
	e.expectEmpty(q)
}

func testSettleTwice(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	m := e.fetch(q)
	e.ack(m)
	for _, settle := range []struct {
		name string
		f    func() error
	}{
		{"Ack", func() error { return m.Ack(e.ctx) }},
		{"Requeue", func() error { return m.Requeue(e.ctx) }},
		{"Reject", func() error { return m.Reject(e.ctx) }},
	} {
		if err := settle.f(); !errors.Is(err, carrot.ErrAlreadySettled) {
			e.t.Errorf("%s after Ack = %v, want ErrAlreadySettled", settle.name, err)
		}
	}
	e.expectEmpty(q)
}

func testRequeueRedelivers(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	e.publish("", q, "two")
	c := e.consumer(q)
	m := e.fetchFrom(c)
	if m.Redelivered() {
		e.t.Error("Redelivered() = true on the first delivery")
	}
	if err := m.Requeue(e.ctx); err != nil {
		e.t.Fatalf("requeue: %v", err)
	}
	// Where a requeued message goes back is the queue's: to its head on most, behind
	// the others on RabbitMQ 3's quorum queues.
	for range 2 {
		m := e.fetchFrom(c)
		if want := string(m.Body) == "one"; m.Redelivered() != want {
			e.t.Errorf("after requeue got %q with Redelivered() = %v, want %v", m.Body, m.Redelivered(), want)
		}
		e.ack(m)
	}
	e.expectEmpty(q)
}

func testRejectDrops(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	if err := e.fetch(q).Reject(e.ctx); err != nil {
		e.t.Fatalf("reject: %v", err)
	}
	e.expectEmpty(q)
}

func testRejectDeadLetters(e *env) {
	dlx := e.exchange(carrot.Fanout, "dlx")
	dlq := e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx, Kind: carrot.Fanout}})
	q := e.queue(carrot.Queue{Name: "q", DeadLetterExchange: dlx})
	e.publish("", q, "one")
	if err := e.fetch(q).Reject(e.ctx); err != nil {
		e.t.Fatalf("reject: %v", err)
	}
	e.expectEmpty(q)
	m := e.fetchEventually(dlq, "the rejected message is dead-lettered")
	if string(m.Body) != "one" || m.RoutingKey != q {
		e.t.Errorf("dead-lettered message: body %q, key %q; want %q, %q", m.Body, m.RoutingKey, "one", q)
	}
	e.ack(m)

	e.sub("RoutingKey", func(e *env) {
		dlx := e.exchange(carrot.Direct, "dlx")
		dlq := e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx}, RoutingKey: "dead.key"})
		q := e.queue(carrot.Queue{Name: "q", DeadLetterExchange: dlx, DeadLetterRoutingKey: "dead.key"})
		e.publish("", q, "two")
		if err := e.fetch(q).Reject(e.ctx); err != nil {
			e.t.Fatalf("reject: %v", err)
		}
		m := e.fetchEventually(dlq, "the rejected message is dead-lettered")
		if string(m.Body) != "two" || m.RoutingKey != "dead.key" {
			e.t.Errorf("dead-lettered message: body %q, key %q; want %q, %q", m.Body, m.RoutingKey, "two", "dead.key")
		}
		e.ack(m)
	})
}

func testUnackedAfterFetchClose(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	c := e.consumer(q)
	e.fetchFrom(c)
	if err := c.Close(); err != nil {
		e.t.Fatalf("close consumer: %v", err)
	}
	e.expectRedelivered(q, "one")
}

func testUnackedAfterConnClose(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	e.publish("", q, "two")
	other := e.open()
	c := e.consumerOn(other, carrot.ConsumerOptions{}, q)
	e.fetchFrom(c)
	e.fetchFrom(c)
	if err := other.Close(); err != nil {
		e.t.Fatalf("close connection: %v", err)
	}
	e.expectRedelivered(q, "one", "two")
}

func testUndecodable(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publishMessage("", &carrot.Message{RoutingKey: q, ContentType: carrot.JSON, Body: []byte("{not json")})
	m := e.fetch(q)
	var v map[string]any
	err := m.Decode(&v)
	var de *carrot.DecodeError
	if !errors.As(err, &de) {
		e.t.Fatalf("Decode of a broken JSON body = %v, want a *carrot.DecodeError", err)
	}
	if de.ContentType != carrot.JSON {
		e.t.Errorf("DecodeError.ContentType = %q, want %q", de.ContentType, carrot.JSON)
	}
	e.ack(m)
	e.expectEmpty(q)
}

func testUnacceptable(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publishMessage("", &carrot.Message{RoutingKey: q, ContentType: carrot.Text, Body: []byte("plain")})
	e.publishMessage("", &carrot.Message{RoutingKey: q, ContentType: carrot.JSON, Body: []byte(`"json"`)})
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Accept: []string{carrot.JSON}}, q)
	m := e.fetchFrom(c)
	var s string
	if err := m.Decode(&s); !errors.Is(err, carrot.ErrUnacceptable) {
		e.t.Errorf("Decode of a text/plain message by a JSON-only consumer = %v, want ErrUnacceptable", err)
	}
	if err := m.Reject(e.ctx); err != nil {
		e.t.Fatalf("reject: %v", err)
	}
	m = e.fetchFrom(c)
	if err := m.Decode(&s); err != nil || s != "json" {
		e.t.Errorf("Decode of a JSON message = %q, %v; want %q, nil", s, err, "json")
	}
	e.ack(m)
}

func testInvalidHeader(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	err := p.Publish(e.ctx, &carrot.Message{Body: []byte("x"), Headers: carrot.Table{"bad": struct{}{}}})
	if !errors.Is(err, carrot.ErrInvalid) {
		e.t.Errorf("publish with a struct header = %v, want ErrInvalid", err)
	}
	e.expectEmpty(q)
}

func testNestedHeadersRefused(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	for _, v := range []any{carrot.Table{"k": "v"}, []any{"v"}} {
		err := p.Publish(e.ctx, &carrot.Message{Body: []byte("x"), Headers: carrot.Table{"simple": "v", "nested": v}})
		if !errors.Is(err, carrot.ErrUnsupported) || !strings.Contains(err.Error(), `"nested"`) {
			e.t.Errorf("publish with a %T header on a backend without NestedHeaders = %v, want ErrUnsupported naming the header", v, err)
		}
	}
	e.expectEmpty(q)
}

func testExpiration(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publishMessage("", &carrot.Message{RoutingKey: q, Body: []byte("short-lived"), Expiration: time.Millisecond})
	e.publishMessage("", &carrot.Message{RoutingKey: q, Body: []byte("sentinel")})
	time.Sleep(50 * time.Millisecond) // let the first message expire
	if got := e.fetchBody(q); got != "sentinel" {
		e.t.Errorf("got %q, want the expired message gone and %q next", got, "sentinel")
	}
	e.expectEmpty(q)
}

func testQueueMessageTTL(e *env) {
	dlx := e.exchange(carrot.Fanout, "dlx")
	dlq := e.queue(carrot.Queue{Name: "dead", Exchange: carrot.Exchange{Name: dlx, Kind: carrot.Fanout}})
	q := e.queue(carrot.Queue{Name: "q", MessageTTL: time.Millisecond, DeadLetterExchange: dlx})
	received := make(chan string, 1)
	c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		err := m.Ack(ctx)
		received <- string(m.Body)
		return err
	})}, dlq)
	r := e.start(c)
	e.publish("", q, "expires")
	if got := wait(e, received); got != "expires" {
		e.t.Errorf("dead-lettered %q, want %q", got, "expires")
	}
	e.stop(r)
	e.expectEmpty(q)
}

func testMaxLength(e *env) {
	q := e.queue(carrot.Queue{Name: "q", MaxLength: 2})
	for _, body := range []string{"1", "2", "3"} {
		e.publish("", q, body)
	}
	for _, want := range []string{"2", "3"} {
		if got := e.fetchBody(q); got != want {
			e.t.Errorf("got %q, want %q (the oldest dropped)", got, want)
		}
	}
	e.expectEmpty(q)
}

func testPriority(e *env) {
	q := e.queue(carrot.Queue{Name: "q", MaxPriority: 9})
	for _, m := range []struct {
		body     string
		priority uint8
	}{{"low", 1}, {"high", 9}, {"mid", 5}, {"none", 0}} {
		e.publishMessage("", &carrot.Message{RoutingKey: q, Body: []byte(m.body), Priority: m.priority})
	}
	for _, want := range []string{"high", "mid", "low", "none"} {
		if got := e.fetchBody(q); got != want {
			e.t.Errorf("got %q, want %q", got, want)
		}
	}
}

func testDeliveryCount(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	e.publish("", q, "one")
	c := e.consumer(q)
	for want := 1; want <= 3; want++ {
		m := e.fetchFrom(c)
		if m.DeliveryCount() != want {
			e.t.Errorf("delivery %d: DeliveryCount() = %d", want, m.DeliveryCount())
		}
		if m.Redelivered() != (want > 1) {
			e.t.Errorf("delivery %d: Redelivered() = %v", want, m.Redelivered())
		}
		settle := m.Requeue
		if want == 3 {
			settle = m.Ack
		}
		if err := settle(e.ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

func testTooLarge(e *env) {
	q := e.queue(carrot.Queue{Name: "q"})
	p := e.publisher(carrot.PublisherOptions{RoutingKey: q})
	err := p.Publish(e.ctx, &carrot.Message{Body: make([]byte, e.caps.MaxBodySize+1)})
	if !errors.Is(err, carrot.ErrTooLarge) {
		e.t.Errorf("publish of %d bytes = %v, want ErrTooLarge", e.caps.MaxBodySize+1, err)
	}
	e.expectEmpty(q)
}
