package amqp091_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/amqp091"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/amqpraw"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

func TestMain(m *testing.M) { testbroker.Main(m) }

func TestConformance(t *testing.T) {
	conformance.Run(t, harness(testbroker.URL(t, testbroker.RabbitMQ)))
}

// TestConformanceQuorum runs the suite with every queue it can a quorum queue.
func TestConformanceQuorum(t *testing.T) {
	h := harness(testbroker.URL(t, testbroker.RabbitMQ))
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
		o, err := amqp091.ParseURL(url)
		if err != nil {
			return nil, nil, err
		}
		return flowtest.Through(ctx, o.Addrs[0], func(ctx context.Context, addr string) (*carrot.Conn, error) {
			o.Addrs = []string{addr}
			return carrot.Connect(ctx, amqp091.NewConnector(o))
		})
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want amqp091.Options // the fields compared below
	}{
		{"amqp://", amqp091.Options{Addrs: []string{"localhost:5672"}, Username: "guest", Password: "guest", Vhost: "/"}},
		{"amqp://u:p@rabbit:5673/", amqp091.Options{Addrs: []string{"rabbit:5673"}, Username: "u", Password: "p", Vhost: "/"}},
		{"amqp://u:p@rabbit/prod", amqp091.Options{Addrs: []string{"rabbit:5672"}, Username: "u", Password: "p", Vhost: "prod"}},
		{"amqp://rabbit/%2F", amqp091.Options{Addrs: []string{"rabbit:5672"}, Username: "guest", Password: "guest", Vhost: "/"}},
		{"amqps://rabbit/v?server_name=other", amqp091.Options{Addrs: []string{"rabbit:5671"}, Username: "guest", Password: "guest", Vhost: "v"}},
		{"amqps://rabbit/v?server_name_indication=other", amqp091.Options{Addrs: []string{"rabbit:5671"}, Username: "guest", Password: "guest", Vhost: "v"}}, // deprecated
		{"amqp://u:p@node1:5672,node2,[::1]:5673/prod", amqp091.Options{Addrs: []string{"node1:5672", "node2:5672", "[::1]:5673"}, Username: "u", Password: "p", Vhost: "prod"}},
		{"amqps://node1,node2:6000/v?server_name=other", amqp091.Options{Addrs: []string{"node1:5671", "node2:6000"}, Username: "guest", Password: "guest", Vhost: "v"}},
		{"amqp://[::1]:5672/?heartbeat=30s&connection_timeout=2s&prefetch=10&confirms=false&max_body_size=1024&channel_max=16&frame_size=8192&connection_name=app&auth_mechanism=amqplain",
			amqp091.Options{Addrs: []string{"[::1]:5672"}, Username: "guest", Password: "guest", Vhost: "/", Heartbeat: 30 * time.Second, ConnectionTimeout: 2 * time.Second,
				Prefetch: 10, NoConfirms: true, MaxBodySize: 1024, ChannelMax: 16, FrameSize: 8192, ConnectionName: "app", AuthMechanism: "AMQPLAIN"}},
	} {
		got, err := amqp091.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		w := tc.want
		if !slices.Equal(got.Addrs, w.Addrs) || got.Username != w.Username || got.Password != w.Password || got.Vhost != w.Vhost ||
			got.Heartbeat != w.Heartbeat || got.ConnectionTimeout != w.ConnectionTimeout || got.Prefetch != w.Prefetch ||
			got.NoConfirms != w.NoConfirms || got.MaxBodySize != w.MaxBodySize || got.ChannelMax != w.ChannelMax ||
			got.FrameSize != w.FrameSize || got.ConnectionName != w.ConnectionName || got.AuthMechanism != w.AuthMechanism {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.url, got, w)
		}
		if strings.HasPrefix(tc.url, "amqps") && (got.TLS == nil || got.TLS.ServerName != "other") {
			t.Errorf("ParseURL(%q): TLS config %+v, want server name %q", tc.url, got.TLS, "other")
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, mentions string }{
		{"amqp://u:s3cret@host/?bogus=1", `unknown URL option "bogus"`},
		{"amqp://u:s3cret@host/?heartbeat=10", "heartbeat"},
		{"amqp://u:s3cret@host/?heartbeat=500ms", "whole seconds from 1s to 65535s"},
		{"amqp://u:s3cret@host/?heartbeat=1.5s", "whole seconds"},
		{"amqp://u:s3cret@host/?heartbeat=65536s", "whole seconds"},
		{"amqp://u:s3cret@host/?prefetch=65536", "from 1 to 65535"},
		{"amqp://u:s3cret@host/?channel_max=65536", "from 1 to 65535"},
		{"amqp://u:s3cret@host/?frame_size=4294967296", "4294967295"},
		{"amqp://u:s3cret@host/?prefetch=1;confirms=false", "';' at byte 33"},
		{"amqp://u:s3cret@host/?connection_name=a%zz", "'%' not followed"},
		{"amqp://u:s3cret@host/?prefetch=0", "prefetch"},
		{"amqp://u:s3cret@host/?prefetch=1&prefetch=2", "given 2 times"},
		{"amqp://u:s3cret@host/?confirms=maybe", "confirms"},
		{"amqp://u:s3cret@host/?certfile=/x", "amqps"},
		{"amqp://u:s3cret@host/?auth_mechanism=external", "amqps"},
		{"amqps://u:s3cret@host/?certfile=/x", "go together"},
		{"amqps://u:s3cret@host/?cacertfile=/does/not/exist", "cacertfile"},
		{"redis://u:s3cret@host/", "want amqp or amqps"},
		{"amqps://u:s3cret@host/?server_name=a&server_name_indication=a", "give server_name alone"},
		{"amqp://u:s3cret@host/?server_name_indication=a", "amqps"},
		{"amqp://u:s3cret@node1,,node2/", "the URL's hosts have an empty one at byte 23"},
		{"amqp://u:s3cret@node1,node2:5672x/", "the URL's host at byte 23 has a port that is not a number"},
	} {
		_, err := amqp091.ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.mentions) {
			t.Errorf("ParseURL(%q) = %v, want an error mentioning %q", tc.url, err, tc.mentions)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURL(%q) error %q shows the password", tc.url, err)
		}
	}
	// Through carrot.Open, the error is ErrInvalid.
	if _, err := carrot.Open(context.Background(), "amqp://guest:s3cret@127.0.0.1:1/?bogus=1"); !errors.Is(err, carrot.ErrInvalid) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open with an unknown option = %v, want ErrInvalid without the password", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := carrot.Open(ctx, "amqp://guest:s3cret@"+addr+"/?connection_timeout=2s"); !errors.Is(err, carrot.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open of a closed port = %v, want ErrUnavailable without the password", err)
	}
	broker := testbroker.URL(t, testbroker.RabbitMQ)
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("guest", "wrong-s3cret")
	if _, err := carrot.Open(ctx, u.String()); !errors.Is(err, carrot.ErrInvalid) || strings.Contains(err.Error(), "wrong-s3cret") {
		t.Errorf("Open with a wrong password = %v, want ErrInvalid without the password", err)
	}
}

