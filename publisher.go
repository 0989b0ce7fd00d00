package carrot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// PublisherOptions configures a [Publisher].
type PublisherOptions struct {
	// Exchange is where messages go. The empty name is the default exchange, which routes
	// each message to the queue named by its routing key.
	Exchange string

	// RoutingKey is the routing key of messages that do not set their own.
	RoutingKey string

	// ContentType picks the codec Send encodes values with; JSON when empty.
	ContentType string

	// DeliveryMode is that of messages that do not set their own; Persistent when zero.
	DeliveryMode DeliveryMode

	// AllowUnroutable lets messages that match no queue be dropped by the broker, as AMQP
	// does without its mandatory flag. By default such a message is an error wrapping
	// [ErrUnroutable], and nothing is dropped silently.
	AllowUnroutable bool

	// NoConfirm makes Publish return as soon as the message is written to the connection,
	// without waiting for the broker to take it. It is faster, and a message can be lost
	// without an error if the broker fails. Since an unroutable message can then not be
	// reported, NoConfirm requires AllowUnroutable.
	NoConfirm bool

	// NoRetry makes Publish return an error wrapping [ErrUnavailable] when the connection
	// fails under a message, instead of publishing it again once the Conn has reconnected.
	// Retrying is what makes delivery at-least-once: a message whose confirm was lost with
	// the connection may arrive twice.
	NoRetry bool

	// Hooks are called around every publish, for tracing, metrics, logging or correlation
	// ids added outside carrot; see [PublishHook].
	Hooks []PublishHook

	// MaxInFlight bounds the messages of this Publisher sent and not yet answered by the
	// broker: with that many in flight, Publish and PublishAsync first wait for one to be
	// answered, within their context (returning its error if it ends first). It is the
	// publish window one goroutine needs to keep a broker busy without holding an
	// unbounded backlog; 256 is a good start. Zero means no bound.
	MaxInFlight int
}

// A PublishHook is called around each publish of a [Publisher]. Before is called first,
// before carrot validates the message, with a copy of it (its Headers map copied too) that
// it may change, such as to add a trace header; the context it returns, if not nil, is
// the publish's and is passed to After. After is called once with the outcome: once the
// broker confirmed the message, or with the error Publish returns (or the Confirmation
// reports, for PublishAsync, in which case After is called from carrot's or the backend's
// goroutine and must not block). Hooks run in order for Before and in reverse for After;
// either func may be nil.
type PublishHook struct {
	Before func(ctx context.Context, m *Message) context.Context
	After  func(ctx context.Context, m *Message, err error)
}

// Publisher sends messages to an exchange. It is safe for concurrent use; each call to
// Publish or Send waits for its own message's confirm, and many may be in flight at once.
type Publisher struct {
	conn   *Conn
	opts   PublisherOptions
	op     string // for errors
	codec  Codec
	closed atomic.Bool
	window *window // with MaxInFlight
}

