package amqp10_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/amqp10"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/amqpraw"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

func TestMain(m *testing.M) { testbroker.Main(m) }

func TestConformance(t *testing.T) {
	conformance.Run(t, harness(testbroker.URL(t, testbroker.RabbitMQ4)))
}

// TestConformanceQuorum runs the suite with every queue it can a quorum queue.
func TestConformanceQuorum(t *testing.T) {
	h := harness(testbroker.URL(t, testbroker.RabbitMQ4))
	h.QueueType = carrot.QuorumQueue
	conformance.Run(t, h)
}

// harness is the conformance harness of the broker at url.
func harness(url string) conformance.Harness {
	return conformance.Harness{
		URL:        url,
		Open:       func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: openFaulty(url),
	}
}

// openFaulty opens connections to url through a proxy of their own.
func openFaulty(url string) func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
	return func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
		o, err := amqp10.ParseURL(url)
		if err != nil {
			return nil, nil, err
		}
		return flowtest.Through(ctx, o.Addrs[0], func(ctx context.Context, addr string) (*carrot.Conn, error) {
			o.Addrs = []string{addr}
			return carrot.Connect(ctx, amqp10.NewConnector(o))
		})
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want amqp10.Options
	}{
		{"amqp10://", amqp10.Options{Addrs: []string{"localhost:5672"}, Username: "guest", Password: "guest", Vhost: "/"}},
		{"amqp10://u:p@rabbit:5673/prod", amqp10.Options{Addrs: []string{"rabbit:5673"}, Username: "u", Password: "p", Vhost: "prod"}},
		{"amqp10s://rabbit/?server_name=other", amqp10.Options{Addrs: []string{"rabbit:5671"}, Username: "guest", Password: "guest", Vhost: "/"}},
		{"amqp10://h/?idle_timeout=30s&connection_timeout=2s&max_frame_size=4096&prefetch=7&max_body_size=1024&auth_mechanism=anonymous&container_id=app",
			amqp10.Options{Addrs: []string{"h:5672"}, Username: "guest", Password: "guest", Vhost: "/", IdleTimeout: 30 * time.Second, ConnectionTimeout: 2 * time.Second,
				MaxFrameSize: 4096, Prefetch: 7, MaxBodySize: 1024, SASL: "anonymous", ContainerID: "app"}},
		{"amqp10://u:p@node1:5672,node2,[::1]:5673/prod", amqp10.Options{Addrs: []string{"node1:5672", "node2:5672", "[::1]:5673"}, Username: "u", Password: "p", Vhost: "prod"}},
		{"amqp10s://node1,node2:6000/?server_name=other", amqp10.Options{Addrs: []string{"node1:5671", "node2:6000"}, Username: "guest", Password: "guest", Vhost: "/"}},
		{"amqp10://h/?sasl=ANONYMOUS", amqp10.Options{Addrs: []string{"h:5672"}, Username: "guest", Password: "guest", Vhost: "/", SASL: "anonymous"}}, // deprecated
	} {
		got, err := amqp10.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if d := cmp.Diff(tc.want, *got, cmpopts.IgnoreFields(amqp10.Options{}, "TLS")); d != "" {
			t.Errorf("ParseURL(%q) (-want +got):\n%s", tc.url, d)
		}
		if strings.HasPrefix(tc.url, "amqp10s") && (got.TLS == nil || got.TLS.ServerName != "other") {
			t.Errorf("ParseURL(%q): TLS %+v, want server name %q", tc.url, got.TLS, "other")
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, mentions string }{
		{"amqp10://u:s3cret@h/?bogus=1", `unknown URL option "bogus"`},
		{"amqp10://u:s3cret@h/?idle_timeout=10", "idle_timeout"},
		{"amqp10://u:s3cret@h/?idle_timeout=10us", "from 1ms to 49 days"},
		{"amqp10://u:s3cret@h/?idle_timeout=1200h", "from 1ms to 49 days"},
		{"amqp10://u:s3cret@h/?prefetch=2147483648", "from 1 to 2147483647"},
		{"amqp10://u:s3cret@h/?prefetch=1;sasl=plain", "';'"},
		{"amqp10://u:s3cret@h/?prefetch=0", "prefetch"},
		{"amqp10://u:s3cret@h/?prefetch=1&prefetch=2", "given 2 times"},
		{"amqp10://u:s3cret@h/?max_frame_size=100", "max_frame_size"},
		{"amqp10://u:s3cret@h/?sasl=kerberos", "sasl"},
		{"amqp10://u:s3cret@h/?certfile=/x", "amqp10s"},
		{"amqp10s://u:s3cret@h/?certfile=/x", "go together"},
		{"amqp://u:s3cret@h/", "want amqp10 or amqp10s"},
		{"amqp10://u:s3cret@h/?auth_mechanism=kerberos", "auth_mechanism"},
		{"amqp10://u:s3cret@h/?sasl=plain&auth_mechanism=plain", "give auth_mechanism alone"},
		{"amqp10://u:s3cret@h/?connection_timeout=0s", "connection_timeout"},
		{"amqp10://u:s3cret@node1,,node2/", "the URL's hosts have an empty one at byte 25"},
		{"amqp10://u:s3cret@node1,node2:5672x/", "the URL's host at byte 25 has a port that is not a number"},
	} {
		_, err := amqp10.ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.mentions) {
			t.Errorf("ParseURL(%q) = %v, want an error mentioning %q", tc.url, err, tc.mentions)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURL(%q) error %q shows the password", tc.url, err)
		}
	}
}

