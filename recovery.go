package carrot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/loglimit"
)

// Recovery: a Conn holds one backend connection at a time, a generation. When it ends, the
// supervisor opens the next with the Connector, declares the recorded topology on it and
// makes it live; calls made meanwhile wait for it within their context, consumers
// subscribe again, publishes retry. This is the only place where carrot reconnects.

// Defaults of a [Dialer].
const (
	DefaultDialTimeout = 30 * time.Second
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// A Dialer opens connections with options; its zero value is ready to use, and [Open] uses
// it. A Dialer may be used for several connections; it must not be changed once in use.
type Dialer struct {
	// DialTimeout bounds each attempt to connect: the first, within Open's context, and
	// each reconnection (DefaultDialTimeout when zero).
	DialTimeout time.Duration

	// MinBackoff and MaxBackoff bound the wait between reconnection attempts: the first
	// attempt follows a lost connection within MinBackoff, and the wait doubles with each
	// failed attempt, up to MaxBackoff, with jitter so that many clients do not return at
	// once (DefaultMinBackoff and DefaultMaxBackoff when zero).
	MinBackoff, MaxBackoff time.Duration

	// OnEvent, when set, is called for every change of the connection: lost, a failed
	// reconnection attempt, restored, and a recorded exchange, queue or binding that the
	// broker refused to declare again. It is called from one goroutine, in order; it must
	// return quickly and must not close the Conn.
	OnEvent func(Event)

	// Logger receives what the Conn logs: these events (failed reconnection attempts at
	// most once every 30 seconds after the first), and what its Publishers and Consumers
	// log unless given a logger of their own. It is passed to the backend too, for its
	// own logs and its client library's, when the backend takes it (see
	// [backend.ConfigDriver]; the backends of this module do). slog.Default() when nil.
	// No line shows a password.
	Logger *slog.Logger
}

// logger returns the Dialer's logger, or the default one.
func (d *Dialer) logger() *slog.Logger { return cmp.Or(d.Logger, slog.Default()) }

// An Event is a change of a Conn's connection, reported to [Dialer.OnEvent].
type Event struct {
	Kind    EventKind
	Attempt int   // the reconnection attempt: the one that failed, or the one that succeeded
	Err     error // why the connection was lost, why the attempt failed, or what was refused
	Conn    *Conn
}

// EventKind says what an [Event] reports.
type EventKind int

const (
	// EventLost: the connection was lost, for the reason in Err; the Conn reconnects.
	EventLost EventKind = iota + 1
	// EventAttemptFailed: reconnection attempt number Attempt failed with Err.
	EventAttemptFailed
	// EventRestored: attempt number Attempt connected and declared the topology again;
	// consumers resume and publishes go on.
	EventRestored
	// EventReplayRefused: the broker refused to declare again a recorded exchange, queue
	// or binding (another client declared it otherwise meanwhile); Err says which. The
	// Conn goes on without it.
	EventReplayRefused
)

func (k EventKind) String() string {
	switch k {
	case EventLost:
		return "lost"
	case EventAttemptFailed:
		return "attempt failed"
	case EventRestored:
		return "restored"
	case EventReplayRefused:
		return "replay refused"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// State is what a Conn knows of its connection, for readiness probes: see [Conn.State].
type State struct {
	Connected  bool      // a connection is up; false while recovering and after Close
	Closed     bool      // Close was called
	Since      time.Time // when the current connection was made, or when it was lost
	Attempts   int       // reconnection attempts since the connection was lost
	Err        error     // why the connection was lost, or why the last attempt failed; nil while connected
	Recoveries int       // connections lost and restored since Open
}

// generation is one backend connection of a Conn.
type generation struct {
	b    backend.Conn
	caps Capabilities
	born time.Time // when it became live
}

// done reports whether the connection has ended.
func (g *generation) done() bool {
	select {
	case <-g.b.Done():
		return true
	default:
		return false
	}
}

// unreachable reports whether err, from a call on g, says that the broker could not be
// reached through g: its connection, or a channel or link of it, went.
func (g *generation) unreachable(err error) bool {
	code := g.b.ErrorCode(err)
	return code == backend.Unavailable || code == backend.Closed
}

// lostWith reports whether err, from a call on g, says that g's connection is gone: the
// call may succeed on the next one.
func (g *generation) lostWith(err error) bool { return g.unreachable(err) && g.done() }

// ending reports whether err, from a call on g, says that g's connection is gone, waiting
// a moment for the connection to say so: a client may fail a call on a broken socket
// before it marks the connection lost.
func (g *generation) ending(ctx context.Context, err error) bool {
	if !g.unreachable(err) {
		return false
	}
	t := time.NewTimer(endingGrace)
	defer t.Stop()
	select {
	case <-g.b.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return g.done()
}

// endingGrace is how long a call that failed as Unavailable waits for its connection to
// say whether it is lost.
const endingGrace = 500 * time.Millisecond

func (d *Dialer) dialTimeout() time.Duration { return cmp.Or(d.DialTimeout, DefaultDialTimeout) }

// backoff returns the wait before reconnection attempt n (from 1), with jitter.
func (d *Dialer) backoff(n int) time.Duration {
	return backoff(cmp.Or(d.MinBackoff, DefaultMinBackoff), cmp.Or(d.MaxBackoff, DefaultMaxBackoff), n)
}

// backoff returns the nth wait (from 1) of a capped exponential backoff: lo, doubling
// each time, up to hi; with jitter, between half of it and all of it, so that many
// clients do not retry in step. Reconnection, publish retries and the retry policy all
// wait this way.
func backoff(lo, hi time.Duration, n int) time.Duration {
	if lo <= 0 || hi <= 0 {
		return 0
	}
	w := min(lo, hi)
	for i := 1; i < n && w < hi; i++ {
		if w > hi/2 {
			w = hi
		} else {
			w *= 2
		}
	}
	return w/2 + rand.N(w/2+1)
}

// connect makes the first connection of a Conn: one attempt, bounded by ctx and the dial
// timeout.
func (d *Dialer) connect(ctx context.Context, connector backend.Connector, name, rawURL string) (*Conn, error) {
	op := "open " + name
	dctx, cancel := context.WithTimeout(ctx, d.dialTimeout())
	b, err := connector.Connect(dctx)
	timedOut := ended(dctx) != nil
	cancel()
	if err != nil {
		kind := ErrUnavailable
		if backend.CodeOf(err) == backend.Invalid {
			kind = ErrInvalid
		}
		if cerr := ended(ctx); cerr != nil && kind == ErrUnavailable {
			err = &outage{ctx: cerr, cause: err}
		} else if timedOut {
			err = fmt.Errorf("no answer within the dial timeout of %v", d.dialTimeout())
		}
		return nil, &Error{Op: op, Kind: kind, Err: err, url: rawURL}
	}
	log := d.logger()
	c := &Conn{
		dialer:     *d,
		connector:  connector,
		name:       name,
		url:        rawURL,
		log:        log,
		changed:    make(chan struct{}),
		attemptLog: &loglimit.Limiter{Period: attemptLogPeriod},
		children:   make(map[closer]struct{}),
	}
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	g := &generation{b: b, caps: capabilities(b), born: time.Now()}
	c.caps.Store(&g.caps)
	c.live.Store(g)
	c.state = State{Connected: true, Since: g.born}
	c.wg.Go(func() { c.supervise(g) })
	return c, nil
}

// setLiveLocked makes g the live connection (nil while recovering) and wakes the calls
// waiting for a change. The caller holds c.mu.
func (c *Conn) setLiveLocked(g *generation) {
	c.live.Store(g)
	close(c.changed)
	c.changed = make(chan struct{})
}

// acquire returns the live connection, other than stale, waiting for one within ctx while
// the Conn recovers. cause is the error that made the caller give up on stale, for the
// error acquire returns if ctx ends first.
func (c *Conn) acquire(ctx context.Context, op string, stale *generation, cause error) (*generation, error) {
	for {
		if g := c.live.Load(); g != nil && g != stale {
			return g, nil
		}
		c.mu.Lock()
		g, changed, closed := c.live.Load(), c.changed, c.closed.Load()
		if cause == nil {
			cause = c.state.Err
		}
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case g != nil && g != stale:
			return g, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, outageError(op, err, cause)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, outageError(op, ctx.Err(), cause)
		}
	}
}

// outage is the error of a call whose context ended while the connection was down.
type outage struct {
	ctx   error // the context's error
	cause error // why the connection was down, if known
}

func (e *outage) Error() string {
	if e.cause == nil {
		return e.ctx.Error() + " while the broker was unavailable"
	}
	return e.ctx.Error() + " while the broker was unavailable: " + e.cause.Error()
}

func (e *outage) Unwrap() []error {
	if e.cause == nil {
		return []error{e.ctx}
	}
	return []error{e.ctx, e.cause}
}

// outageError returns the error of op, whose context ended with ctxErr while the
// connection was down because of cause: it wraps ErrUnavailable and both.
func outageError(op string, ctxErr, cause error) error {
	return &Error{Op: op, Kind: ErrUnavailable, Err: &outage{ctx: ctxErr, cause: cause}}
}

// do runs call on the live connection. When the connection is lost under it and retry is
// set, it runs it again on the next connection, until ctx ends.
func (c *Conn) do(ctx context.Context, op string, retry bool, call func(g *generation) error) error {
	if c.isClosed() {
		return ErrClosed
	}
	var stale *generation
	var cause error
	for {
		g, err := c.acquire(ctx, op, stale, cause)
		if err != nil {
			return err
		}
		err = call(g)
		if err == nil {
			return nil
		}
		if !retry || c.isClosed() || !g.ending(ctx, err) {
			return retriedError(ctx, op, c.wrap(ctx, op, g, err), cause)
		}
		stale, cause = g, err
	}
}

// retriedError returns werr, the error of op's last attempt, or, when an earlier attempt
// failed because the broker was unavailable (cause) and ctx ended during this one, the
// error of a call whose context ended during an outage, as when ctx ends between
// attempts: it wraps ErrUnavailable, ctx's error and cause.
func retriedError(ctx context.Context, op string, werr, cause error) error {
	if cerr := ended(ctx); cerr != nil && cause != nil && !errors.Is(werr, ErrUnavailable) {
		return outageError(op, cerr, cause)
	}
	return werr
}

// supervise watches the live connection and recovers it when it is lost, until Close.
func (c *Conn) supervise(g *generation) {
	streak := 0 // connections lost in a row because of a message the client could not read
	for {
		select {
		case <-g.b.Done():
		case <-c.stopCtx.Done():
			return
		}
		cause := g.b.Err()
		if cause == nil {
			cause = errors.New("the connection ended")
		}
		malformed := g.b.ErrorCode(cause) == backend.Malformed
		switch {
		case !malformed:
			streak = 0
		case time.Since(g.born) > 2*cmp.Or(c.dialer.MaxBackoff, DefaultMaxBackoff):
			streak = 1
		default:
			streak++
		}
		lostAt := time.Now()
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			return
		}
		c.setLiveLocked(nil)
		c.state = State{Since: lostAt, Err: cause, Recoveries: c.state.Recoveries}
		c.mu.Unlock()
		g.b.Close() // what it held goes back to the broker; subscriptions close after it
		c.event(Event{Kind: EventLost, Err: cause})

		if g = c.recover(lostAt, streak); g == nil {
			return
		}
	}
}

// recover connects again, with backoff, until it succeeds or the Conn closes. It returns
// the new live generation, or nil after Close. After streak losses in a row caused by
// unreadable messages, it starts with a longer wait, so that such a message cannot make
// the Conn reconnect in a hot loop.
func (c *Conn) recover(lostAt time.Time, streak int) *generation {
	for attempt := 1; ; attempt++ {
		wait := c.dialer.backoff(attempt + streak)
		if attempt == 1 && streak == 0 {
			wait = c.dialer.backoff(1) / 2 // a cut is usually over at once
		}
		if sleep(c.stopCtx, wait) != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(c.stopCtx, c.dialer.dialTimeout())
		b, err := c.connector.Connect(ctx)
		if err == nil {
			err = c.replay(ctx, b, lostAt)
			if err != nil {
				b.Close()
			}
		}
		cancel()
		if c.stopCtx.Err() != nil {
			if err == nil {
				b.Close()
			}
			return nil
		}
		if err != nil {
			c.mu.Lock()
			c.state.Attempts = attempt
			c.state.Err = err
			c.mu.Unlock()
			c.event(Event{Kind: EventAttemptFailed, Attempt: attempt, Err: err})
			continue
		}
		g := &generation{b: b, caps: capabilities(b), born: time.Now()}
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			b.Close()
			return nil
		}
		c.caps.Store(&g.caps)
		c.setLiveLocked(g)
		c.state = State{Connected: true, Since: g.born, Recoveries: c.state.Recoveries + 1}
		c.mu.Unlock()
		c.event(Event{Kind: EventRestored, Attempt: attempt})
		return g
	}
}

// replay declares the recorded topology on a new connection, in order: exchanges, queues,
// bindings. What the broker refuses is reported and skipped; an error that says the
// connection went, or that an exclusive queue of the lost connection is still locked (the
// broker has not noticed yet that its owner is gone), fails the attempt.
func (c *Conn) replay(ctx context.Context, b backend.Conn, lostAt time.Time) error {
	xs, qs, bs := c.topo.snapshot()
	check := func(what string, err error) error {
		if err == nil {
			return nil
		}
		code := b.ErrorCode(err)
		select {
		case <-b.Done():
			return err
		default:
		}
		if ctx.Err() != nil || code == backend.Unavailable || code == backend.Closed {
			return err
		}
		if code == backend.InUse && time.Since(lostAt) < exclusiveGrace {
			return fmt.Errorf("declaring %s again: %w", what, err)
		}
		c.event(Event{Kind: EventReplayRefused, Err: &Error{Op: "declare " + what + " again", Kind: kinds[code], Err: err}})
		return nil
	}
	for _, x := range xs {
		if err := check(fmt.Sprintf("exchange %q", x.Name), b.DeclareExchange(ctx, x)); err != nil {
			return err
		}
	}
	for _, q := range qs {
		if err := check(fmt.Sprintf("queue %q", q.Name), b.DeclareQueue(ctx, q)); err != nil {
			return err
		}
	}
	for _, bd := range bs {
		what := fmt.Sprintf("binding of queue %q to exchange %q with key %q", bd.Queue, bd.Exchange, bd.Key)
		if err := check(what, b.Bind(ctx, bd)); err != nil {
			return err
		}
	}
	return nil
}

// attemptLogPeriod is the least time between two log lines of failed reconnection attempts.
const attemptLogPeriod = 30 * time.Second

// exclusiveGrace is how long after a loss recovery waits for the broker to release the
// exclusive queues of the lost connection, which it does once it notices the loss.
const exclusiveGrace = time.Minute

// scrub returns err's text without the URL's secrets, for logs.
func (c *Conn) scrub(err error) string {
	if err == nil {
		return ""
	}
	return brokerurl.Scrub(err.Error(), c.url)
}

// event reports e to the logger and to OnEvent.
func (c *Conn) event(e Event) {
	e.Conn = c
	switch e.Kind {
	case EventLost:
		c.log.LogAttrs(context.Background(), slog.LevelWarn, "carrot: connection lost; reconnecting", slog.String("broker", c.name), slog.String("error", c.scrub(e.Err)))
	case EventAttemptFailed:
		// Attempts go on every few seconds while a broker is down: one line in 30 s.
		if ok, suppressed := c.attemptLog.Allow("attempt", time.Now()); ok {
			attrs := []slog.Attr{slog.String("broker", c.name), slog.Int("attempt", e.Attempt), slog.String("error", c.scrub(e.Err))}
			if suppressed > 0 {
				attrs = append(attrs, slog.Int(loglimit.HeldFailures, suppressed))
			}
			c.log.LogAttrs(context.Background(), slog.LevelWarn, "carrot: reconnection failed", attrs...)
		}
	case EventRestored:
		c.attemptLog = &loglimit.Limiter{Period: attemptLogPeriod}
		c.log.LogAttrs(context.Background(), slog.LevelInfo, "carrot: connection restored", slog.String("broker", c.name), slog.Int("attempts", e.Attempt))
	case EventReplayRefused:
		c.log.LogAttrs(context.Background(), slog.LevelError, "carrot: could not declare again after reconnecting", slog.String("broker", c.name), slog.String("error", c.scrub(e.Err)))
	}
	if c.dialer.OnEvent != nil {
		c.dialer.OnEvent(e)
	}
}

// State reports the state of the connection: connected or recovering, since when, and why
// it was lost.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state
	s.Closed = c.closed.Load()
	if s.Closed {
		s.Connected = false
	}
	return s
}

