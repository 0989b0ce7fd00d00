package memory

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/topic"
)

func init() {
	carrot.Register("memory", Driver{})
}

// Defaults of the URL options.
const (
	DefaultMaxBodySize = 128 << 20 // RabbitMQ's default max_message_size
	DefaultPrefetch    = 100
	DefaultMaxDepth    = 100_000
)

// Options configures a connection to an in-process broker.
type Options struct {
	// Name is the broker to connect to: connections with the same Name share a broker
	// for the life of the process. The empty name gives each connection a broker of its
	// own.
	Name string

	// MaxBodySize is the largest message body the broker accepts, in bytes
	// (DefaultMaxBodySize when zero).
	MaxBodySize int64

	// Prefetch is the prefetch limit of consumers that do not set one (DefaultPrefetch when
	// zero).
	Prefetch int

	// MaxDepth is publisher flow control: a publish through this connection to a queue
	// that holds this many ready messages waits, within its context, until a consumer
	// takes some (DefaultMaxDepth when zero; negative for no limit). Queues with a
	// MaxLength drop their oldest messages instead.
	MaxDepth int

	// Link, when set, is the simulated network between the connections and the broker, for
	// tests that break it; see [Link]. A URL cannot set it.
	Link *Link
}

// ParseURL parses a memory URL, memory://NAME?OPTIONS; see the package documentation.
func ParseURL(rawURL string) (*Options, error) {
	u, q, err := brokerurl.Parse(rawURL)
	if err != nil {
		return nil, backend.Errorf(backend.Invalid, "carrot/memory: %w", err)
	}
	if u.Scheme != "memory" {
		return nil, backend.Errorf(backend.Invalid, "carrot/memory: URL scheme is %q, want memory", u.Scheme)
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return nil, backend.Errorf(backend.Invalid, "carrot/memory: URL must be memory://NAME with only query options after the name")
	}
	o := &Options{Name: u.Host}
	for key, vals := range q {
		if len(vals) != 1 {
			return nil, backend.Errorf(backend.Invalid, "carrot/memory: URL option %q is given %d times", key, len(vals))
		}
		v := vals[0]
		switch key {
		case "max_body_size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return nil, backend.Errorf(backend.Invalid, "carrot/memory: URL option max_body_size=%q is not a positive number of bytes", v)
			}
			o.MaxBodySize = n
		case "prefetch", "max_depth":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, backend.Errorf(backend.Invalid, "carrot/memory: URL option %s=%q is not a positive number", key, v)
			}
			if key == "prefetch" {
				o.Prefetch = n
			} else {
				o.MaxDepth = n
			}
		default:
			return nil, backend.Errorf(backend.Invalid, "carrot/memory: unknown URL option %q (known: max_body_size, max_depth, prefetch)", key)
		}
	}
	return o, nil
}

// Driver opens memory:// URLs. It is registered with carrot under the scheme "memory".
type Driver struct{}

// OpenConnector parses rawURL with [ParseURL] and returns a Connector for the broker it
// names.
func (Driver) OpenConnector(rawURL string) (backend.Connector, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return NewConnector(o), nil
}

var (
	brokersMu sync.Mutex
	brokers   = make(map[string]*broker)
)

// Connector connects to one in-process broker. It implements [backend.Connector].
type Connector struct {
	b    *broker
	opts Options
}

// NewConnector returns a Connector for the in-process broker opts names, making the broker
// if it does not exist yet; without a name, the broker is the Connector's own, shared by
// the connections it makes. Use it with [carrot.Connect] to open a memory connection
// without the registry.
func NewConnector(opts *Options) *Connector {
	o := *opts
	if o.MaxBodySize == 0 {
		o.MaxBodySize = DefaultMaxBodySize
	}
	if o.Prefetch == 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.MaxDepth == 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	var b *broker
	if o.Name == "" {
		b = newBroker()
	} else {
		brokersMu.Lock()
		if b = brokers[o.Name]; b == nil {
			b = newBroker()
			brokers[o.Name] = b
		}
		brokersMu.Unlock()
	}
	return &Connector{b: b, opts: o}
}

