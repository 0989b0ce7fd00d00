package carrot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/loglimit"
)

// EnvURL is the environment variable [OpenEnv] reads the broker URL from.
const EnvURL = "CARROT_URL"

var (
	driversMu sync.RWMutex
	drivers   = make(map[string]backend.Driver)
)

// Register makes a backend available to [Open] under a URL scheme. Backends call it from
// their package's init function; schemes are case-insensitive. Register panics if d is nil
// or the scheme is already registered.
func Register(scheme string, d backend.Driver) {
	scheme = strings.ToLower(scheme)
	if d == nil {
		panic("carrot: Register driver is nil")
	}
	if scheme == "" {
		panic("carrot: Register scheme is empty")
	}
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[scheme]; dup {
		panic("carrot: Register called twice for scheme " + scheme)
	}
	drivers[scheme] = d
}

// Backends returns the registered URL schemes, sorted.
func Backends() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	schemes := make([]string, 0, len(drivers))
	for s := range drivers {
		schemes = append(schemes, s)
	}
	slices.Sort(schemes)
	return schemes
}

// Open connects to the broker named by a URL. The URL's scheme picks the backend, which
// must have been registered, usually by importing its package for its side effect:
//
//	import _ "github.com/carrot-go/carrot/backends/memory"
//
//	conn, err := carrot.Open(ctx, "memory://")
//
// Each backend documents its URL form and options. Open makes one attempt to connect,
// bounded by ctx and [DefaultDialTimeout]: a broker that cannot be reached is an error
// wrapping [ErrUnavailable], a URL or settings the backend or broker refuses one wrapping
// [ErrInvalid]. Once open, the Conn recovers lost connections on its own; see [Conn]. Open
// is [Dialer.Open] with the zero Dialer. Errors never show the URL's user info or secret
// options (see [Redact]), nor the text of a URL that does not parse.
func Open(ctx context.Context, rawURL string) (*Conn, error) {
	var d Dialer
	return d.Open(ctx, rawURL)
}

// Open connects to the broker named by a URL, as [Open] does, with the Dialer's options.
func (d *Dialer) Open(ctx context.Context, rawURL string) (*Conn, error) {
	name := Redact(rawURL)
	u, _, err := brokerurl.Parse(rawURL)
	if err != nil {
		return nil, &Error{Op: "open " + name, Kind: ErrInvalid, Err: err}
	}
	scheme := strings.ToLower(u.Scheme)
	driversMu.RLock()
	drv := drivers[scheme]
	driversMu.RUnlock()
	if drv == nil {
		return nil, &Error{
			Op:   "open " + name,
			Kind: ErrUnknownScheme,
			Err:  fmt.Errorf("%q is not registered (registered: %s); is the backend's package imported?", scheme, strings.Join(Backends(), ", ")),
		}
	}
	var connector backend.Connector
	if cd, ok := drv.(backend.ConfigDriver); ok {
		connector, err = cd.OpenConnectorConfig(rawURL, backend.Config{Logger: d.logger()})
	} else {
		connector, err = drv.OpenConnector(rawURL)
	}
	if err != nil {
		kind := ErrInvalid
		if code := backend.CodeOf(err); code != backend.Unknown {
			kind = kinds[code]
		}
		return nil, &Error{Op: "open " + name, Kind: kind, Err: err, url: rawURL}
	}
	return d.connect(ctx, connector, name, rawURL)
}

// Connect opens a connection with a backend's Connector, made without the registry (for
// example with the backend's own constructor from options), as database/sql's OpenDB
// does. It is [Dialer.Connect] with the zero Dialer.
func Connect(ctx context.Context, connector backend.Connector) (*Conn, error) {
	var d Dialer
	return d.Connect(ctx, connector)
}

// Connect opens a connection with a backend's Connector, as [Connect] does, with the
// Dialer's options. The Conn's String is the Connector's, if it has a String method.
func (d *Dialer) Connect(ctx context.Context, connector backend.Connector) (*Conn, error) {
	name := fmt.Sprintf("%T", connector)
	if s, ok := connector.(fmt.Stringer); ok {
		name = s.String()
	}
	return d.connect(ctx, connector, name, "")
}

// OpenEnv opens the URL in the CARROT_URL environment variable, the way an application
// reads its broker from its deployment's settings.
func OpenEnv(ctx context.Context) (*Conn, error) {
	raw := os.Getenv(EnvURL)
	if raw == "" {
		return nil, invalidf("open", "%s is not set", EnvURL)
	}
	return Open(ctx, raw)
}

// Redact returns rawURL for errors and logs: without its user info (name and password),
// and with the values of secret options, such as Redis's sentinel_password, masked. Of a
// URL that does not parse it shows only the scheme, as "SCHEME://…". Every error and log
// line of carrot and its backends shows URLs this way.
func Redact(rawURL string) string {
	return brokerurl.Redact(rawURL)
}

