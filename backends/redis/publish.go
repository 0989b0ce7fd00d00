package redis

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/bits"
	"runtime"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
)

// Publishing gathers the messages published meanwhile, from every goroutine, into a batch,
// routes each with the connection's copy of the topology, and sends the batch in one call
// of scriptPublish, one round trip, in which Redis checks that the topology is still the
// one the batch was routed with and adds each message to all its queues; if the topology
// changed, Redis adds nothing, and the connection loads the topology again and routes
// again.

// maxBatch and maxBatchBytes bound the messages of one batch, so that its call stays far
// below Redis's client-query-buffer-limit (1 GB by default); a message larger than
// maxBatchBytes goes alone.
const (
	maxBatch      = 1024
	maxBatchBytes = 16 << 20
)

// maxStale is how many times a batch is routed again because the topology changed under
// it, before its messages fail with an Unavailable error (the Publisher tries them again
// in a while).
const maxStale = 100

// publishTimeout bounds the sending of one batch.
const publishTimeout = time.Minute

// pubReq is a publish waiting for its batch. The script's arguments point into it.
type pubReq struct {
	ctx    context.Context
	done   func(error) // of PublishAsync
	result chan error  // of Publish, instead of done
	m      backend.Publishing

	// The fields encode adds to the message's, those it has (bits of pubFields), and
	// the delay and expiration in ms.
	headers, persistent, priority, expiration, timestamp string
	present                                              uint16
	delayMs, expirationMs                                int64

	targets []string // the queues the current routing sends it to
	routed  error    // its answer if the batch goes in: not found, unroutable, or nil
	err     error    // its answer, once settled
	settled bool
}

// settle records the outcome of the publish, once; reply reports it.
func (r *pubReq) settle(err error) {
	if !r.settled {
		r.settled = true
		r.err = err
	}
}

func (r *pubReq) reply() {
	if r.result != nil {
		r.result <- r.err
		return
	}
	r.done(r.err)
}

// Publish publishes and waits until Redis has the message in every queue it goes to.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	if err := c.gone(); err != nil {
		return err
	}
	result := make(chan error, 1)
	c.enqueue(&pubReq{ctx: ctx, result: result, m: *p})
	if !p.Confirm {
		return nil // the message was copied: the caller may reuse it
	}
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync queues the message for the next batch and answers through done.
func (c *Conn) PublishAsync(ctx context.Context, p *backend.Publishing, done func(error)) {
	if err := c.gone(); err != nil {
		done(err)
		return
	}
	c.enqueue(&pubReq{ctx: ctx, done: done, m: *p})
}

// enqueue encodes r's message and queues it for the next batch.
func (c *Conn) enqueue(r *pubReq) {
	if err := r.encode(); err != nil {
		r.settle(err)
		r.reply()
		return
	}
	if r.result != nil {
		// Publish may return before the batch has gone (unconfirmed, or when its
		// context ends first), and its caller may then reuse the body.
		r.m.Body = bytes.Clone(r.m.Body)
	}
	r.m.Headers = nil // encoded
	r.delayMs = r.m.Delay.Milliseconds()
	r.expirationMs = r.m.Expiration.Milliseconds()
	c.enqueuing.Add(1) // publishLoop answers what is queued until no enqueue is under way
	defer c.enqueuing.Add(-1)
	if err := c.gone(); err != nil {
		r.settle(err)
		r.reply()
		return
	}
	select {
	case c.pubq <- r:
		return
	case <-r.ctx.Done():
		r.settle(r.ctx.Err())
	case <-c.Done():
		r.settle(c.gone())
	}
	r.reply()
}

