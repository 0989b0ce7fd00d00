package amqp091

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/amqpurl"
	"github.com/carrot-go/carrot/internal/delayq"
	"github.com/carrot-go/carrot/internal/lifetime"
)

func init() {
	carrot.Register("amqp", Driver{})
	carrot.Register("amqps", Driver{})
}

// Driver opens amqp:// and amqps:// URLs. It is registered with carrot under both schemes.
type Driver struct{}

var _ backend.ConfigDriver = Driver{}

// OpenConnector parses rawURL with [ParseURL] and returns a Connector for it, whose
// connections log to slog.Default().
func (d Driver) OpenConnector(rawURL string) (backend.Connector, error) {
	return d.OpenConnectorConfig(rawURL, backend.Config{Logger: slog.Default()})
}

// OpenConnectorConfig parses rawURL with [ParseURL] and returns a Connector for it, whose
// connections log to cfg.Logger. carrot calls it with the Logger of a carrot.Dialer.
func (Driver) OpenConnectorConfig(rawURL string, cfg backend.Config) (backend.Connector, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	o.Logger = cfg.Logger
	return NewConnector(o), nil
}

// Connector connects to RabbitMQ as its Options say. It implements [backend.Connector];
// use it with [carrot.Connect].
type Connector struct {
	opts  Options
	hosts *amqpurl.Hosts
}

// NewConnector returns a Connector for opts.
func NewConnector(opts *Options) *Connector {
	o := opts.withDefaults()
	return &Connector{opts: o, hosts: amqpurl.NewHosts("carrot/amqp091: connect to "+o.String(), o.Addrs)}
}

// String describes where the Connector connects, without the password.
func (k *Connector) String() string { return k.opts.String() }

// Conn is one connection to RabbitMQ. It implements [backend.Conn]; it does not reconnect:
// carrot does, with a new Conn.
type Conn struct {
	opts    Options
	conn    *amqp.Connection
	watched *watchedConn
	known   sync.Map     // exchanges known to exist, by name, beside the default one
	maxBody atomic.Int64 // the largest body RabbitMQ takes, as far as known
	server  amqp.Table   // the broker's server properties
	maxHead int          // the largest content header frame payload it takes

	lifetime.Ending // Done and Err
	closed          atomic.Bool
	wg              sync.WaitGroup

	ctlMu   sync.Mutex             // serializes topology calls on ctl
	ctl     *amqp.Channel          // for declarations, deletions, bindings and purges
	getMu   sync.Mutex             // serializes gets on get
	get     *amqp.Channel          // for basic.get
	getting atomic.Pointer[string] // the queue of the latest get
	pubMu   sync.Mutex             // serializes opening publishers
	pub     atomic.Pointer[publisher]

	subsMu sync.Mutex
	subs   map[string]*subscription // running subscriptions, by consumer tag
}

var _ backend.Conn = (*Conn)(nil)
var _ backend.Pinger = (*Conn)(nil)
var _ backend.PublishWarmer = (*Conn)(nil)

// Connect opens one connection to RabbitMQ, bounded by ctx: to the first of the hosts
// that accepts it, trying each once, starting with the one after the host of the previous
// connection (see URLs in the package documentation).
func (k *Connector) Connect(ctx context.Context) (backend.Conn, error) {
	c, err := amqpurl.Connect(ctx, k.hosts, k.dial)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// dial opens one connection to the host at addr, bounded by ctx and the
// connection_timeout. Its errors do not name the host: Connect does.
func (k *Connector) dial(ctx context.Context, addr string) (*Conn, error) {
	o := k.opts
	o.Addrs = []string{addr} // the Conn's, which its logs name
	tlsConfig := amqpurl.TLSFor(o.TLS, addr)
	cfg := o.config() // a config of its own: amqp091-go forgets the password once connected
	deadline := time.Now().Add(o.ConnectionTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var (
		mu      sync.Mutex
		watched *watchedConn
	)
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Deadline: deadline}
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// No heartbeats yet: the deadline bounds the TLS and AMQP handshakes, and
		// amqp091-go clears it once connected.
		nc.SetDeadline(deadline)
		if tlsConfig != nil {
			tc := tls.Client(nc, tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
					// No answer within connection_timeout: the host, not the settings,
					// failed. (A ctx that ends is dealt with below, for every step.)
					return nil, backend.Errorf(backend.Unavailable, "TLS handshake: %w", err)
				}
				return nil, backend.Errorf(backend.Invalid, "TLS handshake: %w", err)
			}
			nc = tc
		}
		w := watch(nc) // above TLS, to read the frames
		mu.Lock()
		watched = w
		mu.Unlock()
		return w, nil
	}
	// A canceled context ends a handshake that waits for the broker.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if watched != nil {
			watched.Close()
		}
	})
	conn, err := amqp.DialConfig("amqp://"+addr+"/", cfg)
	if !stop() && err == nil { // ctx ended as the connection opened
		conn.Close()
		err = ctx.Err()
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, backend.Errorf(backend.Unavailable, "%w", cerr)
		}
		if watched != nil && watched.foreign() {
			return nil, backend.Errorf(backend.Invalid, "the server does not speak AMQP 0-9-1 (it answered as %s): %w", watched.foreignProtocol(), err)
		}
		return nil, backend.Errorf(classifyDial(err), "%w", err)
	}
	c := &Conn{
		opts:    o,
		conn:    conn,
		watched: watched,
		maxHead: conn.Config.FrameSize - frameOverhead,
		subs:    make(map[string]*subscription),
	}
	if conn.Config.FrameSize <= 0 {
		c.maxHead = 1 << 31
	}
	c.server = conn.Properties
	c.maxBody.Store(o.MaxBodySize)
	if o.MaxBodySize == 0 {
		c.maxBody.Store(defaultMaxBody(conn.Properties))
	}
	// Register for the notifications at once, before the connection can close unseen;
	// the watcher drains them.
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	c.wg.Go(func() { c.watch(closes, blocks) })
	return c, nil
}

