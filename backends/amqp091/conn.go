package amqp091

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
)

func init() {
	carrot.Register("amqp", Driver{})
	carrot.Register("amqps", Driver{})
}

// Driver opens amqp:// and amqps:// URLs. It is registered with carrot under both schemes.
type Driver struct{}

// Open parses rawURL with [ParseURL] and connects.
func (Driver) Open(ctx context.Context, rawURL string) (backend.Conn, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return Open(ctx, o)
}

// Conn is a connection to RabbitMQ that survives the loss of its TCP connection: it
// reconnects with backoff, declares again what it declared, and resumes its consumers. It
// implements [backend.Conn]; use it with [carrot.NewConn].
type Conn struct {
	opts Options
	url  string
	cfg  amqp.Config
	log  *slog.Logger
	topo topology

	mu     sync.Mutex
	conn   *amqp.Connection // nil while reconnecting
	up     chan struct{}    // closed while conn is usable
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	ctlMu sync.Mutex    // serializes topology calls on ctl
	ctl   *amqp.Channel // for declarations, deletions, bindings and purges
	getMu sync.Mutex    // serializes gets on get
	get   *amqp.Channel // for basic.get
	pubMu sync.Mutex    // serializes opening publishers
	pub   atomic.Pointer[publisher]
}

var _ backend.Conn = (*Conn)(nil)

// Open connects to RabbitMQ as opts says. A first connection that fails is an error;
// after that, the Conn reconnects on its own until it is closed.
func Open(ctx context.Context, opts *Options) (*Conn, error) {
	o := opts.withDefaults()
	url, cfg := o.config()
	c := &Conn{opts: o, url: url, cfg: cfg, log: o.Logger, up: make(chan struct{}), done: make(chan struct{})}
	conn, notes, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	close(c.up)
	c.wg.Add(1)
	go c.supervise(conn, notes)
	return c, nil
}

// connNotes are the notifications a connection sends, which the supervisor drains.
type connNotes struct {
	closes chan *amqp.Error
	blocks chan amqp.Blocking
}

// dial opens a TCP connection and registers for its notifications at once, before it can
// close unseen.
func (c *Conn) dial(ctx context.Context) (*amqp.Connection, connNotes, error) {
	type result struct {
		conn *amqp.Connection
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := amqp.DialConfig(c.url, c.cfg)
		ch <- result{conn, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() { // the dial is bounded by ConnectionTimeout; close what it makes
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, connNotes{}, ctx.Err()
	}
	if r.err != nil {
		return nil, connNotes{}, backend.Errorf(classifyDial(r.err), "carrot/amqp091: connect to %s: %w", c.opts, r.err)
	}
	notes := connNotes{
		closes: r.conn.NotifyClose(make(chan *amqp.Error, 1)),
		blocks: r.conn.NotifyBlocked(make(chan amqp.Blocking, 1)),
	}
	return r.conn, notes, nil
}

// classifyDial sorts a failure to connect: refused credentials or vhost are not worth
// retrying, a broker that does not answer is.
func classifyDial(err error) backend.Code {
	var ae *amqp.Error
	if errors.As(err, &ae) && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed) {
		return backend.Invalid
	}
	if errors.Is(err, amqp.ErrSASL) || errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) {
		return backend.Invalid
	}
	return backend.Unavailable
}

// supervise watches the connection and reconnects when it is lost, until Close.
func (c *Conn) supervise(conn *amqp.Connection, notes connNotes) {
	defer c.wg.Done()
	for {
		var reason *amqp.Error
	watch:
		for {
			select {
			case b, ok := <-notes.blocks:
				if ok {
					c.log.Warn("carrot/amqp091: broker flow control", "blocked", b.Active, "reason", b.Reason, "broker", c.opts.String())
				}
			case err, ok := <-notes.closes:
				if ok {
					reason = err
				}
				break watch
			case <-c.done:
				return
			}
		}
		c.lost(conn)
		if c.isClosed() {
			return
		}
		c.log.Warn("carrot/amqp091: connection lost; reconnecting", "broker", c.opts.String(), "error", reason)
		conn, notes = c.reconnect()
		if conn == nil {
			return
		}
	}
}

// lost marks conn as gone, if it is still the current connection, so that calls wait for
// the next one.
func (c *Conn) lost(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn && c.conn != nil {
		c.conn = nil
		c.up = make(chan struct{})
	}
}

// reconnect dials until it succeeds and the recorded topology is declared again, with a
// doubling delay between attempts. It returns nil if the Conn is closed first.
func (c *Conn) reconnect() (*amqp.Connection, connNotes) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		wait := delay/2 + rand.N(delay/2+1) // jitter, so that many clients do not return at once
		select {
		case <-time.After(wait):
		case <-c.done:
			return nil, connNotes{}
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.ConnectionTimeout)
		conn, notes, err := c.dial(ctx)
		cancel()
		if err == nil {
			if err = c.topo.redeclare(conn, c.log); err == nil {
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					conn.Close()
					return nil, connNotes{}
				}
				c.conn = conn
				close(c.up)
				c.mu.Unlock()
				c.log.Info("carrot/amqp091: reconnected", "broker", c.opts.String(), "attempts", attempt)
				return conn, notes
			}
			conn.Close()
		}
		c.log.Warn("carrot/amqp091: reconnect failed", "broker", c.opts.String(), "attempt", attempt, "error", err)
		delay = min(2*delay, c.opts.ReconnectMax)
	}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

