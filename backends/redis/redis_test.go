package redis_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/redis"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

func TestMain(m *testing.M) {
	if url := os.Getenv("CARROT_CRASH_HELPER_URL"); url != "" {
		crashHelper(url, os.Getenv("CARROT_CRASH_HELPER_QUEUE"))
		return
	}
	if addr := os.Getenv(goredisLogHelperEnv); addr != "" {
		goredisLogHelper(addr)
		return
	}
	testbroker.Main(m)
}

// namespaced returns the broker URL with a namespace of the test's own, whose keys are
// deleted when the test ends.
func namespaced(t *testing.T, base string) string {
	t.Helper()
	ns := fmt.Sprintf("carrot-test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	url := base + sep + "namespace=" + ns
	t.Cleanup(func() { deleteNamespace(t, base, ns) })
	return url
}

func deleteNamespace(t *testing.T, base, ns string) {
	opts, err := goredis.ParseURL(strings.SplitN(base, "?", 2)[0])
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "{"+ns+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

func TestConformance(t *testing.T) {
	url := namespaced(t, testbroker.URL(t, testbroker.Redis))
	conformance.Run(t, conformance.Harness{
		URL:        url,
		Open:       func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: openFaulty(url),
	})
}

func TestConformanceCluster(t *testing.T) {
	cluster := testbroker.StartRedisCluster(t, testbroker.RedisClusterOptions{})
	url := fmt.Sprintf("redis://%s/?cluster=true&addr=%s&addr=%s&namespace=carrot-test-cluster", cluster.Addrs[0], cluster.Addrs[1], cluster.Addrs[2])
	conformance.Run(t, conformance.Harness{
		URL:        url,
		Open:       func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: openFaulty(url),
	})
}

// openFaulty opens connections to url through a proxy of their own, which dials every
// node of a Cluster through the proxy too: the nodes' addresses come from the Cluster.
func openFaulty(url string) func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
	return func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, err
		}
		proxy := conformance.NewProxy()
		o.Redis.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			through, err := proxy.Forward(addr)
			if err != nil {
				return nil, err
			}
			var d net.Dialer
			return d.DialContext(ctx, network, through)
		}
		conn, err := carrot.Connect(ctx, redis.NewConnector(o))
		if err != nil {
			proxy.Close()
			return nil, nil, err
		}
		return conn, proxy, nil
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url                string
		addrs              []string
		db                 int
		user, password, ns string
		cluster, tls       bool
		master             string
		visibility, block  time.Duration
		prefetch, poolSize int
	}{
		{url: "redis://", addrs: []string{"localhost:6379"}},
		{url: "redis://u:p@cache:6380/3", addrs: []string{"cache:6380"}, db: 3, user: "u", password: "p"},
		{url: "rediss://cache/0?server_name=other", addrs: []string{"cache:6379"}, tls: true},
		{url: "unix:///run/redis.sock?db=2", addrs: []string{"/run/redis.sock"}, db: 2},
		{url: "redis://a:1/?cluster=true&addr=b:2&addr=c:3&namespace=orders&visibility_timeout=5s&block=200ms&prefetch=7&pool_size=9",
			addrs: []string{"a:1", "b:2", "c:3"}, cluster: true, ns: "orders", visibility: 5 * time.Second, block: 200 * time.Millisecond, prefetch: 7, poolSize: 9},
		{url: "redis://:p@ignored/?sentinel=s1:26379&sentinel=s2:26379&master=mymaster", addrs: []string{"s1:26379", "s2:26379"}, password: "p", master: "mymaster"},
	} {
		o, err := redis.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		r := o.Redis
		if !slices.Equal(r.Addrs, tc.addrs) || r.DB != tc.db || r.Username != tc.user || r.Password != tc.password ||
			o.Namespace != tc.ns || r.IsClusterMode != tc.cluster || (r.TLSConfig != nil) != tc.tls || r.MasterName != tc.master ||
			o.VisibilityTimeout != tc.visibility || o.Block != tc.block || o.Prefetch != tc.prefetch || r.PoolSize != tc.poolSize {
			t.Errorf("ParseURL(%q) = %+v", tc.url, o)
		}
	}
}