// open connects to the test broker, with extra URL options.
func open(t *testing.T, options string) *carrot.Conn {
	t.Helper()
	broker := testbroker.URL(t, testbroker.RabbitMQ)
	if options != "" {
		broker += "?" + options
	}
	conn, err := carrot.Open(t.Context(), broker)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// uniqueName returns a queue or exchange name no other test run uses.
func uniqueName(t *testing.T) string {
	return fmt.Sprintf("carrot-test.%s.%d", t.Name(), time.Now().UnixNano())
}

// declareQueue declares a queue deleted when the test ends.
func declareQueue(t *testing.T, conn *carrot.Conn, q carrot.Queue) string {
	t.Helper()
	name, err := conn.DeclareQueue(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.DeleteQueue(context.Background(), name) })
	if q.Exchange.Name != "" {
		t.Cleanup(func() { conn.DeleteExchange(context.Background(), q.Exchange.Name) })
	}
	return name
}

func TestQuorumQueueDeliveryCount(t *testing.T) {
	ctx := t.Context()
	conn := open(t, "")
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t), Args: carrot.Table{"x-queue-type": "quorum"}})
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "again and again"); err != nil {
		t.Fatal(err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.DeliveryCount() != want {
			t.Errorf("delivery %d of a quorum queue's message: DeliveryCount() = %d", want, m.DeliveryCount())
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

// TestReturnsMatchTheirPublishes publishes routable and unroutable messages concurrently
// on the shared channel: each publish must get its own outcome.
func TestReturnsMatchTheirPublishes(t *testing.T) {
	ctx := t.Context()
	conn := open(t, "")
	x := uniqueName(t)
	q := declareQueue(t, conn, carrot.Queue{Name: x, Exchange: carrot.Exchange{Name: x, Transient: true}, RoutingKey: "yes", Transient: true})
	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: x})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	var wg sync.WaitGroup
	var routed atomic.Int32
	for i := range n {
		wg.Go(func() {
			key := []string{"yes", "no"}[i%2]
			body := []byte(fmt.Sprint(i % 7)) // bodies repeat across keys
			err := p.Publish(ctx, &carrot.Message{RoutingKey: key, Body: body, DeliveryMode: carrot.Transient})
			switch {
			case key == "no" && !errors.Is(err, carrot.ErrUnroutable):
				t.Errorf("message %d with an unbound key: %v, want ErrUnroutable", i, err)
			case key == "yes" && err != nil:
				t.Errorf("message %d with a bound key: %v", i, err)
			case key == "yes":
				routed.Add(1)
			}
		})
	}
	wg.Wait()
	if got, err := conn.Purge(ctx, q); got != int(routed.Load()) || got != n/2 || err != nil {
		t.Errorf("queue holds %d messages (%v), want %d", got, err, n/2)
	}
}

func TestNackIsRefused(t *testing.T) {
	ctx := t.Context()
	conn := open(t, "")
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t), MaxLength: 1, Args: carrot.Table{"x-overflow": "reject-publish"}})
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "fits"); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "overflows"); !errors.Is(err, carrot.ErrRefused) {
		t.Errorf("publish to a full reject-publish queue = %v, want ErrRefused", err)
	}
}