var errClosed = backend.Errorf(backend.Closed, "carrot/amqp091: connection closed")

// current returns the live connection, waiting for a reconnection if there is none.
func (c *Conn) current(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		conn, up, closed := c.conn, c.up, c.closed
		c.mu.Unlock()
		switch {
		case closed:
			return nil, errClosed
		case conn != nil && !conn.IsClosed():
			return conn, nil
		case conn != nil:
			c.lost(conn) // the supervisor will notice too
			continue
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
		}
	}
}

// openChannel opens a channel on the live connection, waiting for one if needed.
func (c *Conn) openChannel(ctx context.Context) (*amqp.Channel, error) {
	for {
		conn, err := c.current(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err == nil {
			return ch, nil
		}
		if !conn.IsClosed() {
			return nil, err // the broker refused, such as channel_max reached
		}
		c.lost(conn)
	}
}

// call runs an RPC that amqp091-go cannot cancel, returning early if ctx ends first. It
// reports whether the RPC was abandoned, so that its channel, in an unknown state, is
// dropped.
func call(ctx context.Context, rpc func() error) (err error, abandoned bool) {
	if ctx.Done() == nil {
		return rpc(), false
	}
	done := make(chan error, 1)
	go func() { done <- rpc() }()
	select {
	case err := <-done:
		return err, false
	case <-ctx.Done():
		return ctx.Err(), true
	}
}

// control runs fn on the control channel, opening one if needed. A channel the broker
// closed because of fn (a 404 or 406) is replaced by the next call.
func (c *Conn) control(ctx context.Context, fn func(ch *amqp.Channel) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.ctlMu.Lock()
	defer c.ctlMu.Unlock()
	if c.ctl == nil || c.ctl.IsClosed() {
		ch, err := c.openChannel(ctx)
		if err != nil {
			return err
		}
		c.ctl = ch
	}
	ch := c.ctl
	err, abandoned := call(ctx, func() error { return fn(ch) })
	if abandoned || (err != nil && ch.IsClosed()) {
		go ch.Close()
		c.ctl = nil
	}
	return err
}

// Capabilities reports what RabbitMQ does. Delivery counts exist only for quorum queues,
// so the capability is off; their x-delivery-count still fills DeliveryCount.
func (c *Conn) Capabilities() backend.Capabilities {
	confirms := !c.opts.NoConfirms
	return backend.Capabilities{
		Confirms:     confirms,
		Mandatory:    confirms,
		DeadLetter:   true,
		MessageTTL:   true,
		QueueTTL:     true,
		MaxLength:    true,
		Priority:     true,
		Exclusive:    true,
		AutoDelete:   true,
		Persistence:  true,
		SharedAcross: true,
		MaxBodySize:  c.opts.MaxBodySize,
	}
}

// ErrorCode classifies amqp091-go's errors by their AMQP reply code, and this package's
// own.
func (c *Conn) ErrorCode(err error) backend.Code {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return code
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.NotFound:
			return backend.NotFound
		case amqp.PreconditionFailed:
			return backend.Mismatch
		case amqp.ResourceLocked:
			return backend.InUse
		case amqp.ContentTooLarge:
			return backend.TooLarge
		case amqp.NoRoute:
			return backend.Unroutable
		case amqp.AccessRefused, amqp.NotAllowed, amqp.NotImplemented, amqp.CommandInvalid, amqp.SyntaxError:
			return backend.Invalid
		case amqp.ConnectionForced, amqp.ChannelError, amqp.InternalError, amqp.ResourceError, amqp.UnexpectedFrame:
			return backend.Unavailable
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return backend.Unavailable
	}
	return backend.Unknown
}

// As sets *target to the current *amqp091.Connection or a channel of the connection's
// own, the one it declares topology on. Whatever is done with the channel, the Conn
// replaces it when it closes; the Connection changes when the Conn reconnects.
func (c *Conn) As(target any) bool {
	switch t := target.(type) {
	case **amqp.Connection:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn == nil {
			return false
		}
		*t = c.conn
		return true
	case **amqp.Channel:
		c.ctlMu.Lock()
		defer c.ctlMu.Unlock()
		if c.ctl == nil || c.ctl.IsClosed() {
			ch, err := c.openChannel(context.Background())
			if err != nil {
				return false
			}
			c.ctl = ch
		}
		*t = c.ctl
		return true
	}
	return false
}

// Close closes the connection; publishes in flight fail with a Closed error and
// deliveries not settled go back to their queues.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	conn := c.conn
	c.mu.Unlock()
	var err error
	if conn != nil && !conn.IsClosed() {
		err = conn.Close()
		if errors.Is(err, amqp.ErrClosed) {
			err = nil
		}
	}
	c.wg.Wait()
	return err
}

// channelGone reports whether err says that a channel or connection is closed, which
// retrying on a new one may cure.
func channelGone(err error) bool {
	var ae *amqp.Error
	return errors.Is(err, amqp.ErrClosed) || errors.As(err, &ae) && (ae.Code == amqp.ChannelError || ae.Code == amqp.ConnectionForced) ||
		strings.Contains(err.Error(), "use of closed network connection")
}