// Connect opens a connection to the broker. Through a blocked [Link] it fails, through a
// stalled one it waits for the link to carry again, or for ctx to end.
func (k *Connector) Connect(ctx context.Context) (backend.Conn, error) {
	c := &Conn{b: k.b, opts: k.opts, link: k.opts.Link, pending: make(map[*delivery]struct{}), subs: make(map[*subscription]struct{}), done: make(chan struct{})}
	if l := c.link; l != nil {
		if err := l.attach(ctx, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// String returns the broker's URL.
func (k *Connector) String() string { return "memory://" + k.opts.Name }

// Conn is a connection to an in-process broker. It implements [backend.Conn].
type Conn struct {
	b    *broker
	opts Options
	link *Link // nil when not simulated

	// guarded by b.mu
	closed  bool
	err     error                  // why the connection ended: closed, or lost through its link
	pending map[*delivery]struct{} // got without auto-ack and not settled
	subs    map[*subscription]struct{}
	done    chan struct{} // closed when the connection ends
}

var _ backend.Conn = (*Conn)(nil)

// Capabilities reports everything but persistence: the broker lives in the process.
func (c *Conn) Capabilities() backend.Capabilities {
	return backend.Capabilities{
		Confirms:       true,
		Mandatory:      true,
		DeadLetter:     true,
		MessageTTL:     true,
		QueueTTL:       true,
		MaxLength:      true,
		Priority:       true,
		DeliveryCount:  true,
		Exclusive:      true,
		AutoDelete:     true,
		MaxBodySize:    c.opts.MaxBodySize,
		Delay:          true,
		DelayPrecision: 10 * time.Millisecond,
	}
}

// ErrorCode classifies the errors of this package.
func (c *Conn) ErrorCode(err error) backend.Code { return backend.CodeOf(err) }

// As supports no types: there is no client underneath.
func (c *Conn) As(target any) bool { return false }

// lock locks the broker and checks that c is open and ctx live. Through a stalled link it
// first waits for the link to carry again.
func (c *Conn) lock(ctx context.Context) error {
	if err := c.link.wait(ctx, c); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.b.mu.Lock()
	if c.err != nil {
		err := c.err
		c.b.mu.Unlock()
		return err
	}
	return nil
}

var (
	errClosed = backend.Errorf(backend.Closed, "carrot/memory: connection closed")
	errLost   = backend.Errorf(backend.Unavailable, "carrot/memory: connection lost: its link was cut")
)

// Done returns a channel closed when the connection ends: closed, or lost through its
// link.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil.
func (c *Conn) Err() error {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.err
}

// queue returns the queue of that name that c may use.
func (c *Conn) queue(name string) (*queue, error) {
	q := c.b.queues[name]
	if q == nil {
		return nil, backend.Errorf(backend.NotFound, "queue %q not found", name)
	}
	if err := q.usableBy(c); err != nil {
		return nil, err
	}
	return q, nil
}

func (c *Conn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	if old := c.b.exchanges[x.Name]; old != nil {
		if x.Passive {
			return nil
		}
		if d := old.def; d.Kind != x.Kind || d.Durable != x.Durable || d.AutoDelete != x.AutoDelete || !sameArgs(d.Args, x.Args) {
			return backend.Errorf(backend.Mismatch, "exchange %q exists as a %s exchange (durable %v, auto-delete %v) with other properties", x.Name, d.Kind, d.Durable, d.AutoDelete)
		}
		return nil
	}
	if x.Passive {
		return backend.Errorf(backend.NotFound, "exchange %q not found", x.Name)
	}
	if reserved(x.Name) {
		return backend.Errorf(backend.Invalid, "exchange name %q is reserved (it starts with \"amq.\")", x.Name)
	}
	if len(x.Args) > 0 {
		return backend.Errorf(backend.Unsupported, "the memory backend takes no exchange arguments (got %v)", slices.Sorted(maps.Keys(x.Args)))
	}
	x.Args = nil
	c.b.exchanges[x.Name] = &exchange{def: x}
	return nil
}

func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	if reserved(name) {
		return backend.Errorf(backend.Invalid, "exchange %q is built in and cannot be deleted", name)
	}
	delete(c.b.exchanges, name)
	return nil
}

func (c *Conn) DeclareQueue(ctx context.Context, def backend.Queue) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	if old := c.b.queues[def.Name]; old != nil {
		if err := old.usableBy(c); err != nil {
			return err
		}
		if def.Passive {
			return nil
		}
		o := old.def
		if o.Durable != def.Durable || o.Exclusive != def.Exclusive || o.AutoDelete != def.AutoDelete ||
			o.MessageTTL != def.MessageTTL || o.MaxLength != def.MaxLength || o.MaxPriority != def.MaxPriority ||
			o.DeadLetterExchange != def.DeadLetterExchange || o.DeadLetterRoutingKey != def.DeadLetterRoutingKey {
			return backend.Errorf(backend.Mismatch, "queue %q exists with other properties", def.Name)
		}
		return nil
	}
	if def.Passive {
		return backend.Errorf(backend.NotFound, "queue %q not found", def.Name)
	}
	if reserved(def.Name) {
		return backend.Errorf(backend.Invalid, "queue name %q is reserved (it starts with \"amq.\")", def.Name)
	}
	if len(def.Args) > 0 {
		return backend.Errorf(backend.Unsupported, "the memory backend takes no queue arguments (got %v); use the fields of the queue", slices.Sorted(maps.Keys(def.Args)))
	}
	c.b.queues[def.Name] = newQueue(def, c)
	return nil
}

func (c *Conn) DeleteQueue(ctx context.Context, name string) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	q := c.b.queues[name]
	if q == nil {
		return nil
	}
	if err := q.usableBy(c); err != nil {
		return err
	}
	c.b.deleteQueue(q)
	return nil
}

