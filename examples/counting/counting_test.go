package counting_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/examples/counting"
)

func TestConformance(t *testing.T) {
	url := "counting+memory://" + t.Name()
	before := counting.Memory.Published()
	conformance.Run(t, conformance.Harness{
		URL:  url,
		Open: func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
			link := new(memory.Link)
			conn, err := carrot.Connect(ctx, counting.Memory.Wrap(memory.NewConnector(&memory.Options{Name: t.Name(), Link: link})))
			return conn, link, err
		},
	})
	if counting.Memory.Published() == before {
		t.Error("the suite ran without a publish passing through the counting backend")
	}
}

func TestCounts(t *testing.T) {
	ctx := context.Background()
	d := counting.Memory
	conn, err := carrot.Open(ctx, "counting+memory://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		t.Fatal(err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	published, delivered, acked, requeued, rejected := d.Published(), d.Delivered(), d.Acked(), d.Requeued(), d.Rejected()
	for _, body := range []string{"a", "b", "c"} {
		if err := p.Send(ctx, body); err != nil {
			t.Fatal(err)
		}
	}
	for _, settle := range []func(*carrot.Message) error{
		func(m *carrot.Message) error { return m.Ack(ctx) },
		func(m *carrot.Message) error { return m.Requeue(ctx) },
		func(m *carrot.Message) error { return m.Ack(ctx) }, // the requeued one again
		func(m *carrot.Message) error { return m.Reject(ctx) },
	} {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := settle(m); err != nil {
			t.Fatal(err)
		}
	}
	for _, got := range []struct {
		name      string
		got, want int64
	}{
		{"published", d.Published() - published, 3},
		{"delivered", d.Delivered() - delivered, 4},
		{"acked", d.Acked() - acked, 2},
		{"requeued", d.Requeued() - requeued, 1},
		{"rejected", d.Rejected() - rejected, 1},
	} {
		if got.got != got.want {
			t.Errorf("%s: got %d, want %d", got.name, got.got, got.want)
		}
	}
}

func TestBadURL(t *testing.T) {
	_, err := carrot.Open(context.Background(), "counting+memory://x?bogus=1")
	if !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("open with an unknown option = %v, want ErrInvalid", err)
	}
}

// configured opens memory:// URLs, as a backend.ConfigDriver, and keeps the Config it is
// given.
type configured struct {
	mu  sync.Mutex
	cfg backend.Config
}

func (d *configured) OpenConnector(rawURL string) (backend.Connector, error) {
	return memory.Driver{}.OpenConnector(rawURL)
}

func (d *configured) OpenConnectorConfig(rawURL string, cfg backend.Config) (backend.Connector, error) {
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	return d.OpenConnector(rawURL)
}

var withConfig = &configured{}

func init() {
	carrot.Register("counting-config+memory", &counting.Driver{Inner: withConfig, InnerScheme: "memory"})
}

// TestConfigPassedOn checks that the counting driver hands the Config of a carrot.Dialer,
// its logger, on to an inner driver that takes one.
func TestConfigPassedOn(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	d := carrot.Dialer{Logger: logger}
	conn, err := d.Open(context.Background(), "counting-config+memory://"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	withConfig.mu.Lock()
	got := withConfig.cfg.Logger
	withConfig.mu.Unlock()
	if got != logger {
		t.Errorf("the inner driver got logger %p, want the Dialer's, %p", got, logger)
	}
}
