package carrot

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/carrot-go/carrot/backend"
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
// Each backend documents its URL form and options. Errors never contain the URL's password.
func Open(ctx context.Context, rawURL string) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password and all: report only what is wrong with it.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return nil, &Error{Op: "open " + Redact(rawURL), Kind: ErrInvalid, Err: err, secret: password(rawURL)}
	}
	scheme := strings.ToLower(u.Scheme)
	driversMu.RLock()
	d := drivers[scheme]
	driversMu.RUnlock()
	if d == nil {
		return nil, &Error{
			Op:   "open " + Redact(rawURL),
			Kind: ErrUnknownScheme,
			Err:  fmt.Errorf("%q is not registered (registered: %s); is the backend's package imported?", scheme, strings.Join(Backends(), ", ")),
		}
	}
	b, err := d.Open(ctx, rawURL)
	if err != nil {
		if cerr := contextError(err); cerr != nil {
			return nil, cerr
		}
		secret, _ := u.User.Password()
		return nil, &Error{Op: "open " + Redact(rawURL), Kind: kindOfOpenError(err), Err: err, secret: secret}
	}
	c := NewConn(b)
	c.name = Redact(rawURL)
	return c, nil
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

// kindOfOpenError classifies an error from Driver.Open, which has no Conn to ask.
func kindOfOpenError(err error) error {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return kinds[code]
	}
	return ErrUnavailable
}

// Redact returns rawURL with its password replaced by "xxxxx", for logs and errors. It
// works on URLs that do not parse, too.
func Redact(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		if _, ok := u.User.Password(); !ok {
			return rawURL
		}
		return u.Redacted()
	}
	p := password(rawURL)
	if p == "" {
		return rawURL
	}
	return strings.Replace(rawURL, ":"+p+"@", ":xxxxx@", 1)
}

// password finds the password in a URL of the form scheme://user:password@host, even when
// the URL does not parse.
func password(rawURL string) string {
	rest := rawURL
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	userinfo := rest[:at]
	if i := strings.IndexAny(userinfo, "/?#"); i >= 0 {
		return ""
	}
	_, p, ok := strings.Cut(userinfo, ":")
	if !ok {
		return ""
	}
	return p
}

// Conn is a connection to a broker, opened with [Open] or [NewConn]. It is safe for
// concurrent use. Publishers and Consumers made from it share its connection and close
// with it.
type Conn struct {
	b    backend.Conn
	caps Capabilities
	name string

	mu       sync.Mutex
	closed   atomic.Bool // set under mu
	children map[closer]struct{}
}

// closer is a Publisher or Consumer that closes with its Conn.
type closer interface{ Close() error }

// Capabilities says what a connection's backend supports; see [backend.Capabilities].
type Capabilities = backend.Capabilities

// NewConn wraps a backend connection, opened without the registry, for example with a
// backend's own constructor. The Conn owns b and closes it.
func NewConn(b backend.Conn) *Conn {
	return &Conn{b: b, caps: b.Capabilities(), name: fmt.Sprintf("%T", b), children: make(map[closer]struct{})}
}

// String returns the connection's URL without its password.
func (c *Conn) String() string { return c.name }

// Capabilities reports what the connection's backend supports.
func (c *Conn) Capabilities() Capabilities { return c.caps }

// As gives access to the backend's native client: it sets *target to the backend's value
// of that type and reports whether it could. Each backend's documentation lists the types.
func (c *Conn) As(target any) bool { return c.b.As(target) }

// Close closes the connection and every Publisher and Consumer made from it. Messages
// received and not settled go back to their queues. Close is idempotent; every call after
// it returns [ErrClosed].
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil
	}
	c.closed.Store(true)
	children := make([]closer, 0, len(c.children))
	for ch := range c.children {
		children = append(children, ch)
	}
	c.mu.Unlock()
	for _, ch := range children {
		ch.Close()
	}
	return c.wrap(context.Background(), "close", c.b.Close())
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

// wrap turns a backend error from an operation under ctx into a carrot error: ctx's own
// error once ctx has ended (whatever the backend's client made of it), context errors
// unwrapped, errors after Close as ErrClosed, the rest as an *Error with its category.
func (c *Conn) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if cerr := contextError(err); cerr != nil {
		return cerr
	}
	if _, ok := err.(*Error); ok {
		return err
	}
	kind := kinds[c.b.ErrorCode(err)]
	if c.isClosed() {
		kind = ErrClosed
	}
	return &Error{Op: op, Kind: kind, Err: err}
}

// DeclareExchange creates an exchange, or checks that the existing one of that name has the
// same kind and flags ([ErrMismatch] if not).
func (c *Conn) DeclareExchange(ctx context.Context, x Exchange) error {
	op := fmt.Sprintf("declare exchange %q", x.Name)
	bx, err := x.backend(op, c.caps)
	if err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.wrap(ctx, op, c.b.DeclareExchange(ctx, bx))
}

// DeleteExchange removes an exchange and its bindings. Deleting one that does not exist is
// not an error.
func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	op := fmt.Sprintf("delete exchange %q", name)
	if err := checkName(op, "exchange", name, false); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.wrap(ctx, op, c.b.DeleteExchange(ctx, name))
}

// DeclareQueue declares a queue as a Consumer does: its exchange first, if q.Exchange has a
// name, then the queue, then its bindings. A queue without a name gets a unique one, which
// DeclareQueue returns.
func (c *Conn) DeclareQueue(ctx context.Context, q Queue) (string, error) {
	if q.Name == "" {
		q.Name = generatedName()
	}
	op := fmt.Sprintf("declare queue %q", q.Name)
	bq, bindings, err := q.backend(op, c.caps)
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
	if err := c.wrap(ctx, op, c.b.DeclareQueue(ctx, bq)); err != nil {
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
	if c.isClosed() {
		return ErrClosed
	}
	return c.wrap(ctx, op, c.b.DeleteQueue(ctx, name))
}

// Bind routes the messages published to b.Exchange whose routing key matches b.Key to
// b.Queue. Both must exist.
func (c *Conn) Bind(ctx context.Context, b Binding) error {
	op := fmt.Sprintf("bind queue %q to exchange %q with key %q", b.Queue, b.Exchange, b.Key)
	if err := b.check(op); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.wrap(ctx, op, c.b.Bind(ctx, backend.Binding(b)))
}

// Unbind removes a binding. Removing one that does not exist is not an error.
func (c *Conn) Unbind(ctx context.Context, b Binding) error {
	op := fmt.Sprintf("unbind queue %q from exchange %q with key %q", b.Queue, b.Exchange, b.Key)
	if err := b.check(op); err != nil {
		return err
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.wrap(ctx, op, c.b.Unbind(ctx, backend.Binding(b)))
}

// Purge removes the messages waiting in a queue (not those delivered and not yet settled)
// and returns how many it removed. It is the seed's discard_all.
func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	op := fmt.Sprintf("purge queue %q", queue)
	if err := checkName(op, "queue", queue, false); err != nil {
		return 0, err
	}
	if c.isClosed() {
		return 0, ErrClosed
	}
	n, err := c.b.Purge(ctx, queue)
	return n, c.wrap(ctx, op, err)
}
