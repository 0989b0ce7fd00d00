package carrot_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
)

// open returns a connection to a memory broker of the test's own.
func open(t *testing.T) *carrot.Conn {
	t.Helper()
	conn, err := carrot.Open(t.Context(), "memory://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRegister(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scheme string
		d      backend.Driver
	}{
		{"nil driver", "x-nil", nil},
		{"empty scheme", "", memory.Driver{}},
		{"duplicate", "MEMORY", memory.Driver{}}, // schemes are case-insensitive
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q, %v) did not panic", tc.scheme, tc.d)
				}
			}()
			carrot.Register(tc.scheme, tc.d)
		})
	}
	got := carrot.Backends()
	if !slices.Contains(got, "memory") || !slices.IsSorted(got) {
		t.Errorf("Backends() = %v, want a sorted list with memory", got)
	}
}

// leakyDriver fails to open with an error that repeats the URL, password and all.
type leakyDriver struct{}

func (leakyDriver) OpenConnector(rawURL string) (backend.Connector, error) {
	return backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		return nil, errors.New("dial " + rawURL + ": connection refused")
	}), nil
}

func init() { carrot.Register("leaky", leakyDriver{}) }

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url       string
		kind      error
		mentions  []string
		forbidden string
	}{
		{"nosuch://user:s3cret@host/", carrot.ErrUnknownScheme, []string{`"nosuch" is not registered`, "memory", "imported"}, "s3cret"},
		{"amqp://user:s3cret@host:bad-port/", carrot.ErrInvalid, []string{"open amqp://…", "port is not a number"}, "s3cret"},
		{"amqp://guest:S3CR#et@127.0.0.1:5672/", carrot.ErrInvalid, []string{"open amqp://…", "percent-encode"}, "S3CR"},
		{"amqp//guest:S3CRet@127.0.0.1:5672/", carrot.ErrInvalid, []string{"open URL", "scheme"}, "S3CRet"},
		{"amqp://guest:12/S3CRet@127.0.0.1:5672/", carrot.ErrInvalid, []string{"'@' at byte 23"}, "S3CRet"},
		{"leaky://user:s3cret@host/", carrot.ErrUnavailable, []string{"open leaky://host/", "dial leaky://host/: connection refused"}, "s3cret"},
		{"leaky://a:a@host/?token=S3CRet", carrot.ErrUnavailable, []string{"open leaky://host/?token=xxxxx", "dial leaky://host/?token=xxxxx: connection refused"}, "S3CRet"},
		{"memory://x?bogus=1", carrot.ErrInvalid, []string{`unknown URL option "bogus"`}, ""},
		{"memory://x?prefetch=-1", carrot.ErrInvalid, []string{"prefetch"}, ""},
	} {
		_, err := carrot.Open(ctx, tc.url)
		if !errors.Is(err, tc.kind) {
			t.Errorf("Open(%q) = %v, want %v", tc.url, err, tc.kind)
			continue
		}
		for _, m := range tc.mentions {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("Open(%q) error %q does not mention %q", tc.url, err, m)
			}
		}
		if tc.forbidden != "" && strings.Contains(err.Error(), tc.forbidden) {
			t.Errorf("Open(%q) error %q shows the password", tc.url, err)
		}
	}
}

