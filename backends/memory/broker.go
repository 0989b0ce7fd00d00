package memory

import (
	"bytes"
	"cmp"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/route"
)

// broker is one in-process broker: its exchanges, queues and messages. One mutex guards
// all of it; nothing in it blocks while holding the mutex.
type broker struct {
	mu        sync.Mutex
	exchanges map[string]*exchange
	queues    map[string]*queue
	seq       uint64        // orders entries, so requeued messages go back in their original order
	room      chan struct{} // closed when a queue holds fewer messages, if publishers wait
	routed    []*queue      // route's result for a publish, reused
	blocks    blockPool     // the blocks of the queues' deques, reused
}

// epoch is the origin of the broker's clock, on the monotonic clock.
var epoch = time.Now()

// clock reads the time for one operation of the broker once, and only if it needs it:
// most messages have no time to live.
type clock struct {
	t    time.Duration
	read bool
}

// now returns the time since epoch.
func (c *clock) now() time.Duration {
	if !c.read {
		c.t, c.read = time.Since(epoch), true
	}
	return c.t
}

// full reports whether one of qs, without a max length, holds max ready messages or more;
// max < 0 is no limit. The caller holds b.mu.
func (b *broker) full(qs []*queue, max int) bool {
	if max < 0 {
		return false
	}
	for _, q := range qs {
		if q.def.MaxLength == 0 && q.ready() >= max {
			return true
		}
	}
	return false
}

// roomSignal returns a channel closed when a queue next holds fewer messages. The caller
// holds b.mu.
func (b *broker) roomSignal() <-chan struct{} {
	if b.room == nil {
		b.room = make(chan struct{})
	}
	return b.room
}

// freed wakes the publishers waiting for room. The caller holds b.mu.
func (b *broker) freed() {
	if b.room != nil {
		close(b.room)
		b.room = nil
	}
}

// The exchanges every broker starts with, as in RabbitMQ.
var builtinExchanges = []backend.Exchange{
	{Name: "amq.direct", Kind: backend.Direct, Durable: true},
	{Name: "amq.fanout", Kind: backend.Fanout, Durable: true},
	{Name: "amq.topic", Kind: backend.Topic, Durable: true},
}

func newBroker() *broker {
	b := &broker{exchanges: make(map[string]*exchange), queues: make(map[string]*queue)}
	for _, x := range builtinExchanges {
		b.exchanges[x.Name] = newExchange(x)
	}
	return b
}

type exchange struct {
	def    backend.Exchange
	routes route.Exchange[*queue] // its bindings
}

func newExchange(def backend.Exchange) *exchange {
	return &exchange{def: def, routes: route.Exchange[*queue]{Kind: def.Kind}}
}

type queue struct {
	def         backend.Queue
	levels      []deque // one per priority level, the highest last
	owner       *Conn   // of an exclusive queue
	consumers   int
	hadConsumer bool
	deleted     atomic.Bool     // set under the broker's mutex, read without it by Receive
	waiters     []*subscription // waiting in Receive for the queue to change
	timer       *time.Timer     // fires when the message at a head expires

	// For InspectQueue:
	subs    map[*subscription]struct{} // its open subscriptions
	fetched int                        // messages got without auto-ack and not settled
}

// forget drops the references of an entry that left the broker to what may be large:
// its body and headers.
func (e *entry) forget() {
	e.msg.Body, e.msg.Headers, e.buf = nil, nil, nil
}

// entry is a message in a queue, or delivered from it and not yet settled.
type entry struct {
	msg         backend.Message // Body and Headers are the broker's own copies, never modified
	buf         *buffer         // holds msg.Body, to release on ack; nil if not pooled
	shared      bool            // buf is shared with the entries of other queues
	exchange    string
	seq         uint64
	expires     time.Duration // when it expires, since epoch; 0 for never
	deadFrom    []string      // queues that dead-lettered it for expiry or overflow, to break cycles
	deliveries  int32
	level       uint8 // priority level
	redelivered bool
}

