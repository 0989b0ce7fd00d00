package memory

import (
	"cmp"
	"context"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
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
	u, err := brokerurl.ParseFor("carrot/memory", rawURL, "memory")
	if err != nil {
		return nil, err
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return nil, u.Errorf("URL must be memory://NAME with only query options after the name")
	}
	o := &Options{Name: u.Host}
	err = u.Read(brokerurl.Query{Options: []brokerurl.Option{
		{Name: "max_body_size", Set: brokerurl.Int(&o.MaxBodySize, 1, math.MaxInt64, "a positive number of bytes")},
		{Name: "prefetch", Set: brokerurl.Int(&o.Prefetch, 1, math.MaxInt, "a positive number")},
		{Name: "max_depth", Set: brokerurl.Int(&o.MaxDepth, 1, math.MaxInt, "a positive number")},
	}})
	if err != nil {
		return nil, err
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
	o.MaxBodySize = cmp.Or(o.MaxBodySize, DefaultMaxBodySize)
	o.Prefetch = cmp.Or(o.Prefetch, DefaultPrefetch)
	o.MaxDepth = cmp.Or(o.MaxDepth, DefaultMaxDepth)
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
		Confirms:        true,
		Mandatory:       true,
		DeadLetter:      true,
		Expiration:      true,
		QueueMessageTTL: true,
		MaxLength:       true,
		Priority:        true,
		DeliveryCount:   true,
		Exclusive:       true,
		AutoDelete:      true,
		MaxBodySize:     c.opts.MaxBodySize,
		Delay:           true,
		DelayPrecision:  10 * time.Millisecond,
		InspectQueue:    backend.AllCounts,
		NestedHeaders:   true,
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
	c.b.exchanges[x.Name] = newExchange(x)
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
	c.b.queues[def.Name] = c.b.newQueue(def, c)
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
	x.routes.Bind(q, bd.Key)
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
	if x.routes.Unbind(q, bd.Key) {
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
	msg := p.Message
	var buf *buffer
	msg.Body, buf = copyBody(msg.Body)
	msg.Headers = copyHeaders(msg.Headers)
	if err := c.lock(ctx); err != nil {
		return err
	}
	err := c.publishLocked(ctx, p, msg, buf)
	c.b.mu.Unlock()
	return err
}

// publishLocked publishes msg, the broker's copy of p.Message, its body held by buf
// unless nil. The caller holds the broker's mutex, which publishLocked may let go of and
// take again while it waits for room.
func (c *Conn) publishLocked(ctx context.Context, p *backend.Publishing, msg backend.Message, buf *buffer) error {
	b := c.b
	qs, err := b.route(b.routed[:0], p.Exchange, p.RoutingKey)
	for err == nil && p.Delay == 0 && b.full(qs, c.opts.MaxDepth) {
		room := b.roomSignal()
		b.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			b.mu.Lock()
			return ctx.Err()
		case <-c.done:
			b.mu.Lock()
			return c.err
		}
		if err := c.link.wait(ctx, c); err != nil {
			b.mu.Lock()
			return err
		}
		b.mu.Lock()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case c.err != nil:
			return c.err
		}
		qs, err = b.route(b.routed[:0], p.Exchange, p.RoutingKey) // the topology may have changed
	}
	b.routed = qs[:0]
	defer clear(qs) // keep the slice, not the queues
	if err != nil {
		return err
	}
	if len(qs) == 0 && p.Mandatory {
		return backend.Errorf(backend.Unroutable, "no queue is bound to exchange %q with a key matching %q", p.Exchange, p.RoutingKey)
	}
	if p.Delay > 0 {
		b.delay(slices.Clone(qs), msg, p.Exchange, p.Delay) // buf is not released
		return nil
	}
	var clk clock
	e := entry{msg: msg, buf: buf, exchange: p.Exchange, shared: len(qs) > 1}
	if e.shared {
		buf.refs.Store(int32(len(qs)))
	}
	for _, q := range qs {
		b.enqueue(q, &e, &clk)
	}
	if len(qs) == 0 {
		e.release()
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
	var clk clock
	var e entry
	if !c.b.pop(q, &clk, &e) {
		return nil, nil
	}
	d := &delivery{c: c, q: q, e: e}
	if autoAck {
		d.state.Store(settled)
		return d.handOut(false), nil
	}
	d.state.Store(out)
	c.pending[d] = struct{}{}
	q.fetched++
	return d.handOut(true), nil
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
	s := &subscription{c: c, q: q, opts: opts, wake: make(chan struct{}, 1)}
	q.consumers++
	q.hadConsumer = true
	if q.subs == nil {
		q.subs = make(map[*subscription]struct{})
	}
	q.subs[s] = struct{}{}
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
	var clk clock
	c.b.expire(q, &clk)
	n := 0
	for i := range q.levels {
		n += q.levels[i].clear()
	}
	c.b.scheduleExpiry(q, &clk)
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
	byQueue := make(map[*queue][]*delivery)
	for d := range c.pending {
		byQueue[d.q] = append(byQueue[d.q], d)
		delete(c.pending, d)
		d.q.fetched--
	}
	var clk clock
	for q, ds := range byQueue {
		c.b.giveBack(q, ds, &clk)
	}
	for _, q := range c.b.queues {
		if q.owner == c {
			c.b.deleteQueue(q)
		}
	}
}

// giveBack puts the deliveries of q that are not settled back at the head of q, in their
// original order: those handed to the consumer flagged redelivered, those a subscription
// took and did not hand out yet as they were. The caller holds b.mu.
func (b *broker) giveBack(q *queue, ds []*delivery, clk *clock) {
	var es []entry
	for _, d := range ds {
		switch {
		case d.state.CompareAndSwap(taken, returned):
			e := d.e
			e.deliveries-- // never delivered after all
			es = append(es, e)
		case d.state.CompareAndSwap(out, returned):
			e := d.e
			e.redelivered = true
			es = append(es, e)
		}
	}
	if len(es) > 0 {
		b.requeue(q, es, clk)
	}
}

// subscription delivers a queue's messages to one consumer. It takes them from the queue
// in batches, as many as the prefetch allows (up to maxBatch), under one lock of the
// broker, and hands them out one by one; acks take no lock at all. The deliveries of
// settled messages are used again for the next batches.
type subscription struct {
	c    *Conn
	q    *queue
	opts backend.ConsumeOptions

	// guarded by c.b.mu
	closed  bool
	listed  bool        // in q.waiters
	pending []*delivery // taken and maybe not settled (with AutoAck, not handed out), in order
	head    int         // pending[:head] is gone

	// used by Receive only
	batch []*delivery // taken, to be handed out from next
	next  int
	spare []*delivery // for the next batch: allocated outside the lock, or settled
	last  int         // the size of the last batch

	unsettled atomic.Int64  // deliveries taken and not settled, without AutoAck
	waiting   atomic.Bool   // Receive waits for room under the prefetch limit
	wake      chan struct{} // Receive's wake-up call, from the queue or an ack
}

// wakeUp wakes the Receive of s if it waits, or makes its next wait return at once.
func (s *subscription) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	for {
		if err := s.c.link.wait(ctx, s.c); err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Hand out what the last batch took, while the connection and queue live; when they
		// went, the locked path below says why.
		for s.next < len(s.batch) && !s.ended() {
			d := s.batch[s.next]
			s.batch[s.next] = nil
			s.next++
			if s.opts.AutoAck {
				if d.state.CompareAndSwap(taken, settled) {
					return d.handOut(false), nil
				}
			} else if d.state.CompareAndSwap(taken, out) {
				return d.handOut(true), nil
			}
		}
		s.allocate()
		if err := s.c.lock(ctx); err != nil {
			return nil, err
		}
		switch {
		case s.closed:
			s.c.b.mu.Unlock()
			return nil, backend.Errorf(backend.Closed, "carrot/memory: subscription closed")
		case s.q.deleted.Load():
			s.c.b.mu.Unlock()
			return nil, backend.Errorf(backend.NotFound, "queue %q was deleted", s.q.def.Name)
		}
		took, empty := s.take()
		if took {
			s.c.b.mu.Unlock()
			continue
		}
		if empty {
			// Wait for the queue to change: the next publish wakes s.
			if !s.listed {
				s.listed = true
				s.q.waiters = append(s.q.waiters, s)
			}
			s.c.b.mu.Unlock()
		} else {
			// Wait for an ack to make room, unless one did since take.
			s.waiting.Store(true)
			s.c.b.mu.Unlock()
			if s.room() > 0 {
				s.waiting.Store(false)
				continue
			}
		}
		select {
		case <-s.wake:
		case <-s.c.done:
		case <-ctx.Done():
			s.waiting.Store(false)
			return nil, ctx.Err()
		}
		s.waiting.Store(false)
	}
}