func TestOpenEnv(t *testing.T) {
	t.Setenv(carrot.EnvURL, "")
	if _, err := carrot.OpenEnv(t.Context()); !errors.Is(err, carrot.ErrInvalid) || !strings.Contains(err.Error(), "CARROT_URL") {
		t.Errorf("OpenEnv without CARROT_URL = %v, want ErrInvalid naming CARROT_URL", err)
	}
	t.Setenv(carrot.EnvURL, "memory://from-env")
	conn, err := carrot.OpenEnv(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.String() != "memory://from-env" {
		t.Errorf("String() = %q", conn.String())
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@localhost:5672/vhost": "amqp://localhost:5672/vhost",
		"amqp://guest@localhost/":                 "amqp://localhost/",
		"memory://":                               "memory://",
		"amqp://u:p%zz@host:bad/":                 "amqp://…",
		"amqp://u:p@host/?a=1;b=2":                "amqp://…",
		"no scheme at all: p@ss":                  "URL",
		"redis://h/?sentinel_password=S3C&master=m&sentinel=h:1&Password": "redis://h/?sentinel_password=xxxxx&master=m&sentinel=h:1&Password",
		"amqps://h/%2Fv?keyfile=/etc/key.pem&certfile=c.pem":              "amqps://h/%2Fv?keyfile=/etc/key.pem&certfile=c.pem",
		"amqp://guest:guest@node1:5672,node2,[::1]:5673/v?heartbeat=5s":   "amqp://node1:5672,node2,[::1]:5673/v?heartbeat=5s",
		"amqp://guest:guest@node1,,node2/":                                "amqp://…",
	} {
		if got := carrot.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrorUnwrapsBoth(t *testing.T) {
	conn := open(t)
	_, err := conn.DeclareQueue(t.Context(), carrot.Queue{Name: "missing", Passive: true})
	var ce *carrot.Error
	if !errors.Is(err, carrot.ErrNotFound) || !errors.As(err, &ce) || backend.CodeOf(ce.Err) != backend.NotFound {
		t.Errorf("passive declare of a missing queue = %#v; want an *Error wrapping ErrNotFound and the backend's error", err)
	}
	if !errors.Is(carrot.ErrUnsupported, errors.ErrUnsupported) {
		t.Error("ErrUnsupported does not wrap errors.ErrUnsupported")
	}
}

func TestInvalidArguments(t *testing.T) {
	ctx := t.Context()
	conn := open(t)
	long := strings.Repeat("x", 256)
	q := carrot.Queue{Name: "q"}
	if _, err := conn.DeclareQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"queue name too long", second(conn.DeclareQueue(ctx, carrot.Queue{Name: long}))},
		{"exchange name too long", conn.DeclareExchange(ctx, carrot.Exchange{Name: long})},
		{"default exchange", conn.DeclareExchange(ctx, carrot.Exchange{})},
		{"unknown kind", conn.DeclareExchange(ctx, carrot.Exchange{Name: "h", Kind: "headers"})},
		{"negative TTL", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "t", MessageTTL: -time.Second}))},
		{"sub-millisecond TTL", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "t", MessageTTL: time.Microsecond}))},
		{"bind to default exchange", conn.Bind(ctx, carrot.Binding{Queue: "q"})},
		{"routing key too long", p.Publish(ctx, &carrot.Message{RoutingKey: long})},
		{"message id too long", p.Publish(ctx, &carrot.Message{MessageID: long})},
		{"negative expiration", p.Publish(ctx, &carrot.Message{Expiration: -1})},
		{"unknown delivery mode", p.Publish(ctx, &carrot.Message{DeliveryMode: 7})},
		{"struct header", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": struct{}{}}})},
		{"map header with other keys", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": map[int]any{}}})},
		{"list of another type", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": []string{"a"}}})},
		{"struct in a nested table", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": map[string]any{"l": []any{struct{}{}}}}})},
		{"nested too deep", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": deepTable(33)}})},
		{"nested key too long", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": carrot.Table{long: 1}}})},
		{"type too long", p.Publish(ctx, &carrot.Message{Type: long})},
		{"app id too long", p.Publish(ctx, &carrot.Message{AppID: long})},
		{"user id not UTF-8", p.Publish(ctx, &carrot.Message{UserID: "\xff"})},
		{"uint64 header too big", p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"h": uint64(math.MaxUint64)}})},
		{"NoConfirm without AllowUnroutable", second(conn.NewPublisher(carrot.PublisherOptions{NoConfirm: true}))},
		{"no queues", second(conn.NewConsumer(ctx, carrot.ConsumerOptions{}))},
		{"negative prefetch", second(conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{q}, Prefetch: -1}))},
		{"unparsable accept", second(conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{q}, Accept: []string{"/"}}))},
		{"unknown codec", second(conn.NewPublisher(carrot.PublisherOptions{ContentType: "application/x-nothing"}))},
		{"unencodable value", p.Send(ctx, func() {})},
	} {
		if !errors.Is(tc.err, carrot.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tc.name, tc.err)
		}
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{q}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx); !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("Run without a handler = %v, want ErrInvalid", err)
	}
	if m, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("nothing invalid was published, but Fetch = %v, %v", m, err)
	}
}

