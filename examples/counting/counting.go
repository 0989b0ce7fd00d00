// Package counting is an example of a carrot backend that lives outside carrot's backends
// directory, as a third party's would: it wraps another backend and counts the messages
// that pass through it. It registers the scheme "counting+memory", which counts what goes
// through a memory:// broker:
//
//	import _ "github.com/carrot-go/carrot/examples/counting"
//
//	conn, err := carrot.Open(ctx, "counting+memory://shop")
//	...
//	fmt.Println(counting.Memory.Published())
//
// It passes the conformance suite, like every backend must; see counting_test.go.
package counting

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
)

// Memory counts what passes through the connections opened with counting+memory:// URLs.
var Memory = &Driver{Inner: memory.Driver{}, InnerScheme: "memory"}

func init() {
	carrot.Register("counting+memory", Memory)
}

// Driver wraps the driver of another backend and counts what passes through the
// connections it opens. It opens URLs of the form counting+SCHEME://..., handing
// SCHEME://... to Inner.
type Driver struct {
	Inner       backend.Driver
	InnerScheme string

	published, delivered, acked, requeued, rejected atomic.Int64
}

// Published returns how many messages the broker has taken.
func (d *Driver) Published() int64 { return d.published.Load() }

// Delivered returns how many messages consumers have received, by Fetch or Run.
func (d *Driver) Delivered() int64 { return d.delivered.Load() }

// Acked returns how many deliveries were acknowledged.
func (d *Driver) Acked() int64 { return d.acked.Load() }

// Requeued returns how many deliveries were requeued.
func (d *Driver) Requeued() int64 { return d.requeued.Load() }

// Rejected returns how many deliveries were rejected.
func (d *Driver) Rejected() int64 { return d.rejected.Load() }

var _ backend.ConfigDriver = (*Driver)(nil)

// OpenConnector opens the inner backend's URL and wraps its connector.
func (d *Driver) OpenConnector(rawURL string) (backend.Connector, error) {
	return d.open(rawURL, d.Inner.OpenConnector)
}

// OpenConnectorConfig is OpenConnector, passing cfg on to the inner backend when it takes
// it (its driver is a backend.ConfigDriver), so that what the inner backend logs goes to
// the logger of the carrot.Dialer that opened the URL.
func (d *Driver) OpenConnectorConfig(rawURL string, cfg backend.Config) (backend.Connector, error) {
	inner, ok := d.Inner.(backend.ConfigDriver)
	if !ok {
		return d.OpenConnector(rawURL)
	}
	return d.open(rawURL, func(rest string) (backend.Connector, error) {
		return inner.OpenConnectorConfig(rest, cfg)
	})
}

// open opens the inner backend's URL in rawURL with openInner and wraps its connector.
func (d *Driver) open(rawURL string, openInner func(string) (backend.Connector, error)) (backend.Connector, error) {
	_, rest, ok := strings.Cut(rawURL, "+")
	if !ok || !strings.HasPrefix(rest, d.InnerScheme+":") {
		return nil, backend.Errorf(backend.Invalid, "counting: URL must start with counting+%s:", d.InnerScheme)
	}
	inner, err := openInner(rest)
	if err != nil {
		return nil, err
	}
	return d.Wrap(inner), nil
}

// Wrap returns a Connector whose connections are inner's, counted.
func (d *Driver) Wrap(inner backend.Connector) backend.Connector {
	return backend.ConnectorFunc(func(ctx context.Context) (backend.Conn, error) {
		c, err := inner.Connect(ctx)
		if err != nil {
			return nil, err
		}
		return &conn{Conn: c, d: d}, nil
	})
}

// conn counts publishes and deliveries; every other method is the inner connection's.
type conn struct {
	backend.Conn
	d *Driver
}

func (c *conn) Publish(ctx context.Context, p *backend.Publishing) error {
	err := c.Conn.Publish(ctx, p)
	if err == nil {
		c.d.published.Add(1)
	}
	return err
}

func (c *conn) Get(ctx context.Context, queue string, autoAck bool) (*backend.Delivery, error) {
	dl, err := c.Conn.Get(ctx, queue, autoAck)
	return c.count(dl), err
}

func (c *conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	sub, err := c.Conn.Consume(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &subscription{Subscription: sub, c: c}, nil
}

// count counts a delivery and wraps its settler to count how it is settled.
func (c *conn) count(dl *backend.Delivery) *backend.Delivery {
	if dl == nil {
		return nil
	}
	c.d.delivered.Add(1)
	if dl.Settler != nil {
		dl.Settler = &settler{Settler: dl.Settler, d: c.d}
	}
	return dl
}

type subscription struct {
	backend.Subscription
	c *conn
}

func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	dl, err := s.Subscription.Receive(ctx)
	return s.c.count(dl), err
}

type settler struct {
	backend.Settler
	d *Driver
}

func (s *settler) Settle(ctx context.Context, o backend.Outcome) error {
	err := s.Settler.Settle(ctx, o)
	if err == nil {
		switch o {
		case backend.Ack:
			s.d.acked.Add(1)
		case backend.Requeue:
			s.d.requeued.Add(1)
		case backend.Reject:
			s.d.rejected.Add(1)
		}
	}
	return err
}
