package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
)

// scanBatch is the COUNT of each SCAN of DeleteNamespace: about how many keys it looks at,
// and at most how many it deletes, in one round trip.
const scanBatch = 1000

// DeleteNamespace deletes every key of the namespace of opts (DefaultNamespace when
// empty), those listed under Key layout in the package documentation: the exchanges,
// queues and bindings, the messages in the queues, the delayed messages. It returns how
// many keys it deleted; a namespace without keys is not an error. Other namespaces, and
// keys not of carrot's, are left alone.
//
// It refuses, with an error wrapping [carrot.ErrInUse] and deleting nothing, while a
// connection is open on the namespace: each connection has a lease in the namespace's
// connections key, which it renews every second and gives up when it closes (that of a
// process that died without closing ends after 10 seconds). It deletes the version key
// first, in the same script that checks the leases, then the other keys, found with SCAN
// on the server that holds the namespace (on a Redis Cluster, the master of the
// namespace's slot) and deleted with UNLINK, one SCAN page at a time. A connection that
// opens meanwhile finds the namespace lost, as after a restart of Redis without
// persistence: it ends, and carrot connects again and declares its topology again.
//
// It connects as opts say, with a client of its own that it closes before it returns.
// Errors never show the password; an error of ctx comes back as it is.
func DeleteNamespace(ctx context.Context, opts *Options) (int, error) {
	k := NewConnector(opts) // for its logging of go-redis's lines
	o := k.opts
	ro := o.Redis
	ro.ContextTimeoutEnabled = true
	ro.MaxRetries = -1 // as a Conn's: a failed call is an error
	ro.DialerRetries = 1
	defer lines.track(k)()
	rdb := goredis.NewUniversalClient(&ro)
	defer rdb.Close()

	deleted := 0
	fail := func(err error) (int, error) {
		if cerr := ctx.Err(); cerr != nil {
			return deleted, cerr
		}
		var kind error
		switch errorCode(err) {
		case backend.Unavailable:
			kind = carrot.ErrUnavailable
		case backend.Invalid:
			kind = carrot.ErrInvalid
		default:
			return deleted, fmt.Errorf("carrot/redis: delete the namespace of %s: %w", o, err)
		}
		return deleted, fmt.Errorf("carrot/redis: delete the namespace of %s: %w: %w", o, kind, err)
	}

	if strings.ContainsAny(o.Namespace, "{}") {
		// Its keys would not all share a slot, and those of another namespace could start
		// with its prefix.
		return 0, fmt.Errorf("carrot/redis: delete the namespace of %s: a namespace has no { or }: %w", o, carrot.ErrInvalid)
	}
	prefix := "{" + o.Namespace + "}:"
	version, conns := prefix+"version", prefix+"connections"
	// Every key of the namespace hashes to the slot of its braces: on a Cluster, the
	// master of that slot has them all, and SCAN looks at one server's keys.
	var node goredis.UniversalClient = rdb
	if cc, ok := rdb.(*goredis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, version)
		if err != nil {
			return fail(err)
		}
		node = m
	}
	r, err := scriptDropNamespace.Run(ctx, node, []string{version, conns}).Int64Slice()
	if err != nil {
		return fail(err)
	}
	if len(r) != 2 {
		return fail(errors.New("unexpected reply checking the connections"))
	}
	if r[0] > 0 {
		open := fmt.Sprintf("%d connections are", r[0])
		if r[0] == 1 {
			open = "a connection is"
		}
		return 0, fmt.Errorf("carrot/redis: delete the namespace of %s: %s open on it (one whose process died without closing counts as open for %v): %w",
			o, open, connLease, carrot.ErrInUse)
	}
	deleted += int(r[1])
	match := globEscape(prefix) + "*"
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, match, scanBatch).Result()
		if err != nil {
			return fail(err)
		}
		if len(keys) > 0 {
			n, err := node.Unlink(ctx, keys...).Result()
			if err != nil {
				return fail(err)
			}
			deleted += int(n)
		}
		if cursor = next; cursor == 0 {
			return deleted, nil
		}
	}
}

// globEscape escapes the characters that are special in the patterns of Redis's MATCH
// (as in stringmatchlen): * ? [ ] and the backslash.
func globEscape(s string) string {
	var b strings.Builder
	for i := range len(s) {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
