package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
)

// take runs scriptTake for consumer and parses what it returns. When ctx ends before the
// answer comes, the script may still run (a stalled network delivers it later), taking
// messages nobody would hand out until the visibility timeout: the take is abandoned.
func (c *Conn) take(ctx context.Context, queue, consumer string, count int, noAck, fresh bool, cursor string) (string, []entry, error) {
	s, q := c.stream(queue)
	token := strconv.FormatUint(c.takeSeq.Add(1), 36)
	args := append([]any{consumer, count, c.opts.VisibilityTimeout.Milliseconds(), flag(noAck), cursor, flag(fresh), token}, c.forgotten(consumer)...)
	var res any
	err := c.try(ctx, func() error {
		var err error
		res, err = scriptTake.Run(ctx, c.rdb, []string{s, q, c.versionKey, c.takesKey(consumer)}, args...).Result()
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			c.abandon(queue, consumer, token)
		}
		return cursor, nil, err
	}
	top, ok := res.([]any)
	if !ok || len(top) != 2 {
		return cursor, nil, errors.New("carrot/redis: unexpected reply taking messages")
	}
	next, _ := top[0].(string)
	list, _ := top[1].([]any)
	entries := make([]entry, 0, len(list))
	for _, v := range list {
		e, _ := v.([]any)
		if len(e) != 4 {
			return next, nil, errors.New("carrot/redis: unexpected reply taking messages")
		}
		id, _ := e[0].(string)
		count, _ := e[2].(int64)
		expired, _ := e[3].(int64)
		entries = append(entries, entry{id: id, fields: fieldMap(e[1]), count: int(count), expired: expired == 1})
	}
	if len(entries) > 0 && !noAck {
		c.forget(consumer, token) // the script recorded them
	}
	return next, entries, nil
}

// fieldMap turns a flat list of names and values into a map.
func fieldMap(v any) map[string]any {
	list, _ := v.([]any)
	m := make(map[string]any, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		m[k] = list[i+1]
	}
	return m
}

// takesKey is the key of the hash in which consumer's takes record what they took.
func (c *Conn) takesKey(consumer string) string { return c.prefix + "takes:" + consumer }

// forget notes that the answer of consumer's take token came: its record goes with the
// consumer's next take.
func (c *Conn) forget(consumer, token string) {
	c.takesMu.Lock()
	defer c.takesMu.Unlock()
	if c.answered == nil {
		c.answered = make(map[string][]any)
	}
	c.answered[consumer] = append(c.answered[consumer], token)
}

// forgotten returns, and clears, the tokens of consumer's takes whose answer came.
func (c *Conn) forgotten(consumer string) []any {
	c.takesMu.Lock()
	defer c.takesMu.Unlock()
	tokens := c.answered[consumer]
	delete(c.answered, consumer)
	return tokens
}

// abandon undoes, in the background, consumer's take token, whose answer ctx did not wait
// for: what it took, if it ran, goes back to the queue (a take with noack has deleted it),
// and if it has not run yet, it will take nothing. Should that fail, what it took comes
// again after the visibility timeout.
func (c *Conn) abandon(queue, consumer, token string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.VisibilityTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		var ids []string
		err := c.try(ctx, func() error {
			var err error
			ids, err = scriptAbandon.Run(ctx, c.rdb, []string{c.takesKey(consumer)}, token, 2*c.opts.VisibilityTimeout.Milliseconds()).StringSlice()
			return err
		})
		if err == nil {
			c.release(ctx, queue, consumer, ids)
		}
	}()
}

