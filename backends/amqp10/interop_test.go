package amqp10_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	_ "github.com/carrot-go/carrot/backends/amqp091" // the other side of the interop tests
	"github.com/carrot-go/carrot/backends/amqp10"
	"github.com/carrot-go/carrot/internal/amqpraw"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// dropped marks a header that does not reach the other protocol.
type dropped struct{}

// A crossing is a header published with one protocol and what the other receives, as
// the package documentation's table says.
type crossing struct {
	name        string
	value       any // published
	to10, to091 any // received over AMQP 1.0 from an AMQP 0-9-1 publisher, and the other way; dropped{} for none
}

// crossings lists a header of every type carrot publishes, with the values at the edges
// of each field type.
func crossings() []crossing {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	long := strings.Repeat("long ", 60) // 300 bytes: a long string, not a short one
	same := func(name string, v any) crossing { return crossing{name, v, v, v} }
	return []crossing{
		same("string", "välue 🥕"),
		same("empty", ""),
		// RabbitMQ gives AMQP 1.0 a string holding NUL as binary; it gives AMQP 0-9-1
		// binary as a string.
		same("long-string", long),
		{"nul-string", "a\x00b", []byte("a\x00b"), "a\x00b"},
		{"bytes", []byte{0, 1, 255}, []byte{0, 1, 255}, "\x00\x01\xff"},
		{"empty-bytes", []byte{}, []byte{}, ""},
		same("zero", int64(0)),
		same("minus1", int64(-1)),
		same("int32-min", int64(math.MinInt32)),
		same("int32-max", int64(math.MaxInt32)),
		same("int64", int64(1)<<40),
		same("int64-negative", -int64(1)<<40),
		same("int64-max", int64(math.MaxInt64)),
		same("int64-min", int64(math.MinInt64)),
		same("true", true),
		same("false", false),
		same("float", 2.5),
		same("float-negative", -1e300),
		same("time", ts),
		same("nil", nil),
		// RabbitMQ makes "x-" headers of AMQP 0-9-1 message annotations, which are not
		// headers over AMQP 1.0; application properties named so stay headers.
		{"x-custom", "x", dropped{}, "x"},
	}
}

// TestInterop publishes a message with every property and a header of every type with
// one backend and receives it with the other, on the same RabbitMQ 4: AMQP 0-9-1 to AMQP
// 1.0 and back. Every property arrives as it was; each header arrives as the package
// documentation's table says.
func TestInterop(t *testing.T) {
	url10 := testbroker.URL(t, testbroker.RabbitMQ4)
	url091 := "amqp" + strings.TrimPrefix(url10, "amqp10") // the same broker and port, AMQP 0-9-1
	c10, c091 := open(t, url10), open(t, url091)
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	user := c10.Capabilities().UserID
	if user == "" || user != c091.Capabilities().UserID {
		t.Fatalf("UserID capabilities %q (AMQP 1.0) and %q (AMQP 0-9-1), want the URL's user for both", user, c091.Capabilities().UserID)
	}
	for _, dir := range []struct {
		name     string
		pub, sub *carrot.Conn
		to10     bool
	}{
		{"amqp091-to-amqp10", c091, c10, true},
		{"amqp10-to-amqp091", c10, c091, false},
	} {
		t.Run(dir.name, func(t *testing.T) {
			for _, mode := range []carrot.DeliveryMode{carrot.Persistent, carrot.Transient} {
				sent := &carrot.Message{
					Body:            []byte{0, 1, 2, 0xff, 'x'},
					ContentType:     "application/x-interop",
					ContentEncoding: "identity",
					Headers:         carrot.Table{},
					DeliveryMode:    mode,
					Priority:        3,
					Expiration:      time.Hour,
					MessageID:       "m-1",
					CorrelationID:   "c-1",
					ReplyTo:         "replies",
					Timestamp:       ts,
					Type:            "order.created",
					AppID:           "carrot-interop",
					UserID:          user,
				}
				want := *sent
				want.RoutingKey = "interop"
				want.Headers = carrot.Table{}
				for _, c := range crossings() {
					sent.Headers[c.name] = c.value
					got := c.to091
					if dir.to10 {
						got = c.to10
					}
					if got != (dropped{}) {
						want.Headers[c.name] = got
					}
				}
				if dir.to10 { // only AMQP 0-9-1 publishes tables and lists; none reaches AMQP 1.0
					sent.Headers["table"] = carrot.Table{"k": "v"}
					sent.Headers["list"] = []any{int64(1)}
				}
				m := crossOver(t, dir.pub, dir.sub, sent)
				ignore := cmpopts.IgnoreUnexported(carrot.Message{})
				if diff := cmp.Diff(&want, m, ignore, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("delivery mode %d: received (-want +got):\n%s", mode, diff)
				}
				if dir.to10 {
					var raw *amqp.Message
					if !m.As(&raw) || raw.Annotations["x-custom"] != "x" {
						t.Errorf("the x-custom header is not the message annotation of the AMQP 1.0 message")
					}
				}
			}
		})
	}
}