// TestExchangeDeletedUnderPublisher deletes, behind the publisher's back, an exchange it
// published to: RabbitMQ closes the publishing channel, the publish is ErrNotFound, and
// the connection goes on.
// TestChannelMax fills a connection's channels: the consumer and the fetch that find none
// get ErrUnsupported at once (no outage to wait out), and a consumer closed makes room.
func TestChannelMax(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn := open(t, "channel_max=4")
	nop := carrot.HandlerFunc(func(context.Context, *carrot.Message) error { return nil })
	consume := func(q string) (*carrot.Consumer, chan error) {
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}, Handler: nop})
		if err != nil {
			t.Fatal(err)
		}
		ran := make(chan error, 1)
		go func() { ran <- c.Run(ctx) }()
		return c, ran
	}
	// The control channel and three consumers' fill it.
	var first *carrot.Consumer
	for i := range 3 {
		c, ran := consume(declareQueue(t, conn, carrot.Queue{Name: fmt.Sprintf("%s.%d", uniqueName(t), i)}))
		if i == 0 {
			first = c
		}
		// Run subscribes at once; wait for it to be in place.
		for {
			info, err := conn.InspectQueue(ctx, c.Queues()[0])
			if err != nil {
				t.Fatal(err)
			}
			if info.Consumers == 1 {
				break
			}
			select {
			case err := <-ran:
				t.Fatalf("consumer %d: Run = %v", i, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t) + ".extra"})
	_, ran := consume(q)
	select {
	case err := <-ran:
		if !errors.Is(err, carrot.ErrUnsupported) || !strings.Contains(err.Error(), "4 channels") {
			t.Errorf("Run of a consumer with no channel left = %v, want ErrUnsupported naming the limit", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run of a consumer with no channel left did not return")
	}
	fetcher, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if _, err := fetcher.Fetch(ctx); !errors.Is(err, carrot.ErrUnsupported) {
		t.Errorf("Fetch with no channel left = %v, want ErrUnsupported", err)
	}
	first.Close()
	if _, err := fetcher.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("Fetch after a consumer closed = %v, want ErrEmpty", err)
	}
}

func TestExchangeDeletedUnderPublisher(t *testing.T) {
	ctx := t.Context()
	conn, other := open(t, ""), open(t, "")
	name := uniqueName(t)
	q := declareQueue(t, conn, carrot.Queue{Name: name, Exchange: carrot.Exchange{Name: name}, RoutingKey: "k"})
	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: name, RoutingKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteExchange(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "lost"); !errors.Is(err, carrot.ErrNotFound) {
		t.Errorf("publish to an exchange deleted meanwhile = %v, want ErrNotFound", err)
	}
	toQueue, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := toQueue.Send(ctx, "after"); err != nil {
		t.Errorf("publish after the channel closed: %v", err)
	}
	if n, err := conn.Purge(ctx, q); n != 2 || err != nil {
		t.Errorf("queue holds %d messages (%v), want 2", n, err)
	}
}

func TestAs(t *testing.T) {
	ctx := t.Context()
	conn := open(t, "")
	var ac *amqp.Connection
	if !conn.As(&ac) || ac.IsClosed() {
		t.Fatalf("As(*amqp.Connection) = %v", ac)
	}
	var ch *amqp.Channel
	if !conn.As(&ch) || ch.IsClosed() {
		t.Fatalf("As(*amqp.Channel) = %v", ch)
	}
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("raw"), Headers: carrot.Table{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	if !m.As(&d) || string(d.Body) != "raw" || d.RoutingKey != q {
		t.Errorf("As(*amqp.Delivery) gave %+v", d)
	}
	var wrong *os.File
	if conn.As(&wrong) || m.As(&wrong) {
		t.Error("As accepted a type it does not have")
	}
	m.Ack(ctx)
}

// destructiveEnv is the environment variable that, set to 1, lets the tests that stop,
// start or reconfigure a RabbitMQ do so to the local broker of CARROT_TEST_AMQP091_URL,
// with the local rabbitmqctl, when Docker is not usable. Without it they never touch
// that broker: it may be the developer's own, with other clients.
const destructiveEnv = "CARROT_TEST_DESTRUCTIVE"

// disruptable returns the amqp:// URL of a RabbitMQ that a test may restart or
// reconfigure, and a way to run rabbitmqctl on it: a container of kind k of the test's own
// when Docker is usable; else, only with CARROT_TEST_DESTRUCTIVE=1, the local broker of
// CARROT_TEST_AMQP091_URL with the local rabbitmqctl (no other test may use it
// meanwhile). Otherwise it skips t saying why, or fails it with
// CARROT_TEST_REQUIRE_BROKERS=1, as [testbroker.Start] does.
func disruptable(t *testing.T, k testbroker.Kind) (string, func(ctx context.Context, args ...string) (string, error)) {
	if err := testbroker.CanStart(k); err != nil {
		if local := os.Getenv("CARROT_TEST_AMQP091_URL"); local != "" {
			u, err := url.Parse(local)
			if _, lookErr := exec.LookPath("rabbitmqctl"); err == nil && lookErr == nil && (u.Hostname() == "127.0.0.1" || u.Hostname() == "localhost") {
				if os.Getenv(destructiveEnv) != "1" {
					t.Logf("not stopping or reconfiguring the local RabbitMQ at %s, which may have other clients: set %s=1 to let this test do so with rabbitmqctl, or make Docker usable for a container of its own",
						u.Redacted(), destructiveEnv)
				} else {
					t.Logf("%s=1: using the local RabbitMQ at %s, with rabbitmqctl, instead of a %s container", destructiveEnv, u.Redacted(), k.Name)
					return local, func(ctx context.Context, args ...string) (string, error) {
						out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
						if err != nil {
							return string(out), fmt.Errorf("rabbitmqctl %v: %v: %s", args, err, out)
						}
						return string(out), nil
					}
				}
			}
		}
	}
	c := testbroker.Start(t, k)
	url := c.URL
	if rest, ok := strings.CutPrefix(url, "amqp10"); ok {
		url = "amqp" + rest // the same broker, over AMQP 0-9-1
	}
	return url, func(ctx context.Context, args ...string) (string, error) {
		return c.Exec(ctx, append([]string{"rabbitmqctl"}, args...)...)
	}
}

// TestBrokerRestart sends 10,000 persistent messages from a publisher to a consumer while
// the broker's connections are closed and the broker application is stopped and started:
// every message must arrive at least once.
//
// Destructive: it restarts its broker, a container of its own, or the local RabbitMQ of
// CARROT_TEST_AMQP091_URL only with CARROT_TEST_DESTRUCTIVE=1 (see disruptable).
func TestBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	broker, rabbitmqctl := disruptable(t, testbroker.RabbitMQ)
	t.Cleanup(func() { rabbitmqctl(context.Background(), "start_app") }) // whatever happens

	d := carrot.Dialer{MaxBackoff: time.Second}
	conn, err := d.Open(ctx, broker+"?heartbeat=2s")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)}) // durable
	flow := &flowtest.Flow{Conn: conn, Queue: q, Prefetch: 200}
	flow.Run(ctx, t, func(f *flowtest.Flow) {
		f.WaitReceived(2000)
		f.Logf("closing all connections")
		if _, err := rabbitmqctl(ctx, "close_all_connections", "carrot restart test"); err != nil {
			t.Fatal(err)
		}
		f.WaitReceived(5000)
		f.Logf("stopping the broker")
		if _, err := rabbitmqctl(ctx, "stop_app"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // let the clients notice, and fail to reconnect for a while
		if _, err := rabbitmqctl(ctx, "start_app"); err != nil {
			t.Fatal(err)
		}
		f.Logf("broker started again")
	})
}