// publishLoop sends the queued publishes, a batch at a time, until the connection closes,
// and hands each batch to answerLoop, which reports the outcomes while the next batch
// goes: the callbacks of the publishes (and the publishes they let start) are not in the
// way of the round trips.
func (c *Conn) publishLoop(free <-chan []*pubReq, answers chan<- []*pubReq) {
	defer close(answers)
	a := &scriptArgs{delayed: c.prefix + "delayed", due: c.prefix + "due", index: make(map[string]int)}
	for {
		batch := <-free
		select {
		case r := <-c.pubq:
			batch = append(batch, r)
		case <-c.Done():
			// Answer what is queued, and what the enqueues under way queue: those that
			// start now find the connection gone.
			for {
				last := c.enqueuing.Load() == 0
				for len(c.pubq) > 0 {
					r := <-c.pubq
					r.settle(c.gone())
					r.reply()
				}
				if last {
					return
				}
				runtime.Gosched()
			}
		}
		size := len(batch[0].m.Body)
		var next *pubReq // taken, but for the next batch
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-c.pubq:
				if size += len(r.m.Body); size > maxBatchBytes {
					next = r
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		c.publishBatch(a, batch)
		answers <- batch
		if next != nil {
			batch = append(<-free, next)
			c.publishBatch(a, batch)
			answers <- batch
		}
	}
}

// answerLoop reports the outcomes of the batches publishLoop sent, and gives their
// storage back, until publishLoop ends.
func answerLoop(answers <-chan []*pubReq, free chan<- []*pubReq) {
	for batch := range answers {
		for _, r := range batch {
			r.reply()
		}
		clear(batch)
		free <- batch[:0]
	}
}

// pubBuffers is how many batches publishLoop and answerLoop share: one being sent, two
// being answered.
const pubBuffers = 3

// scriptArgs builds the calls of scriptPublish, in storage kept from one batch to the next.
type scriptArgs struct {
	delayed, due string         // the keys
	args         []any          // the command: EVALSHA, its keys and arguments
	queues       []string       // the queues of the batch, in the order of their keys
	index        map[string]int // their keys' index in KEYS, by queue
}

// build routes the messages of batch not settled yet with snap, and makes the call that
// adds them, in a.args. It settles those whose context ended, and returns how many it did
// not settle and whether one of them is delayed.
func (a *scriptArgs) build(c *Conn, snap *snapshot, batch []*pubReq) (int, bool) {
	const firstStream = 4 // KEYS[1] version, KEYS[2] delayed, KEYS[3] due
	a.queues = a.queues[:0]
	clear(a.index)
	left, delayed := 0, false
	for _, r := range batch {
		r.targets, r.routed = nil, nil
		if r.settled {
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.settle(err)
			continue
		}
		left++
		targets, found := snap.route(r.m.Exchange, r.m.RoutingKey)
		switch {
		case !found:
			r.routed = backend.Errorf(backend.NotFound, "carrot/redis: exchange %q not found", r.m.Exchange)
		case len(targets) == 0 && r.m.Mandatory:
			r.routed = backend.Errorf(backend.Unroutable, "carrot/redis: no queue is bound to exchange %q with a key matching %q", r.m.Exchange, r.m.RoutingKey)
		}
		r.targets = targets
		delayed = delayed || (r.delayMs > 0 && len(targets) > 0)
		for _, t := range targets {
			if _, ok := a.index[t]; !ok {
				a.index[t] = firstStream + len(a.queues)
				a.queues = append(a.queues, t)
			}
		}
	}
	if left == 0 {
		return 0, false
	}
	args := append(a.args[:0], "evalsha", scriptPublish.Hash(), firstStream-1+len(a.queues), c.versionKey, a.delayed, a.due)
	for _, q := range a.queues {
		args = append(args, snap.streams[q])
	}
	args = append(args, &snap.version, flag(delayed))
	for _, q := range a.queues {
		args = append(args, snap.ttl(q, 0).Milliseconds())
	}
	// Runs of messages that go the same way with the same fields: the values they share
	// are sent once.
	for i := 0; i < len(batch); {
		r := batch[i]
		if r.settled || len(r.targets) == 0 {
			i++
			continue
		}
		m, vary := 1, uint16(1<<fieldBody)
		j := i + 1
		for ; j < len(batch); j++ {
			s := batch[j]
			if s.settled || len(s.targets) == 0 {
				continue
			}
			if !r.sameRun(s) {
				break
			}
			m++
			for b := r.present &^ vary; b != 0; b &= b - 1 {
				k := bits.TrailingZeros16(b)
				if *r.field(k) != *s.field(k) {
					vary |= 1 << k
				}
			}
		}
		args = append(args, m, len(r.targets), &r.delayMs, &r.expirationMs)
		for _, t := range r.targets {
			args = append(args, a.index[t])
		}
		shared := r.present &^ vary
		args = append(args, bits.OnesCount16(shared))
		for b := shared; b != 0; b &= b - 1 {
			k := bits.TrailingZeros16(b)
			args = append(args, pubFields[k], r.field(k))
		}
		args = append(args, bits.OnesCount16(vary))
		for b := vary; b != 0; b &= b - 1 {
			args = append(args, pubFields[bits.TrailingZeros16(b)])
		}
		for _, s := range batch[i:j] {
			if s.settled || len(s.targets) == 0 {
				continue
			}
			for b := vary; b != 0; b &= b - 1 {
				args = append(args, s.fieldValue(bits.TrailingZeros16(b)))
			}
		}
		i = j
	}
	a.args = args
	return left, delayed
}

// sameRun reports whether s goes the same way as r (to the same queues, with the same
// delay and expiration) with the same fields, so that one run of scriptPublish takes
// both.
func (r *pubReq) sameRun(s *pubReq) bool {
	if r.present != s.present || r.delayMs != s.delayMs || r.expirationMs != s.expirationMs || len(r.targets) != len(s.targets) {
		return false
	}
	if &r.targets[0] == &s.targets[0] { // the same route, cached
		return true
	}
	for i, t := range r.targets {
		if s.targets[i] != t {
			return false
		}
	}
	return true
}

// refuse settles the messages of batch that go to the key of index k in KEYS, which holds
// a value of another type, and reports whether there were any.
func (a *scriptArgs) refuse(k int, batch []*pubReq) bool {
	key, which := "", ""
	switch {
	case k == 2 || k == 3:
		key, which = a.args[3+k-1].(string), "delayed messages"
	case k >= 4 && k-4 < len(a.queues):
		key, which = a.args[3+k-1].(string), fmt.Sprintf("queue %q", a.queues[k-4])
	default:
		return false
	}
	err := backend.Errorf(backend.Refused, "carrot/redis: key %q, of %s, holds a value of another type than Redis keeps them in; nothing was added", key, which)
	refused := false
	for _, r := range batch {
		if r.settled || len(r.targets) == 0 {
			continue
		}
		hit := (k == 2 || k == 3) && r.delayMs > 0
		for _, t := range r.targets {
			hit = hit || (k >= 4 && t == a.queues[k-4])
		}
		if hit {
			r.settle(err)
			refused = true
		}
	}
	return refused
}

// publishBatch routes a batch with the known topology and adds it to the queues with one
// call of scriptPublish, which adds nothing if the topology changed since it was loaded:
// the batch is then routed again with the topology loaded anew.
func (c *Conn) publishBatch(a *scriptArgs, batch []*pubReq) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	defer func() { clear(a.args[:cap(a.args)]) }() // let the messages go
	var stale *snapshot
	stales, loaded := 0, false
	for {
		snap := c.topo.Load()
		if snap == nil || snap == stale {
			var err error
			if snap, err = c.reload(ctx, stale); err != nil {
				settleAll(batch, err)
				return
			}
		}
		left, delayed := a.build(c, snap, batch)
		if left == 0 {
			return
		}
		cmd := goredis.NewCmd(ctx, a.args...)
		cmd.SetFirstKeyPos(3)
		large := hasLarge(batch)
		if large {
			// Redis resets the network connection of a request with an argument over its
			// proto-max-bulk-len: that is for this call to judge, not the watcher.
			c.sendingLarge.Add(1)
		}
		err := c.write(ctx, cmd)
		if large {
			c.sendingLarge.Add(-1)
		}
		if err != nil && !loaded && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis lost its scripts (it restarted, or SCRIPT FLUSH): load it, once.
			loaded = true
			if err = scriptPublish.Load(ctx, c.rdb).Err(); err == nil {
				continue
			}
		}
		var short error // the batch ran, but too few replicas acknowledged it (Options.Wait)
		if notReplicated(err) {
			short, err = err, nil
		}
		if err == nil {
			res, _ := cmd.Val().(string)
			switch {
			case res == "OK":
				if delayed {
					select {
					case c.delayed <- struct{}{}: // the promoter sees when it is due
					default:
					}
				}
				for _, r := range batch {
					r.settle(cmp.Or(r.routed, short)) // a message routed nowhere was not written
				}
				return
			case res == "STALE":
				if stales++; stales < maxStale {
					stale = snap
					continue
				}
				// Not a lost connection: the Publisher tries again in a while.
				err = backend.Errorf(backend.Unavailable, "carrot/redis: the topology keeps changing under the publish")
			case res == "LOST":
				c.lose(errStateLost)
				err = c.gone()
			case strings.HasPrefix(res, "WRONGTYPE "):
				k, _ := strconv.Atoi(strings.TrimPrefix(res, "WRONGTYPE "))
				if a.refuse(k, batch) {
					continue // the others
				}
				err = fmt.Errorf("carrot/redis: unexpected reply %q publishing", res)
			default:
				err = fmt.Errorf("carrot/redis: unexpected reply %q publishing", res)
			}
		} else if code := c.ErrorCode(err); (code == backend.TooLarge || c.broken(err) && ctx.Err() == nil && hasLarge(batch)) && c.refuseLarge(ctx, batch) {
			continue // the others
		} else if c.broken(err) && ctx.Err() == nil {
			c.lose(err)
			err = c.gone()
		} else if code == backend.TooLarge && left > 1 {
			// Redis refused the call for the size of one of its messages, and closed that
			// network connection: find which, by sending them one at a time.
			for _, r := range batch {
				if !r.settled {
					c.publishBatch(a, []*pubReq{r})
				}
			}
			return
		}
		settleAll(batch, err)
		return
	}
}

