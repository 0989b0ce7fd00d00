// Package conformance checks that a carrot backend behaves as carrot promises: the same
// suite runs on every backend, in this module or outside it.
//
// A backend's test calls [Run] with a [Harness] that opens connections to the broker under
// test:
//
//	func TestConformance(t *testing.T) {
//		url := "memory://" + t.Name()
//		conformance.Run(t, conformance.Harness{
//			URL:  url,
//			Open: func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
//			OpenFaulty: ...,
//		})
//	}
//
// Every behaviour is a named subtest with a one-line explanation. Those that need a
// capability the backend does not report (see [carrot.Capabilities]) are skipped, saying
// which; nothing else is ever skipped. Every subtest declares its own exchanges and queues,
// under names no other run uses, and deletes them afterwards, so runs can share a broker.
//
// # Recovery
//
// The subtests whose names start with Recover break the network between a connection and
// its broker, and check that carrot recovers: consumers resume with nothing lost,
// topology is declared again, publishes wait or fail at their deadline, settling a message
// of a lost connection is an error, contexts are honoured while the network stalls, and
// Close returns promptly during an outage. They need [Harness.OpenFaulty], which opens a
// connection through a [Breaker]: for a broker reached over TCP, a [Proxy] in front of it,
//
//	OpenFaulty: func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
//		proxy := conformance.NewProxy()
//		addr, err := proxy.Forward("127.0.0.1:5672")
//		if err != nil {
//			return nil, nil, err
//		}
//		conn, err := carrot.Open(ctx, "amqp://guest:guest@"+addr+"/")
//		if err != nil {
//			proxy.Close()
//			return nil, nil, err
//		}
//		return conn, proxy, nil
//	},
//
// or anything else that can cut, block and stall the backend's connections, such as the
// memory backend's Link.
//
// # Checking a live broker
//
// [Check] runs the same behaviours without go test, against a broker in service, and
// returns a [Report]: each behaviour passed, failed with its reasons, skipped for a
// capability, or not run within a time budget. [ProxiedHarness] builds the harness of a
// broker reached over TCP from its URL. The carrot command's check runs it.
//
// The suite publishes with carrot's defaults, which need the Confirms and Mandatory
// capabilities: a backend without them cannot pass it.
//
// The package imports carrot and the standard library, plus small test helpers; starting
// brokers is left to the caller.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// Harness connects the suite to the broker under test.
type Harness struct {
	// Open returns a new connection to the broker under test. Every call must reach the
	// same broker: some subtests publish on one connection and receive on another. The
	// suite closes every connection it opens.
	Open func(ctx context.Context) (*carrot.Conn, error)

	// OpenFaulty returns a new connection to the same broker as Open, and a Breaker of its
	// own that breaks the network between them, for the Recover subtests. Breaking must not
	// disturb other connections. When the subtest ends, the suite closes the connection,
	// then the Breaker if it has a Close method. Run fails if OpenFaulty is nil.
	OpenFaulty func(ctx context.Context) (*carrot.Conn, Breaker, error)

	// URL is the URL Open opens (with its password, if any). The Hostile subtests open
	// variants of it: with options the backend must refuse, and with secrets no error or
	// log line may show. Run fails if it is empty.
	URL string

	// Timeout bounds each subtest's waits for messages to arrive; 30 seconds when zero. A
	// subtest that passes never waits this long.
	Timeout time.Duration

	// QueueType is the type of the queues the suite declares, such as carrot.QuorumQueue
	// to check a cluster's replicated queues; the backend's default when empty. Queues a
	// behaviour declares transient, exclusive, auto-delete or with priorities, which a
	// replicated queue cannot be, keep the default type, as do those of a behaviour about
	// another type.
	QueueType carrot.QueueType
}

// A Breaker breaks the network between connections and their broker, as [Proxy] does for
// TCP. Its methods may be called concurrently.
type Breaker interface {
	// Cut ends every connection at once, as a reset does; new connections go through.
	Cut()
	// Block ends every connection and refuses new ones until Unblock.
	Block()
	// Stall stops carrying traffic, on every connection, existing and new, until Unblock;
	// nothing is lost or closed.
	Stall()
	// Unblock ends a Block or a Stall.
	Unblock()
}