// TestDelayedSurvivesRestart publishes a persistent message with a delay, stops and
// starts the broker before the delay has passed: the message arrives after its delay,
// once, through a direct exchange.
//
// Destructive: it restarts its broker, a container of its own, or the local RabbitMQ of
// CARROT_TEST_AMQP091_URL only with CARROT_TEST_DESTRUCTIVE=1 (see disruptable).
func TestDelayedSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	broker, rabbitmqctl := disruptable(t, testbroker.RabbitMQ)
	t.Cleanup(func() { rabbitmqctl(context.Background(), "start_app") }) // whatever happens
	conn, err := carrot.Open(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	x := uniqueName(t) + ".x"
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t), Exchange: carrot.Exchange{Name: x}, RoutingKey: "k"})
	p, _ := conn.NewPublisher(carrot.PublisherOptions{Exchange: x, RoutingKey: "k"})
	start := time.Now()
	const delay = 10 * time.Second // past the restart
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("delayed"), Delay: delay}); err != nil {
		t.Fatal(err)
	}
	if _, err := rabbitmqctl(ctx, "stop_app"); err != nil {
		t.Fatal(err)
	}
	if _, err := rabbitmqctl(ctx, "start_app"); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker restarted %v after the publish", time.Since(start).Round(time.Millisecond))
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := c.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) || errors.Is(err, carrot.ErrUnavailable) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Body) != "delayed" || time.Since(start) < delay {
			t.Errorf("got %q %v after the publish, want the delayed message after %v", m.Body, time.Since(start), delay)
		}
		if err := m.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		break
	}
	if _, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("a second fetch = %v, want ErrEmpty: the delayed message came once", err)
	}
}