// NewPublisher returns a Publisher that sends to opts.Exchange. It does not declare the
// exchange (see [Conn.DeclareExchange]); publishing to an exchange that does not exist
// returns an error wrapping [ErrNotFound].
func (c *Conn) NewPublisher(opts PublisherOptions) (*Publisher, error) {
	const op = "new publisher"
	if err := checkName(op, "exchange", opts.Exchange, true); err != nil {
		return nil, err
	}
	if err := checkKey(op, opts.RoutingKey); err != nil {
		return nil, err
	}
	if opts.ContentType == "" {
		opts.ContentType = JSON
	}
	codec, err := codecFor(opts.ContentType)
	if err != nil {
		return nil, invalidf(op, "%w", err)
	}
	switch opts.DeliveryMode {
	case 0, Transient, Persistent:
	default:
		return nil, invalidf(op, "unknown delivery mode %d", opts.DeliveryMode)
	}
	if opts.MaxInFlight < 0 {
		return nil, invalidf(op, "MaxInFlight %d is negative", opts.MaxInFlight)
	}
	if opts.NoConfirm && !opts.AllowUnroutable {
		return nil, invalidf(op, "NoConfirm requires AllowUnroutable: without a confirm an unroutable message cannot be reported")
	}
	caps := c.Capabilities()
	if !opts.NoConfirm && !caps.Confirms {
		return nil, unsupportedf(op, "the backend does not support publisher confirms; set NoConfirm")
	}
	if !opts.AllowUnroutable && !caps.Mandatory {
		return nil, unsupportedf(op, "the backend cannot report unroutable messages; set AllowUnroutable")
	}
	p := &Publisher{conn: c, opts: opts, codec: codec, op: fmt.Sprintf("publish to exchange %q", opts.Exchange)}
	if opts.MaxInFlight > 0 {
		p.window = &window{size: int64(opts.MaxInFlight)}
	}
	if err := c.adopt(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Warm prepares the publisher ahead of its first publish, so that it does not pay for
// the set-up: it checks that the exchange exists ([ErrNotFound] if not) and opens what
// the backend publishes through (an AMQP channel in confirm mode, an AMQP 1.0 link).
// Publishing does all this on its own when needed, after a recovery too; Warm only moves
// the cost, and the first errors, to a time of the caller's choosing.
func (p *Publisher) Warm(ctx context.Context) error {
	if p.closed.Load() {
		return ErrClosed
	}
	if p.opts.Exchange != "" {
		if err := p.conn.DeclareExchange(ctx, Exchange{Name: p.opts.Exchange, Passive: true}); err != nil {
			return err
		}
	}
	return p.conn.do(ctx, "warm "+p.op, true, func(g *generation) error {
		if w, ok := g.b.(backend.PublishWarmer); ok {
			return w.WarmPublish(ctx)
		}
		return nil
	})
}

// Encode returns a message whose body is v encoded with the publisher's codec, with its
// content type set, for callers that want to set more properties before [Publisher.Publish].
func (p *Publisher) Encode(v any) (*Message, error) {
	body, err := p.codec.Encode(v)
	if err != nil {
		return nil, &Error{Op: "encode " + p.codec.ContentType(), Kind: ErrInvalid, Err: err}
	}
	return &Message{Body: body, ContentType: p.codec.ContentType()}, nil
}

// Send encodes v with the publisher's codec (JSON by default) and publishes it with the
// publisher's routing key, as carrot 0.4's Publisher.send does.
func (p *Publisher) Send(ctx context.Context, v any) error {
	m, err := p.Encode(v)
	if err != nil {
		return err
	}
	return p.Publish(ctx, m)
}

// Publish sends a message as it is: its body is not encoded again. Unless the publisher
// has NoConfirm set, Publish returns once the broker has taken the message, or with an
// error: [ErrUnroutable] when it matched no queue, [ErrNotFound] when the exchange does
// not exist, [ErrRefused] when the broker refused it, [ErrTooLarge] when it is larger than
// the broker takes. A message the broker refuses is never sent again. When the connection
// is lost under the message, Publish publishes it again once the Conn has reconnected
// (unless NoRetry is set), so the message may arrive twice but is not lost; if ctx ends
// first, the error wraps both [ErrUnavailable] and ctx's error, and the message may or may
// not have been taken.
func (p *Publisher) Publish(ctx context.Context, m *Message) (err error) {
	if p.window != nil {
		if err := p.enter(ctx); err != nil {
			return err
		}
		defer p.leave()
	}
	if len(p.opts.Hooks) > 0 {
		ctx, m = p.before(ctx, m)
		defer func() { p.after(ctx, m, err) }()
	}
	pub := new(backend.Publishing)
	if err := p.prepare(ctx, m, pub); err != nil {
		return err
	}
	var stale *generation
	var cause error
	for attempt := 0; ; attempt++ {
		g, err := p.conn.acquire(ctx, p.op, stale, cause)
		if err != nil {
			return err
		}
		err = g.b.Publish(ctx, pub)
		if err == nil {
			return nil
		}
		werr := p.conn.wrap(ctx, p.op, g, err)
		if !p.retry(ctx, werr) {
			return retriedError(ctx, p.op, werr, cause)
		}
		cause = err
		if g.done() {
			stale = g // acquire waits for the next connection
			continue
		}
		// The connection is up, but the message went with a channel or link: try again
		// in a while.
		if err := sleep(ctx, retryDelay(attempt)); err != nil {
			return outageError(p.op, err, cause)
		}
	}
}

// PublishAsync starts publishing a message and returns once it is written, without
// waiting for the broker's confirm, so that one goroutine can keep many messages in
// flight; the [Confirmation] reports what [Publisher.Publish] would have returned.
// Messages published by one goroutine are written in the order of the calls. While the
// connection is being recovered, PublishAsync waits for it, within ctx. The message, its
// body and headers must not be changed until the Confirmation is done. With a backend that
// cannot publish asynchronously (see [backend.AsyncPublisher]), PublishAsync returns once
// the message is confirmed.
func (p *Publisher) PublishAsync(ctx context.Context, m *Message) *Confirmation {
	if p.window != nil {
		if err := p.enter(ctx); err != nil {
			c := new(Confirmation)
			c.finish(err)
			return c
		}
	}
	if len(p.opts.Hooks) > 0 {
		ctx, m = p.before(ctx, m)
	}
	if g := p.conn.live.Load(); g != nil {
		if _, async := g.b.(backend.AsyncPublisher); !async {
			return p.publishNow(ctx, m, g)
		}
	}
	a := p.asyncPublish(ctx, m)
	if err := p.prepare(ctx, m, &a.pub); err != nil {
		return a.finish(err)
	}
	return a.start()
}

// publishNow is PublishAsync on g, whose backend publishes in the caller's goroutine: the
// first attempt needs nothing that outlives the call, unless it fails.
func (p *Publisher) publishNow(ctx context.Context, m *Message, g *generation) *Confirmation {
	pub := publishings.Get().(*backend.Publishing)
	defer putPublishing(pub)
	if err := p.prepare(ctx, m, pub); err != nil {
		return p.asyncPublish(ctx, m).finish(err)
	}
	if err := g.b.Publish(ctx, pub); err != nil {
		a := p.asyncPublish(ctx, m)
		a.pub, a.g = *pub, g
		a.attemptDone(err)
		return &a.c
	}
	if len(p.opts.Hooks) > 0 {
		p.after(ctx, m, nil)
	}
	if p.window != nil {
		p.leave()
	}
	return confirmed
}

// confirmed is the Confirmation of every publish confirmed before PublishAsync returned.
var confirmed = func() *Confirmation {
	c := new(Confirmation)
	c.finish(nil)
	return c
}()

// publishings holds the backend's Publishings of publishNow. A backend must not keep one
// after its Publish returns; one that publishes asynchronously may still read it after a
// Publish cut short by its context (redis's publish queue does), so only publishNow, for
// backends that publish in the caller's goroutine, reuses them.
var publishings = sync.Pool{New: func() any { return new(backend.Publishing) }}

func putPublishing(pub *backend.Publishing) {
	*pub = backend.Publishing{}
	publishings.Put(pub)
}

// asyncPublish returns the state of a publish of m that PublishAsync cannot finish before
// it returns.
func (p *Publisher) asyncPublish(ctx context.Context, m *Message) *asyncPublish {
	a := &asyncPublish{p: p, ctx: ctx, m: m}
	a.answer = a.attemptDone
	return a
}

// asyncPublish is a publish started with PublishAsync, with its confirmation, in one
// allocation.
type asyncPublish struct {
	c       Confirmation
	p       *Publisher
	ctx     context.Context
	m       *Message // for the hooks
	pub     backend.Publishing
	attempt int
	g       *generation // of the current attempt
	cause   error       // why the last attempt failed
	answer  func(error) // attemptDone, bound once
}

// finish reports the outcome, to the hooks and the Confirmation, and leaves the window.
// It returns the Confirmation.
func (a *asyncPublish) finish(err error) *Confirmation {
	if len(a.p.opts.Hooks) > 0 {
		a.p.after(a.ctx, a.m, err)
	}
	if a.p.window != nil {
		a.p.leave()
	}
	a.c.finish(err)
	return &a.c
}

// window counts a Publisher's messages in flight, to at most size. Taking and giving back
// a place is an atomic operation; only a publish that waits for a place takes the mutex.
type window struct {
	size    int64
	used    atomic.Int64
	waiting atomic.Bool // a publish waits for room; set under mu
	mu      sync.Mutex
	room    chan struct{} // closed when a place is given back, if waiting
}

// enter takes a place in the publish window, waiting within ctx for one.
func (p *Publisher) enter(ctx context.Context) error {
	w := p.window
	for {
		n := w.used.Load()
		if n < w.size {
			if w.used.CompareAndSwap(n, n+1) {
				return nil
			}
			continue
		}
		// Full: wait for leave to signal, once it can see that we wait, unless it gave
		// a place back meanwhile.
		w.mu.Lock()
		if w.room == nil {
			w.room = make(chan struct{})
		}
		room := w.room
		w.waiting.Store(true)
		w.mu.Unlock()
		if w.used.Load() < w.size {
			continue
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// leave gives back a place in the publish window.
func (p *Publisher) leave() {
	w := p.window
	w.used.Add(-1)
	if w.waiting.Load() {
		w.mu.Lock()
		if w.room != nil {
			close(w.room)
			w.room = nil
		}
		w.waiting.Store(false)
		w.mu.Unlock()
	}
}

// start makes one attempt on the live connection, waiting for one if there is none. It
// returns the Confirmation.
func (a *asyncPublish) start() *Confirmation {
	g, err := a.p.conn.acquire(a.ctx, a.p.op, a.g, a.cause)
	if err != nil {
		return a.finish(err)
	}
	a.g = g
	if ap, ok := g.b.(backend.AsyncPublisher); ok {
		ap.PublishAsync(a.ctx, &a.pub, a.answer)
		return &a.c
	}
	a.answer(g.b.Publish(a.ctx, &a.pub)) // in order, if not in parallel
	return &a.c
}

// attemptDone finishes the confirmation, or makes another attempt if the connection was
// lost under this one: on the next connection, or after a while on this one.
func (a *asyncPublish) attemptDone(err error) {
	p, g := a.p, a.g
	werr := p.conn.wrap(a.ctx, p.op, g, err)
	if !p.retry(a.ctx, werr) {
		a.finish(retriedError(a.ctx, p.op, werr, a.cause))
		return
	}
	a.cause = err
	a.attempt++
	if g.done() {
		go a.start() // waits for the next connection, off the backend's goroutine
		return
	}
	a.g = nil // the same connection may be used again
	time.AfterFunc(retryDelay(a.attempt-1), func() {
		if err := a.ctx.Err(); err != nil {
			a.finish(outageError(p.op, err, a.cause))
			return
		}
		a.start()
	})
}

// before runs the hooks' Before funcs on a copy of m, and returns the context and message
// to publish.
func (p *Publisher) before(ctx context.Context, m *Message) (context.Context, *Message) {
	if m != nil {
		c := *m
		c.Headers = maps.Clone(m.Headers)
		m = &c
	}
	for _, h := range p.opts.Hooks {
		if h.Before != nil {
			if hctx := h.Before(ctx, m); hctx != nil {
				ctx = hctx
			}
		}
	}
	return ctx, m
}

// after runs the hooks' After funcs, the last first.
func (p *Publisher) after(ctx context.Context, m *Message, err error) {
	for i := len(p.opts.Hooks) - 1; i >= 0; i-- {
		if h := p.opts.Hooks[i]; h.After != nil {
			h.After(ctx, m, err)
		}
	}
}

// prepare validates m and fills pub, the backend's publishing of it.
func (p *Publisher) prepare(ctx context.Context, m *Message, pub *backend.Publishing) error {
	if p.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if m == nil {
		return invalidf(p.op, "message is nil")
	}
	bm, err := m.backend(p.op, p)
	if err != nil {
		return err
	}
	if p.conn.isClosed() {
		return ErrClosed
	}
	*pub = backend.Publishing{
		Message:   bm,
		Exchange:  p.opts.Exchange,
		Mandatory: !p.opts.AllowUnroutable,
		Confirm:   !p.opts.NoConfirm,
	}
	return nil
}

// retry reports whether a publish that failed with err is to be made again: the
// connection, or the channel or link it went through, failed under it.
func (p *Publisher) retry(ctx context.Context, err error) bool {
	return err != nil && !p.opts.NoRetry && errors.Is(err, ErrUnavailable) && ctx.Err() == nil && !p.conn.isClosed()
}

// A Confirmation is the outcome of a publish started with [Publisher.PublishAsync].
type Confirmation struct {
	finished atomic.Bool // set after err, before done is closed
	err      error

	mu   sync.Mutex
	done chan struct{} // made by the first wait for an unfinished publish, or closedChan
}

// closedChan is the done channel of a Confirmation finished before anyone waited.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (c *Confirmation) finish(err error) {
	c.err = err
	c.mu.Lock()
	c.finished.Store(true)
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	c.mu.Unlock()
}

// Done returns a channel that is closed once the broker has answered.
func (c *Confirmation) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// Err waits until the broker has answered and returns what [Publisher.Publish] would
// have returned.
func (c *Confirmation) Err() error {
	if !c.finished.Load() {
		<-c.Done()
	}
	return c.err
}

// Wait is Err, returning ctx.Err() if ctx ends first; the publish goes on.
func (c *Confirmation) Wait(ctx context.Context) error {
	if c.finished.Load() {
		return c.err
	}
	select {
	case <-c.Done():
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryDelay is how long Publish waits before its next attempt (from 0): from 50ms,
// doubling, up to 2s, with jitter.
func retryDelay(attempt int) time.Duration {
	return backoff(50*time.Millisecond, 2*time.Second, attempt+1)
}

// Close closes the publisher; later calls return [ErrClosed]. Publishes in progress
// finish. Close is idempotent.
func (p *Publisher) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.conn.release(p)
	}
	return nil
}