func (c *Conn) Bind(ctx context.Context, bd backend.Binding) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	x := c.b.exchanges[bd.Exchange]
	if x == nil {
		return backend.Errorf(backend.NotFound, "exchange %q not found", bd.Exchange)
	}
	q, err := c.queue(bd.Queue)
	if err != nil {
		return err
	}
	for _, old := range x.bindings {
		if old.queue == q && old.key == bd.Key {
			return nil
		}
	}
	x.bindings = append(x.bindings, &binding{queue: q, key: bd.Key, pattern: topic.Compile(bd.Key)})
	return nil
}

func (c *Conn) Unbind(ctx context.Context, bd backend.Binding) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.b.mu.Unlock()
	x := c.b.exchanges[bd.Exchange]
	q := c.b.queues[bd.Queue]
	if x == nil || q == nil {
		return nil
	}
	n := len(x.bindings)
	x.bindings = slices.DeleteFunc(x.bindings, func(old *binding) bool { return old.queue == q && old.key == bd.Key })
	if len(x.bindings) < n {
		c.b.autoDeleteExchange(x)
	}
	return nil
}

// Publish routes the message and enqueues it, once its queues have room (see
// Options.MaxDepth): every publish is confirmed when it returns.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	if int64(len(p.Body)) > c.opts.MaxBodySize {
		return backend.Errorf(backend.TooLarge, "body is %d bytes, more than max_body_size %d", len(p.Body), c.opts.MaxBodySize)
	}
	msg := copyMessage(p.Message)
	if err := c.lock(ctx); err != nil {
		return err
	}
	qs, err := c.b.route(p.Exchange, p.RoutingKey)
	for err == nil && p.Delay == 0 && c.b.full(qs, c.opts.MaxDepth) {
		room := c.b.roomSignal()
		c.b.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.Err()
		}
		if err := c.lock(ctx); err != nil {
			return err
		}
		qs, err = c.b.route(p.Exchange, p.RoutingKey) // the topology may have changed
	}
	defer c.b.mu.Unlock()
	if err != nil {
		return err
	}
	if len(qs) == 0 && p.Mandatory {
		return backend.Errorf(backend.Unroutable, "no queue is bound to exchange %q with a key matching %q", p.Exchange, p.RoutingKey)
	}
	if p.Delay > 0 {
		c.b.delay(qs, msg, p.Exchange, p.Delay)
		return nil
	}
	now := time.Now()
	for _, q := range qs {
		c.b.enqueue(q, &entry{msg: msg, exchange: p.Exchange}, now)
	}
	return nil
}

func (c *Conn) Get(ctx context.Context, queueName string, autoAck bool) (*backend.Delivery, error) {
	if err := c.lock(ctx); err != nil {
		return nil, err
	}
	defer c.b.mu.Unlock()
	q, err := c.queue(queueName)
	if err != nil {
		return nil, err
	}
	e := c.b.pop(q, time.Now())
	if e == nil {
		return nil, nil
	}
	if autoAck {
		return e.delivery(nil), nil
	}
	d := &delivery{c: c, q: q, e: e}
	c.pending[d] = struct{}{}
	return e.delivery(d), nil
}

func (c *Conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	if err := c.lock(ctx); err != nil {
		return nil, err
	}
	defer c.b.mu.Unlock()
	q, err := c.queue(opts.Queue)
	if err != nil {
		return nil, err
	}
	if opts.Prefetch == 0 {
		opts.Prefetch = c.opts.Prefetch
	}
	s := &subscription{c: c, q: q, opts: opts, pending: make(map[*delivery]struct{})}
	q.consumers++
	q.hadConsumer = true
	c.subs[s] = struct{}{}
	return s, nil
}

func (c *Conn) Purge(ctx context.Context, queueName string) (int, error) {
	if err := c.lock(ctx); err != nil {
		return 0, err
	}
	defer c.b.mu.Unlock()
	q, err := c.queue(queueName)
	if err != nil {
		return 0, err
	}
	c.b.expire(q, time.Now())
	n := 0
	for i := range q.levels {
		n += q.levels[i].clear()
	}
	c.b.scheduleExpiry(q, time.Now())
	c.b.freed()
	return n, nil
}