// TestUnparseableHeader publishes, as Kombu does, a message with a header of AMQP field
// type 'L', which amqp091-go cannot parse (it closes the whole connection): the consumer
// of that queue gives up with ErrMalformed naming the queue within 30 seconds, while a
// consumer of another queue on the same connection, and publishes on it, go on and lose
// nothing.
func TestUnparseableHeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	url := testbroker.URL(t, testbroker.RabbitMQ)
	conn := open(t, "")
	poisoned := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t) + ".poisoned"})
	fine := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t) + ".fine"})
	if err := amqpraw.Publish(ctx, url, "", poisoned, map[string]amqpraw.Field{"big": {Type: 'L', Value: uint64(1) << 40}}, []byte("from kombu")); err != nil {
		t.Fatal(err)
	}

	p := &flowtest.Poisoned{Conn: conn, Poisoned: poisoned, Fine: fine, Messages: 200, Pace: 10 * time.Millisecond,
		GiveUpWithin: 30 * time.Second, StayConnected: true}
	p.Run(ctx, t)
}

// TestRefusals publishes, to RabbitMQ 4.0 (or, with CARROT_TEST_DESTRUCTIVE=1, the local
// RabbitMQ when Docker is not usable), messages it refuses because of what they are: a
// body over its default max_message_size (16 MiB from RabbitMQ 4.0, 128 MiB before), a
// header table over the frame size, and, once the broker's limit is lowered behind
// carrot's back, a body over the new limit.
// Each fails within a second with a classified error and is not sent again: the bytes the
// broker received on the connection show at most one attempt. The connection's other
// publishers go on undisturbed, and the connection is never lost.
//
// Destructive: it stops its broker, changes its max_message_size and starts it again: a
// container of its own, or the local RabbitMQ of CARROT_TEST_AMQP091_URL only with
// CARROT_TEST_DESTRUCTIVE=1 (see disruptable), restoring the setting when it ends.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	url, rabbitmqctl := disruptable(t, testbroker.RabbitMQ4) // its own: the test changes its settings
	setMax := func(ctx context.Context, n int64) {
		t.Helper()
		for _, cmd := range [][]string{
			{"stop_app"},
			{"eval", fmt.Sprintf("application:set_env(rabbit, max_message_size, %d).", n)},
			{"start_app"},
		} {
			if _, err := rabbitmqctl(ctx, cmd...); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, err := rabbitmqctl(ctx, "eval", "application:get_env(rabbit, max_message_size).")
	if err != nil {
		t.Fatal(err)
	}
	var configured int64
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "{ok,%d}", &configured); err != nil {
		t.Fatalf("max_message_size: %q: %v", out, err)
	}
	t.Cleanup(func() { // for the local broker: the next tests use it
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		setMax(ctx, configured)
	})

	// received returns how many bytes the broker has received on the connection named.
	received := func(name string) int64 {
		t.Helper()
		out, err := rabbitmqctl(ctx, "-q", "list_connections", "client_properties", "recv_oct")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, strconv.Quote(name)) {
				f := strings.Fields(line)
				n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
				if err != nil {
					t.Fatalf("recv_oct in %q: %v", line, err)
				}
				return n
			}
		}
		t.Fatalf("no connection named %s in %q", name, out)
		return 0
	}

	// connect opens a connection named name, with a queue, a publisher and another
	// publisher that goes on publishing, slowly, and must not fail, until finish.
	connect := func(name string) (conn *carrot.Conn, p *carrot.Publisher, finish func()) {
		conn, err := carrot.Open(ctx, url+"?connection_name="+name)
		if err != nil {
			t.Fatal(err)
		}
		q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: uniqueName(t) + name, Transient: true})
		if err != nil {
			t.Fatal(err)
		}
		p, err = conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		other, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan error, 1)
		var sent int
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				case <-time.After(100 * time.Millisecond):
				}
				if err := other.Publish(ctx, &carrot.Message{Body: []byte("undisturbed")}); err != nil {
					done <- err
					return
				}
				sent++
			}
		}()
		return conn, p, func() {
			close(stop)
			if err := <-done; err != nil {
				t.Errorf("%s: the other publisher: %v", name, err)
			}
			if s := conn.State(); s.Recoveries != 0 || !s.Connected {
				t.Errorf("%s: State() = %+v: the refusals disturbed the connection", name, s)
			}
			t.Logf("%s: the other publisher published %d messages meanwhile", name, sent)
			conn.Close()
		}
	}

	refuse := func(conn string, p *carrot.Publisher, what string, m *carrot.Message, attempts int64) {
		t.Helper()
		before := received(conn)
		start := time.Now()
		err := p.Publish(ctx, m)
		took := time.Since(start)
		if !errors.Is(err, carrot.ErrTooLarge) {
			t.Errorf("%s: publish = %v, want ErrTooLarge", what, err)
		}
		if took > time.Second {
			t.Errorf("%s: publish took %v, want under a second", what, took)
		}
		time.Sleep(6 * time.Second) // RabbitMQ updates recv_oct every 5 seconds
		size := int64(len(m.Body))
		for k, v := range m.Headers {
			size += int64(len(k)) + 8
			if s, ok := v.(string); ok {
				size += int64(len(s))
			}
		}
		got := received(conn) - before
		if got >= (attempts+1)*size {
			t.Errorf("%s: the broker received %d bytes for a message of %d: more than %d attempt(s)", what, got, size, attempts)
		}
		t.Logf("%s: %v, after %v; the broker received %d bytes meanwhile, for a message of %d", what, err, took.Round(time.Millisecond), got, size)
	}

	conn, p, finish := connect("refusals")
	max := conn.Capabilities().MaxBodySize
	if max != configured {
		t.Errorf("MaxBodySize = %d, want the broker's default max_message_size, %d", max, configured)
	}
	refuse("refusals", p, fmt.Sprintf("body of %d bytes", max+1), &carrot.Message{Body: make([]byte, max+1)}, 0)
	refuse("refusals", p, "1 MiB header", &carrot.Message{Body: []byte("x"), Headers: carrot.Table{"big": strings.Repeat("h", 1<<20)}}, 0)
	many := carrot.Table{}
	for i := range 10000 {
		many[fmt.Sprint("h", i)] = int64(i) << 40 // beyond 32 bits: 'l', 9 bytes each, too large for a frame
	}
	refuse("refusals", p, "10,000 headers", &carrot.Message{Body: []byte("x"), Headers: many}, 0)
	finish()

	// A limit carrot cannot know: the broker refuses the first message over it, closing
	// the publishing channel, and carrot refuses the next before sending it.
	setMax(ctx, 1<<20)
	_, p, finish = connect("refusals-lowered")
	refuse("refusals-lowered", p, "2 MB body over a lowered limit", &carrot.Message{Body: make([]byte, 2<<20)}, 1)
	refuse("refusals-lowered", p, "2 MB body again", &carrot.Message{Body: make([]byte, 2<<20)}, 0)
	finish()
}