// Get takes one message without waiting: a requeued one first, then one a dead consumer
// held past the visibility timeout, then a new one. An expired message met on the way is
// dead-lettered or dropped.
func (c *Conn) Get(ctx context.Context, queue string, autoAck bool) (*backend.Delivery, error) {
	for {
		if err := c.gone(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		cursor := c.getCur
		if c.getQueues != nil {
			c.getQueues[queue] = true
		}
		c.mu.Unlock()
		next, entries, err := c.take(ctx, queue, c.getConsumer(), 1, autoAck, true, cursor)
		c.mu.Lock()
		c.getCur = next
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			return nil, nil
		}
		e := entries[0]
		if e.expired {
			c.expire(ctx, queue, c.getConsumer(), &e)
			continue
		}
		var s *settler
		if !autoAck {
			c.mu.Lock()
			if c.gets == nil { // closed meanwhile
				c.mu.Unlock()
				c.release(ctx, queue, c.getConsumer(), []string{e.id})
				return nil, c.gone()
			}
			c.gets[e.id] = hold{queue: queue}
			c.mu.Unlock()
			s = &settler{c: c, queue: queue, id: e.id, fields: e.fields, consumer: c.getConsumer()}
		}
		return c.delivery(&e, s)
	}
}

// delivered is a delivery with its settler and raw entry, in one allocation.
type delivered struct {
	d   backend.Delivery
	st  settler
	raw goredis.XMessage
}

// delivery converts an entry; st, when not nil, is copied in as its settler.
func (c *Conn) delivery(e *entry, st *settler) (*backend.Delivery, error) {
	m, exchange, err := e.message()
	if err != nil {
		return nil, err
	}
	x := &delivered{raw: goredis.XMessage{ID: e.id, Values: e.fields}}
	x.d = backend.Delivery{
		Message:       m,
		Exchange:      exchange,
		Redelivered:   e.count > 1,
		DeliveryCount: e.count,
		Raw:           &x.raw,
	}
	if st != nil {
		x.st = *st
		x.d.Settler = &x.st
	}
	return &x.d, nil
}

// expire dead-letters (or drops) an expired message the consumer holds.
func (c *Conn) expire(ctx context.Context, queue, consumer string, e *entry) {
	if err := c.deadLetter(ctx, queue, consumer, e.id, e.fields); err != nil && !errors.Is(err, errLost) {
		c.logFailure("carrot/redis: could not dead-letter an expired message; it will be retried after the visibility timeout",
			err, slog.String("queue", queue), slog.String("id", e.id))
	}
}

var errLost = backend.Errorf(backend.Unavailable, "carrot/redis: another consumer took the message after the visibility timeout")

// deadLetter moves a message the consumer holds to the queues its queue's dead-letter
// exchange routes it to, or drops it if the queue has none.
func (c *Conn) deadLetter(ctx context.Context, queue, consumer, id string, f map[string]any) error {
	stream, _ := c.stream(queue)
	var stale *snapshot
	for attempt := 0; attempt < 100; attempt++ {
		snap := c.topo.Load()
		if snap == nil || snap == stale {
			var err error
			if snap, err = c.reload(ctx, stale); err != nil {
				return err
			}
		}
		var targets []string
		var dl map[string]any
		if q := snap.queues[queue]; q != nil && q.dlx != "" {
			key := q.dlk
			if key == "" {
				key = str(f, "k")
			}
			targets, _ = snap.route(q.dlx, key) // a missing exchange drops the message, as RabbitMQ does
			dl = make(map[string]any, len(f))
			for k, v := range f {
				dl[k] = v
			}
			delete(dl, "exp")
			delete(dl, "e") // RabbitMQ drops the expiration of dead-lettered messages
			dl["x"], dl["k"] = q.dlx, key
		}
		args := []any{snap.version, c.prefix, consumer, id, len(targets)}
		for _, t := range targets {
			args = append(args, t, snap.ttl(t, 0).Milliseconds())
		}
		for k, v := range dl {
			args = append(args, k, v)
		}
		var res string
		err := c.try(ctx, func() error {
			var err error
			res, err = c.run(ctx, scriptDeadLetter, []string{c.versionKey, stream}, args...).Text()
			return err
		})
		switch {
		case err != nil:
			return err
		case res == "STALE":
			stale = snap
			continue
		case res == "LOST":
			return errLost
		}
		return nil
	}
	return backend.Errorf(backend.Unavailable, "carrot/redis: the topology keeps changing under the dead-lettering")
}

