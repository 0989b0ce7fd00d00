package redis

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
)

// Publishing gathers the messages published meanwhile, from every goroutine, into one
// transaction, which adds each to the queues the connection routed it to, all of them or,
// if the topology changed since the connection loaded it, none: the connection then loads
// it again and routes again.

// maxBatch and maxBatchBytes bound the messages of one transaction, so that it stays far
// below Redis's client-query-buffer-limit (1 GB by default); a message larger than
// maxBatchBytes goes alone.
const (
	maxBatch      = 1024
	maxBatchBytes = 16 << 20
)

// pubReq is a publish waiting for its batch.
type pubReq struct {
	ctx    context.Context
	p      *backend.Publishing
	fields []any
	done   func(error)
	buf    [24]any // fields' storage, in the same allocation
}

// Publish publishes and waits until Redis has the message in every queue it goes to.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	result := make(chan error, 1)
	c.PublishAsync(ctx, p, func(err error) { result <- err })
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
	r := &pubReq{ctx: ctx, p: p, done: done}
	f, err := fields(r.buf[:0], p.Exchange, &p.Message)
	if err != nil {
		done(err)
		return
	}
	if !p.Confirm {
		f[indexOfBody(f)] = bytes.Clone(p.Body) // Publish returns before the batch goes
	}
	r.fields = f
	select {
	case c.pubq <- r:
	case <-ctx.Done():
		done(ctx.Err())
	case <-c.Done():
		done(c.gone())
	}
}

// indexOfBody returns where the body is in fields: after its name "b".
func indexOfBody(f []any) int {
	for i := 0; i < len(f); i += 2 {
		if f[i] == "b" {
			return i + 1
		}
	}
	return -1
}

// publishLoop sends the queued publishes, a batch at a time, until the connection closes.
func (c *Conn) publishLoop() {
	batch := make([]*pubReq, 0, maxBatch)
	for {
		select {
		case r := <-c.pubq:
			batch = append(batch[:0], r)
		case <-c.Done():
			for {
				select {
				case r := <-c.pubq:
					r.done(c.gone())
				default:
					return
				}
			}
		}
		size := len(batch[0].p.Body)
		var next *pubReq // taken, but for the next batch
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-c.pubq:
				if size += len(r.p.Body); size > maxBatchBytes {
					next = r
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		c.publishBatch(batch)
		clear(batch)
		for next != nil {
			r := next
			next = nil
			c.publishBatch([]*pubReq{r})
		}
	}
}

// errStale says the topology changed since the connection loaded it.
var errStale = errors.New("carrot/redis: stale topology")

// publishBatch routes a batch with the known topology and adds it to the queues in one
// MULTI/EXEC transaction, under WATCH of the topology's version: if the topology changed
// since it was loaded, the transaction does not run, and the batch is routed again with
// the topology loaded anew.
func (c *Conn) publishBatch(batch []*pubReq) {
	results := make([]error, len(batch))
	answered := make([]bool, len(batch))
	answer := func(i int, err error) {
		if !answered[i] {
			answered[i] = true
			batch[i].done(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stale *snapshot
	delayed := false
	for attempt := 0; ; attempt++ {
		snap := c.topo.Load()
		if snap == nil || snap == stale {
			var err error
			if snap, err = c.reload(ctx, stale); err != nil {
				for i := range batch {
					answer(i, err)
				}
				return
			}
		}
		err := c.rdb.Watch(ctx, func(tx *goredis.Tx) error {
			check := tx.Pipeline()
			version := check.Get(ctx, c.versionKey)
			clock := check.Time(ctx)
			if _, err := check.Exec(ctx); err != nil {
				if errors.Is(err, goredis.Nil) {
					c.lose(errStateLost)
					return c.gone()
				}
				return err
			}
			if version.Val() != snap.version {
				return errStale
			}
			now := clock.Val()
			_, err := tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
				for i, r := range batch {
					results[i] = nil
					if answered[i] {
						continue
					}
					if err := r.ctx.Err(); err != nil {
						answer(i, err)
						continue
					}
					targets, found := snap.route(r.p.Exchange, r.p.RoutingKey)
					switch {
					case !found:
						results[i] = backend.Errorf(backend.NotFound, "carrot/redis: exchange %q not found", r.p.Exchange)
					case len(targets) == 0 && r.p.Mandatory:
						results[i] = backend.Errorf(backend.Unroutable, "carrot/redis: no queue is bound to exchange %q with a key matching %q", r.p.Exchange, r.p.RoutingKey)
					}
					for _, t := range targets {
						values := r.fields
						if ttl := snap.ttl(t, r.p.Expiration); ttl > 0 {
							exp := strconv.FormatInt(now.Add(r.p.Delay+ttl).UnixMilli(), 10)
							values = append([]any{"exp", exp}, r.fields...)
						}
						if r.p.Delay > 0 {
							delayed = true
							args := append([]any{r.p.Delay.Milliseconds(), snap.streams[t]}, values...)
							p.Eval(ctx, scriptDelay, []string{c.prefix + "delayed", c.prefix + "due"}, args...)
							continue
						}
						p.XAdd(ctx, &goredis.XAddArgs{Stream: snap.streams[t], Values: values})
					}
				}
				return nil
			})
			return err
		}, c.versionKey)
		if (errors.Is(err, errStale) || errors.Is(err, goredis.TxFailedErr)) && attempt < 100 {
			stale = snap
			continue
		}
		if errors.Is(err, errStale) || errors.Is(err, goredis.TxFailedErr) {
			// Not a lost connection: the Publisher tries again in a while.
			err = backend.Errorf(backend.Unavailable, "carrot/redis: the topology keeps changing under the publish")
		} else if err != nil && c.ErrorCode(err) == backend.Unavailable && ctx.Err() == nil {
			c.lose(err)
			err = c.gone()
		}
		if err != nil && len(batch) > 1 && c.ErrorCode(err) == backend.TooLarge {
			// Redis refused the transaction for the size of one of its messages, and
			// closed that network connection: find which, by sending them one at a time.
			for i, r := range batch {
				if !answered[i] {
					answered[i] = true
					c.publishBatch([]*pubReq{r})
				}
			}
			return
		}
		if err == nil && delayed {
			select {
			case c.delayed <- struct{}{}: // the promoter sees when it is due
			default:
			}
		}
		for i := range batch {
			if err != nil {
				answer(i, err)
			} else {
				answer(i, results[i])
			}
		}
		return
	}
}