// deepTable returns a table nested n deep in a header: n tables and lists, alternately.
func deepTable(n int) any {
	var v any = "bottom"
	for i := range n {
		if i%2 == 0 {
			v = map[string]any{"t": v}
		} else {
			v = []any{v}
		}
	}
	return v
}

// wrapped opens a connection to a memory broker of the test's own whose backend
// connections are wrapped by wrap.
func wrapped(t *testing.T, wrap func(backend.Conn) backend.Conn) *carrot.Conn {
	t.Helper()
	mem := memory.NewConnector(&memory.Options{})
	conn, err := carrot.Connect(t.Context(), backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		b, err := mem.Connect(ctx)
		if err != nil {
			return nil, err
		}
		return wrap(b), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// capsConn is a backend connection that reports other capabilities than it has.
type capsConn struct {
	backend.Conn
	caps backend.Capabilities
}

func (c capsConn) Capabilities() backend.Capabilities { return c.caps }

func TestMissingCapabilities(t *testing.T) {
	ctx := t.Context()
	conn := wrapped(t, func(b backend.Conn) backend.Conn { return capsConn{Conn: b} })
	confirming := wrapped(t, func(b backend.Conn) backend.Conn {
		return capsConn{Conn: b, caps: backend.Capabilities{Confirms: true}}
	})
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"confirms", second(conn.NewPublisher(carrot.PublisherOptions{AllowUnroutable: true}))},
		{"mandatory", second(confirming.NewPublisher(carrot.PublisherOptions{}))},
		{"queue TTL", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", MessageTTL: time.Second}))},
		{"max length", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", MaxLength: 1}))},
		{"priority", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", MaxPriority: 1}))},
		{"dead letter", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", DeadLetterExchange: "x"}))},
		{"exclusive", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", Exclusive: true}))},
		{"auto-delete", second(conn.DeclareQueue(ctx, carrot.Queue{Name: "q", AutoDelete: true}))},
	} {
		if !errors.Is(tc.err, carrot.ErrUnsupported) || !errors.Is(tc.err, errors.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", tc.name, tc.err)
		}
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{NoConfirm: true, AllowUnroutable: true})
	if err != nil {
		t.Fatalf("a fire-and-forget publisher needs no capability: %v", err)
	}
	if err := p.Publish(ctx, &carrot.Message{Expiration: time.Second}); !errors.Is(err, carrot.ErrUnsupported) {
		t.Errorf("expiration without the MessageTTL capability = %v, want ErrUnsupported", err)
	}
	for _, h := range []any{map[string]any{"a": 1}, carrot.Table{}, []any{1}} {
		err := p.Publish(ctx, &carrot.Message{Headers: carrot.Table{"flat": 1, "nested": h}})
		if !errors.Is(err, carrot.ErrUnsupported) || !strings.Contains(err.Error(), `"nested"`) {
			t.Errorf("header %T without the NestedHeaders capability = %v, want ErrUnsupported naming it", h, err)
		}
	}
}

// TestUserIDCapability publishes on a backend that takes only the UserID it reports: any
// other is refused before it reaches the backend, and an empty one is fine.
func TestUserIDCapability(t *testing.T) {
	ctx := t.Context()
	conn := wrapped(t, func(b backend.Conn) backend.Conn {
		caps := b.Capabilities()
		caps.UserID = "alice"
		return capsConn{Conn: b, caps: caps}
	})
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, &carrot.Message{UserID: "bob"}); !errors.Is(err, carrot.ErrInvalid) || !strings.Contains(err.Error(), `"alice"`) {
		t.Errorf("UserID bob on alice's connection = %v, want ErrInvalid naming alice", err)
	}
	for _, user := range []string{"alice", ""} {
		if err := p.Publish(ctx, &carrot.Message{UserID: user}); err != nil {
			t.Errorf("UserID %q on alice's connection: %v", user, err)
		}
	}
}

// TestNestedHeaders publishes tables and lists nested as deep as they may be, of every
// type, and receives them normalised: integers as int64, tables as map[string]any.
func TestNestedHeaders(t *testing.T) {
	ctx := t.Context()
	conn := open(t)
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2025, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	sent := carrot.Table{
		"table": carrot.Table{"i": int8(-1), "f": float32(0.5), "t": ts, "l": []any{uint16(7), "s", nil, []byte{0}, true}},
		"list":  []any{map[string]any{"k": "v"}, []any{}, 1.5},
		"deep":  deepTable(32),
	}
	want := carrot.Table{
		"table": map[string]any{"i": int64(-1), "f": 0.5, "t": ts.UTC().Truncate(time.Second), "l": []any{int64(7), "s", nil, []byte{0}, true}},
		"list":  []any{map[string]any{"k": "v"}, []any{}, 1.5},
		"deep":  deepTable(32),
	}
	if err := p.Publish(ctx, &carrot.Message{Headers: sent}); err != nil {
		t.Fatal(err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "q", Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, m.Headers); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
}

func TestRunTwice(t *testing.T) {
	conn := open(t)
	received := make(chan struct{}, 1)
	c, err := conn.NewConsumer(t.Context(), carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "q"}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			received <- struct{}{}
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	<-received // the first Run is running
	if err := c.Run(ctx); !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("Run while running = %v, want ErrInvalid", err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("first Run = %v, want context.Canceled", err)
	}
}

func second[T any](_ T, err error) error { return err }

// flakyConn fails its first publishes as if the connection dropped under them.
type flakyConn struct {
	backend.Conn
	failures atomic.Int32
	calls    atomic.Int32
}

func (f *flakyConn) Publish(ctx context.Context, p *backend.Publishing) error {
	f.calls.Add(1)
	if f.failures.Add(-1) >= 0 {
		return backend.Errorf(backend.Unavailable, "connection lost")
	}
	return f.Conn.Publish(ctx, p)
}

func TestPublishRetriesUnavailable(t *testing.T) {
	ctx := t.Context()
	var flaky *flakyConn
	conn := wrapped(t, func(b backend.Conn) backend.Conn {
		flaky = &flakyConn{Conn: b}
		return flaky
	})
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		noRetry bool
		async   bool
		want    error
		calls   int32
	}{
		{"retried", false, false, nil, 3},
		{"retried async", false, true, nil, 3},
		{"NoRetry", true, false, carrot.ErrUnavailable, 1},
	} {
		flaky.failures.Store(2)
		flaky.calls.Store(0)
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q, NoRetry: tc.noRetry})
		if err != nil {
			t.Fatal(err)
		}
		if tc.async {
			err = p.PublishAsync(ctx, &carrot.Message{Body: []byte(tc.name)}).Err()
		} else {
			err = p.Send(ctx, tc.name)
		}
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || flaky.calls.Load() != tc.calls {
			t.Errorf("%s: got %v after %d attempts, want %v after %d", tc.name, err, flaky.calls.Load(), tc.want, tc.calls)
		}
	}
	if n, _ := conn.Purge(ctx, q); n != 2 {
		t.Errorf("queue holds %d messages, want the 2 retried ones", n)
	}

	// A context that ends stops the retries.
	flaky.failures.Store(1000)
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Send(short, "never"); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, carrot.ErrUnavailable) {
		t.Errorf("Send while the broker stays away = %v, want an error wrapping context.DeadlineExceeded and ErrUnavailable", err)
	}
}

// outageConn fails the first call it is given as if the broker went away under it
// (a publish's link detaches; an unbind's connection drops), and holds every later one
// until its context ends. Its calls count is shared by the connections of one Conn.
type outageConn struct {
	backend.Conn
	calls *atomic.Int32
}

func (o outageConn) Publish(ctx context.Context, p *backend.Publishing) error {
	if o.calls.Add(1) == 1 {
		return backend.Errorf(backend.Unavailable, "link detached")
	}
	<-ctx.Done()
	return ctx.Err()
}

func (o outageConn) Unbind(ctx context.Context, b backend.Binding) error {
	if o.calls.Add(1) == 1 {
		o.Conn.Close()
		return backend.Errorf(backend.Unavailable, "connection dropped")
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestContextEndsInRetry checks that a call whose context ends during an attempt made
// again reports the outage it was retrying through, as it does when the context ends
// between attempts: the error wraps ErrUnavailable, the context's error and the first
// attempt's.
func TestContextEndsInRetry(t *testing.T) {
	ctx := t.Context()
	calls := new(atomic.Int32)
	conn := wrapped(t, func(b backend.Conn) backend.Conn { return outageConn{Conn: b, calls: calls} })
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q", AllowUnroutable: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cause string
		call  func(ctx context.Context) error
	}{
		{"Publish", "link detached", func(ctx context.Context) error { return p.Send(ctx, "x") }},
		{"PublishAsync", "link detached", func(ctx context.Context) error {
			return p.PublishAsync(ctx, &carrot.Message{Body: []byte("x")}).Wait(t.Context())
		}},
		{"Unbind", "connection dropped", func(ctx context.Context) error {
			return conn.Unbind(ctx, carrot.Binding{Exchange: "x", Queue: "q", Key: "k"})
		}},
	} {
		calls.Store(0)
		short, cancel := context.WithTimeout(ctx, time.Second)
		err := tc.call(short)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, carrot.ErrUnavailable) || err == nil || !strings.Contains(err.Error(), tc.cause) || calls.Load() != 2 {
			t.Errorf("%s: got %v after %d attempts, want an error wrapping context.DeadlineExceeded and ErrUnavailable, saying why the first of 2 attempts failed (%s)", tc.name, err, calls.Load(), tc.cause)
		}
	}
}

// stalledConn waits for the context of each call, then fails with an error of its own
// that does not wrap the context's, as some clients do (go-amqp says "credit limit
// exceeded" for a send cut short).
type stalledConn struct{ backend.Conn }

func (stalledConn) stall(ctx context.Context) error {
	<-ctx.Done()
	return backend.Errorf(backend.Unavailable, "client: gave up")
}

func (s stalledConn) Consume(ctx context.Context, o backend.ConsumeOptions) (backend.Subscription, error) {
	return nil, s.stall(ctx)
}

func (s stalledConn) Get(ctx context.Context, queue string, autoAck bool) (*backend.Delivery, error) {
	return nil, s.stall(ctx)
}

func (s stalledConn) Publish(ctx context.Context, p *backend.Publishing) error { return s.stall(ctx) }

func (s stalledConn) Purge(ctx context.Context, queue string) (int, error) { return 0, s.stall(ctx) }

// TestContextEndsCall checks that a call whose context ends returns the context's error,
// whatever error the backend gives then.
func TestContextEndsCall(t *testing.T) {
	ctx := t.Context()
	conn := wrapped(t, func(b backend.Conn) backend.Conn { return stalledConn{b} })
	q := carrot.Queue{Name: "q"}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{q}, Handler: carrot.HandlerFunc(func(context.Context, *carrot.Message) error { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	if err != nil {
		t.Fatal(err)
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	canceled := func() context.Context {
		ctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(20*time.Millisecond, cancel)
		t.Cleanup(cancel)
		return ctx
	}
	if err := c.Run(canceled()); err != context.Canceled {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if _, err := c.Fetch(short()); err != context.DeadlineExceeded {
		t.Errorf("Fetch = %v, want context.DeadlineExceeded", err)
	}
	if err := p.Send(short(), "x"); err != context.DeadlineExceeded {
		t.Errorf("Send = %v, want context.DeadlineExceeded", err)
	}
	if err := p.PublishAsync(canceled(), &carrot.Message{}).Err(); err != context.Canceled {
		t.Errorf("PublishAsync = %v, want context.Canceled", err)
	}
	if _, err := conn.Purge(short(), "q"); err != context.DeadlineExceeded {
		t.Errorf("Purge = %v, want context.DeadlineExceeded", err)
	}
}