// A testCase is one behaviour the suite checks.
type testCase struct {
	name  string
	doc   string                                   // what a user relies on, in one line
	needs func(carrot.Capabilities) (string, bool) // the capability it needs, and whether the backend has it
	run   func(e *env)
}

// Run runs every conformance subtest against the broker h opens, and logs how many ran,
// passed and were skipped.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("conformance: Harness.Open is nil")
	}
	if h.OpenFaulty == nil {
		t.Fatal("conformance: Harness.OpenFaulty is nil: the Recover subtests need a way to break the connection (see Proxy)")
	}
	if h.URL == "" {
		t.Fatal("conformance: Harness.URL is empty: the Hostile subtests open variants of it")
	}
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(t.Context(), h.Timeout)
	admin, err := h.Open(ctx) // for cleaning up after each subtest
	cancel()
	if err != nil {
		t.Fatalf("conformance: open: %v", err)
	}
	defer admin.Close()

	run := &runner{h: h, admin: admin, caps: admin.Capabilities(), id: randomID()}
	for _, c := range allCases() {
		run.run(goT{t}, c)
	}
	t.Logf("conformance: %d subtests run: %d passed, %d failed, %d skipped by capability%s",
		run.total.Load(), run.total.Load()-run.failed.Load()-run.skipped.Load(), run.failed.Load(), run.skipped.Load(), run.skippedList())
}

// allCases returns every behaviour of the suite, in the order they run.
func allCases() []testCase {
	return slices.Concat(cases(), queueTypeCases(), handlerCases(), delayCases(), retryCases(), ackCases(), recoverCases())
}

type runner struct {
	h       Harness
	admin   *carrot.Conn
	caps    carrot.Capabilities
	id      string // unique to this run, in every name it declares
	seq     atomic.Int64
	total   atomic.Int64
	failed  atomic.Int64
	skipped atomic.Int64
	skips   []string
}

func (r *runner) skippedList() string {
	if len(r.skips) == 0 {
		return ""
	}
	return " (" + strings.Join(r.skips, "; ") + ")"
}

// run runs one case as a subtest, counting it.
func (r *runner) run(t tb, c testCase) bool {
	return t.run(c.name, func(t tb) {
		r.total.Add(1)
		if c.needs != nil {
			if capability, ok := c.needs(r.caps); !ok {
				r.skipped.Add(1)
				r.skips = append(r.skips, c.name+": "+capability)
				t.Skipf("the backend does not report the %s capability", capability)
			}
		}
		t.Log(c.doc)
		e := r.env(t)
		defer func() {
			if t.Failed() {
				r.failed.Add(1)
			}
		}()
		c.run(e)
	})
}

// env is what a subtest works with: a connection of its own and helpers that fail the
// test on error.
type env struct {
	t      tb
	r      *runner
	ctx    context.Context // ends after the harness timeout
	conn   *carrot.Conn
	caps   carrot.Capabilities
	prefix string
}

func (r *runner) env(t tb) *env {
	ctx, cancel := context.WithTimeout(t.Context(), r.h.Timeout)
	t.Cleanup(cancel)
	e := &env{t: t, r: r, ctx: ctx, caps: r.caps}
	e.prefix = fmt.Sprintf("carrot-test.%s.%d", r.id, r.seq.Add(1))
	e.conn = e.open()
	return e
}

// sub runs a nested subtest with an env of its own, counting it.
func (e *env) sub(name string, f func(e *env)) {
	e.t.run(name, func(t tb) {
		e.r.total.Add(1)
		defer func() {
			if t.Failed() {
				e.r.failed.Add(1)
			}
		}()
		f(e.r.env(t))
	})
}

func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// name returns a name unique to this subtest.
func (e *env) name(s string) string { return e.prefix + "." + s }

// faulty opens a connection through the harness's Breaker, closed when the subtest ends,
// after the Breaker is unblocked.
func (e *env) faulty() (*carrot.Conn, Breaker) {
	e.t.Helper()
	conn, b, err := e.r.h.OpenFaulty(e.ctx)
	if err != nil {
		e.t.Fatalf("open faulty: %v", err)
	}
	e.t.Cleanup(func() {
		b.Unblock()
		conn.Close()
		if c, ok := b.(io.Closer); ok {
			c.Close()
		}
	})
	return conn, b
}