// go-redis parses its own options; carrot's connection_timeout is go-redis's dial_timeout.
func TestParseURLGoRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		url              string
		dial, pool, idle time.Duration
		protocol         int
		insecure         bool
	}{
		{url: "redis://h/?connection_timeout=3s", dial: 3 * time.Second},
		{url: "redis://h/?dial_timeout=4", dial: 4 * time.Second},
		{url: "unix:///run/redis.sock?db=1&pool_timeout=2s&conn_max_idle_time=1m&protocol=2", pool: 2 * time.Second, idle: time.Minute, protocol: 2},
		{url: "rediss://h/?skip_verify=true", insecure: true},
	} {
		o, err := redis.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		r := o.Redis
		insecure := r.TLSConfig != nil && r.TLSConfig.InsecureSkipVerify
		if r.DialTimeout != tc.dial || r.PoolTimeout != tc.pool || r.ConnMaxIdleTime != tc.idle || r.Protocol != tc.protocol || insecure != tc.insecure {
			t.Errorf("ParseURL(%q): dial %v, pool %v, idle %v, protocol %d, skip verify %v; want %v, %v, %v, %d, %v", tc.url,
				r.DialTimeout, r.PoolTimeout, r.ConnMaxIdleTime, r.Protocol, insecure, tc.dial, tc.pool, tc.idle, tc.protocol, tc.insecure)
		}
	}
}

// The wait options: how many replicas, and for how long, with the read timeout that bounds
// WAIT's answer longer than the wait.
func TestParseURLWait(t *testing.T) {
	for _, tc := range []struct {
		url     string
		wait    int
		timeout time.Duration
	}{
		{url: "redis://h/"},
		{url: "redis://h/?wait=0"},
		{url: "redis://h/?wait=1", wait: 1},
		{url: "redis://h/?wait=2&wait_timeout=250ms", wait: 2, timeout: 250 * time.Millisecond},
		{url: "redis://h/?wait=1&wait_timeout=10s&read_timeout=30s", wait: 1, timeout: 10 * time.Second},
		{url: "redis://h/?cluster=true&addr=h2:6379&wait=1", wait: 1},
	} {
		o, err := redis.ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if o.Wait != tc.wait || o.WaitTimeout != tc.timeout {
			t.Errorf("ParseURL(%q): wait %d, wait timeout %v; want %d, %v", tc.url, o.Wait, o.WaitTimeout, tc.wait, tc.timeout)
		}
	}
	// Options made by hand are checked when connecting.
	o := &redis.Options{Wait: 1, WaitTimeout: 10 * time.Second}
	o.Redis.Addrs = []string{"127.0.0.1:1"}
	if _, err := carrot.Connect(t.Context(), redis.NewConnector(o)); !errors.Is(err, carrot.ErrInvalid) || !strings.Contains(err.Error(), "read_timeout") {
		t.Errorf("Connect with a wait timeout of 10s and the default read timeout: got %v, want ErrInvalid naming read_timeout", err)
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, mentions string }{
		{"redis://u:s3cret@h/?bogus=1", `unknown URL option "bogus"`},
		{"redis://u:s3cret@h1:6379,h2:6379/0", "names 2 hosts"},
		{"redis://u:s3cret@h/?visibility_timeout=30", "visibility_timeout"},
		{"redis://u:s3cret@h/?block=500us", "at least 1ms"},
		{"redis://u:s3cret@h/?visibility_timeout=1ns", "at least 1ms"},
		{"redis://u:s3cret@h/?sentinel_password=x", "need sentinel and master"},
		{"redis://u:s3cret@h/?read_timeout=1s;block=5s", "';'"},
		{"redis://u:s3cret@h/?prefetch=0", "prefetch"},
		{"redis://u:s3cret@h/?prefetch=1&prefetch=2", "given 2 times"},
		{"redis://u:s3cret@h/?namespace={x}", "namespace"},
		{"redis://u:s3cret@h/x", "database number"},
		{"redis://u:s3cret@h/?addr=b:2", "cluster=true"},
		{"redis://u:s3cret@h/1?cluster=true", "database 0"},
		{"redis://u:s3cret@h/?sentinel=s:1", "sentinel and master"},
		{"redis://u:s3cret@h/?certfile=/x", "rediss"},
		{"redis://u:s3cret@h/?db=1", "unix"},
		{"amqp://u:s3cret@h/", "want redis, rediss or unix"},
		{"redis://u:s3cret@h/-1", "database number"},
		{"redis://u:s3cret@h/?pool_size=x", "pool_size"},
		{"redis://u:s3cret@h/?pool_size=0", "pool_size"},
		{"redis://u:s3cret@h/?max_retries=3", "retries are off"},
		{"redis://u:s3cret@h/?connection_timeout=0s", "connection_timeout"},
		{"redis://u:s3cret@h/?connection_timeout=1s&dial_timeout=2s", "give one of them"},
		{"redis://u:s3cret@h/?wait=-1", "wait"},
		{"redis://u:s3cret@h/?wait=x", "wait"},
		{"redis://u:s3cret@h/?wait_timeout=1s", "needs wait"},
		{"redis://u:s3cret@h/?wait=1&wait_timeout=500us", "at least 1ms"},
		{"redis://u:s3cret@h/?wait=1&wait_timeout=5s", "not shorter than read_timeout 5s"},
		{"redis://u:s3cret@h/?wait=1&wait_timeout=2s&read_timeout=2s", "not shorter than read_timeout"},
	} {
		_, err := redis.ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.mentions) {
			t.Errorf("ParseURL(%q) = %v, want an error mentioning %q", tc.url, err, tc.mentions)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURL(%q) error %q shows the password", tc.url, err)
		}
	}
	if _, err := carrot.Open(context.Background(), "redis://u:s3cret@127.0.0.1:1/?bogus=1"); !errors.Is(err, carrot.ErrInvalid) {
		t.Errorf("Open with an unknown option = %v, want ErrInvalid", err)
	}
	if _, err := carrot.Open(context.Background(), "redis://u:s3cret@127.0.0.1:1/?dial_timeout=1s"); !errors.Is(err, carrot.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open of a closed port = %v, want ErrUnavailable without the password", err)
	}
}