// Conn is a connection to a broker, opened with [Open] or [Connect]. It is safe for
// concurrent use. Publishers and Consumers made from it share its connection and close
// with it.
//
// A Conn recovers on its own when its connection is lost: it connects again with capped
// exponential backoff and jitter, declares again, in order, the exchanges, queues
// (exclusive and auto-delete ones too) and bindings it declared, resumes its consumers,
// and lets publishes retry within their context. Meanwhile calls wait for the connection
// within their context; one whose context ends first returns an error wrapping both
// [ErrUnavailable] and the context's error. Settling a message delivered on a lost
// connection is an [ErrUnavailable] error, and the broker delivers that message again.
// [Conn.State], [Conn.Ping] and [Dialer.OnEvent] tell how the connection fares.
type Conn struct {
	dialer    Dialer
	connector backend.Connector
	name      string
	url       string // as opened, for scrubbing errors; empty for Connect
	log       *slog.Logger
	// attemptLog limits the lines of failed reconnection attempts; used by the supervisor
	// alone.
	attemptLog *loglimit.Limiter

	live    atomic.Pointer[generation] // nil while recovering, and after Close
	caps    atomic.Pointer[Capabilities]
	topo    record
	stopCtx context.Context // canceled by Close: ends recovery
	stop    context.CancelFunc
	wg      sync.WaitGroup // the supervisor

	mu       sync.Mutex
	closed   atomic.Bool   // set under mu
	changed  chan struct{} // closed, and replaced, when live changes
	state    State
	children map[closer]struct{}
}

// closer is a Publisher or Consumer that closes with its Conn.
type closer interface{ Close() error }

// Capabilities says what a connection's backend supports; see [backend.Capabilities].
type Capabilities = backend.Capabilities

// String returns the connection's URL without its password.
func (c *Conn) String() string { return c.name }

// Capabilities reports what the connection's backend supports: what its latest
// connection reported.
func (c *Conn) Capabilities() Capabilities { return *c.caps.Load() }

// As gives access to the backend's native client: it sets *target to the backend's value
// of that type and reports whether it could. Each backend's documentation lists the types.
// The value belongs to the current connection, which changes when the Conn recovers; As
// returns false while it recovers.
func (c *Conn) As(target any) bool {
	g := c.live.Load()
	return g != nil && g.b.As(target)
}

// Close closes the connection and every Publisher and Consumer made from it, and stops a
// recovery in progress. Messages received and not settled go back to their queues. Close
// is idempotent; every call after it returns [ErrClosed].
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	close(c.changed) // the calls waiting for a connection find the Conn closed
	c.changed = make(chan struct{})
	children := make([]closer, 0, len(c.children))
	for ch := range c.children {
		children = append(children, ch)
	}
	c.mu.Unlock()
	c.stop()
	for _, ch := range children {
		ch.Close()
	}
	c.wg.Wait() // the supervisor has made its last generation live, or closed it
	g := c.live.Swap(nil)
	if g == nil {
		return nil
	}
	err := g.b.Close()
	if err != nil && g.b.ErrorCode(err) == backend.Closed {
		err = nil
	}
	return c.wrap(context.Background(), "close", g, err)
}

// isClosed reports whether Close was called.
func (c *Conn) isClosed() bool { return c.closed.Load() }

// adopt registers a Publisher or Consumer to close with the Conn.
func (c *Conn) adopt(ch closer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	c.children[ch] = struct{}{}
	return nil
}

// release forgets a Publisher or Consumer that closed on its own.
func (c *Conn) release(ch closer) {
	c.mu.Lock()
	delete(c.children, ch)
	c.mu.Unlock()
}

// wrap turns a backend error from an operation under ctx on g into a carrot error: for a
// call whose context ended, ctx's own error (whatever the backend's client made of it), or
// an error wrapping ErrUnavailable and ctx's error if the connection was lost; context
// errors unwrapped; errors after Close as ErrClosed; the rest as an *Error with its
// category.
func (c *Conn) wrap(ctx context.Context, op string, g *generation, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ended(ctx); cerr != nil {
		if g.lostWith(err) {
			return outageError(op, cerr, err)
		}
		return cerr
	}
	if cerr := contextError(err); cerr != nil {
		return cerr
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	kind := kinds[g.b.ErrorCode(err)]
	switch {
	case c.isClosed():
		kind = ErrClosed
	case kind == ErrClosed && g.done():
		kind = ErrUnavailable // the connection was lost, and carrot closed it
	}
	return &Error{Op: op, Kind: kind, Err: err, url: c.url}
}

// DeclareExchange creates an exchange, or checks that the existing one of that name has the
// same kind and flags ([ErrMismatch] if not).
func (c *Conn) DeclareExchange(ctx context.Context, x Exchange) error {
	op := fmt.Sprintf("declare exchange %q", x.Name)
	bx, err := x.backend(op, c.Capabilities())
	if err != nil {
		return err
	}
	undo := c.topo.addExchange(bx)
	err = c.do(ctx, op, true, func(g *generation) error { return g.b.DeclareExchange(ctx, bx) })
	if err != nil {
		undo()
	}
	return err
}

// DeleteExchange removes an exchange and its bindings. Deleting one that does not exist is
// not an error.
func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete exchange %q", name)
	if err := checkName(op, "exchange", name, false); err != nil {
		return err
	}
	err := c.do(ctx, op, true, func(g *generation) error { return g.b.DeleteExchange(ctx, name) })
	if err == nil {
		c.topo.deleteExchange(name)
	}
	return err
}

