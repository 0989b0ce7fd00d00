package carrot

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/loglimit"
)

// A Handler receives messages from a [Consumer]. It is the Go form of carrot 0.4's
// subclassing: a type with a Receive method, holding what it needs in its fields.
//
// Receive should settle the message with Ack, Requeue or Reject. If it returns an error
// (or panics) without settling the message, the Consumer requeues it, or rejects it when
// the error is a [*DecodeError] (a body that will not decode will not decode next time
// either), and logs the error, at most a line a second. If it returns nil without
// settling, the message stays in flight until it is settled later or the consumer closes:
// that is how handlers hand messages on to other goroutines (see
// [ConsumerOptions.StallWarning]), unless [ConsumerOptions.AutoSettle] acks it.
type Handler interface {
	Receive(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to a [Handler]; it is carrot 0.4's callback.
type HandlerFunc func(ctx context.Context, m *Message) error

// Receive calls f(ctx, m).
func (f HandlerFunc) Receive(ctx context.Context, m *Message) error { return f(ctx, m) }

// Decoded returns a handler that decodes each message into a T and passes both to fn, like
// carrot 0.4's callback(message_data, message). A message that does not decode is rejected
// and logged, without calling fn.
func Decoded[T any](fn func(ctx context.Context, v T, m *Message) error) HandlerFunc {
	return func(ctx context.Context, m *Message) error {
		var v T
		if err := m.Decode(&v); err != nil {
			return err
		}
		return fn(ctx, v, m)
	}
}

// ConsumerOptions configures a [Consumer].
type ConsumerOptions struct {
	// Queues are the queues to consume, each declared with its exchange and bindings when
	// the Consumer is made. Several queues make carrot 0.4's ConsumerSet. At least one.
	Queues []Queue

	// Handler receives the messages, after which come any registered with
	// [Consumer.Register].
	Handler Handler

	// Prefetch is the most messages of each queue delivered to the consumer and not yet
	// settled. Zero means the backend's default, which is bounded; see its documentation.
	// More than the backend can carry (Capabilities().MaxPrefetch: 65535 on AMQP 0-9-1) is
	// an [ErrInvalid] error, never a smaller limit.
	Prefetch int

	// StreamOffset is where the consumer starts reading its stream queues (see
	// [StreamQueue]): [FromFirst], [FromLast], [FromNext], [FromOffset] or [FromTime]; the
	// broker's default, FromNext, when zero. When its connection is lost and recovered,
	// the consumer reads on from the first message it had not settled (or after the last
	// it received), not from StreamOffset again. A backend without streams refuses it with
	// [ErrUnsupported]; a queue declared here with another Type, with [ErrInvalid].
	StreamOffset StreamOffset

	// Concurrency is how many handlers run at once; 1 when zero, which delivers each
	// queue's messages in order.
	Concurrency int

	// NoAck makes the broker consider messages settled as soon as it delivers them: faster,
	// and a message is lost if the consumer fails while handling it.
	NoAck bool

	// Accept lists the content types Decode accepts; every registered codec when empty.
	// Messages without a content type count as "application/octet-stream".
	Accept []string

	// Logger receives handler errors and panics, at most a line a second; the Conn's
	// logger ([Dialer.Logger]) when nil.
	Logger *slog.Logger

	// Middleware wraps the handlers: the first outermost, so Middleware[0] sees each
	// message first and the outcome last. Each gets the chain of the handlers (Handler,
	// then those registered, in order, stopping at the first error) as wrapped by the
	// middleware after it, and returns a Handler that calls it or not, for logging,
	// tracing, metrics, timeouts or a policy of its own. What a middleware returns is what
	// the consumer acts on; a panic in a middleware is recovered like one in a handler.
	Middleware []func(Handler) Handler

	// AutoSettle acks each message whose handlers returned nil without settling it, for
	// handlers that do not settle by hand; on an error the message is requeued (or
	// rejected) as always. Without it, such a message stays in flight until it is settled
	// or the consumer closes.
	AutoSettle bool

	// Retry says what happens to a message whose handlers failed: it is retried with a
	// backoff that does not hold up the queue, and dead-lettered after MaxDeliveries if
	// set; see [RetryPolicy]. The zero policy retries for ever, from 1s up to 1m apart.
	Retry RetryPolicy

	// OnSettle, when set, is called once for each received message when it is settled,
	// whoever settled it (a handler, AutoSettle, the retry policy or Fetch's caller), with
	// how and the settling call's error (nil when the backend took it). ctx is the
	// settling call's. It is not called for messages consumed with NoAck, nor for those
	// the Consumer's Close puts back in their queues. It is called from the goroutine that
	// settles, must return quickly and must not settle the message; it is meant for
	// metrics and tracing.
	OnSettle func(ctx context.Context, m *Message, o Outcome, err error)

	// StallWarning is how long a message handed to the handlers may stay unsettled after
	// they returned before the consumer logs a warning, once, naming the queue: held
	// messages count against the prefetch, and a consumer that holds its whole prefetch
	// receives nothing more. One minute when zero; negative turns the warning off.
	StallWarning time.Duration
}

// An Outcome says how a received message was settled; see [ConsumerOptions.OnSettle].
type Outcome int

const (
	// Acked: the message was handled and left its queue.
	Acked Outcome = iota + 1
	// Requeued: the message went back to its queue.
	Requeued
	// Rejected: the message left its queue unhandled; the broker dead-letters it if the
	// queue has a dead-letter exchange.
	Rejected
	// Retried: its handlers failed, and the [RetryPolicy] published it again with a delay
	// and acked this delivery, or requeued it after the backoff.
	Retried
	// DeadLettered: its handlers failed for the last time, and the [RetryPolicy] published
	// it to the dead-letter exchange and acked this delivery.
	DeadLettered
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "ack"
	case Requeued:
		return "requeue"
	case Rejected:
		return "reject"
	case Retried:
		return "retry"
	case DeadLettered:
		return "dead_letter"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// chain calls handlers in order, stopping at the first error.
type chain []Handler

func (hs chain) Receive(ctx context.Context, m *Message) error {
	for _, h := range hs {
		if err := h.Receive(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// Consumer receives messages from one or more queues, with handlers in a consume loop
// ([Consumer.Run]) or one at a time ([Consumer.Fetch]). It is safe for concurrent use.
type Consumer struct {
	conn    *Conn
	opts    ConsumerOptions
	queues  []string
	streams []string // those declared as streams, which Fetch cannot read
	accept  map[string]bool
	log     *slog.Logger

	mu        sync.Mutex
	handlers  []Handler
	closed    bool
	run       *run
	fetched   map[*Message]int // fetched and not settled, in fetch order: requeued on Close
	fetches   int
	closeOnce sync.Once
}

// run is one call of Run in progress.
type run struct {
	stopReceiving  context.CancelFunc
	cancelHandlers context.CancelFunc
	stopped        atomic.Bool // by Shutdown or Close, rather than by its context
	done           chan struct{}

	busy    atomic.Int64 // handlers running
	waiters atomic.Int64 // calls of wait waiting for busy to drop, under mu

	mu      sync.Mutex
	workers map[uint64]bool  // the goroutines that call handlers, by goroutine id
	idle    *sync.Cond       // signalled when busy drops, if wait waits
	held    []held           // handed to handlers that returned without settling them
	failLog loglimit.Limiter // handler failures logged
}

// held is a message its handlers returned without settling.
type held struct {
	m     *Message
	since time.Time
}

// hold notes a message its handlers returned without settling.
func (r *run) hold(m *Message) {
	r.mu.Lock()
	r.held = append(r.held, held{m, time.Now()})
	r.mu.Unlock()
}

// watchHeld logs a warning, once until they are all settled, when messages stay held
// longer than after, until ctx ends.
func (c *Consumer) watchHeld(ctx context.Context, r *run, after time.Duration) {
	t := time.NewTicker(max(after/4, 10*time.Millisecond))
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		r.held = slices.DeleteFunc(r.held, func(h held) bool { return h.m.isSettled() })
		n := len(r.held)
		var oldest held
		if n > 0 {
			oldest = r.held[0]
		}
		r.mu.Unlock()
		switch {
		case n == 0:
			warned = false
		case !warned && time.Since(oldest.since) >= after:
			warned = true
			c.log.LogAttrs(ctx, slog.LevelWarn, "carrot: messages returned by their handlers unsettled are held past the stall warning; they count against the prefetch, and the consumer receives nothing more once they fill it",
				slog.String("queue", oldest.m.Queue()), slog.Int("held", n), slog.Duration("oldest", time.Since(oldest.since)))
		}
	}
}

// worker registers the calling goroutine as one that calls handlers.
func (r *run) worker() {
	id := goroutineID()
	r.mu.Lock()
	r.workers[id] = true
	r.mu.Unlock()
}

// inHandler reports whether the calling goroutine is one of the run's handler callers:
// a handler that stops its own consumer cannot be waited for.
func (r *run) inHandler() bool {
	id := goroutineID()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workers[id]
}

// started and finished count the handlers running, without a lock unless wait waits
// for them: wait counts itself in waiters before it reads busy, finished reads waiters
// after it has lowered busy, so one of them sees the other.
func (r *run) started() { r.busy.Add(1) }

func (r *run) finished() {
	r.busy.Add(-1)
	if r.waiters.Load() > 0 {
		r.mu.Lock()
		r.idle.Broadcast()
		r.mu.Unlock()
	}
}

// wait waits for the run to end; called from one of its handlers, it waits instead for
// the other handlers to return, or for ctx to end.
func (r *run) wait(ctx context.Context) error {
	if !r.inHandler() {
		select {
		case <-r.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.idle.Broadcast()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiters.Add(1)
	defer r.waiters.Add(-1)
	for r.busy.Load() > 1 && ctx.Err() == nil {
		r.idle.Wait()
	}
	return ctx.Err()
}

// goroutineID returns the id of the calling goroutine, from the first line of its stack
// ("goroutine 123 [running]:"). carrot uses it only to tell whether Close or Shutdown is
// called from a handler, once per call and once per handler goroutine.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

// NewConsumer declares the queues of opts, with their exchanges and bindings, and returns
// a Consumer for them.
func (c *Conn) NewConsumer(ctx context.Context, opts ConsumerOptions) (*Consumer, error) {
	const op = "new consumer"
	if len(opts.Queues) == 0 {
		return nil, invalidf(op, "no queue to consume")
	}
	if opts.Prefetch < 0 {
		return nil, invalidf(op, "prefetch %d is negative", opts.Prefetch)
	}
	if max := c.Capabilities().MaxPrefetch; max > 0 && opts.Prefetch > max {
		return nil, invalidf(op, "prefetch %d is more than the backend can carry (%d)", opts.Prefetch, max)
	}
	if opts.Concurrency < 0 {
		return nil, invalidf(op, "concurrency %d is negative", opts.Concurrency)
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	for i, mw := range opts.Middleware {
		if mw == nil {
			return nil, invalidf(op, "middleware %d is nil", i)
		}
	}
	cons := &Consumer{conn: c, opts: opts, log: cmp.Or(opts.Logger, c.log), fetched: make(map[*Message]int)}
	if len(opts.Accept) > 0 {
		cons.accept = make(map[string]bool, len(opts.Accept))
		for _, ct := range opts.Accept {
			t, err := mediaType(ct)
			if err != nil {
				return nil, invalidf(op, "accept: %w", err)
			}
			cons.accept[t] = true
		}
	}
	if opts.Handler != nil {
		cons.handlers = append(cons.handlers, opts.Handler)
	}
	if err := checkStreamOffset(op, opts.StreamOffset, c.Capabilities()); err != nil {
		return nil, err
	}
	for _, q := range opts.Queues {
		if err := checkStreamConsumer(op, q, opts); err != nil {
			return nil, err
		}
	}
	for _, q := range opts.Queues {
		name, err := c.DeclareQueue(ctx, q)
		if err != nil {
			return nil, err
		}
		cons.queues = append(cons.queues, name)
		if q.Type == StreamQueue {
			cons.streams = append(cons.streams, name)
		}
	}
	if err := opts.Retry.check(ctx, op, c, cons.queues); err != nil {
		return nil, err
	}
	if err := c.adopt(cons); err != nil {
		return nil, err
	}
	return cons, nil
}

// checkStreamOffset refuses a StreamOffset the backend cannot honour or that points
// nowhere.
func checkStreamOffset(op string, o StreamOffset, caps Capabilities) error {
	if o == (StreamOffset{}) {
		return nil
	}
	if !caps.Streams {
		return unsupportedf(op, "the backend does not support stream queues, which StreamOffset is for")
	}
	switch o.Kind {
	case backend.OffsetFirst, backend.OffsetLast, backend.OffsetNext:
	case backend.OffsetAt:
		if o.Offset < 0 {
			return invalidf(op, "stream offset %d is negative", o.Offset)
		}
	case backend.OffsetTime:
		if o.Time.IsZero() {
			return invalidf(op, "stream offset time is zero")
		}
	default:
		return invalidf(op, "unknown stream offset kind %d", o.Kind)
	}
	return nil
}

// checkStreamConsumer refuses what a consumer of q cannot do if q is a stream, and a
// StreamOffset for a queue of another type.
func checkStreamConsumer(op string, q Queue, opts ConsumerOptions) error {
	switch {
	case q.Type == StreamQueue && opts.NoAck:
		return invalidf(op, "a stream queue is consumed with acks: NoAck is refused for queue %q", q.Name)
	case q.Type != StreamQueue && q.Type != "" && opts.StreamOffset != (StreamOffset{}):
		return invalidf(op, "StreamOffset is for stream queues, and queue %q is of type %s", q.Name, q.Type)
	}
	return nil
}

// Queues returns the names of the queues the consumer reads, including names generated
// for queues declared without one.
func (c *Consumer) Queues() []string { return slices.Clone(c.queues) }

// Register adds a callback to the handlers that receive messages in [Consumer.Run], as
// carrot 0.4's register_callback does. Handlers are called in the order registered; an error
// from one stops the message going to the next. Register takes effect at the next Run.
func (c *Consumer) Register(fn HandlerFunc) {
	c.mu.Lock()
	c.handlers = append(c.handlers, fn)
	c.mu.Unlock()
}

// Run receives messages and passes them to the handlers until ctx ends, the consumer is
// shut down or closed, or a queue fails (it was deleted, say). It returns ctx.Err() when
// ctx ends, [ErrClosed] after Shutdown or Close, and the failure otherwise. When the
// connection is lost, Run waits for the Conn to recover it and subscribes again; messages
// it had received and not settled come again, flagged redelivered. A message the backend
// cannot read makes Run subscribe again after a while, and after [MaxMalformed] failures in
// a row Run returns an error wrapping [ErrMalformed] that names the queue. Before it
// returns, Run waits for the handlers in progress, whose context is canceled when ctx ends
// or Close is called. Messages received and not yet settled go back to their queues. Run
// may be called again after it returns.
func (c *Consumer) Run(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.run != nil:
		c.mu.Unlock()
		return invalidf("run", "the consumer is already running")
	case len(c.handlers) == 0:
		c.mu.Unlock()
		return invalidf("run", "the consumer has no handler; set ConsumerOptions.Handler or call Register")
	}
	var h Handler = chain(slices.Clone(c.handlers))
	for i := len(c.opts.Middleware) - 1; i >= 0; i-- {
		if h = c.opts.Middleware[i](h); h == nil {
			c.mu.Unlock()
			return invalidf("run", "middleware %d returned a nil Handler", i)
		}
	}
	recvCtx, stopReceiving := context.WithCancel(ctx)
	handlerCtx, cancelHandlers := context.WithCancel(ctx)
	r := &run{stopReceiving: stopReceiving, cancelHandlers: cancelHandlers, done: make(chan struct{}), workers: make(map[uint64]bool)}
	r.idle = sync.NewCond(&r.mu)
	c.run = r
	c.mu.Unlock()

	defer func() {
		stopReceiving()
		cancelHandlers()
		c.mu.Lock()
		c.run = nil
		c.mu.Unlock()
		close(r.done)
	}()

	subs := make([]*subscription, 0, len(c.queues))
	defer func() {
		for _, s := range subs {
			s.drop()
		}
	}()
	for _, q := range c.queues {
		s := &subscription{c: c, queue: q}
		if err := s.subscribe(recvCtx, nil, nil); err != nil {
			if r.stopped.Load() {
				return ErrClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		subs = append(subs, s)
	}

	var (
		msgs      = make(chan *Message)
		failOnce  sync.Once
		failure   error
		receivers sync.WaitGroup
		workers   sync.WaitGroup
	)
	fail := func(err error) {
		failOnce.Do(func() { failure = err })
		stopReceiving()
	}
	// One queue and one handler at a time: the receiving goroutine handles each message
	// itself, saving a hand-over per message. Otherwise receivers feed the workers.
	direct := len(subs) == 1 && c.opts.Concurrency == 1
	for _, s := range subs {
		receivers.Go(func() {
			if direct {
				r.worker()
			}
			for {
				m, err := s.receive(recvCtx)
				if err != nil {
					if recvCtx.Err() == nil {
						fail(err)
					}
					return
				}
				switch {
				case recvCtx.Err() != nil:
					// Stopped: no handler starts. Unsettled, the message goes back to its
					// queue when the subscription closes (with NoAck it is lost).
					return
				case direct:
					c.handle(handlerCtx, r, h, m)
				case c.opts.NoAck:
					msgs <- m // settled already: it must reach a handler
				default:
					select {
					case msgs <- m:
					case <-recvCtx.Done():
						return // unsettled: closing the subscription returns it to the queue
					}
				}
			}
		})
	}
	if after := c.opts.StallWarning; after >= 0 {
		if after == 0 {
			after = time.Minute
		}
		watchCtx, stopWatch := context.WithCancel(ctx)
		var watch sync.WaitGroup
		watch.Go(func() { c.watchHeld(watchCtx, r, after) })
		defer func() {
			stopWatch()
			watch.Wait()
		}()
	}
	if !direct {
		for range c.opts.Concurrency {
			workers.Go(func() {
				r.worker()
				for m := range msgs {
					if recvCtx.Err() == nil {
						c.handle(handlerCtx, r, h, m)
					}
				}
			})
		}
	}
	<-recvCtx.Done()
	receivers.Wait()
	close(msgs)
	workers.Wait()

	switch {
	case failure != nil:
		return failure
	case r.stopped.Load():
		return ErrClosed
	default:
		return ctx.Err()
	}
}

// MaxMalformed is how many times in a row a subscription may fail on a message its
// backend cannot read before [Consumer.Run] gives up with [ErrMalformed].
const MaxMalformed = 5

// subscription is one queue of a running consumer, on the Conn's live connection, which
// it follows across recoveries.
type subscription struct {
	c         *Consumer
	queue     string
	sub       backend.Subscription // nil between connections
	g         *generation          // sub's connection
	malformed int                  // failures in a row on a message the backend could not read
	failed    int                  // failures in a row of a connection that stays up
	stream    streamPosition       // where to read on, if the queue is a stream
}

// streamPosition is where a subscription to a stream reads on after a recovery: at its
// first message not settled on the lost connection, or after the last it received.
type streamPosition struct {
	mu        sync.Mutex
	known     bool
	next      int64                 // after the last message received
	unsettled map[int64]*generation // received and not settled, with their connection
}

// received records a message of the stream received on g.
func (p *streamPosition) received(offset int64, g *generation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unsettled == nil {
		p.unsettled = make(map[int64]*generation)
	}
	p.known, p.next, p.unsettled[offset] = true, offset+1, g
}

// settled records that m was settled; if its connection is lost, the settling fails and
// the message is read again.
func (p *streamPosition) settled(m *Message) {
	off, ok := m.StreamOffset()
	if !ok || m.d.gen.done() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unsettled[off] == m.d.gen {
		delete(p.unsettled, off)
	}
}

// resume returns where a new subscription reads from: start, unless messages were
// received before.
func (p *streamPosition) resume(start StreamOffset) StreamOffset {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.known {
		return start
	}
	from := p.next
	for off := range p.unsettled {
		from = min(from, off)
	}
	clear(p.unsettled)
	return FromOffset(from)
}

// subscribe subscribes on the live connection other than stale, waiting for the Conn to
// recover one within ctx. cause is why the subscription on stale ended.
func (s *subscription) subscribe(ctx context.Context, stale *generation, cause error) error {
	c, conn := s.c, s.c.conn
	op := s.op()
	for {
		g, err := conn.acquire(ctx, op, stale, cause)
		if err != nil {
			return err
		}
		sub, err := g.b.Consume(ctx, backend.ConsumeOptions{
			Queue:    s.queue,
			Prefetch: c.opts.Prefetch,
			AutoAck:  c.opts.NoAck,
			Offset:   s.stream.resume(c.opts.StreamOffset),
		})
		if err == nil {
			s.sub, s.g = sub, g
			conn.topo.subscribed(s.queue, +1, false)
			return nil
		}
		if ctx.Err() != nil || !s.retry(ctx, g, err) {
			return conn.wrap(ctx, op, g, err)
		}
		stale, cause = nil, err
		if g.done() {
			stale = g
		}
	}
}

// retry reports whether a subscription that failed with err on g is to be made again:
// the connection was lost (the next one takes it), or a channel or link went with the
// connection up (after a while, on the same connection).
func (s *subscription) retry(ctx context.Context, g *generation, err error) bool {
	if g.ending(ctx, err) {
		s.failed = 0
		return true
	}
	if !g.unreachable(err) {
		return false
	}
	s.failed++
	return sleep(ctx, retryDelay(s.failed-1)) == nil
}

// receive returns the next message, subscribing again when the connection was lost.
func (s *subscription) receive(ctx context.Context) (*Message, error) {
	c, conn := s.c, s.c.conn
	for {
		if s.sub == nil {
			if err := s.subscribe(ctx, s.g, nil); err != nil {
				return nil, err
			}
		}
		d, err := s.sub.Receive(ctx)
		if err == nil {
			s.malformed, s.failed = 0, 0
			if !d.InStream {
				return received(conn, s.g, d, s.queue, c.accept, nil, c.opts.OnSettle), nil
			}
			s.stream.received(d.Offset, s.g)
			return received(conn, s.g, d, s.queue, c.accept, s.stream.settled, c.opts.OnSettle), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		g := s.g
		s.drop()
		switch code := g.b.ErrorCode(err); {
		case code == backend.Malformed:
			s.malformed++
			if s.malformed >= MaxMalformed {
				return nil, &Error{Op: s.op(), Kind: ErrMalformed, Err: fmt.Errorf("gave up after %d failures in a row to read the message at the head of queue %q: %w", s.malformed, s.queue, err)}
			}
			// Wait, so that the message cannot make the connection fail in a hot loop.
			if err := sleep(ctx, malformedDelay(s.malformed)); err != nil {
				return nil, err
			}
			if !g.done() {
				s.g = nil // the connection lives on: subscribe on it again
			}
		case s.retry(ctx, g, err):
			if !g.done() {
				s.g = nil
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			return nil, conn.wrap(ctx, s.op(), g, err)
		}
	}
}

// op names the subscription's operation, for errors.
func (s *subscription) op() string { return fmt.Sprintf("consume queue %q", s.queue) }

// drop closes the subscription on its connection, for good or until the next one.
func (s *subscription) drop() {
	if s.sub == nil {
		return
	}
	s.sub.Close()
	s.sub = nil
	s.c.conn.topo.subscribed(s.queue, -1, !s.g.done())
}

// malformedDelay is the wait before subscribing again after the nth unreadable message in
// a row: 200ms, doubling.
func malformedDelay(n int) time.Duration { return 200 * time.Millisecond << min(n-1, 8) }

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handle passes m to the handlers, through the middleware, and settles it if they failed
// and did not.
func (c *Consumer) handle(ctx context.Context, r *run, h Handler, m *Message) {
	r.started()
	defer r.finished()
	err := c.call(ctx, h, m)
	if err == nil {
		switch {
		case c.opts.NoAck || m.isSettled():
		case c.opts.AutoSettle:
			if serr := m.Ack(context.WithoutCancel(ctx)); serr != nil && !errors.Is(serr, ErrAlreadySettled) {
				c.logFailure(ctx, r, "carrot: acking a handled message", m, serr)
			}
		default:
			r.hold(m)
		}
		return
	}
	if c.opts.NoAck || m.isSettled() {
		c.logFailure(ctx, r, "carrot: handler failed", m, err)
		return
	}
	outcome, serr := c.retry(ctx, m, err)
	c.logFailure(ctx, r, "carrot: handler failed; message "+outcome, m, err)
	if serr != nil {
		c.logFailure(ctx, r, "carrot: settling a failed message", m, serr)
	}
}

// logFailure logs a failure with a message, at most one line a second per Run: the
// line says how many were held back before it.
func (c *Consumer) logFailure(ctx context.Context, r *run, msg string, m *Message, err error) {
	ok, suppressed := r.failLog.Allow("handler", time.Now())
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.String("queue", m.Queue()), slog.String("message_id", m.MessageID), slog.Any("error", err)}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int(loglimit.HeldFailures, suppressed))
	}
	c.log.LogAttrs(ctx, slog.LevelError, msg, attrs...)
}

// call runs one handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, h Handler, m *Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("carrot: handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h.Receive(ctx, m)
}

// Fetch returns the next message waiting in the consumer's queues (tried in order), or
// [ErrEmpty] at once when there is none; it never waits for a message to arrive. The
// message must be settled; if it is not when the consumer closes, it is requeued.
func (c *Consumer) Fetch(ctx context.Context) (*Message, error) {
	if c.isClosed() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(c.streams) > 0 {
		return nil, unsupportedf("fetch", "stream queue %q is read by consuming, not by fetching", c.streams[0])
	}
	for _, q := range c.queues {
		var d *backend.Delivery
		var from *generation
		err := c.conn.do(ctx, fmt.Sprintf("fetch from queue %q", q), true, func(g *generation) error {
			var err error
			d, err = g.b.Get(ctx, q, c.opts.NoAck)
			from = g
			return err
		})
		if err != nil {
			return nil, err
		}
		if d == nil {
			continue
		}
		m := received(c.conn, from, d, q, c.accept, c.forget, c.opts.OnSettle)
		if c.opts.NoAck {
			return m, nil
		}
		c.mu.Lock()
		closed := c.closed
		if !closed {
			c.fetches++
			c.fetched[m] = c.fetches
		}
		c.mu.Unlock()
		if closed {
			m.Requeue(context.WithoutCancel(ctx))
			return nil, ErrClosed
		}
		return m, nil
	}
	return nil, ErrEmpty
}

// forget is called when a fetched message is settled.
func (c *Consumer) forget(m *Message) {
	c.mu.Lock()
	delete(c.fetched, m)
	c.mu.Unlock()
}

// Purge removes the messages waiting in the consumer's queues and returns how many it
// removed, as carrot 0.4's discard_all does.
func (c *Consumer) Purge(ctx context.Context) (int, error) {
	if c.isClosed() {
		return 0, ErrClosed
	}
	total := 0
	for _, q := range c.queues {
		n, err := c.conn.Purge(ctx, q)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (c *Consumer) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Shutdown stops the consumer gracefully: Run stops receiving, the handlers in progress
// finish and settle their messages, then the consumer closes. If ctx ends first, Shutdown
// closes the consumer at once, canceling the handlers' context, and returns ctx.Err().
//
// Called from one of the consumer's handlers, Shutdown cannot wait for that handler: it
// waits for the others, closes the consumer and returns, and the calling handler goes on
// (its context is then canceled); Run returns once it has.
func (c *Consumer) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	r := c.run
	c.mu.Unlock()
	if r != nil {
		r.stopped.Store(true)
		r.stopReceiving()
		if err := r.wait(ctx); err != nil {
			c.Close()
			return err
		}
	}
	return c.Close()
}

// closeRequeueTimeout bounds how long Close spends putting fetched, unsettled messages
// back in their queues; the broker requeues them anyway when the connection closes.
const closeRequeueTimeout = 5 * time.Second

// Close stops the consumer at once: Run stops receiving, the handlers' context is
// canceled, and Close waits for them to return (but for the handler that calls Close, if
// one does). Messages received and not settled go back to their queues. Close is
// idempotent; later calls on the consumer return [ErrClosed].
func (c *Consumer) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		r := c.run
		fetched := c.fetched
		c.fetched = nil
		c.mu.Unlock()
		if r != nil {
			r.stopped.Store(true)
			r.stopReceiving()
			r.cancelHandlers()
			r.wait(context.Background())
		}
		if len(fetched) > 0 {
			// The latest first: a broker that requeues at the head then keeps the order.
			ms := slices.SortedFunc(maps.Keys(fetched), func(a, b *Message) int { return fetched[b] - fetched[a] })
			ctx, cancel := context.WithTimeout(context.Background(), closeRequeueTimeout)
			for _, m := range ms {
				m.d.returned.Store(true)
				m.settle(ctx, backend.Requeue, 0) // not reported to OnSettle
			}
			cancel()
		}
		c.conn.release(c)
	})
	return nil
}