func (b *broker) newQueue(def backend.Queue, owner *Conn) *queue {
	q := &queue{def: def, levels: make([]deque, int(def.MaxPriority)+1)}
	for i := range q.levels {
		q.levels[i].pool = &b.blocks
	}
	if def.Exclusive {
		q.owner = owner
	}
	return q
}

// signal wakes every Receive waiting on the queue. The caller holds the broker's mutex.
func (q *queue) signal() {
	for i, s := range q.waiters {
		s.listed = false
		s.wakeUp()
		q.waiters[i] = nil
	}
	q.waiters = q.waiters[:0]
}

// unlist removes s from the subscriptions waiting on the queue.
func (q *queue) unlist(s *subscription) {
	if s.listed {
		s.listed = false
		q.waiters = slices.DeleteFunc(q.waiters, func(w *subscription) bool { return w == s })
	}
}

func (q *queue) ready() int {
	n := 0
	for i := range q.levels {
		n += q.levels[i].len()
	}
	return n
}

// usableBy reports whether c may use the queue: anyone may, unless it is exclusive to
// another connection.
func (q *queue) usableBy(c *Conn) error {
	if q.owner != nil && q.owner != c {
		return backend.Errorf(backend.InUse, "queue %q is exclusive to another connection", q.def.Name)
	}
	return nil
}

// route appends to qs the queues a message published to exchange with key goes to, each
// once.
func (b *broker) route(qs []*queue, exchangeName, key string) ([]*queue, error) {
	if exchangeName == "" {
		if q := b.queues[key]; q != nil {
			return append(qs, q), nil
		}
		return qs, nil
	}
	x := b.exchanges[exchangeName]
	if x == nil {
		return qs, backend.Errorf(backend.NotFound, "exchange %q not found", exchangeName)
	}
	return x.routes.Route(qs, key), nil
}

// delay enqueues a message in the queues qs, all at once, once d has passed, but in those
// deleted by then. The caller holds b.mu.
func (b *broker) delay(qs []*queue, msg backend.Message, exchange string, d time.Duration) {
	time.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		var clk clock
		for _, q := range qs {
			if !q.deleted.Load() {
				b.enqueue(q, &entry{msg: msg, exchange: exchange}, &clk)
			}
		}
	})
}

// enqueue appends a copy of e to the back of q, then enforces its max length.
func (b *broker) enqueue(q *queue, e *entry, clk *clock) {
	b.seq++
	e.seq = b.seq
	ttl := e.msg.Expiration
	if q.def.MessageTTL > 0 && (ttl == 0 || q.def.MessageTTL < ttl) {
		ttl = q.def.MessageTTL
	}
	if ttl > 0 {
		e.expires = clk.now() + ttl
	}
	e.level = uint8(min(int(e.msg.Priority), len(q.levels)-1))
	q.levels[e.level].pushBack(e)
	for q.def.MaxLength > 0 && q.ready() > q.def.MaxLength {
		// Drop from the head, the lowest priority first, as RabbitMQ's default overflow does.
		for i := range q.levels {
			var dropped entry
			if q.levels[i].popFront(&dropped) {
				b.deadLetter(q, &dropped, "maxlen", clk)
				break
			}
		}
	}
	b.scheduleExpiry(q, clk)
	q.signal()
}

// requeue puts entries taken from q back at its head in their original order. The
// caller flags those that were delivered as redelivered.
func (b *broker) requeue(q *queue, es []entry, clk *clock) {
	if q.deleted.Load() {
		return
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(b.seq, a.seq) })
	for i := range es { // the latest first, so the earliest ends up at the head
		q.levels[es[i].level].pushFront(&es[i])
	}
	b.scheduleExpiry(q, clk)
	q.signal()
}

// pop removes the next live message from q into e, highest priority first,
// dead-lettering the expired ones it finds at the heads. It reports whether q had one.
func (b *broker) pop(q *queue, clk *clock, e *entry) bool {
	b.expire(q, clk)
	for i := len(q.levels) - 1; i >= 0; i-- {
		if q.levels[i].popFront(e) {
			e.deliveries++
			b.freed()
			return true
		}
	}
	return false
}