// open opens another connection to the broker, closed when the subtest ends.
func (e *env) open() *carrot.Conn {
	e.t.Helper()
	conn, err := e.r.h.Open(e.ctx)
	if err != nil {
		e.t.Fatalf("open: %v", err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// exchange declares an exchange, deleted when the subtest ends.
func (e *env) exchange(kind carrot.ExchangeKind, name string) string {
	e.t.Helper()
	name = e.name(name)
	if err := e.conn.DeclareExchange(e.ctx, carrot.Exchange{Name: name, Kind: kind}); err != nil {
		e.t.Fatalf("declare %s exchange: %v", kind, err)
	}
	e.deleteExchangeLater(name)
	return name
}

// queue declares q (with its exchange and bindings) under a unique name, deleted when the
// subtest ends; q.Name is the suffix of that name. It returns the full name.
func (e *env) queue(q carrot.Queue) string {
	e.t.Helper()
	return e.queueOn(e.conn, q)
}

func (e *env) queueOn(conn *carrot.Conn, q carrot.Queue) string {
	e.t.Helper()
	q.Name = e.name(q.Name)
	q = e.typed(q)
	if q.Exchange.Name != "" {
		e.deleteExchangeLater(q.Exchange.Name)
	}
	name, err := conn.DeclareQueue(e.ctx, q)
	if err != nil {
		e.t.Fatalf("declare queue: %v", err)
	}
	e.deleteQueueLater(name)
	return name
}

// typed returns q of the harness's QueueType, if it can be one: see [Harness].
func (e *env) typed(q carrot.Queue) carrot.Queue {
	if t := e.r.h.QueueType; t != "" && q.Type == "" && !q.Transient && !q.Exclusive && !q.AutoDelete && q.MaxPriority == 0 && !q.SingleActiveConsumer {
		q.Type = t
	}
	return q
}

// deleteQueueLater deletes a queue when the subtest ends.
func (e *env) deleteQueueLater(name string) {
	e.t.Cleanup(func() {
		e.cleanup(func(c *carrot.Conn, ctx context.Context) error { return c.DeleteQueue(ctx, name) })
	})
}

// deleteExchangeLater deletes an exchange when the subtest ends.
func (e *env) deleteExchangeLater(name string) {
	e.t.Cleanup(func() {
		e.cleanup(func(c *carrot.Conn, ctx context.Context) error { return c.DeleteExchange(ctx, name) })
	})
}

// cleanup deletes something on the run's own connection: the subtest's may be closed. An
// exclusive queue cannot be deleted there, but goes when the subtest's connection closes.
func (e *env) cleanup(f func(c *carrot.Conn, ctx context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), e.r.h.Timeout)
	defer cancel()
	if err := f(e.r.admin, ctx); err != nil && !errors.Is(err, carrot.ErrInUse) {
		e.t.Errorf("cleanup: %v", err)
	}
}

// publisher returns a publisher on the subtest's connection.
func (e *env) publisher(opts carrot.PublisherOptions) *carrot.Publisher {
	e.t.Helper()
	return e.publisherOn(e.conn, opts)
}

// publisherOn returns a publisher on conn, closed when the subtest ends.
func (e *env) publisherOn(conn *carrot.Conn, opts carrot.PublisherOptions) *carrot.Publisher {
	e.t.Helper()
	p, err := conn.NewPublisher(opts)
	if err != nil {
		e.t.Fatalf("new publisher: %v", err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

// publish publishes a message with body to exchange with key.
func (e *env) publish(exchange, key string, body string) {
	e.t.Helper()
	e.publishMessage(exchange, &carrot.Message{RoutingKey: key, Body: []byte(body)})
}

func (e *env) publishMessage(exchange string, m *carrot.Message) {
	e.t.Helper()
	p, err := e.conn.NewPublisher(carrot.PublisherOptions{Exchange: exchange})
	if err != nil {
		e.t.Fatalf("new publisher: %v", err)
	}
	defer p.Close()
	if err := p.Publish(e.ctx, m); err != nil {
		e.t.Fatalf("publish to %q with key %q: %v", exchange, m.RoutingKey, err)
	}
}

// consumer returns a consumer of existing queues on conn.
func (e *env) consumerOn(conn *carrot.Conn, opts carrot.ConsumerOptions, queues ...string) *carrot.Consumer {
	e.t.Helper()
	for _, q := range queues {
		opts.Queues = append(opts.Queues, carrot.Queue{Name: q, Passive: true})
	}
	c, err := conn.NewConsumer(e.ctx, opts)
	if err != nil {
		e.t.Fatalf("new consumer: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) consumer(queues ...string) *carrot.Consumer {
	e.t.Helper()
	return e.consumerOn(e.conn, carrot.ConsumerOptions{}, queues...)
}

// fetch fetches one message from queue, failing if there is none.
func (e *env) fetch(queue string) *carrot.Message {
	e.t.Helper()
	return e.fetchFrom(e.consumer(queue))
}

func (e *env) fetchFrom(c *carrot.Consumer) *carrot.Message {
	e.t.Helper()
	m, err := c.Fetch(e.ctx)
	if err != nil {
		e.t.Fatalf("fetch: %v", err)
	}
	return m
}

// fetchBody fetches one message, acks it and returns its body.
func (e *env) fetchBody(queue string) string {
	e.t.Helper()
	m := e.fetch(queue)
	e.ack(m)
	return string(m.Body)
}

// expectEmpty checks that queue has no message waiting.
func (e *env) expectEmpty(queue string) {
	e.t.Helper()
	m, err := e.consumer(queue).Fetch(e.ctx)
	if !errors.Is(err, carrot.ErrEmpty) {
		body := ""
		if m != nil {
			body = string(m.Body)
		}
		e.t.Fatalf("fetch from a queue that should be empty: got message %q, error %v; want ErrEmpty", body, err)
	}
}

// expectRedelivered fetches the messages with bodies want, in order, checks that each is
// flagged redelivered, and acks it.
//
// The messages may come in any order: where messages returned to a queue go is the
// queue's (back to their places in most, behind the others in RabbitMQ 3's quorum queues).
func (e *env) expectRedelivered(queue string, want ...string) {
	e.t.Helper()
	left := slices.Clone(want)
	for range want {
		m := e.fetch(queue)
		i := slices.Index(left, string(m.Body))
		if i < 0 || !m.Redelivered() {
			e.t.Errorf("got %q (redelivered %v), want one of %q redelivered", m.Body, m.Redelivered(), left)
		} else {
			left = slices.Delete(left, i, i+1)
		}
		e.ack(m)
	}
}

func (e *env) ack(m *carrot.Message) {
	e.t.Helper()
	if err := m.Ack(e.ctx); err != nil {
		e.t.Fatalf("ack: %v", err)
	}
}

// holding starts a consumer of queue, with prefetch (the backend's default when 0), whose
// handler hands each message on held, unsettled: in flight until the test settles it.
// held has room for n messages.
func (e *env) holding(queue string, prefetch, n int) (held <-chan *carrot.Message, c *carrot.Consumer, r *running) {
	ch := make(chan *carrot.Message, n)
	c = e.consumerOn(e.conn, carrot.ConsumerOptions{Prefetch: prefetch, Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		ch <- m
		return nil
	})}, queue)
	return ch, c, e.start(c)
}

// running is a consumer's Run in progress.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs c.Run in a goroutine until stop is called.
func (e *env) start(c *carrot.Consumer) *running {
	ctx, cancel := context.WithCancel(e.ctx)
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { r.cancel(); <-r.done })
	return r
}

// stop cancels the Run and checks that it returned the context's error.
func (e *env) stop(r *running) {
	e.t.Helper()
	r.cancel()
	if err := e.wait(r.done); err != context.Canceled {
		e.t.Errorf("Run returned %v after its context was canceled, want context.Canceled", err)
	}
	r.done <- nil // for the cleanup
}

// wait receives from ch, failing the subtest if the harness timeout passes first.
func wait[T any](e *env, ch <-chan T) T {
	e.t.Helper()
	select {
	case v := <-ch:
		return v
	case <-e.ctx.Done():
		var zero T
		e.t.Fatalf("timed out after %v", e.r.h.Timeout)
		return zero
	}
}

func (e *env) wait(ch <-chan error) error {
	e.t.Helper()
	return wait(e, ch)
}

// eventually polls cond until it holds, failing the subtest if the harness timeout passes
// first. It is for state the broker changes on its own time, such as deleting a queue
// after its connection closed; it never asserts that something did not happen.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-e.ctx.Done():
			e.t.Fatalf("timed out after %v waiting until %s", e.r.h.Timeout, what)
		}
	}
}