// ended reports whether the connection or the queue of s has gone.
func (s *subscription) ended() bool {
	select {
	case <-s.c.done:
		return true
	default:
		return s.q.deleted.Load()
	}
}

// room returns how many messages s may take now.
func (s *subscription) room() int {
	if s.opts.AutoAck {
		return s.opts.Prefetch
	}
	return max(s.opts.Prefetch-int(s.unsettled.Load()), 0)
}

// maxBatch is the most messages a subscription takes from its queue at once.
const maxBatch = 256

// allocate makes the deliveries the next batch will likely take, before taking the
// broker's lock: twice the last batch, within the room under the prefetch limit.
func (s *subscription) allocate() {
	want := min(s.room(), max(2*s.last, 8), maxBatch)
	for len(s.spare) < want {
		s.spare = append(s.spare, new(delivery))
	}
}

// take takes as many messages from the queue as there are spare deliveries and room under
// the prefetch limit, into the batch. It reports whether it took any, and whether it
// found the queue empty. The caller holds the broker's mutex.
func (s *subscription) take() (took, empty bool) {
	s.forgetSettled()
	n := min(s.room(), len(s.spare), maxBatch)
	s.batch, s.next = s.batch[:0], 0
	var clk clock
	for range n {
		d := s.spare[len(s.spare)-1]
		if !s.c.b.pop(s.q, &clk, &d.e) {
			empty = true
			break
		}
		s.spare[len(s.spare)-1] = nil
		s.spare = s.spare[:len(s.spare)-1]
		d.c, d.q, d.sub = s.c, s.q, s
		d.state.Store(taken)
		s.batch = append(s.batch, d)
		s.pending = append(s.pending, d)
	}
	s.last = len(s.batch)
	if !s.opts.AutoAck {
		s.unsettled.Add(int64(len(s.batch)))
	}
	return len(s.batch) > 0, empty
}