// Ping checks that the broker answers: it returns an error wrapping [ErrUnavailable] while
// the connection is lost (and the reason), [ErrClosed] after Close, and otherwise the
// result of a round trip to the broker when the backend can make one.
func (c *Conn) Ping(ctx context.Context) error {
	const op = "ping"
	if c.isClosed() {
		return ErrClosed
	}
	g := c.live.Load()
	if g == nil {
		s := c.State()
		return &Error{Op: op, Kind: ErrUnavailable, Err: fmt.Errorf("recovering since %s: %w", s.Since.Format(time.RFC3339), s.Err)}
	}
	if p, ok := g.b.(backend.Pinger); ok {
		return c.wrap(ctx, op, g, p.Ping(ctx))
	}
	if g.done() {
		return c.wrap(ctx, op, g, g.b.Err())
	}
	return nil
}

// record is the topology a Conn declared, to declare again on a new connection: each
// exchange, queue and binding in the order it was first declared. It is safe for
// concurrent use.
type record struct {
	mu        sync.Mutex
	seq       int
	exchanges map[string]recorded[backend.Exchange]
	queues    map[string]recorded[backend.Queue]
	bindings  map[backend.Binding]int
	consumers map[string]int // running subscriptions of this Conn, by queue
}

type recorded[T any] struct {
	def T
	seq int
}