// DeclareQueue declares a queue as a Consumer does: its exchange first, if q.Exchange has a
// name, then the queue, then its bindings. A queue without a name gets a unique one, which
// DeclareQueue returns.
func (c *Conn) DeclareQueue(ctx context.Context, q Queue) (string, error) {
	if q.Name == "" {
		q.Name = generatedName()
	}
	op := fmt.Sprintf("declare queue %q", q.Name)
	bq, bindings, err := q.backend(op, c.Capabilities())
	if err != nil {
		return "", err
	}
	if c.isClosed() {
		return "", ErrClosed
	}
	if q.Exchange.Name != "" && !q.Passive {
		if err := c.DeclareExchange(ctx, q.Exchange); err != nil {
			return "", err
		}
	}
	undo := c.topo.addQueue(bq)
	if err := c.do(ctx, op, true, func(g *generation) error { return g.b.DeclareQueue(ctx, bq) }); err != nil {
		undo()
		return "", err
	}
	for _, b := range bindings {
		if err := c.Bind(ctx, b); err != nil {
			return "", err
		}
	}
	return q.Name, nil
}

// DeleteQueue removes a queue with its messages and bindings. Deleting one that does not
// exist is not an error.
func (c *Conn) DeleteQueue(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete queue %q", name)
	if err := checkName(op, "queue", name, false); err != nil {
		return err
	}
	err := c.do(ctx, op, true, func(g *generation) error { return g.b.DeleteQueue(ctx, name) })
	if err == nil {
		c.topo.deleteQueue(name)
	}
	return err
}

// Bind routes the messages published to b.Exchange whose routing key matches b.Key to
// b.Queue. Both must exist.
func (c *Conn) Bind(ctx context.Context, b Binding) error {
	op := fmt.Sprintf("bind queue %q to exchange %q with key %q", b.Queue, b.Exchange, b.Key)
	if err := checkBinding(op, b); err != nil {
		return err
	}
	bb := b
	undo := c.topo.addBinding(bb)
	err := c.do(ctx, op, true, func(g *generation) error { return g.b.Bind(ctx, bb) })
	if err != nil {
		undo()
	}
	return err
}

// Unbind removes a binding. Removing one that does not exist is not an error.
func (c *Conn) Unbind(ctx context.Context, b Binding) error {
	op := fmt.Sprintf("unbind queue %q from exchange %q with key %q", b.Queue, b.Exchange, b.Key)
	if err := checkBinding(op, b); err != nil {
		return err
	}
	err := c.do(ctx, op, true, func(g *generation) error { return g.b.Unbind(ctx, b) })
	if err == nil {
		c.topo.deleteBinding(b)
	}
	return err
}

// Purge removes the messages waiting in a queue (not those delivered and not yet settled)
// and returns how many it removed. It is carrot 0.4's discard_all. A Purge the connection is
// lost under is not made again: it returns an error wrapping [ErrUnavailable].
func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	op := fmt.Sprintf("purge queue %q", queue)
	if err := checkName(op, "queue", queue, false); err != nil {
		return 0, err
	}
	var n int
	err := c.do(ctx, op, false, func(g *generation) error {
		var err error
		n, err = g.b.Purge(ctx, queue)
		return err
	})
	return n, err
}

// List returns the exchanges (but the default one) and the queues the broker holds, each
// sorted by name, as they were declared, where the backend can list them (see
// [backend.Lister]: memory:// and redis:// can; RabbitMQ names them only through its
// management tools); elsewhere it returns an [ErrUnsupported] error. A queue's Exchange,
// RoutingKey and Bindings are left empty.
func (c *Conn) List(ctx context.Context) ([]Exchange, []Queue, error) {
	const op = "list exchanges and queues"
	var bxs []backend.Exchange
	var bqs []backend.Queue
	err := c.do(ctx, op, false, func(g *generation) error {
		l, ok := g.b.(backend.Lister)
		if !ok {
			return unsupportedf(op, "the backend of %s cannot list what its broker holds", c.name)
		}
		var err error
		bxs, bqs, err = l.List(ctx)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	xs := make([]Exchange, len(bxs))
	for i, x := range bxs {
		xs[i] = Exchange{Name: x.Name, Kind: x.Kind, Transient: !x.Durable, AutoDelete: x.AutoDelete, Args: Table(x.Args)}
	}
	qs := make([]Queue, len(bqs))
	for i, q := range bqs {
		qs[i] = Queue{
			Name: q.Name, Transient: !q.Durable, Exclusive: q.Exclusive, AutoDelete: q.AutoDelete,
			MessageTTL: q.MessageTTL, MaxLength: q.MaxLength, MaxPriority: q.MaxPriority,
			DeadLetterExchange: q.DeadLetterExchange, DeadLetterRoutingKey: q.DeadLetterRoutingKey,
			Args: Table(q.Args),
		}
	}
	return xs, qs, nil
}