// release hands messages back to their queue, to be delivered again first.
func (c *Conn) release(ctx context.Context, queue, consumer string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	stream, _ := c.stream(queue)
	args := make([]any, 0, len(ids)+1)
	args = append(args, consumer)
	for _, id := range ids {
		args = append(args, id)
	}
	var lost []string
	err := c.try(ctx, func() error {
		var err error
		lost, err = c.run(ctx, scriptRelease, []string{stream}, args...).StringSlice()
		return err
	})
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		return errLost
	}
	return nil
}

// Consume subscribes a consumer of its own to the queue, with a network connection of its
// own for its blocking reads.
func (c *Conn) Consume(ctx context.Context, opts backend.ConsumeOptions) (backend.Subscription, error) {
	if opts.Prefetch == 0 {
		opts.Prefetch = c.opts.Prefetch
	}
	stream, q := c.stream(opts.Queue)
	var n int64
	err := c.try(ctx, func() error {
		var err error
		n, err = c.rdb.Exists(ctx, q).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, backend.Errorf(backend.NotFound, "carrot/redis: queue %q not found", opts.Queue)
	}
	var r *reader
	err = c.try(ctx, func() error {
		var err error
		r, err = c.newReader(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &subscription{
		c:        c,
		opts:     opts,
		stream:   stream,
		reader:   r,
		consumer: fmt.Sprintf("%s:%d", c.id, subSeq.Add(1)),
		cursor:   "0-0",
		inflight: make(map[string]hold),
		settled:  make(chan struct{}, 1),
	}
	s.needTake.Store(true)
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	return s, nil
}

// reader is a network connection of a subscription's own for its blocking reads, which
// Receive cuts short with CLIENT UNBLOCK when its context ends.
type reader struct {
	conn *goredis.Conn
	id   int64           // the connection's CLIENT ID
	node *goredis.Client // the node it is on
}

// newReader takes a network connection to the master that holds the namespace.
func (c *Conn) newReader(ctx context.Context) (*reader, error) {
	node, err := c.master(ctx)
	if err != nil {
		return nil, err
	}
	conn := node.Conn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &reader{conn: conn, id: id, node: node}, nil
}

// unblock cuts short the read of the reader's connection, when Redis has it blocked, and
// until done is closed: a read canceled just as it is sent reaches Redis after a first
// CLIENT UNBLOCK, and would otherwise wait for the whole block time.
func (r *reader) unblock(done <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for {
		if n, err := r.node.ClientUnblock(ctx, r.id).Result(); n == 1 || err != nil {
			return
		}
		select {
		case <-done:
			return
		case <-time.After(unblockRetry):
		}
	}
}

// unblockRetry is how often unblock tries again while the read has not reached Redis.
const unblockRetry = 5 * time.Millisecond

var subSeq atomic.Uint64

// subscription is a consumer of one queue: a consumer of the queue's group, named after
// the connection.
type subscription struct {
	c        *Conn
	opts     backend.ConsumeOptions
	stream   string
	reader   *reader
	consumer string
	cursor   string
	buf      []entry
	needTake atomic.Bool // a requeued message may be waiting: look before reading new ones
	lastTake time.Time   // when Receive last looked for requeued and abandoned messages

	mu        sync.Mutex
	inflight  map[string]hold // delivered, not settled
	acks      []string        // acked, to be sent with the next read
	ackedAt   atomic.Int64    // when the first of acks was made, Unix ns; 0 for none
	settled   chan struct{}   // a settle made room under the prefetch limit
	closed    atomic.Bool
	givenBack atomic.Bool // by the Conn's Close, which found the subscription open
}

// room returns how many more messages the subscription may take.
func (s *subscription) room() int {
	if s.opts.AutoAck {
		return s.opts.Prefetch - len(s.buf)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Prefetch - len(s.inflight) - len(s.buf)
}

// Receive returns the next message: from those already taken, else requeued and
// abandoned ones (when a nudge announced them, or the block time passed since the last
// look), else new ones, waiting up to the block time for them. New ones are read with a
// plain XREADGROUP, as a go-redis program would.
func (s *subscription) Receive(ctx context.Context) (*backend.Delivery, error) {
	c := s.c
	for {
		if len(s.buf) > 0 {
			if t := s.ackedAt.Load(); t != 0 && time.Since(time.Unix(0, t)) >= c.opts.Block {
				// Handing out what was read takes long: the acks go now, not with the
				// next read.
				if err := s.sendAcks(ctx); err != nil && !notReplicated(err) {
					return nil, err
				}
			}
			e := s.buf[0]
			s.buf[0] = entry{}
			s.buf = s.buf[1:]
			if e.expired {
				c.expire(ctx, s.opts.Queue, s.consumer, &e)
				continue
			}
			var st *settler
			if !s.opts.AutoAck {
				s.mu.Lock()
				s.inflight[e.id] = hold{queue: s.opts.Queue}
				s.mu.Unlock()
				st = &settler{c: c, sub: s, queue: s.opts.Queue, id: e.id, fields: e.fields, consumer: s.consumer}
			}
			return c.delivery(&e, st)
		}
		room := s.room()
		if room <= 0 {
			if err := s.awaitRoom(ctx); err != nil {
				return nil, err
			}
			continue
		}
		if s.needTake.Swap(false) || time.Since(s.lastTake) >= c.opts.Block {
			s.lastTake = time.Now()
			if err := s.sendAcks(ctx); err != nil && !notReplicated(err) {
				return nil, err
			}
			next, entries, err := c.take(ctx, s.opts.Queue, s.consumer, room, s.opts.AutoAck, false, s.cursor)
			s.cursor = next
			if err != nil {
				return nil, err
			}
			if len(entries) > 0 {
				s.buf = entries
				continue
			}
		}
		entries, err := s.read(ctx, room)
		s.buf = append(s.buf, entries...)
		if err != nil {
			return nil, err
		}
	}
}

// awaitRoom waits until a settle makes room under the prefetch limit. Acks that are
// still to be sent meanwhile (ones that too few replicas acknowledged, say) go on their
// own once they waited the block time, as when handing out messages takes long.
func (s *subscription) awaitRoom(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if t := s.ackedAt.Load(); t != 0 {
			timer.Reset(time.Until(time.Unix(0, t).Add(s.c.opts.Block)))
			due = timer.C
		}
		select {
		case <-s.settled:
			return nil
		case <-due:
			if err := s.sendAcks(ctx); err != nil && !notReplicated(err) {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendAcks acknowledges the messages acked since the last read, at once; scriptTake trims
// them off the stream later. Acks that fail go back to be sent with the next read, or on
// Close: those that too few replicas acknowledged too (a waitError), and the consumer goes
// on meanwhile.
func (s *subscription) sendAcks(ctx context.Context) error {
	s.mu.Lock()
	ids := s.acks
	s.acks = nil
	s.ackedAt.Store(0)
	s.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, 3+len(ids))
	args = append(args, "xack", s.stream, "carrot")
	for _, id := range ids {
		args = append(args, id)
	}
	err := s.c.try(ctx, func() error { return s.c.write(ctx, goredis.NewIntCmd(ctx, args...)) })
	if err != nil {
		s.mu.Lock()
		s.acks = append(ids, s.acks...) // try again with the next read, or on Close
		s.ackedAt.CompareAndSwap(0, time.Now().UnixNano())
		s.mu.Unlock()
	}
	return err
}

// read sends the acks accepted so far, then blocks on the stream until new messages come
// or the block time passes, in one round trip, as a go-redis program reading and acking
// batches does, and returns the messages. When ctx ends, the read is cut short. With
// Options.Wait, the acks go first, on their own: WAIT counts the writes of its own network
// connection, and the reader's would then block in its read.
func (s *subscription) read(ctx context.Context, room int) ([]entry, error) {
	c := s.c
	if err := c.gone(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var acks []string
	if c.opts.Wait > 0 {
		if err := s.sendAcks(ctx); err != nil && !notReplicated(err) {
			return nil, err
		}
	} else {
		s.mu.Lock()
		acks = s.acks
		s.acks = nil
		s.ackedAt.Store(0)
		s.mu.Unlock()
	}
	p := s.reader.conn.Pipeline()
	if len(acks) > 0 {
		p.XAck(ctx, s.stream, "carrot", acks...)
	}
	read := p.XReadGroup(ctx, &goredis.XReadGroupArgs{
		Group:    "carrot",
		Consumer: s.consumer,
		Streams:  []string{s.stream, ">"},
		Count:    int64(room),
		Block:    c.opts.Block,
		NoAck:    s.opts.AutoAck,
	})
	finished := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { s.reader.unblock(finished) })
	_, err := p.Exec(ctx)
	close(finished)
	stop()
	if len(acks) > 0 && err != nil && !errors.Is(err, goredis.Nil) {
		s.mu.Lock()
		s.acks = append(acks, s.acks...) // try again with the next read
		s.ackedAt.CompareAndSwap(0, time.Now().UnixNano())
		s.mu.Unlock()
	}
	res, err := read.Result()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, ctx.Err()
	case err != nil:
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		switch c.ErrorCode(err) {
		case backend.Unavailable:
			c.lose(err)
			return nil, c.gone()
		case backend.NotFound:
			if serr := c.checkState(ctx); serr != nil {
				return nil, serr
			}
			return nil, backend.Errorf(backend.NotFound, "carrot/redis: queue %q was deleted: %w", s.opts.Queue, err)
		}
		return nil, err
	}
	var entries []entry
	var expiring bool
	for _, st := range res {
		for _, m := range st.Messages {
			f := m.Values
			if str(f, "carrot") == "nudge" {
				c.ack(s.opts.Queue, m.ID)
				s.needTake.Store(true) // the requeued message it announces comes first
				continue
			}
			if s.opts.AutoAck {
				c.ack(s.opts.Queue, m.ID) // off the stream: the group already let it go
			}
			if str(f, "exp") != "" {
				expiring = true
			}
			entries = append(entries, entry{id: m.ID, fields: f, count: 1})
		}
	}
	if expiring {
		now, err := c.rdb.Time(ctx).Result()
		if err != nil {
			return entries, err
		}
		for i := range entries {
			if exp := str(entries[i].fields, "exp"); exp != "" {
				ms, _ := strconv.ParseInt(exp, 10, 64)
				entries[i].expired = ms <= now.UnixMilli()
			}
		}
	}
	return entries, nil
}

// Close acknowledges what was acked, hands the messages it holds back to the queue, and
// forgets the consumer. Of a lost connection, it leaves that to the Connector's next
// connection.
func (s *subscription) Close() error {
	s.closed.Store(true)
	c := s.c
	defer func() {
		s.reader.conn.Close()
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
		c.forgotten(s.consumer) // its takes hash expires on its own
	}()
	if s.givenBack.Load() {
		return nil // the Conn's Close gave back what it held
	}
	s.mu.Lock()
	held := len(s.inflight) > 0 || len(s.acks) > 0
	s.mu.Unlock()
	if c.Err() != nil && !c.closed.Load() { // lost
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		if held || len(s.buf) > 0 {
			c.k.adopt(orphan{s.stream, s.consumer})
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := s.sendAcks(ctx)
	s.mu.Lock()
	ids := make([]string, 0, len(s.inflight)+len(s.buf))
	for id, h := range s.inflight {
		if !h.lost {
			ids = append(ids, id)
		}
	}
	s.inflight = nil
	s.mu.Unlock()
	if !s.opts.AutoAck {
		for _, e := range s.buf { // taken, never delivered
			ids = append(ids, e.id)
		}
	}
	s.buf = nil
	if rerr := c.release(ctx, s.opts.Queue, s.consumer, ids); rerr != nil && !errors.Is(rerr, errLost) && err == nil {
		err = rerr
	}
	if err != nil {
		c.k.adopt(orphan{s.stream, s.consumer}) // what it still holds goes back with the next connection
		return err
	}
	c.rdb.XGroupDelConsumer(ctx, s.stream, "carrot", s.consumer) // it holds nothing now
	return nil
}

// giveBack sends the subscription's pending acks and releases the deliveries it holds
// unsettled, for a Conn that closes while the subscription is open. Messages read ahead
// and not yet delivered stay pending until their visibility timeout.
func (s *subscription) giveBack(ctx context.Context) error {
	err := s.sendAcks(ctx)
	s.mu.Lock()
	ids := make([]string, 0, len(s.inflight))
	for id, h := range s.inflight {
		if !h.lost {
			ids = append(ids, id)
		}
	}
	clear(s.inflight)
	s.mu.Unlock()
	if rerr := s.c.release(ctx, s.opts.Queue, s.consumer, ids); rerr != nil && !errors.Is(rerr, errLost) && err == nil {
		err = rerr
	}
	if err != nil {
		s.c.k.adopt(orphan{s.stream, s.consumer}) // what it still holds goes back with the next connection
		return err
	}
	s.givenBack.Store(true)
	return nil
}

// settler settles one delivery.
type settler struct {
	c        *Conn
	sub      *subscription // nil for gets
	queue    string
	id       string
	fields   map[string]any
	consumer string
}

// hold removes the delivery from those its holder keeps, and reports whether it was
// still held: not lost to another consumer, not given back on close. A consumer's
// delivery that is still held and acked joins the acks to send before the room it made
// is announced: the read that the room allows then carries the ack.
func (st *settler) hold(o backend.Outcome) (bool, error) {
	c := st.c
	if st.sub != nil {
		s := st.sub
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inflight == nil {
			return false, backend.Errorf(backend.Closed, "carrot/redis: the consumer closed; the message went back to queue %q", st.queue)
		}
		h, ok := s.inflight[st.id]
		delete(s.inflight, st.id)
		held := ok && !h.lost
		if held && o == backend.Ack {
			if len(s.acks) == 0 {
				s.ackedAt.Store(time.Now().UnixNano())
			}
			s.acks = append(s.acks, st.id)
		}
		select {
		case s.settled <- struct{}{}:
		default:
		}
		return held, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gets == nil {
		return false, errClosed
	}
	h, ok := c.gets[st.id]
	delete(c.gets, st.id)
	return ok && !h.lost, nil
}

// Settle acks asynchronously, in batches (a message whose ack is lost with the connection
// is delivered again after the visibility timeout), and requeues or rejects at once.
func (st *settler) Settle(ctx context.Context, o backend.Outcome) error {
	if err := st.c.gone(); err != nil {
		return err
	}
	held, err := st.hold(o)
	if err != nil {
		return err
	}
	if !held {
		return errLost
	}
	switch o {
	case backend.Ack:
		if st.sub != nil {
			return nil // hold queued it
		}
		return st.c.ack(st.queue, st.id)
	case backend.Requeue:
		if st.sub != nil {
			st.sub.needTake.Store(true)
		}
		return st.c.release(ctx, st.queue, st.consumer, []string{st.id})
	case backend.Reject:
		return st.c.deadLetter(ctx, st.queue, st.consumer, st.id, st.fields)
	}
	return backend.Errorf(backend.Invalid, "carrot/redis: unknown outcome %v", o)
}

// ackReq is an acknowledgement on its way, or, with flushed set, a request to be told
// when those queued before it are done, and their first error.
type ackReq struct {
	queue, id string
	flushed   chan error
}

// ack queues the acknowledgement of a message got with Get.
func (c *Conn) ack(queue, id string) error {
	select {
	case c.ackq <- ackReq{queue: queue, id: id}:
		return nil
	case <-c.ackDone:
		return errClosed
	}
}

// flushAcks waits until the acknowledgements queued so far are done, and returns the
// first error since the last flush.
func (c *Conn) flushAcks(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case c.ackq <- ackReq{flushed: done}:
	case <-c.ackDone:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ackLoop removes acknowledged messages from their queues, a batch at a time, until Close
// and the queue is empty.
func (c *Conn) ackLoop() {
	var failed error // the first failure since the last flush
	for {
		var first ackReq
		select {
		case first = <-c.ackq:
		case <-c.stop:
			for { // what is left
				select {
				case r := <-c.ackq:
					c.ackBatch([]ackReq{r}, &failed)
				default:
					return
				}
			}
		}
		batch := []ackReq{first}
	gather:
		for len(batch) < 1024 {
			select {
			case r := <-c.ackq:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		c.ackBatch(batch, &failed)
	}
}

func (c *Conn) ackBatch(batch []ackReq, failed *error) {
	byQueue := make(map[string][]any)
	var order []string
	for _, r := range batch {
		if r.flushed != nil {
			continue
		}
		if _, ok := byQueue[r.queue]; !ok {
			order = append(order, r.queue)
		}
		byQueue[r.queue] = append(byQueue[r.queue], r.id)
	}
	if len(order) > 0 {
		args := []any{c.prefix}
		for _, q := range order {
			args = append(args, q, len(byQueue[q]))
			args = append(args, byQueue[q]...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		err := c.run(ctx, scriptAck, []string{c.versionKey}, args...).Err()
		cancel()
		if err != nil {
			what := "carrot/redis: acknowledgements failed; the messages will be delivered again"
			if notReplicated(err) {
				what = "carrot/redis: acknowledgements made on the master only" // the error says what follows
			}
			c.logFailure(what, err)
			if *failed == nil {
				*failed = backend.Errorf(backend.Unavailable, "%s: %w", what, err)
			}
			if c.broken(err) {
				c.lose(err)
			}
		}
	}
	for _, r := range batch {
		if r.flushed != nil {
			r.flushed <- *failed
			*failed = nil
		}
	}
}

// ackTimeout bounds one batch of acknowledgements.
const ackTimeout = 10 * time.Second

// heartbeat restarts the visibility timeout of the messages this connection holds, a few
// times per timeout, so that a slow handler keeps its message; it marks those another
// consumer took meanwhile.
func (c *Conn) heartbeat() {
	tick := time.NewTicker(c.opts.VisibilityTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-c.Done():
			return
		case <-c.stop:
			return
		}
		type held struct {
			holds    map[string]hold
			mu       *sync.Mutex
			consumer string
		}
		var all []held
		c.mu.Lock()
		all = append(all, held{c.gets, &c.mu, c.getConsumer()})
		for s := range c.subs {
			all = append(all, held{s.inflight, &s.mu, s.consumer})
		}
		c.mu.Unlock()
		for _, h := range all {
			byQueue := make(map[string][]any)
			h.mu.Lock()
			for id, g := range h.holds {
				if !g.lost {
					byQueue[g.queue] = append(byQueue[g.queue], id)
				}
			}
			h.mu.Unlock()
			for q, ids := range byQueue {
				stream, _ := c.stream(q)
				ctx, cancel := context.WithTimeout(context.Background(), c.opts.VisibilityTimeout/3)
				lost, err := scriptExtend.Run(ctx, c.rdb, []string{stream}, append([]any{h.consumer}, ids...)...).StringSlice()
				cancel()
				if err != nil {
					continue // the next beat tries again
				}
				h.mu.Lock()
				for _, id := range lost {
					if g, ok := h.holds[id]; ok {
						g.lost = true
						h.holds[id] = g
					}
				}
				h.mu.Unlock()
			}
		}
	}
}

// janitorInterval is how often the janitor looks for expired messages in the queues
// that have a message TTL.
const janitorInterval = 250 * time.Millisecond

// janitor dead-letters (or drops) the expired messages at the head of queues with a
// message TTL, which nobody may be reading. Messages that expire in other queues are
// dealt with when a consumer reaches them.
func (c *Conn) janitor() {
	tick := time.NewTicker(janitorInterval)
	defer tick.Stop()
	const consumer = "~janitor"
	for {
		select {
		case <-tick.C:
		case <-c.Done():
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		snap, err := c.current(ctx)
		cancel()
		if err != nil {
			continue
		}
		for name, q := range snap.queues {
			if q.ttl == 0 {
				continue
			}
			stream, _ := c.stream(name)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := scriptExpired.Run(ctx, c.rdb, []string{stream}, consumer, 100).Slice()
			if err == nil {
				for _, v := range res {
					e, _ := v.([]any)
					if len(e) != 2 {
						continue
					}
					id, _ := e[0].(string)
					c.expire(ctx, name, consumer, &entry{id: id, fields: fieldMap(e[1])})
				}
			}
			cancel()
		}
	}
}