// crossOver publishes m with pub to a queue of its own, fetches it with sub and acks it.
func crossOver(t *testing.T, pub, sub *carrot.Conn, m *carrot.Message) *carrot.Message {
	t.Helper()
	ctx := t.Context()
	x := uniqueName(t)
	q := declare(t, sub, carrot.Queue{Name: x, Exchange: carrot.Exchange{Name: x}, RoutingKey: "interop"})
	p, err := pub.NewPublisher(carrot.PublisherOptions{Exchange: x, RoutingKey: "interop"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	return flowtest.FetchAck(t, sub, q)
}

// TestInteropOtherFieldTypes publishes, as other AMQP 0-9-1 clients do, a header of each
// field type carrot does not send itself, and receives it with the amqp10 backend on
// RabbitMQ 4: each arrives as carrot's type for it, as the package documentation says.
// (A decimal closes the receiving connection: see TestUnconvertibleHeader.)
func TestInteropOtherFieldTypes(t *testing.T) {
	ctx := t.Context()
	url10 := testbroker.URL(t, testbroker.RabbitMQ4)
	url091 := "amqp" + strings.TrimPrefix(url10, "amqp10")
	conn := open(t, url10)
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	fields := map[string]amqpraw.Field{
		"b": {Type: 'b', Value: -3}, "B": {Type: 'B', Value: 200}, "s": {Type: 's', Value: -300}, "u": {Type: 'u', Value: 60000},
		"i": {Type: 'i', Value: uint32(4000000000)}, "L": {Type: 'L', Value: -int64(1) << 40}, "f": {Type: 'f', Value: float32(0.25)},
		"T": {Type: 'T', Value: 1700000000},
	}
	if err := amqpraw.Publish(ctx, url091, "", q, fields, []byte("from another client")); err != nil {
		t.Fatal(err)
	}
	m := flowtest.FetchAck(t, conn, q)
	want := carrot.Table{
		"b": int64(-3), "B": int64(200), "s": int64(-300), "u": int64(60000), "i": int64(4000000000),
		"L": -int64(1) << 40, "f": 0.25, "T": time.Unix(1700000000, 0).UTC(),
	}
	if diff := cmp.Diff(want, m.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

// TestUserIDRefusedByBroker publishes, below carrot's check, as a backend whose user is
// unknown would (anonymous or certificate logins), a message with another user's user-id:
// RabbitMQ detaches the publishing link, and the publish is an Invalid error, not retried;
// the next publish goes through on a new link.
func TestUserIDRefusedByBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	url := testbroker.URL(t, testbroker.RabbitMQ4)
	conn := open(t, url)
	if got := conn.Capabilities().UserID; got != "guest" && !strings.Contains(url, "://"+got+":") {
		t.Errorf("Capabilities().UserID = %q, want the URL's user", got)
	}
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	o, err := amqp10.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := amqp10.NewConnector(o).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	user := conn.Capabilities().UserID
	publish := func(u string) error {
		return bc.Publish(ctx, &backend.Publishing{Message: backend.Message{RoutingKey: q, Body: []byte(u), UserID: u}, Confirm: true})
	}
	err = publish("mallory")
	if code := bc.ErrorCode(err); code != backend.Invalid || !strings.Contains(err.Error(), "mallory") {
		t.Errorf("publish as mallory = %v (code %v), want an Invalid error naming the user", err, code)
	}
	if err := publish(user); err != nil {
		t.Errorf("publish as %s after the refusal: %v", user, err)
	}
	if m := flowtest.FetchAck(t, conn, q); string(m.Body) != user || m.UserID != user {
		t.Errorf("received %q with UserID %q, want %s's message alone", m.Body, m.UserID, user)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, &carrot.Message{UserID: "mallory"}); !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("publish as mallory through carrot = %v, want ErrInvalid", err)
	}
}