// frameOverhead is what a frame adds to its payload: type, channel, size and frame end.
const frameOverhead = 8

// defaultMaxBody returns RabbitMQ's default max_message_size for the version it reports:
// 16 MiB from RabbitMQ 4.0, 128 MiB before.
func defaultMaxBody(server amqp.Table) int64 {
	if rabbitAtLeast(server, 4, 0) {
		return 16 << 20
	}
	return DefaultMaxBodySize
}

// rabbitAtLeast reports whether the server properties are RabbitMQ's, of version
// major.minor or later.
func rabbitAtLeast(server amqp.Table, major, minor int) bool {
	if p, _ := server["product"].(string); p != "RabbitMQ" {
		return false
	}
	v, _ := server["version"].(string)
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (ma > major || ma == major && mi >= minor)
}

// classifyDial sorts a failure to connect: refused credentials or vhost are not worth
// retrying, a broker that does not answer is.
func classifyDial(err error) backend.Code {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return code
	}
	var ae *amqp.Error
	if errors.As(err, &ae) && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed) {
		return backend.Invalid
	}
	if errors.Is(err, amqp.ErrSASL) || errors.Is(err, amqp.ErrCredentials) || errors.Is(err, amqp.ErrVhost) {
		return backend.Invalid
	}
	return backend.Unavailable
}

// watch drains the connection's notifications until it ends, then says why.
func (c *Conn) watch(closes chan *amqp.Error, blocks chan amqp.Blocking) {
	for {
		select {
		case b, ok := <-blocks:
			if ok {
				c.opts.Logger.Warn("carrot/amqp091: broker flow control", "blocked", b.Active, "reason", b.Reason, "broker", c.opts.String())
				continue
			}
			blocks = nil
		case reason, ok := <-closes:
			if blocks != nil {
				for range blocks { // amqp091-go closes it too; drain what is left
				}
			}
			c.End(c.why(reason, ok))
			return
		}
	}
}

// why turns the reason amqp091-go gives for a closed connection into the Conn's error.
func (c *Conn) why(reason *amqp.Error, ok bool) error {
	if c.closed.Load() {
		return errClosed
	}
	if !ok || reason == nil {
		return backend.Errorf(backend.Unavailable, "carrot/amqp091: connection lost")
	}
	if reason.Code == amqp.FrameError && c.watched != nil {
		if p, found := c.watched.poison(); found {
			return &malformed{get: p.get, what: c.poisoned(p), reason: p.reason, err: reason}
		}
	}
	return backend.Errorf(backend.Unavailable, "carrot/amqp091: connection lost: %w", reason)
}

// malformed is the error of a connection that amqp091-go closed because it could not
// parse a message, and of the subscription or get the message was for.
type malformed struct {
	get    bool   // the message was for a get
	what   string // the queue or call the message was for
	reason string // what amqp091-go could not parse
	err    error  // amqp091-go's error
}

func (e *malformed) Error() string {
	return fmt.Sprintf("carrot/amqp091: %s: amqp091-go cannot parse the message at the head of the queue (%s), and closed the connection: %v", e.what, e.reason, e.err)
}

func (e *malformed) Unwrap() error { return e.err }

// poisoned names what an unparseable message was delivered to.
func (c *Conn) poisoned(p poisonFrame) string {
	switch {
	case p.get:
		if q := c.getting.Load(); q != nil {
			return fmt.Sprintf("a fetch from queue %q", *q)
		}
		return "a fetch"
	case p.consumerTag != "":
		c.subsMu.Lock()
		s := c.subs[p.consumerTag]
		c.subsMu.Unlock()
		if s != nil {
			s.poisoned.Store(true)
			return fmt.Sprintf("queue %q", s.opts.Queue)
		}
	}
	return fmt.Sprintf("channel %d", p.channel)
}

var errClosed = backend.Errorf(backend.Closed, "carrot/amqp091: connection closed")

