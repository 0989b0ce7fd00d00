package amqp10

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/amqpurl"
	"github.com/carrot-go/carrot/internal/delayq"
	"github.com/carrot-go/carrot/internal/lifetime"
)

func init() {
	carrot.Register("amqp10", Driver{})
	carrot.Register("amqp10s", Driver{})
}

// Driver opens amqp10:// and amqp10s:// URLs. It is registered with carrot under both
// schemes.
type Driver struct{}

// OpenConnector parses rawURL with [ParseURL] and returns a Connector for it.
func (Driver) OpenConnector(rawURL string) (backend.Connector, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return NewConnector(o), nil
}

// Connector connects to RabbitMQ 4 over AMQP 1.0 as its Options say. It implements
// [backend.Connector]; use it with [carrot.Connect].
type Connector struct {
	opts  Options
	hosts *amqpurl.Hosts

	// suspect is set when a connection ended on a message the broker could not convert,
	// without knowing which receiver it was for: the next connections attach their
	// receivers one at a time, so that the next such end names the receiver.
	suspect atomic.Bool
}

// NewConnector returns a Connector for opts.
func NewConnector(opts *Options) *Connector {
	o := opts.withDefaults()
	return &Connector{opts: o, hosts: amqpurl.NewHosts("carrot/amqp10: connect to "+o.String(), o.Addrs)}
}

// String describes where the Connector connects, without the password.
func (k *Connector) String() string { return k.opts.String() }

// Conn is one AMQP 1.0 connection to RabbitMQ 4. It implements [backend.Conn]; it does not
// reconnect: carrot does, with a new Conn.
//
// A broker ends the whole session of a link it refuses (an attach to a missing queue, a
// malformed management request), so the Conn keeps its management link pair, its
// publishing link, each consumer and each queue it fetches from on a session of their
// own.
type Conn struct {
	opts Options
	conn *amqp.Conn
	net  net.Conn // under conn, closed by Close if the broker does not answer

	lifetime.Ending // Done and Err
	closed          atomic.Bool
	wg              sync.WaitGroup

	mgmtMu sync.Mutex
	mgmt   *management
	msgID  atomic.Uint64

	pubMu sync.Mutex
	pub   atomic.Pointer[publisher]

	getMu   sync.Mutex
	getters map[string]*getter // by queue

	delays sync.Map // delay exchanges and queues declared, by name

	k       *Connector
	born    time.Time
	probe   chan struct{}                // when not nil, held by an attaching receiver and its probe window
	probing atomic.Pointer[subscription] // the receiver in its probe window
	subsMu  sync.Mutex
	subs    map[*subscription]struct{} // attached receivers

	sess sessions
}

var _ backend.Conn = (*Conn)(nil)
var _ backend.AsyncPublisher = (*Conn)(nil)
var _ backend.PublishWarmer = (*Conn)(nil)

// Connect opens one AMQP 1.0 connection, bounded by ctx: to the first of the hosts that
// accepts it, trying each once, starting with the one after the host of the previous
// connection (see URLs in the package documentation).
func (k *Connector) Connect(ctx context.Context) (backend.Conn, error) {
	c, err := amqpurl.Connect(ctx, k.hosts, k.dial)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// dial opens one AMQP 1.0 connection to the host at addr, bounded by ctx and the
// connection_timeout. Its errors do not name the host: Connect does.
func (k *Connector) dial(ctx context.Context, addr string) (*Conn, error) {
	o := k.opts
	o.Addrs = []string{addr} // the Conn's
	co := o.connOptions()
	dctx, cancel := context.WithTimeout(ctx, o.ConnectionTimeout)
	defer cancel()
	// unanswered returns the error of a connection cut short by ctx or the timeout.
	unanswered := func() error {
		if cerr := ctx.Err(); cerr != nil {
			return backend.Errorf(backend.Unavailable, "%w", cerr)
		}
		return backend.Errorf(backend.Unavailable, "no answer within connection_timeout %v", o.ConnectionTimeout)
	}
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if dctx.Err() != nil {
			return nil, unanswered()
		}
		return nil, backend.Errorf(backend.Unavailable, "%w", err)
	}
	if cfg := amqpurl.TLSFor(o.TLS, addr); cfg != nil {
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			if dctx.Err() != nil {
				return nil, unanswered()
			}
			return nil, backend.Errorf(backend.Invalid, "TLS handshake: %w", err)
		}
		nc = tc
	}
	sniff := &openSniffer{Conn: nc}
	conn, err := amqp.NewConn(dctx, sniff, co)
	if err != nil {
		nc.Close()
		if dctx.Err() != nil {
			return nil, unanswered()
		}
		code := backend.Unavailable
		if msg := err.Error(); strings.Contains(msg, "SASL") || strings.Contains(msg, "unexpected protocol") {
			code = backend.Invalid // refused credentials, or a server that does not speak AMQP 1.0
		}
		return nil, backend.Errorf(code, "%w", err)
	}
	c := &Conn{opts: o, conn: conn, net: nc, getters: make(map[string]*getter), k: k, born: time.Now(), subs: make(map[*subscription]struct{})}
	c.sess = sessions{limit: int(sniff.limit.Load()), open: make(map[*amqp.Session]struct{})}
	if k.suspect.Load() {
		c.probe = make(chan struct{}, 1)
	}
	c.wg.Go(func() {
		<-conn.Done()
		c.End(c.why(conn.Err()))
	})
	return c, nil
}

