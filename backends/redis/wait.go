package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
)

// Writes that wait for replicas (Options.Wait, the wait URL option).
//
// Redis replicates asynchronously: a write it has answered is lost if its master fails
// before a replica has it. WAIT N TIMEOUT blocks its client until N replicas have
// acknowledged every write made so far on its own network connection, or TIMEOUT passes,
// and says how many did. So each write whose success the connection reports (a publish's
// batch, acks, a requeue, a reject, a change of the topology, a purge) goes in a pipeline
// with a WAIT after it, on one network connection to the master that holds the namespace:
// on a Cluster, the node that owns the namespace's slot, which every key of the namespace
// hashes to. The writes the connection makes for itself (leases, moving delayed messages,
// reads, which make messages pending) do not wait: losing them delivers a message again, or
// later, and loses nothing.

// waitError says that fewer replicas than Options.Wait acknowledged a write within
// Options.WaitTimeout. The write was made on the master, and is not undone: the replicas may
// still get it, or it is lost if the master fails first. It is Unavailable, so that the
// Publisher publishes again, but it does not end the connection, which still works.
type waitError struct {
	acked, want int
	timeout     time.Duration
}

func (e *waitError) Error() string {
	return fmt.Sprintf("carrot/redis: %d of the %d replicas asked for (wait) acknowledged the write within %v (wait_timeout); it is on the master, and is lost if the master fails before a replica has it",
		e.acked, e.want, e.timeout)
}

// notReplicated reports whether err is, or wraps, a waitError.
func notReplicated(err error) bool {
	var we *waitError
	return errors.As(err, &we)
}

// master returns the client of the master that holds the namespace's keys: the client
// itself, or, on a Cluster, the client of the node that owns their slot.
func (c *Conn) master(ctx context.Context) (*goredis.Client, error) {
	switch rdb := c.rdb.(type) {
	case *goredis.Client:
		return rdb, nil
	case *goredis.ClusterClient:
		return rdb.MasterForKey(ctx, c.versionKey)
	}
	return nil, backend.Errorf(backend.Unsupported, "carrot/redis: a client of type %T", c.rdb)
}

// replicated sends the commands that queue adds to a pipeline, which change what Redis
// holds, and then WAIT, on one network connection to the master; it returns the first
// error of a command, or a waitError if fewer replicas than Options.Wait acknowledged the
// commands within Options.WaitTimeout. queue is not called when there is no master to send
// to. Only for Options.Wait above 0.
func (c *Conn) replicated(ctx context.Context, queue func(p goredis.Pipeliner)) error {
	node, err := c.master(ctx)
	if err != nil {
		return err
	}
	p := node.Pipeline()
	queue(p)
	acked := goredis.NewIntCmd(ctx, "wait", c.opts.Wait, c.opts.WaitTimeout.Milliseconds())
	p.Process(ctx, acked)
	if _, err := p.Exec(ctx); err != nil {
		return err
	}
	if n := int(acked.Val()); n < c.opts.Wait {
		return &waitError{acked: n, want: c.opts.Wait, timeout: c.opts.WaitTimeout}
	}
	return nil
}

// write sends cmd, which changes what Redis holds, with the client's Process; with
// Options.Wait, as replicated does. cmd's error is write's.
func (c *Conn) write(ctx context.Context, cmd goredis.Cmder) error {
	if c.opts.Wait == 0 {
		return c.rdb.Process(ctx, cmd)
	}
	err := c.replicated(ctx, func(p goredis.Pipeliner) { p.Process(ctx, cmd) })
	if err != nil && cmd.Err() == nil {
		cmd.SetErr(err)
	}
	return err
}

// run runs script, which changes what Redis holds, as script.Run does (EVALSHA, then EVAL
// if Redis does not have the script); with Options.Wait, as replicated does. The command's
// error is the call's.
func (c *Conn) run(ctx context.Context, script *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	if c.opts.Wait == 0 {
		return script.Run(ctx, c.rdb, keys, args...)
	}
	var cmd *goredis.Cmd
	err := c.replicated(ctx, func(p goredis.Pipeliner) { cmd = script.EvalSha(ctx, p, keys, args...) })
	if goredis.HasErrorPrefix(err, "NOSCRIPT") {
		err = c.replicated(ctx, func(p goredis.Pipeliner) { cmd = script.Eval(ctx, p, keys, args...) })
	}
	if cmd == nil { // no master to send it to
		cmd = goredis.NewCmd(ctx)
	}
	if err != nil && cmd.Err() == nil {
		cmd.SetErr(err)
	}
	return cmd
}