// open connects to the test broker over AMQP 1.0, and over AMQP 0-9-1 when the test asks.
func open(t *testing.T, url string) *carrot.Conn {
	t.Helper()
	conn, err := carrot.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// declare declares a queue bound to a direct exchange, both deleted when the test ends.
func declare(t *testing.T, conn *carrot.Conn, q carrot.Queue) string {
	t.Helper()
	name, err := conn.DeclareQueue(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.DeleteQueue(context.Background(), name)
		if q.Exchange.Name != "" {
			conn.DeleteExchange(context.Background(), q.Exchange.Name)
		}
	})
	return name
}

func uniqueName(t *testing.T) string {
	return fmt.Sprintf("carrot-test.%s.%d", t.Name(), time.Now().UnixNano())
}

func TestQuorumQueueDeliveryCount(t *testing.T) {
	ctx := t.Context()
	conn := open(t, testbroker.URL(t, testbroker.RabbitMQ4))
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t), Args: carrot.Table{"x-queue-type": "quorum"}})
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	for want := 1; want <= 3; want++ {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.DeliveryCount() != want || m.Redelivered() != (want > 1) {
			t.Errorf("delivery %d: DeliveryCount() = %d, Redelivered() = %v", want, m.DeliveryCount(), m.Redelivered())
		}
		settle := m.Requeue
		if want == 3 {
			settle = m.Ack
		}
		if err := settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAs(t *testing.T) {
	ctx := t.Context()
	conn := open(t, testbroker.URL(t, testbroker.RabbitMQ4))
	var ac *amqp.Conn
	if !conn.As(&ac) {
		t.Fatal("As(*amqp.Conn) = false")
	}
	var s *amqp.Session
	if !conn.As(&s) {
		t.Fatal("As(*amqp.Session) = false")
	}
	s.Close(ctx)
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "raw"); err != nil {
		t.Fatal(err)
	}
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var raw *amqp.Message
	if !m.As(&raw) || string(raw.GetData()) != `"raw"` || raw.Annotations["x-routing-key"] != q {
		t.Errorf("As(*amqp.Message) gave %+v", raw)
	}
	m.Ack(ctx)
}