// Close returns the messages c's subscriptions and gets hold to their queues and deletes
// the exclusive queues c declared.
func (c *Conn) Close() error {
	c.end(errClosed)
	c.link.detach(c)
	return nil
}

// end ends the connection, closed or lost, as a broker does when a client goes away: the
// messages it holds go back to their queues, its exclusive queues are deleted.
func (c *Conn) end(why error) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.err = why
	close(c.done)
	for s := range c.subs {
		s.closeLocked()
	}
	c.returnPending(c.pending)
	for _, q := range c.b.queues {
		if q.owner == c {
			c.b.deleteQueue(q)
		}
	}
}

// returnPending requeues unsettled deliveries, grouped by queue.
func (c *Conn) returnPending(pending map[*delivery]struct{}) {
	byQueue := make(map[*queue][]*entry)
	for d := range pending {
		d.done = true
		byQueue[d.q] = append(byQueue[d.q], d.e)
		delete(pending, d)
	}
	now := time.Now()
	for q, es := range byQueue {
		c.b.requeue(q, es, now)
	}
}

// subscription delivers a queue's messages to one consumer.
type subscription struct {
	c       *Conn
	q       *queue
	opts    backend.ConsumeOptions
	closed  bool                   // guarded by c.b.mu
	pending map[*delivery]struct{} // guarded by c.b.mu
}

func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	for {
		if err := s.c.lock(ctx); err != nil {
			return nil, err
		}
		switch {
		case s.closed:
			s.c.b.mu.Unlock()
			return nil, backend.Errorf(backend.Closed, "carrot/memory: subscription closed")
		case s.c.err != nil: // unreachable: lock returned the error
			err := s.c.err
			s.c.b.mu.Unlock()
			return nil, err
		case s.q.deleted:
			s.c.b.mu.Unlock()
			return nil, backend.Errorf(backend.NotFound, "queue %q was deleted", s.q.def.Name)
		}
		if s.opts.AutoAck || len(s.pending) < s.opts.Prefetch {
			if e := s.c.b.pop(s.q, time.Now()); e != nil {
				var d *delivery
				if !s.opts.AutoAck {
					d = &delivery{c: s.c, q: s.q, e: e, sub: s}
					s.pending[d] = struct{}{}
				}
				bd := e.delivery(d) // under the lock: a lost connection requeues e at once
				s.c.b.mu.Unlock()
				return bd, nil
			}
		}
		changed := s.q.changed
		s.c.b.mu.Unlock()
		select {
		case <-changed:
		case <-s.c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *subscription) Close() error {
	s.c.b.mu.Lock()
	defer s.c.b.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *subscription) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	delete(s.c.subs, s)
	s.c.returnPending(s.pending)
	s.q.consumers--
	if s.q.def.AutoDelete && s.q.consumers == 0 && s.q.hadConsumer {
		s.c.b.deleteQueue(s.q)
	}
}

// delivery is an entry delivered and not yet settled. It implements [backend.Settler].
type delivery struct {
	c    *Conn
	q    *queue
	e    *entry
	sub  *subscription // nil for a get
	done bool          // guarded by c.b.mu
}

func (d *delivery) Settle(ctx context.Context, o backend.Outcome) error {
	if err := d.c.link.wait(ctx, d.c); err != nil {
		return err
	}
	b := d.c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.c.err == errLost {
		return backend.Errorf(backend.Unavailable, "carrot/memory: the connection was lost; the message went back to queue %q", d.q.def.Name)
	}
	if d.done {
		return backend.Errorf(backend.Closed, "carrot/memory: the delivery's consumer or connection closed; the message went back to queue %q", d.q.def.Name)
	}
	d.done = true
	if d.sub != nil {
		delete(d.sub.pending, d)
	} else {
		delete(d.c.pending, d)
	}
	now := time.Now()
	switch o {
	case backend.Ack:
	case backend.Requeue:
		b.requeue(d.q, []*entry{d.e}, now)
	case backend.Reject:
		if !d.q.deleted {
			b.deadLetter(d.q, d.e, "rejected", now)
		}
	default:
		return backend.Errorf(backend.Invalid, "unknown outcome %d", o)
	}
	d.q.signal() // a consumer at its prefetch limit may take another
	return nil
}

// delivery returns the backend's view of e, with its own copy of the content.
func (e *entry) delivery(d *delivery) *backend.Delivery {
	bd := &backend.Delivery{
		Message:       copyMessage(e.msg),
		Exchange:      e.exchange,
		Redelivered:   e.redelivered,
		DeliveryCount: e.deliveries,
	}
	if d != nil {
		bd.Settler = d
	}
	return bd
}