// TestStreamWithCuts sends 20,000 persistent messages from a publisher to a consumer of
// one connection while its network connection is cut five times: every message arrives,
// and the duplicates are counted.
func TestStreamWithCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("a long stream; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	conn, breaker, err := openFaulty(testbroker.URL(t, testbroker.RabbitMQ))(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the queue is deleted before the connection closes.
	t.Cleanup(func() { breaker.(*conformance.Proxy).Close() })
	t.Cleanup(func() { conn.Close() })
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)}) // durable
	flow := &flowtest.Flow{Conn: conn, Queue: q, Total: 20000, Prefetch: 200}
	flow.Run(ctx, t, flowtest.Cuts(breaker, 5))
}

// TestFetchFromStream fetches from a stream declared elsewhere, whose type the consumer
// does not know: RabbitMQ ends the connection rather than answer basic.get, and Fetch
// returns ErrUnsupported rather than try again on every new connection.
func TestFetchFromStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := open(t, "") // closed after declareQueue's cleanup deletes the stream
	q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t), Type: carrot.StreamQueue})
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrUnsupported) {
		t.Fatalf("Fetch from a stream = %v, want ErrUnsupported", err)
	}
	// The Conn recovers from the broker's close, and works.
	for err := conn.Ping(ctx); err != nil; err = conn.Ping(ctx) {
		if ctx.Err() != nil {
			t.Fatalf("the Conn did not recover after the refused fetch: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