// gone returns the error for a call on an ended connection: Closed after Close,
// Unavailable otherwise.
func (c *Conn) gone() error {
	if c.closed.Load() {
		return errClosed
	}
	if err := c.Err(); err != nil {
		if _, ok := err.(*malformed); ok {
			return backend.Errorf(backend.Unavailable, "carrot/amqp091: connection lost: %w", err)
		}
		return err
	}
	return backend.Errorf(backend.Unavailable, "carrot/amqp091: connection lost")
}

// lostUnder returns the error of a call that the connection ended under, once the
// connection says why: the Malformed error if amqp091-go could not parse a message that
// was the call's (mine says), an Unavailable error otherwise.
func (c *Conn) lostUnder(mine func(*malformed) bool) error {
	<-c.Done()
	if m, ok := c.Err().(*malformed); ok && mine(m) {
		return m
	}
	return c.gone()
}

// openChannel opens a channel on the connection, returning early if ctx ends first (the
// channel, if it opens later, is closed).
func (c *Conn) openChannel(ctx context.Context) (*amqp.Channel, error) {
	if c.conn.IsClosed() {
		return nil, c.gone()
	}
	type result struct {
		ch  *amqp.Channel
		err error
	}
	done := make(chan result, 1)
	go func() {
		ch, err := c.conn.Channel()
		done <- result{ch, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && c.conn.IsClosed() {
			return nil, c.gone()
		}
		if errors.Is(r.err, amqp.ErrChannelMax) {
			// Not an outage: waiting would not open one.
			return nil, backend.Errorf(backend.Unsupported, "carrot/amqp091: the connection has the %d channels the broker allows open (the publishing channel, the control channel, the one gets share and each consumer's); use another connection", c.conn.Config.ChannelMax)
		}
		return r.ch, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.ch != nil {
				r.ch.Close()
			}
		}()
		return nil, ctx.Err()
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
	if err != nil && !abandoned && c.conn.IsClosed() && channelGone(err) {
		return c.gone()
	}
	return err
}

// Ping opens and closes a channel: a round trip to the broker.
func (c *Conn) Ping(ctx context.Context) error {
	return c.control(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive("amq.rabbitmq.reply-to", false, false, false, false, nil)
		return err
	})
}

// Capabilities reports what RabbitMQ does. Delivery counts exist only for quorum queues,
// so the capability is off; their x-delivery-count still fills DeliveryCount.
func (c *Conn) Capabilities() backend.Capabilities {
	confirms := !c.opts.NoConfirms
	return backend.Capabilities{
		Confirms:        confirms,
		Mandatory:       confirms,
		DeadLetter:      true,
		Expiration:      true,
		QueueMessageTTL: true,
		MaxLength:       true,
		Priority:        true,
		Exclusive:       true,
		AutoDelete:      true,
		Persistence:     true,
		SharedAcross:    true,
		MaxBodySize:     c.maxBody.Load(),
		MaxPrefetch:     math.MaxUint16, // basic.qos's prefetch-count is 16 bits

		Delay:          true,
		MaxDelay:       delayq.Max,
		DelayPrecision: 100 * time.Millisecond, // beyond the rounding to two significant digits

		InspectQueue:  backend.ReadyCount | backend.ConsumerCount, // no unacked count in AMQP 0-9-1
		NestedHeaders: true,
		UserID:        c.opts.userID(),

		Quorum:               rabbitAtLeast(c.server, 3, 8),
		Streams:              rabbitAtLeast(c.server, 3, 9),
		SingleActiveConsumer: rabbitAtLeast(c.server, 3, 8),
		ConsumerTimeout:      rabbitAtLeast(c.server, 3, 12), // x-consumer-timeout
	}
}

// ErrorCode classifies amqp091-go's errors by their AMQP reply code, and this package's
// own.
func (c *Conn) ErrorCode(err error) backend.Code {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return code
	}
	if _, ok := errors.AsType[*malformed](err); ok {
		return backend.Malformed
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
		case amqp.ConnectionForced, amqp.ChannelError, amqp.InternalError, amqp.ResourceError, amqp.UnexpectedFrame, amqp.FrameError:
			return backend.Unavailable
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return backend.Unavailable
	}
	if errors.Is(err, amqp.ErrClosed) {
		return backend.Unavailable
	}
	return backend.Unknown
}

// As sets *target to the *amqp091.Connection or a channel of the connection's own, the
// one it declares topology on. Whatever is done with the channel, the Conn replaces it
// when it closes.
func (c *Conn) As(target any) bool {
	switch t := target.(type) {
	case **amqp.Connection:
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
// deliveries not settled go back to their queues. It does not wait long for a broker
// that does not answer: the socket is closed after lifetime.CloseTimeout.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if !c.conn.IsClosed() {
		err = lifetime.Close(c.conn.Close, func() { c.watched.Close() })
		if errors.Is(err, amqp.ErrClosed) || c.Err() != nil {
			err = nil
		}
	}
	c.End(errClosed)
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