// forgetSettled drops the settled deliveries from s.pending, to be used again for the
// next batch: those at its head, where in-order acks leave them, and all of them once they
// take more room than the prefetch. The caller holds the broker's mutex.
func (s *subscription) forgetSettled() {
	for s.head < len(s.pending) && s.pending[s.head].state.Load() == settled {
		s.reuse(s.pending[s.head])
		s.pending[s.head] = nil
		s.head++
	}
	live := s.pending[s.head:]
	compact := len(live) > 2*s.opts.Prefetch+8
	if compact {
		n := 0
		for _, d := range live {
			if d.state.Load() == settled {
				s.reuse(d)
			} else {
				live[n] = d
				n++
			}
		}
		live = live[:n]
	}
	if compact || s.head > 0 && (len(live) == 0 || len(s.pending) == cap(s.pending)) {
		n := copy(s.pending, live)
		clear(s.pending[n:])
		s.pending, s.head = s.pending[:n], 0
	}
}

// reuse keeps a settled delivery for the next batch. Settled, it is no longer used: the
// consumer settles a delivery once.
func (s *subscription) reuse(d *delivery) {
	if len(s.spare) < 2*maxBatch { // those allocated for a batch, and those it settled
		d.bd.Body, d.bd.Headers = nil, nil // the consumer's copies are the consumer's
		s.spare = append(s.spare, d)
	}
}

