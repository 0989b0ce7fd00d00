package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/redis"
	"github.com/carrot-go/carrot/internal/testbroker"
)

func TestDeleteNamespace(t *testing.T) {
	testDeleteNamespace(t, testbroker.URL(t, testbroker.Redis))
}

func TestDeleteNamespaceCluster(t *testing.T) {
	cluster := testbroker.StartRedisCluster(t, testbroker.RedisClusterOptions{})
	testDeleteNamespace(t, fmt.Sprintf("redis://%s/?cluster=true&addr=%s&addr=%s", cluster.Addrs[0], cluster.Addrs[1], cluster.Addrs[2]))
}

// testDeleteNamespace fills three namespaces with keys of every kind, one of them with a
// name that is a pattern matching the others', and deletes them one by one: each
// deletion removes every key of its namespace, and no other key. It is refused while a
// connection is open on the namespace.
func testDeleteNamespace(t *testing.T, base string) {
	ctx := t.Context()
	stem := fmt.Sprintf("carrot-test-delete-%d", time.Now().UnixNano())
	opts := func(ns string) *redis.Options {
		o, err := redis.ParseURL(base)
		if err != nil {
			t.Fatal(err)
		}
		o.Namespace = ns
		return o
	}
	a, b, glob := stem+"-a", stem+"-b", stem+"-?"
	rdb := rawClient(t, base)
	t.Cleanup(func() {
		for _, ns := range []string{a, b, glob} {
			for _, k := range scanKeys(t, rdb, ns) {
				rdb.Del(context.Background(), k)
			}
		}
	})
	keys := make(map[string][]string)
	for _, ns := range []string{a, b, glob} {
		fillNamespace(t, opts(ns))
		keys[ns] = scanKeys(t, rdb, ns)
	}
	// Every key the layout lists, but connections: the connections that made them are
	// closed.
	want := []string{"version", "exchanges", "queues", "x:amq.direct", "x:events", "b:events", "x:dead", "b:dead",
		"q:work", "qb:work", "s:work", "q:dlq", "qb:dlq", "s:dlq", "delayed", "due"}
	for _, k := range want {
		if !slices.Contains(keys[a], "{"+a+"}:"+k) {
			t.Errorf("namespace %s has no key %s: %q", a, k, keys[a])
		}
	}

	// Refused while a connection is open, leaving everything as it was.
	conn, err := carrot.Connect(ctx, redis.NewConnector(opts(a)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := redis.DeleteNamespace(ctx, opts(a))
	if !errors.Is(err, carrot.ErrInUse) || n != 0 || !strings.Contains(err.Error(), "a connection is open") {
		t.Errorf("DeleteNamespace with a connection open: got %d, %v; want 0 and an error wrapping ErrInUse", n, err)
	}
	if got := scanKeys(t, rdb, a); !slices.Contains(got, "{"+a+"}:connections") || len(got) != len(keys[a])+1 {
		t.Errorf("after the refusal, the keys are %q, want %q and connections", got, keys[a])
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	// A lease that has ended does not count; one that has not does, whoever holds it.
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	leases := "{" + b + "}:connections"
	if err := rdb.ZAdd(ctx, leases, goredis.Z{Score: float64(now.Add(time.Minute).UnixMilli()), Member: "paused"}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := redis.DeleteNamespace(ctx, opts(b)); !errors.Is(err, carrot.ErrInUse) || n != 0 {
		t.Errorf("DeleteNamespace with a lease of a minute: got %d, %v; want 0 and an error wrapping ErrInUse", n, err)
	}
	if err := rdb.ZAdd(ctx, leases, goredis.Z{Score: float64(now.Add(-time.Second).UnixMilli()), Member: "paused"}).Err(); err != nil {
		t.Fatal(err)
	}

	for _, ns := range []string{glob, a} {
		n, err := redis.DeleteNamespace(ctx, opts(ns))
		if err != nil {
			t.Fatalf("DeleteNamespace %s: %v", ns, err)
		}
		if n != len(keys[ns]) {
			t.Errorf("DeleteNamespace %s deleted %d keys, want %d", ns, n, len(keys[ns]))
		}
		if got := scanKeys(t, rdb, ns); len(got) > 0 {
			t.Errorf("after DeleteNamespace %s, its keys %q remain", ns, got)
		}
		keys[ns] = nil
		for _, other := range []string{a, b, glob} {
			got := scanKeys(t, rdb, other)
			if other == b {
				got = slices.DeleteFunc(got, func(k string) bool { return k == leases })
			}
			if !slices.Equal(got, keys[other]) {
				t.Errorf("after DeleteNamespace %s, namespace %s has keys %q, want %q", ns, other, got, keys[other])
			}
		}
	}
	if n, err := redis.DeleteNamespace(ctx, opts(a)); n != 0 || err != nil {
		t.Errorf("DeleteNamespace of a deleted namespace: got %d, %v; want 0, nil", n, err)
	}

	// The namespace left works, with its messages; the deleted one starts again empty.
	for _, tc := range []struct {
		ns   string
		want int
	}{{b, 1}, {a, 0}} {
		conn, err := carrot.Connect(ctx, redis.NewConnector(opts(tc.ns)))
		if err != nil {
			t.Fatal(err)
		}
		q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "dlq", Exchange: carrot.Exchange{Name: "dead", Kind: carrot.Fanout}})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := conn.Purge(ctx, q); n != tc.want || err != nil {
			t.Errorf("namespace %s: purge the dead-letter queue: got %d, %v; want %d messages", tc.ns, n, err, tc.want)
		}
		conn.Close()
	}
}

// TestDeleteNamespaceUnderAConnection deletes a namespace under a connection that
// DeleteNamespace cannot see (its lease is gone, as that of a connection opening while
// DeleteNamespace runs may be): the connection finds the namespace lost, connects again and
// declares its topology again, and messages published after go through it.
func TestDeleteNamespaceUnderAConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	base := testbroker.URL(t, testbroker.Redis)
	url := namespaced(t, base)
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: "x", Kind: carrot.Topic}, RoutingKey: "a.*"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{Exchange: "x", RoutingKey: "a.b"})
	defer p.Close()
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}

	ns := namespaceOf(url)
	rdb := rawClient(t, base)
	if err := rdb.Del(ctx, "{"+ns+"}:connections").Err(); err != nil {
		t.Fatal(err)
	}
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := redis.DeleteNamespace(ctx, o); err != nil || n == 0 {
		t.Fatalf("DeleteNamespace: got %d, %v; want its keys deleted", n, err)
	}
	for conn.State().Recoveries == 0 {
		if ctx.Err() != nil {
			t.Fatalf("the connection did not recover: %+v", conn.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("after")}); err != nil {
		t.Fatalf("publish after the namespace was deleted: %v", err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m, err := c.Fetch(ctx); err != nil || string(m.Body) != "after" {
		t.Errorf("fetch: got %v, %v; want the message published after the deletion", m, err)
	}
	if ids, err := rdb.ZRange(ctx, "{"+ns+"}:connections", 0, -1).Result(); err != nil || len(ids) != 1 {
		t.Errorf("leases after the recovery: %q, %v; want the new connection's", ids, err)
	}
}

// fillNamespace declares, on the namespace of o, exchanges, queues and bindings, and
// leaves in them messages waiting, requeued, dead-lettered and delayed, then closes its
// connection.
func fillNamespace(t *testing.T, o *redis.Options) {
	t.Helper()
	ctx := t.Context()
	conn, err := carrot.Connect(ctx, redis.NewConnector(o))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "dlq", Exchange: carrot.Exchange{Name: "dead", Kind: carrot.Fanout}}); err != nil {
		t.Fatal(err)
	}
	work := carrot.Queue{Name: "work", Exchange: carrot.Exchange{Name: "events", Kind: carrot.Topic}, RoutingKey: "a.#",
		MessageTTL: time.Hour, DeadLetterExchange: "dead"}
	if _, err := conn.DeclareQueue(ctx, work); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "events", RoutingKey: "a.b"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 4 {
		if err := p.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("later"), Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "work", Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, settle := range []func(*carrot.Message, context.Context) error{(*carrot.Message).Reject, (*carrot.Message).Requeue, (*carrot.Message).Ack} {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := settle(m, ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Fetch(ctx); err != nil { // held when the connection closes
		t.Fatal(err)
	}
}

// rawClient returns a go-redis client of the server or Cluster of url.
func rawClient(t *testing.T, url string) goredis.UniversalClient {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewUniversalClient(&o.Redis)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// scanKeys returns, sorted, the keys of namespace ns on every master.
func scanKeys(t *testing.T, rdb goredis.UniversalClient, ns string) []string {
	t.Helper()
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, node *goredis.Client) error {
		iter := node.Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			if strings.HasPrefix(iter.Val(), "{"+ns+"}:") {
				mu.Lock()
				keys = append(keys, iter.Val())
				mu.Unlock()
			}
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(context.Background(), scan)
	case *goredis.Client:
		err = scan(context.Background(), c)
	default:
		t.Fatalf("client %T", rdb)
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}