// minBulkLimit is the lowest proto-max-bulk-len Redis allows.
const minBulkLimit = 1 << 20

// hasLarge reports whether a message of batch not settled yet is larger than Redis may
// take: Redis closes the connection of a request with an argument larger than its
// proto-max-bulk-len, which can be lowered after the connection read it.
func hasLarge(batch []*pubReq) bool {
	for _, r := range batch {
		if !r.settled && len(r.m.Body) > minBulkLimit {
			return true
		}
	}
	return false
}

// refuseLarge asks Redis for its proto-max-bulk-len, settles the messages of batch larger
// than that as too large, and reports whether there were any: if so, the batch failed for
// them, not for a lost connection.
func (c *Conn) refuseLarge(ctx context.Context, batch []*pubReq) bool {
	cfg, err := c.rdb.ConfigGet(ctx, "proto-max-bulk-len").Result()
	if err != nil {
		return false
	}
	limit, err := strconv.ParseInt(cfg["proto-max-bulk-len"], 10, 64)
	if err != nil || limit <= 0 {
		return false
	}
	refused := false
	for _, r := range batch {
		if !r.settled && int64(len(r.m.Body)) > limit {
			r.settle(backend.Errorf(backend.TooLarge, "carrot/redis: the body of %d bytes is larger than Redis takes now (proto-max-bulk-len %d)", len(r.m.Body), limit))
			refused = true
		}
	}
	return refused
}

// settleAll settles the messages of batch not settled yet with err.
func settleAll(batch []*pubReq, err error) {
	for _, r := range batch {
		r.settle(err)
	}
}