// expire dead-letters the expired messages at the heads of q; as in RabbitMQ, a message
// behind a live one waits until it reaches the head.
func (b *broker) expire(q *queue, clk *clock) {
	for i := range q.levels {
		l := &q.levels[i]
		for e := l.front(); e != nil && e.expires != 0 && clk.now() >= e.expires; e = l.front() {
			var expired entry
			l.popFront(&expired)
			b.deadLetter(q, &expired, "expired", clk)
			b.freed()
		}
	}
}

// scheduleExpiry arms q's timer for the earliest expiry among the heads of its levels, so
// that expired messages are dead-lettered even when nobody reads the queue.
func (b *broker) scheduleExpiry(q *queue, clk *clock) {
	var next time.Duration
	for i := range q.levels {
		if e := q.levels[i].front(); e != nil && e.expires != 0 && (next == 0 || e.expires < next) {
			next = e.expires
		}
	}
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	if next == 0 || q.deleted.Load() {
		return
	}
	q.timer = time.AfterFunc(next-clk.now(), func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if q.deleted.Load() {
			return
		}
		var clk clock
		b.expire(q, &clk)
		b.scheduleExpiry(q, &clk)
	})
}

// deadLetter sends an entry that left q for reason ("rejected", "expired" or "maxlen") to
// q's dead-letter exchange, or drops it if q has none. A message that would expire or
// overflow out of the same queue twice is dropped, as RabbitMQ drops dead-letter cycles.
func (b *broker) deadLetter(q *queue, e *entry, reason string, clk *clock) {
	dlx := q.def.DeadLetterExchange
	if dlx == "" {
		return
	}
	if reason != "rejected" {
		if slices.Contains(e.deadFrom, q.def.Name) {
			return
		}
	}
	key := q.def.DeadLetterRoutingKey
	if key == "" {
		key = e.msg.RoutingKey
	}
	targets, err := b.route(nil, dlx, key)
	if err != nil {
		return // a missing dead-letter exchange drops the message, as in RabbitMQ
	}
	msg := e.msg
	msg.RoutingKey = key
	msg.Expiration = 0 // RabbitMQ drops the expiration of dead-lettered messages
	deadFrom := e.deadFrom
	if reason != "rejected" {
		deadFrom = append(slices.Clip(deadFrom), q.def.Name)
	}
	for _, t := range targets {
		b.enqueue(t, &entry{msg: msg, exchange: dlx, deadFrom: deadFrom}, clk)
	}
}

// deleteQueue removes q with its bindings and messages.
func (b *broker) deleteQueue(q *queue) {
	if q.deleted.Load() {
		return
	}
	q.deleted.Store(true)
	delete(b.queues, q.def.Name)
	for _, x := range b.exchanges {
		if x.routes.UnbindQueue(q) {
			b.autoDeleteExchange(x)
		}
	}
	for i := range q.levels {
		q.levels[i].clear()
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.signal()
	b.freed()
}

// autoDeleteExchange deletes an auto-delete exchange that lost its last binding.
func (b *broker) autoDeleteExchange(x *exchange) {
	if x.def.AutoDelete && x.routes.Len() == 0 {
		delete(b.exchanges, x.def.Name)
	}
}

// copyHeaders returns a copy of h, nil if h is nil: the broker, the publisher and each
// consumer have their own, so that none sees the others' changes.
func copyHeaders(h map[string]any) map[string]any {
	if h == nil {
		return nil
	}
	c := make(map[string]any, len(h))
	for k, v := range h {
		c[k] = copyValue(v)
	}
	return c
}

// copyValue returns a copy of a header value: byte slices, tables and lists are copied,
// all the way down.
func copyValue(v any) any {
	switch v := v.(type) {
	case []byte:
		return bytes.Clone(v)
	case map[string]any:
		return copyHeaders(v)
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = copyValue(e)
		}
		return c
	}
	return v
}

// sameArgs compares declaration arguments, treating nil and empty as equal.
func sameArgs(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return maps.EqualFunc(a, b, func(x, y any) bool { return reflect.DeepEqual(x, y) })
}

// reserved reports whether a name is reserved for the broker, as RabbitMQ reserves "amq.".
func reserved(name string) bool { return strings.HasPrefix(name, "amq.") }