// TestPassiveDeclareOfGoneExclusiveQueue covers the moment a passive declaration's GET
// finds an exclusive queue of another connection that closes right then: the check of
// its owner that follows must not make the queue again, for this connection, for good.
func TestPassiveDeclareOfGoneExclusiveQueue(t *testing.T) {
	ctx := t.Context()
	url := testbroker.URL(t, testbroker.RabbitMQ4)
	opts, err := amqp10.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := amqp10.NewConnector(opts).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	conn := bc.(*amqp10.Conn)
	name := uniqueName(t)
	err = conn.CheckOwnerOfGone(ctx, name)
	if backend.CodeOf(err) != backend.NotFound {
		t.Errorf("passive declaration of an exclusive queue gone before its owner is checked = %v, want NotFound", err)
	}
	if err := conn.DeclareQueue(ctx, backend.Queue{Name: name, Passive: true}); backend.CodeOf(err) != backend.NotFound {
		conn.DeleteQueue(context.Background(), name)
		t.Errorf("the queue is there after the passive declaration: declaring it again = %v, want NotFound", err)
	}
}

// TestSessionChurn opens sessions one after the other, each right after the last one
// ended, as consumers that come and go do. RabbitMQ 4.0 now and then drops the begin of a
// session on the channel number of one just ended, and the number stays taken: no call
// may wait for it forever, and when lost numbers fill the connection, carrot replaces it.
func TestSessionChurn(t *testing.T) {
	ctx := t.Context()
	conn := open(t, testbroker.URL(t, testbroker.RabbitMQ4))
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	done := make(chan error, 1)
	go func() {
		replaced := 0
		for i := 0; i < 3000; {
			var s *amqp.Session
			if !conn.As(&s) {
				// The connection is being replaced: a passive declaration waits for
				// the new one.
				if replaced++; replaced > 10 {
					done <- errors.New("As(*amqp.Session) = false, again and again")
					return
				}
				if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: q, Passive: true}); err != nil {
					done <- fmt.Errorf("waiting for the connection to be replaced: %w", err)
					return
				}
				continue
			}
			if err := s.Close(ctx); err != nil {
				done <- fmt.Errorf("closing a session: %w", err)
				return
			}
			i++
		}
		// The connection still works.
		_, err := conn.DeclareQueue(ctx, carrot.Queue{Name: q, Passive: true})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("opening and closing 3,000 sessions did not end in two minutes")
	}
}