func (r *record) next() int {
	r.seq++
	return r.seq
}

// addExchange records x and returns a function that undoes it.
func (r *record) addExchange(x backend.Exchange) (undo func()) {
	if x.Passive {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exchanges == nil {
		r.exchanges = make(map[string]recorded[backend.Exchange])
	}
	old, had := r.exchanges[x.Name]
	seq := old.seq
	if !had {
		seq = r.next()
	}
	r.exchanges[x.Name] = recorded[backend.Exchange]{x, seq}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if had {
			r.exchanges[x.Name] = old
		} else {
			delete(r.exchanges, x.Name)
		}
	}
}

// deadLetter returns the dead-letter exchange and routing key queue was declared with, and
// whether this Conn declared it.
func (r *record) deadLetter(queue string) (exchange, key string, known bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q, ok := r.queues[queue]
	return q.def.DeadLetterExchange, q.def.DeadLetterRoutingKey, ok
}

// addQueue records q and returns a function that undoes it.
func (r *record) addQueue(q backend.Queue) (undo func()) {
	if q.Passive {
		return func() {}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queues == nil {
		r.queues = make(map[string]recorded[backend.Queue])
	}
	old, had := r.queues[q.Name]
	seq := old.seq
	if !had {
		seq = r.next()
	}
	r.queues[q.Name] = recorded[backend.Queue]{q, seq}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if had {
			r.queues[q.Name] = old
		} else {
			delete(r.queues, q.Name)
		}
	}
}

