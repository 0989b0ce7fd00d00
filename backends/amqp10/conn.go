package amqp10

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

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/declared"
)

func init() {
	carrot.Register("amqp10", Driver{})
	carrot.Register("amqp10s", Driver{})
}

// Driver opens amqp10:// and amqp10s:// URLs. It is registered with carrot under both
// schemes.
type Driver struct{}

// Open parses rawURL with [ParseURL] and connects.
func (Driver) Open(ctx context.Context, rawURL string) (backend.Conn, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return Open(ctx, o)
}

// Conn is a connection to RabbitMQ 4 over AMQP 1.0 that survives the loss of its TCP
// connection: it reconnects with backoff, declares again what it declared, and its
// links attach again. It implements [backend.Conn]; use it with [carrot.NewConn].
//
// A broker ends the whole session of a link it refuses (an attach to a missing queue, a
// malformed management request), so the Conn keeps its management link pair, its
// publishing link, each consumer and each queue it fetches from on a session of their
// own.
type Conn struct {
	opts Options
	addr string
	co   *amqp.ConnOptions
	log  *slog.Logger
	topo declared.Topology // what to declare again after reconnecting

	mu     sync.Mutex
	conn   *amqp.Conn // nil while reconnecting
	gen    uint64     // increases with each connection
	up     chan struct{}
	closed atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup

	mgmtMu sync.Mutex
	mgmt   *management
	msgID  atomic.Uint64

	pubMu sync.Mutex
	pub   atomic.Pointer[publisher]

	getMu   sync.Mutex
	getters map[string]*getter // by queue
}

var _ backend.Conn = (*Conn)(nil)
var _ backend.AsyncPublisher = (*Conn)(nil)

// Open connects as opts says. A first connection that fails is an error; after that, the
// Conn reconnects on its own until it is closed.
func Open(ctx context.Context, opts *Options) (*Conn, error) {
	o := opts.withDefaults()
	addr, co := o.connOptions()
	c := &Conn{opts: o, addr: addr, co: co, log: o.Logger, up: make(chan struct{}), done: make(chan struct{}), getters: make(map[string]*getter)}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.conn, c.gen = conn, 1
	close(c.up)
	c.wg.Add(1)
	go c.supervise(conn)
	return c, nil
}

// dial opens an AMQP connection.
func (c *Conn) dial(ctx context.Context) (*amqp.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, c.addr, c.co)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			return nil, err
		}
		code := backend.Unavailable
		if strings.Contains(err.Error(), "SASL") {
			code = backend.Invalid
		}
		return nil, backend.Errorf(code, "carrot/amqp10: connect to %s: %w", c.opts, err)
	}
	return conn, nil
}

// supervise waits for the connection to end and reconnects, until Close.
func (c *Conn) supervise(conn *amqp.Conn) {
	defer c.wg.Done()
	for {
		select {
		case <-conn.Done():
		case <-c.done:
			return
		}
		c.lost(conn)
		if c.closed.Load() {
			return
		}
		c.log.Warn("carrot/amqp10: connection lost; reconnecting", "broker", c.opts.String(), "error", conn.Err())
		if conn = c.reconnect(); conn == nil {
			return
		}
	}
}

// lost marks conn as gone, if it is still the current connection.
func (c *Conn) lost(conn *amqp.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn && conn != nil {
		c.conn = nil
		c.up = make(chan struct{})
	}
}

// reconnect dials until it succeeds and the recorded topology is declared again. It
// returns nil if the Conn is closed first.
func (c *Conn) reconnect() *amqp.Conn {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		select {
		case <-time.After(delay/2 + rand.N(delay/2+1)):
		case <-c.done:
			return nil
		}
		conn, err := c.dial(context.Background())
		if err == nil {
			c.mu.Lock()
			if c.closed.Load() {
				c.mu.Unlock()
				conn.Close()
				return nil
			}
			c.conn = conn
			c.gen++
			close(c.up)
			c.mu.Unlock()
			if err = c.redeclare(); err == nil {
				c.log.Info("carrot/amqp10: reconnected", "broker", c.opts.String(), "attempts", attempt)
				return conn
			}
			c.lost(conn)
			conn.Close()
		}
		c.log.Warn("carrot/amqp10: reconnect failed", "broker", c.opts.String(), "attempt", attempt, "error", err)
		delay = min(2*delay, c.opts.ReconnectMax)
	}
}