// TestReconnect closes the broker's connections twice while 5,000 messages flow: every
// message arrives.
func TestReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("closes a broker's connections; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	broker := testbroker.Start(t, testbroker.RabbitMQ4) // its own: the test disturbs it
	d := carrot.Dialer{MaxBackoff: 500 * time.Millisecond}
	conn, err := d.Open(ctx, broker.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	flow := &flowtest.Flow{Conn: conn, Queue: q, Total: 5000}
	flow.Run(ctx, t, func(f *flowtest.Flow) {
		for _, at := range []int64{1000, 3000} {
			f.WaitReceived(at)
			f.Logf("closing all connections")
			if _, err := broker.Exec(ctx, "rabbitmqctl", "close_all_connections", "carrot reconnect test"); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestFixedTargetLink publishes to an exchange until the publisher sends through a link
// whose target is that address, and checks that the messages keep their order across the
// switch and that a publish still tells an unroutable message from a deleted exchange.
func TestFixedTargetLink(t *testing.T) {
	ctx := t.Context()
	o, err := amqp10.ParseURL(testbroker.URL(t, testbroker.RabbitMQ4))
	if err != nil {
		t.Fatal(err)
	}
	var bc *amqp10.Conn // the backend's connection, to look at its links
	k := amqp10.NewConnector(o)
	conn, err := carrot.Connect(ctx, backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		b, err := k.Connect(ctx)
		if err == nil {
			bc = b.(*amqp10.Conn)
		}
		return b, err
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	x := uniqueName(t)
	q := declare(t, conn, carrot.Queue{Name: x, Exchange: carrot.Exchange{Name: x}, RoutingKey: "k"})
	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: x, RoutingKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var pending []*carrot.Confirmation
	for n := 0; len(bc.FixedLinks()) == 0 || n < 1000; n++ { // asynchronously, across the switch
		if n == 100_000 {
			t.Fatal("no link with a fixed target after 100000 messages")
		}
		pending = append(pending, p.PublishAsync(ctx, &carrot.Message{Body: fmt.Append(nil, n)}))
	}
	for _, c := range pending {
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := bc.FixedLinks(), []string{"/exchanges/" + x + "/k"}; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("fixed links %q, want %q", got, want)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}, NoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	for want := range len(pending) {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", want, err)
		}
		if string(m.Body) != fmt.Sprint(want) {
			t.Fatalf("message %d is %q: out of order", want, m.Body)
		}
	}

	if err := conn.Unbind(ctx, carrot.Binding{Exchange: x, Queue: q, Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "nowhere"); !errors.Is(err, carrot.ErrUnroutable) {
		t.Errorf("publish with no binding: %v, want ErrUnroutable", err)
	}
	if err := conn.DeleteExchange(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "no exchange"); !errors.Is(err, carrot.ErrNotFound) {
		t.Errorf("publish to a deleted exchange: %v, want ErrNotFound", err)
	}
}

// TestStreamWithCuts sends 20,000 durable messages from a publisher to a consumer of one
// connection while its network connection is cut five times: every message arrives, and
// the duplicates are counted.
func TestStreamWithCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("a long stream; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	conn, breaker, err := openFaulty(testbroker.URL(t, testbroker.RabbitMQ4))(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer breaker.(*conformance.Proxy).Close()
	defer conn.Close()
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)}) // durable
	flow := &flowtest.Flow{Conn: conn, Queue: q, Total: 20000, Prefetch: 200}
	flow.Run(ctx, t, flowtest.Cuts(breaker, 5))
}

// TestTooLarge publishes a body over RabbitMQ 4's max_message_size (16 MiB by default):
// it is refused before it is sent, and the connection goes on.
func TestTooLarge(t *testing.T) {
	ctx := t.Context()
	conn := open(t, testbroker.URL(t, testbroker.RabbitMQ4))
	q := declare(t, conn, carrot.Queue{Name: uniqueName(t)})
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	start := time.Now()
	if err := p.Publish(ctx, &carrot.Message{Body: make([]byte, 20<<20)}); !errors.Is(err, carrot.ErrTooLarge) {
		t.Errorf("publish of 20 MB = %v, want ErrTooLarge", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the refusal took %v", took)
	}
	if err := p.Send(ctx, "small"); err != nil {
		t.Errorf("publish after the refusal: %v", err)
	}
	if s := conn.State(); s.Recoveries != 0 {
		t.Errorf("State() = %+v: the refusal cost the connection", s)
	}
}

// TestUnconvertibleHeader publishes, with an AMQP 0-9-1 client, a message with a decimal
// header, which RabbitMQ 4 cannot convert for an AMQP 1.0 receiver: it closes the whole
// connection when it tries to deliver it. The consumer of that queue gives up with
// ErrMalformed naming the queue, while a consumer of another queue on the same
// connection, and publishes on it, go on and lose nothing.
func TestUnconvertibleHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	url10 := testbroker.URL(t, testbroker.RabbitMQ4)
	url091 := "amqp" + strings.TrimPrefix(url10, "amqp10")
	conn := open(t, url10)
	poisoned := declare(t, conn, carrot.Queue{Name: uniqueName(t) + ".poisoned"})
	fine := declare(t, conn, carrot.Queue{Name: uniqueName(t) + ".fine"})
	decimal := map[string]amqpraw.Field{"price": {Type: 'D', Value: amqpraw.Decimal{Scale: 2, Value: 12345}}}
	if err := amqpraw.Publish(ctx, url091, "", poisoned, decimal, []byte("from another client")); err != nil {
		t.Fatal(err)
	}

	p := &flowtest.Poisoned{Conn: conn, Poisoned: poisoned, Fine: fine, Messages: 100, Pace: 20 * time.Millisecond}
	p.Run(ctx, t)
}