// addBinding records b and returns a function that undoes it.
func (r *record) addBinding(b backend.Binding) (undo func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bindings == nil {
		r.bindings = make(map[backend.Binding]int)
	}
	old, had := r.bindings[b]
	if !had {
		r.bindings[b] = r.next()
	}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if had {
			r.bindings[b] = old
		} else {
			delete(r.bindings, b)
		}
	}
}

// deleteExchange forgets an exchange and its bindings.
func (r *record) deleteExchange(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.exchanges, name)
	for b := range r.bindings {
		if b.Exchange == name {
			delete(r.bindings, b)
		}
	}
}

// deleteQueue forgets a queue and its bindings.
func (r *record) deleteQueue(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleteQueueLocked(name)
}

func (r *record) deleteQueueLocked(name string) {
	delete(r.queues, name)
	for b := range r.bindings {
		if b.Queue == name {
			delete(r.bindings, b)
		}
	}
	r.dropUnboundLocked()
}

// deleteBinding forgets a binding.
func (r *record) deleteBinding(b backend.Binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.bindings, b)
	r.dropUnboundLocked()
}

// dropUnboundLocked forgets the auto-delete exchanges left without a recorded binding:
// the broker deletes them with their last binding.
func (r *record) dropUnboundLocked() {
	for name, x := range r.exchanges {
		if !x.def.AutoDelete {
			continue
		}
		bound := false
		for b := range r.bindings {
			if b.Exchange == name {
				bound = true
				break
			}
		}
		if !bound {
			delete(r.exchanges, name)
		}
	}
}