func TestAs(t *testing.T) {
	ctx := t.Context()
	conn, err := carrot.Open(ctx, namespaced(t, testbroker.URL(t, testbroker.Redis)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var client goredis.UniversalClient
	if !conn.As(&client) || client.Ping(ctx).Err() != nil {
		t.Fatalf("As(UniversalClient) = %v", client)
	}
	var concrete *goredis.Client
	if !conn.As(&concrete) {
		t.Error("As(*goredis.Client) = false for a single server")
	}
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "raw"); err != nil {
		t.Fatal(err)
	}
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var raw *goredis.XMessage
	if !m.As(&raw) || raw.ID == "" || raw.Values["b"] != `"raw"` {
		t.Errorf("As(*goredis.XMessage) gave %+v", raw)
	}
	m.Ack(ctx)
}

// TestSlowHandlerKeepsItsMessage holds a message for three visibility timeouts: the
// connection extends it meanwhile, so another consumer does not get it.
func TestSlowHandlerKeepsItsMessage(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis)) + "&visibility_timeout=300ms"
	holder, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	other, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	q, err := holder.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := holder.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	c1, _ := holder.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	m, err := c1.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(900 * time.Millisecond) // three visibility timeouts, handling it
	c2, _ := other.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if got, err := c2.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Fatalf("another consumer fetched %v (%v) while the first still handles it", got, err)
	}
	if err := m.Ack(ctx); err != nil {
		t.Errorf("ack after the slow handling: %v", err)
	}
}