var errClosed = backend.Errorf(backend.Closed, "carrot/amqp10: connection closed")

// current returns the live connection and its generation, waiting for a reconnection if
// there is none.
func (c *Conn) current(ctx context.Context) (*amqp.Conn, uint64, error) {
	for {
		c.mu.Lock()
		conn, gen, up := c.conn, c.gen, c.up
		c.mu.Unlock()
		if c.closed.Load() {
			return nil, 0, errClosed
		}
		if conn != nil {
			select {
			case <-conn.Done():
				c.lost(conn)
				continue
			default:
				return conn, gen, nil
			}
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-c.done:
		}
	}
}

// session opens a session on the live connection.
func (c *Conn) session(ctx context.Context) (*amqp.Session, uint64, error) {
	for {
		conn, gen, err := c.current(ctx)
		if err != nil {
			return nil, 0, err
		}
		s, err := conn.NewSession(ctx, nil)
		if err == nil {
			return s, gen, nil
		}
		var ce *amqp.ConnError
		if !errors.As(err, &ce) || ctx.Err() != nil {
			return nil, 0, err
		}
		c.lost(conn)
	}
}

// closeQuietly closes a session in the background, without waiting for the broker.
func closeQuietly(s *amqp.Session) {
	if s == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}()
}

// Capabilities reports what RabbitMQ 4 does over AMQP 1.0. Classic queues do not count
// deliveries, so DeliveryCount is off; quorum queues' counts still fill it.
func (c *Conn) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		Confirms:     true,
		Mandatory:    true,
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

// ErrorCode classifies go-amqp's errors by their AMQP condition, and this package's own.
func (c *Conn) ErrorCode(err error) backend.Code {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return code
	}
	var remote *amqp.Error
	var ce *amqp.ConnError
	var se *amqp.SessionError
	var le *amqp.LinkError
	switch {
	case errors.As(err, &ce):
		return backend.Unavailable
	case errors.As(err, &se):
		remote = se.RemoteErr
	case errors.As(err, &le):
		remote = le.RemoteErr
	case errors.As(err, &remote):
	}
	if remote != nil {
		switch remote.Condition {
		case amqp.ErrCondNotFound, "amqp:resource-deleted":
			return backend.NotFound
		case amqp.ErrCondResourceLocked:
			return backend.InUse
		case amqp.ErrCondUnauthorizedAccess, amqp.ErrCondPreconditionFailed, amqp.ErrCondInvalidField, amqp.ErrCondNotAllowed, amqp.ErrCondNotImplemented:
			return backend.Invalid
		case amqp.ErrCondResourceLimitExceeded:
			return backend.Refused
		case amqp.ErrCondMessageSizeExceeded:
			return backend.TooLarge
		}
		return backend.Unavailable // a link or session the broker ended: attach again
	}
	if se != nil || le != nil {
		return backend.Unavailable
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return backend.Unavailable
	}
	return backend.Unknown
}

// As sets *target to the current *amqp.Conn (which changes when the Conn reconnects), or
// a new *amqp.Session on it, which the caller owns and closes.
func (c *Conn) As(target any) bool {
	switch t := target.(type) {
	case **amqp.Conn:
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.conn == nil {
			return false
		}
		*t = c.conn
		return true
	case **amqp.Session:
		s, _, err := c.session(context.Background())
		if err != nil {
			return false
		}
		*t = s
		return true
	}
	return false
}

// Close closes the connection: publishes in flight fail, and deliveries not settled go
// back to their queues.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.done)
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	var err error
	if conn != nil {
		if err = conn.Close(); err != nil {
			var ce *amqp.ConnError
			if errors.As(err, &ce) && ce.RemoteErr == nil {
				err = nil // closed by us
			}
		}
	}
	c.wg.Wait()
	return err
}