// subscribed counts a subscription of this Conn to queue starting (+1) or ending (-1).
// An auto-delete queue goes with its last consumer, so when the last one ends with forget
// set (it ended for good, not with a lost connection) the queue is forgotten; after a lost
// connection it is declared again, and its consumers resume.
func (r *record) subscribed(queue string, delta int, forget bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.consumers == nil {
		r.consumers = make(map[string]int)
	}
	r.consumers[queue] += delta
	if r.consumers[queue] > 0 {
		return
	}
	delete(r.consumers, queue)
	if q, ok := r.queues[queue]; ok && q.def.AutoDelete && forget {
		r.deleteQueueLocked(queue)
	}
}

// snapshot returns what is recorded, in the order to declare it again.
func (r *record) snapshot() ([]backend.Exchange, []backend.Queue, []backend.Binding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	xs := make([]recorded[backend.Exchange], 0, len(r.exchanges))
	for _, x := range r.exchanges {
		xs = append(xs, x)
	}
	qs := make([]recorded[backend.Queue], 0, len(r.queues))
	for _, q := range r.queues {
		qs = append(qs, q)
	}
	bs := make([]recorded[backend.Binding], 0, len(r.bindings))
	for b, seq := range r.bindings {
		bs = append(bs, recorded[backend.Binding]{b, seq})
	}
	return defs(xs), defs(qs), defs(bs)
}

// defs returns the definitions of rs, in the order they were recorded.
func defs[T any](rs []recorded[T]) []T {
	slices.SortFunc(rs, func(a, b recorded[T]) int { return a.seq - b.seq })
	out := make([]T, len(rs))
	for i, r := range rs {
		out[i] = r.def
	}
	return out
}