// TestLostMessage lets a consumer's message go to another consumer after the visibility
// timeout (its connection stops extending it, as a paused process would): settling it
// then is an error, and the other consumer has it.
func TestLostMessage(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis)) + "&visibility_timeout=200ms"
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "taken"); err != nil {
		t.Fatal(err)
	}
	// A consumer that fetches raw, without a connection that extends its hold: it stops
	// answering at once.
	var rdb goredis.UniversalClient
	conn.As(&rdb)
	stream := "{" + strings.SplitN(strings.SplitN(url, "namespace=", 2)[1], "&", 2)[0] + "}:s:" + q
	if err := rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "carrot", Consumer: "paused", Streams: []string{stream, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	var m *carrot.Message
	deadline := time.Now().Add(10 * time.Second)
	for m == nil && time.Now().Before(deadline) { // until the visibility timeout passes
		m, err = c.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if m == nil || string(m.Body) != `"taken"` || !m.Redelivered() || m.DeliveryCount() != 2 {
		t.Fatalf("after the visibility timeout got %v, want the abandoned message, redelivered, delivery count 2", m)
	}
	m.Ack(ctx)
}

// TestConsumerCrash kills a consumer process that holds unacked messages: another
// consumer gets them all after the visibility timeout.
func TestConsumerCrash(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis)) + "&visibility_timeout=1s"
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	for i := range n {
		if err := p.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}

	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "CARROT_CRASH_HELPER_URL="+url, "CARROT_CRASH_HELPER_QUEUE="+q)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	holding := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == fmt.Sprintf("holding %d", n) {
				holding <- true
				return
			}
		}
		holding <- false
	}()
	select {
	case ok := <-holding:
		if !ok {
			t.Fatal("the consumer process ended before it held the messages")
		}
	case <-time.After(30 * time.Second):
		child.Process.Kill()
		t.Fatal("the consumer process did not take the messages")
	}
	if err := child.Process.Kill(); err != nil { // SIGKILL: no chance to give anything back
		t.Fatal(err)
	}
	child.Wait()

	got := make(map[int]int)
	all := make(chan struct{})
	var mu sync.Mutex
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: q, Passive: true}},
		Handler: carrot.Decoded(func(ctx context.Context, v int, m *carrot.Message) error {
			if !m.Redelivered() || m.DeliveryCount() != 2 {
				t.Errorf("message %d: redelivered %v, delivery count %d; want true, 2", v, m.Redelivered(), m.DeliveryCount())
			}
			mu.Lock()
			got[v]++
			if len(got) == n {
				close(all)
			}
			mu.Unlock()
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	go c.Run(runCtx)
	select {
	case <-all:
	case <-runCtx.Done():
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Errorf("after the crash another consumer got %d of the %d messages", len(got), n)
	}
}

// crashHelper is the consumer process TestConsumerCrash kills: run as the test binary
// with CARROT_CRASH_HELPER_URL set, it takes the queue's messages, acks none, says how many
// it holds, and waits to be killed.
func crashHelper(url, queue string) {
	ctx := context.Background()
	conn, err := carrot.Open(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	held := 0
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:   []carrot.Queue{{Name: queue, Passive: true}},
		Prefetch: 100,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			held++
			fmt.Printf("holding %d\n", held)
			return nil // never settled
		}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c.Run(ctx)
}

// TestRedisRestart publishes 10,000 messages to a consumer through a Redis with an
// append-only file, which is killed and started again midway: every message arrives.
func TestRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a Redis; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{AppendOnly: true})
	conn, err := carrot.Open(ctx, srv.URL()+"?visibility_timeout=2s&block=200ms")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	flow := &flowtest.Flow{Conn: conn, Queue: q}
	flow.Run(ctx, t, func(f *flowtest.Flow) {
		f.WaitReceived(3000)
		f.Logf("killing Redis")
		srv.Kill()
		time.Sleep(500 * time.Millisecond) // publishers and the consumer meet a Redis that is gone
		srv.Start()
		f.Logf("Redis started again from its append-only file")
	})
}

// TestDelayedSurvivesRestart publishes a message with a delay to a Redis with an
// append-only file, kills Redis before the delay passes and starts it again: the message
// is delivered after its delay, once.
func TestDelayedSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{AppendOnly: true})
	conn, err := carrot.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	start := time.Now()
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("delayed"), Delay: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	conn.Close() // no connection is left to move it when due
	srv.Kill()
	srv.Start()

	conn, err = carrot.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := c.Fetch(ctx)
		if errors.Is(err, carrot.ErrEmpty) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Body) != "delayed" || time.Since(start) < 2*time.Second {
			t.Errorf("got %q %v after the publish, want the delayed message after 2s", m.Body, time.Since(start))
		}
		m.Ack(ctx)
		break
	}
	if _, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("a second fetch = %v, want ErrEmpty: the delayed message came once", err)
	}
}

// TestStreamWithCuts sends 20,000 persistent messages from a publisher to a consumer of
// one connection while its network connections are cut five times: every message
// arrives, and the duplicates are counted.
func TestStreamWithCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("a long stream; not in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	conn, breaker, err := openFaulty(namespaced(t, testbroker.URL(t, testbroker.Redis)))(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer breaker.(*conformance.Proxy).Close()
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	flow := &flowtest.Flow{Conn: conn, Queue: q, Total: 20000, Prefetch: 200}
	flow.Run(ctx, t, flowtest.Cuts(breaker, 5))
}