// settledOne counts a delivery of s settled, and wakes Receive if it waits for room.
func (s *subscription) settledOne() {
	s.unsettled.Add(-1)
	if s.waiting.Load() {
		s.wakeUp()
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
	s.q.unlist(s)
	var clk clock
	s.c.b.giveBack(s.q, s.pending[s.head:], &clk)
	s.q.consumers--
	delete(s.q.subs, s)
	if s.q.def.AutoDelete && s.q.consumers == 0 && s.q.hadConsumer {
		s.c.b.deleteQueue(s.q)
	}
}

// delivery is a message taken from a queue for a consumer. It implements
// [backend.Settler].
type delivery struct {
	bd    backend.Delivery // what Receive or Get returns
	c     *Conn
	q     *queue
	sub   *subscription // nil for a get
	e     entry         // the broker's copy, to requeue or dead-letter
	state atomic.Int32  // taken, out, settled or returned
}

// The states of a delivery. Who moves it out of taken or out, with a compare-and-swap,
// owns it: Receive hands it out, Settle settles it, the end of its subscription or
// connection gives it back to the queue. Once settled, its subscription reuses it.
const (
	taken    int32 = iota // taken by a subscription, not handed out yet
	out                   // handed out, not settled
	settling              // being settled
	settled               // settled, or handed out with AutoAck, and done with
	returned              // given back to the queue
)

// handOut fills and returns the backend's view of the delivery, with its own copy of the
// content, settled by d if settle is set. The broker's copy is never modified, so this
// needs no lock.
func (d *delivery) handOut(settle bool) *backend.Delivery {
	bd := &d.bd
	bd.Message = d.e.msg
	bd.Body = make([]byte, len(d.e.msg.Body))
	copy(bd.Body, d.e.msg.Body)
	bd.Headers = copyHeaders(d.e.msg.Headers)
	bd.Exchange = d.e.exchange
	bd.Redelivered = d.e.redelivered
	bd.DeliveryCount = int(d.e.deliveries)
	if settle {
		bd.Settler = d
	} else {
		bd.Settler = nil
		d.e.release()
		d.e.forget()
	}
	return bd
}

func (d *delivery) Settle(ctx context.Context, o backend.Outcome) error {
	c, q, sub := d.c, d.q, d.sub
	if err := c.link.wait(ctx, c); err != nil {
		return err
	}
	b := c.b
	if !d.state.CompareAndSwap(out, settling) {
		b.mu.Lock()
		lost := c.err == errLost
		b.mu.Unlock()
		if lost {
			return backend.Errorf(backend.Unavailable, "carrot/memory: the connection was lost; the message went back to queue %q", q.def.Name)
		}
		return backend.Errorf(backend.Closed, "carrot/memory: the delivery's consumer or connection closed; the message went back to queue %q", q.def.Name)
	}
	if sub != nil && o == backend.Ack {
		d.e.release()
		d.e.forget()
		d.state.Store(settled) // from here on, sub may reuse d
		sub.settledOne()
		return nil
	}
	e := d.e
	d.e = entry{} // the broker's copy goes with the settled message
	if sub != nil {
		d.state.Store(settled)
		defer sub.settledOne()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if sub == nil {
		if _, ok := c.pending[d]; ok {
			delete(c.pending, d)
			q.fetched--
		}
		d.state.Store(settled)
	}
	var clk clock
	switch o {
	case backend.Ack:
		e.release()
	case backend.Requeue:
		e.redelivered = true
		b.requeue(q, []entry{e}, &clk)
	case backend.Reject:
		if !q.deleted.Load() {
			b.deadLetter(q, &e, "rejected", &clk)
		}
	default:
		return backend.Errorf(backend.Invalid, "unknown outcome %d", o)
	}
	return nil
}

// List returns the broker's exchanges (its built-in amq.* ones too) and queues, sorted by
// name.
func (c *Conn) List(ctx context.Context) ([]backend.Exchange, []backend.Queue, error) {
	if err := c.lock(ctx); err != nil {
		return nil, nil, err
	}
	defer c.b.mu.Unlock()
	xs := make([]backend.Exchange, 0, len(c.b.exchanges))
	for _, x := range c.b.exchanges {
		xs = append(xs, x.def)
	}
	qs := make([]backend.Queue, 0, len(c.b.queues))
	for _, q := range c.b.queues {
		qs = append(qs, q.def)
	}
	slices.SortFunc(xs, func(a, b backend.Exchange) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(qs, func(a, b backend.Queue) int { return cmp.Compare(a.Name, b.Name) })
	return xs, qs, nil
}