// why turns the reason go-amqp gives for an ended connection into the Conn's error.
func (c *Conn) why(err error) error {
	switch {
	case c.closed.Load():
		return errClosed
	case err == nil:
		return backend.Errorf(backend.Unavailable, "carrot/amqp10: connection lost")
	case unconvertible(err):
		culprit := c.culprit()
		c.k.suspect.Store(culprit == nil)
		what := "a receiver"
		if culprit != nil {
			culprit.poisoned.Store(true)
			what = fmt.Sprintf("queue %q", culprit.opts.Queue)
		}
		return backend.Errorf(backend.Malformed, "carrot/amqp10: the broker closed the connection: it could not convert a message of %s to deliver it over AMQP 1.0 (a message from an AMQP 0-9-1 client with a header it cannot convert, such as a decimal): %w", what, firstLine{err})
	}
	if time.Since(c.born) > probeReset {
		c.k.suspect.Store(false)
	}
	return backend.Errorf(backend.Unavailable, "carrot/amqp10: connection lost: %w", err)
}

// firstLine is an error that shows only the first line of its text: RabbitMQ's crash
// reports carry a stack trace.
type firstLine struct{ err error }

func (e firstLine) Error() string {
	s, _, _ := strings.Cut(e.err.Error(), "\n")
	return s
}

func (e firstLine) Unwrap() error { return e.err }

// culprit returns the receiver whose message the broker could not convert, if it can be
// told: the only one attached, or the one in its probe window.
func (c *Conn) culprit() *subscription {
	if s := c.probing.Load(); s != nil {
		return s
	}
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	if len(c.subs) == 1 {
		for s := range c.subs {
			return s
		}
	}
	return nil
}

// probeWindow is how long a receiver attached one at a time has to make the connection
// fail, for the failure to be its own: the broker delivers at once to a receiver with
// credit. probeReset is how long a connection must last for receivers to be attached
// together again.
const (
	probeWindow = 300 * time.Millisecond
	probeReset  = 30 * time.Second
)

// unconvertible reports whether err is RabbitMQ's crash converting a message for an AMQP
// 1.0 receiver, which closes the whole connection.
func unconvertible(err error) bool {
	var ce *amqp.ConnError
	if !errors.As(err, &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondInternalError {
		return false
	}
	d := ce.RemoteErr.Description
	return strings.Contains(d, "function_clause") && strings.Contains(d, "mc_")
}

var errClosed = backend.Errorf(backend.Closed, "carrot/amqp10: connection closed")

// gone returns the error for a call on an ended connection.
func (c *Conn) gone() error {
	if c.closed.Load() {
		return errClosed
	}
	select {
	case <-c.conn.Done():
	default:
		return nil
	}
	<-c.Done()
	if err := c.Err(); backend.CodeOf(err) == backend.Unavailable {
		return err
	}
	return backend.Errorf(backend.Unavailable, "carrot/amqp10: connection lost: %w", c.Err())
}

// Capabilities reports what RabbitMQ 4 does over AMQP 1.0. Classic queues do not count
// deliveries, so DeliveryCount is off; quorum queues' counts still fill it.
func (c *Conn) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		Confirms:        true,
		Mandatory:       true,
		DeadLetter:      true,
		Expiration:      true,
		QueueMessageTTL: true,
		MaxLength:       true,
		Priority:        true,
		Exclusive:       true,
		AutoDelete:      true,
		Persistence:     true,
		SharedAcross:    true,
		MaxBodySize:     c.opts.MaxBodySize,
		MaxPrefetch:     math.MaxInt32, // link credit, as go-amqp carries it

		Delay:          true,
		MaxDelay:       delayq.Max,
		DelayPrecision: 100 * time.Millisecond, // beyond the rounding to two significant digits

		InspectQueue: backend.ReadyCount | backend.ConsumerCount, // the management node counts no unacked messages
		// NestedHeaders is off: AMQP 1.0 application properties hold simple values only.
		UserID: c.opts.userID(),

		// RabbitMQ 4, the broker whose management API this backend speaks. Not
		// ConsumerTimeout: RabbitMQ 4.0 takes x-consumer-timeout but enforces it on AMQP
		// 0-9-1 channels only; a receiver held a message 150 s past a 2 s timeout.
		Quorum:               true,
		Streams:              true,
		SingleActiveConsumer: true,
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
		if unconvertible(err) {
			return backend.Malformed
		}
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

// As sets *target to the *amqp.Conn, or a new *amqp.Session on it, which the caller owns
// and closes.
func (c *Conn) As(target any) bool {
	switch t := target.(type) {
	case **amqp.Conn:
		*t = c.conn
		return true
	case **amqp.Session:
		s, err := c.begin(context.Background(), false)
		if err != nil {
			return false
		}
		*t = s
		return true
	}
	return false
}

// Close closes the connection: publishes in flight fail, and deliveries not settled go
// back to their queues. It does not wait long for a broker that does not answer.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := lifetime.Close(c.conn.Close, func() { c.net.Close() })
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr == nil {
		err = nil // closed by us
	}
	if c.Err() != nil {
		err = nil // ended before: nothing more to say
	}
	c.End(errClosed)
	c.wg.Wait()
	return err
}