// TestAckThenClose fetches and acks a message, then closes the connection at once, a
// thousand times: every ack reaches Redis before the connection closes, so nothing is
// left pending, and no fetching consumer is left in the queue's group.
func TestAckThenClose(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis))
	admin, err := carrot.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	q, err := admin.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 1000
	p, _ := admin.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	for i := range rounds {
		if err := p.Send(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rounds {
		conn, err := carrot.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatalf("round %d: fetch: %v", i, err)
		}
		if err := m.Ack(ctx); err != nil {
			t.Fatalf("round %d: ack: %v", i, err)
		}
		if err := conn.Close(); err != nil {
			t.Fatalf("round %d: close after an ack: %v", i, err)
		}
	}
	var rdb goredis.UniversalClient
	admin.As(&rdb)
	stream := "{" + strings.SplitN(strings.SplitN(url, "namespace=", 2)[1], "&", 2)[0] + "}:s:" + q
	pending, err := rdb.XPending(ctx, stream, "carrot").Result()
	if err != nil {
		t.Fatal(err)
	}
	consumers, err := rdb.XInfoConsumers(ctx, stream, "carrot").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 || len(consumers) != 0 {
		t.Errorf("after %d rounds of fetch, ack and close: %d messages pending, consumers %v; want none", rounds, pending.Count, consumers)
	}
	c, _ := admin.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if m, err := c.Fetch(ctx); !errors.Is(err, carrot.ErrEmpty) {
		t.Errorf("after every message was acked, Fetch = %v, %v; want ErrEmpty", m, err)
	}
}

// TestCloseDoesNotWaitForBlock closes a consumer whose read waits for messages with a long
// block time: Close cuts the read short instead of waiting for the block to end.
func TestCloseDoesNotWaitForBlock(t *testing.T) {
	ctx := t.Context()
	const block = 20 * time.Second
	conn, err := carrot.Open(ctx, namespaced(t, testbroker.URL(t, testbroker.Redis))+"&block="+block.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: q, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- struct{}{}
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	run := make(chan error, 1)
	go func() { run <- c.Run(ctx) }()
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	<-got
	time.Sleep(100 * time.Millisecond) // the consumer waits in its blocking read again
	start := time.Now()
	c.Close()
	if err := <-run; !errors.Is(err, carrot.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if took := time.Since(start); took > block/4 {
		t.Errorf("Close took %v with a block time of %v: it waited for the read", took, block)
	}
	start = time.Now()
	if err := conn.Close(); err != nil {
		t.Errorf("conn.Close = %v", err)
	}
	if took := time.Since(start); took > block/4 {
		t.Errorf("conn.Close took %v with a block time of %v", took, block)
	}
}

// TestOpenFrozenServer opens a connection to a server that accepts and never answers:
// Open returns at its context's deadline, with an error wrapping ErrUnavailable.
func TestOpenFrozenServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = carrot.Open(ctx, "redis://"+l.Addr().String()+"/0")
	if !errors.Is(err, carrot.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open of a frozen server = %v, want an error wrapping ErrUnavailable and context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Open with a 1s deadline took %v", took)
	}
}

// TestRedisLosesItsData restarts, empty, a Redis without persistence under a connection
// that declared an exchange, a queue and a binding, and runs a consumer: the connection
// recovers as from a cut, declares them again, and publishing through the exchange and
// consuming go on.
func TestRedisLosesItsData(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{}) // no persistence
	conn, err := carrot.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q", Exchange: carrot.Exchange{Name: "x", Kind: carrot.Topic}, RoutingKey: "a.*"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: q, Passive: true}},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			got <- string(m.Body)
			return m.Ack(ctx)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	run := make(chan error, 1)
	go func() { run <- c.Run(ctx) }()
	p, _ := conn.NewPublisher(carrot.PublisherOptions{Exchange: "x", RoutingKey: "a.b"})
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "before" {
		t.Fatalf("got %q", b)
	}

	srv.Restart() // empty: no append-only file, no snapshot
	if err := p.Publish(ctx, &carrot.Message{Body: []byte("after")}); err != nil {
		t.Fatalf("publish after Redis lost its data: %v", err)
	}
	select {
	case b := <-got:
		if b != "after" {
			t.Errorf("after the restart got %q, want %q", b, "after")
		}
	case err := <-run:
		t.Fatalf("Run ended: %v", err)
	case <-ctx.Done():
		t.Fatal("the consumer did not get the message published after the restart")
	}
	if s := conn.State(); s.Recoveries == 0 {
		t.Errorf("State() = %+v, want a recovery", s)
	}
}

// TestPublishBatchRefusals publishes batches whose messages go to a healthy queue and to a
// queue whose stream key holds a string, after Redis forgot its scripts, then with a
// message larger than Redis takes since it was lowered: only the messages Redis cannot
// take fail, each with its own error, and every other one arrives, once. Then another
// connection binds a queue, and a message published through the first one reaches it.
func TestPublishBatchRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{})
	conn, err := carrot.Open(ctx, srv.URL()+"?namespace=ns")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	opts, err := goredis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(opts)
	defer raw.Close()
	good, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "good"})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Set(ctx, "{ns}:s:bad", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{NoRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(bodies map[int][]byte, key func(i int) string) map[int]error {
		cs := make(map[int]*carrot.Confirmation)
		for i, b := range bodies {
			cs[i] = p.PublishAsync(ctx, &carrot.Message{RoutingKey: key(i), Body: b})
		}
		errs := make(map[int]error)
		for i, c := range cs {
			errs[i] = c.Err()
		}
		return errs
	}
	xlen := func() int64 {
		n, err := raw.XLen(ctx, "{ns}:s:good").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	bodies := make(map[int][]byte)
	for i := range 300 {
		bodies[i] = []byte(strconv.Itoa(i))
	}
	errs := publish(bodies, func(i int) string {
		if i%3 == 0 {
			return bad
		}
		return good
	})
	for i, err := range errs {
		if i%3 == 0 && !errors.Is(err, carrot.ErrRefused) {
			t.Errorf("message %d, to the queue whose key holds a string: %v, want ErrRefused", i, err)
		}
		if i%3 != 0 && err != nil {
			t.Errorf("message %d, to the healthy queue: %v", i, err)
		}
	}
	if n := xlen(); n != 200 {
		t.Errorf("the healthy queue holds %d messages, want 200", n)
	}

	if err := raw.ConfigSet(ctx, "proto-max-bulk-len", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	bodies = make(map[int][]byte)
	for i := range 100 {
		bodies[i] = []byte(strconv.Itoa(i))
	}
	bodies[50] = make([]byte, 2<<20)
	errs = publish(bodies, func(int) string { return good })
	for i, err := range errs {
		if i == 50 && !errors.Is(err, carrot.ErrTooLarge) {
			t.Errorf("the message of 2 MiB: %v, want ErrTooLarge", err)
		}
		if i != 50 && err != nil {
			t.Errorf("message %d: %v", i, err)
		}
	}
	if n := xlen(); n != 299 {
		t.Errorf("the healthy queue holds %d messages, want 299", n)
	}

	// Another connection binds a queue: the first one's copy of the topology is stale,
	// and the script makes it route again.
	other, err := carrot.Open(ctx, srv.URL()+"?namespace=ns")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	late, err := other.DeclareQueue(ctx, carrot.Queue{Name: "late", Exchange: carrot.Exchange{Name: "x", Kind: carrot.Fanout}})
	if err != nil {
		t.Fatal(err)
	}
	px, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := px.Publish(ctx, &carrot.Message{Body: []byte("late")}); err != nil {
		t.Fatalf("publish through an exchange another connection declared: %v", err)
	}
	if n, err := raw.XLen(ctx, "{ns}:s:"+late).Result(); err != nil || n != 1 {
		t.Errorf("the queue bound by another connection holds %d messages (%v), want 1", n, err)
	}
}

// TestAbandonedFetch stalls the network under a Fetch until its context ends: the take it
// sent still reaches Redis when the network comes back, and the message it takes must not
// wait for the visibility timeout (a minute here) to be fetched again.
func TestAbandonedFetch(t *testing.T) {
	ctx := t.Context()
	url := namespaced(t, testbroker.URL(t, testbroker.Redis)+"?visibility_timeout=1m")
	conn, breaker, err := openFaulty(url)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer breaker.(io.Closer).Close()
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "abandoned"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err := p.Send(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	c, _ := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	breaker.Stall()
	stalled, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Fetch(stalled)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch while the network stalls = %v, want context.DeadlineExceeded", err)
	}
	breaker.Unblock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := c.Fetch(ctx)
		if err == nil {
			if string(m.Body) != `"m"` {
				t.Fatalf("fetched %s, want \"m\"", m.Body)
			}
			m.Ack(ctx)
			return
		}
		if !errors.Is(err, carrot.ErrEmpty) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the message the abandoned Fetch took did not come back in 10s (the visibility timeout is a minute)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
