package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The failover tests publish failoverTotal messages and kill the master once
// failoverKillAt of them are confirmed.
const (
	failoverTotal      = 20000
	failoverKillAt     = 5000
	failoverPublishers = 16
)

// TestSentinelFailover runs a stream of messages through a master with one replica under
// three Sentinels, and kills the master midway: the replica takes over, publishing and
// consuming go on, and, with wait=1, no message whose publish was confirmed is lost.
func TestSentinelFailover(t *testing.T) {
	testbroker.Clusters(t) // 20,000 messages, twice: once per CI run, not per package run
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait=%d", wait), func(t *testing.T) {
			r := testbroker.StartRedisSentinel(t, testbroker.RedisSentinelOptions{Replicas: 1})
			url := "redis://localhost/?master=" + r.MasterName + "&sentinel=" + strings.Join(r.Sentinels, "&sentinel=")
			testFailover(t, url, wait, func() {
				m := r.Master()
				m.Kill()
				r.WaitFailover(m)
				r.Rejoin(m) // with wait=1, publishing waits for it
			})
		})
	}
}

// TestClusterFailover is TestSentinelFailover on a Redis Cluster of three masters with a
// replica each: the master killed is the one that holds the namespace's slot.
func TestClusterFailover(t *testing.T) {
	testbroker.Clusters(t) // 20,000 messages, twice: once per CI run, not per package run
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait=%d", wait), func(t *testing.T) {
			c := testbroker.StartRedisCluster(t, testbroker.RedisClusterOptions{Replicas: 1, NodeTimeout: 2 * time.Second})
			url := fmt.Sprintf("redis://%s/?cluster=true&addr=%s", c.Addrs[0], strings.Join(c.Addrs[1:], "&addr="))
			testFailover(t, url, wait, func() {
				key := "{" + failoverNamespace + "}:version" // every key of the namespace has its slot
				m := c.MasterOf(key)
				m.Kill()
				c.WaitFailover(key, m)
				c.Rejoin(m)
			})
		})
	}
}

const failoverNamespace = "carrot-failover"

// testFailover publishes failoverTotal persistent messages, each with its number as its
// body and MessageID, to a queue of the Redis at url (with the wait option given), from
// failoverPublishers goroutines, each through a Publisher that waits for confirms and
// publishes again what a lost connection cut off, while a consumer receives and acks
// them. Once failoverKillAt publishes are confirmed, failover kills the master and waits
// for a replica to take over. The test then waits until every publish is confirmed and
// the consumer has drained the queue, and counts the messages lost (confirmed and never
// received) and the duplicates (deliveries beyond the first). It fails if a publish fails,
// if the connection did not recover, if the queue is not drained within three minutes, or,
// with wait above 0, if a message was lost.
func testFailover(t *testing.T, url string, wait int, failover func()) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	url += fmt.Sprintf("&namespace=%s&wait=%d&visibility_timeout=5s&block=200ms", failoverNamespace, wait)
	d := &carrot.Dialer{MaxBackoff: time.Second, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	conn, err := d.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "failover"})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu        sync.Mutex
		received  = make(map[int]int) // deliveries by message
		confirmed [failoverTotal]atomic.Bool
		nconfirm  atomic.Int64
		strays    atomic.Int64 // deliveries of messages never published
	)
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:   []carrot.Queue{{Name: q, Passive: true}},
		Prefetch: 200,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			n, err := strconv.Atoi(string(m.Body))
			if err != nil || n < 0 || n >= failoverTotal || m.MessageID != string(m.Body) {
				strays.Add(1)
			} else {
				mu.Lock()
				received[n]++
				mu.Unlock()
			}
			m.Ack(ctx) // an ack lost in the failover means a redelivery: a duplicate
			return nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	var runErr error
	var consuming, pubs sync.WaitGroup
	consuming.Go(func() { runErr = consumer.Run(runCtx) })
	defer func() { // when the test fails early
		cancel()
		pubs.Wait()
		consuming.Wait()
	}()
	for w := range failoverPublishers {
		pubs.Go(func() {
			p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q, DeliveryMode: carrot.Persistent})
			if err != nil {
				t.Error(err)
				return
			}
			for n := w; n < failoverTotal; n += failoverPublishers {
				id := strconv.Itoa(n)
				if err := p.Publish(ctx, &carrot.Message{Body: []byte(id), MessageID: id}); err != nil {
					t.Errorf("publish %d: %v", n, err)
					return
				}
				confirmed[n].Store(true)
				nconfirm.Add(1)
			}
		})
	}

	for nconfirm.Load() < failoverKillAt {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d publishes confirmed before the failover", nconfirm.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Logf("killing the master after %d publishes were confirmed", nconfirm.Load())
	failover()
	t.Logf("a replica took over; %d publishes confirmed", nconfirm.Load())
	pubs.Wait()

	// Drained: every confirmed message received, or, should some be lost, nothing left in
	// the queue, nor delivered and unacked, twice in a row.
	missing := func() (lost []int) {
		mu.Lock()
		defer mu.Unlock()
		for n := range failoverTotal {
			if confirmed[n].Load() && received[n] == 0 {
				lost = append(lost, n)
			}
		}
		return lost
	}
	for empty := 0; empty < 2 && len(missing()) > 0; {
		select {
		case <-ctx.Done():
			st, err := conn.InspectQueue(context.Background(), q)
			t.Fatalf("the queue was not drained: %d messages confirmed, %d never received; queue %+v (%v)", nconfirm.Load(), len(missing()), st, err)
		case <-time.After(250 * time.Millisecond):
		}
		if st, err := conn.InspectQueue(ctx, q); err == nil && st.Ready == 0 && st.Unacked == 0 {
			empty++
		} else {
			empty = 0
		}
	}
	stopRun()
	consuming.Wait()
	if !errors.Is(runErr, context.Canceled) || ctx.Err() != nil {
		t.Errorf("consumer: %v", runErr)
	}

	lost := missing()
	mu.Lock()
	duplicates := 0
	for _, k := range received {
		duplicates += k - 1
	}
	mu.Unlock()
	t.Logf("wait=%d: %d publishes confirmed; lost (confirmed, never received): %d %v; duplicates: %d; recoveries: %d",
		wait, nconfirm.Load(), len(lost), lost[:min(len(lost), 20)], duplicates, conn.State().Recoveries)
	if n := nconfirm.Load(); n != failoverTotal {
		t.Errorf("%d of %d publishes confirmed, want all", n, failoverTotal)
	}
	if conn.State().Recoveries == 0 {
		t.Errorf("the connection never recovered: the failover did not reach it")
	}
	if n := strays.Load(); n > 0 {
		t.Errorf("%d deliveries of messages never published", n)
	}
	if wait > 0 && len(lost) > 0 {
		t.Errorf("with wait=%d, %d messages whose publish was confirmed were lost, such as %v", wait, len(lost), lost[:min(len(lost), 10)])
	}
}

// TestConformanceWait runs the conformance suite on a master with a replica, with every
// write waiting for the replica (wait=1).
func TestConformanceWait(t *testing.T) {
	r := testbroker.StartRedisSentinel(t, testbroker.RedisSentinelOptions{})
	url := r.Master().URL() + "?wait=1&namespace=carrot-test-wait"
	conformance.Run(t, conformance.Harness{
		URL:        url,
		Open:       func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: openFaulty(url),
	})
}

// TestWaitWithoutReplicas sets wait=1 on a master without replicas: every write that a
// call reports fails, with ErrUnavailable, after wait_timeout, and the connection goes on.
func TestWaitWithoutReplicas(t *testing.T) {
	ctx := t.Context()
	srv := testbroker.StartRedis(t, testbroker.RedisOptions{})
	admin, err := carrot.Open(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, name := range []string{"q", "purged"} {
		if _, err := admin.DeclareQueue(ctx, carrot.Queue{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := admin.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	for _, body := range []string{"first", "second"} {
		if err := p.Publish(ctx, &carrot.Message{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}

	conn, err := carrot.Open(ctx, srv.URL()+"?wait=1&wait_timeout=50ms")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "q", Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(want string, redelivered bool) *carrot.Message {
		t.Helper()
		m, err := c.Fetch(ctx)
		if err != nil || string(m.Body) != want || m.Redelivered() != redelivered {
			t.Fatalf("Fetch = %v, %v; want %q, redelivered %v", m, err, want, redelivered)
		}
		return m
	}
	noRetry, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q", NoRetry: true})
	retry, _ := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: "q"})
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"declare", func() error { _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "declared"}); return err }},
		{"bind", func() error { return conn.Bind(ctx, carrot.Binding{Exchange: "amq.direct", Queue: "q", Key: "k"}) }},
		{"purge", func() error { _, err := conn.Purge(ctx, "purged"); return err }},
		{"publish", func() error { return noRetry.Publish(ctx, &carrot.Message{Body: []byte("published")}) }},
		{"publish async", func() error { return noRetry.PublishAsync(ctx, &carrot.Message{Body: []byte("published async")}).Err() }},
		{"publish with retries", func() error {
			ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			return retry.Publish(ctx, &carrot.Message{Body: []byte("published with retries")}) // until ctx ends
		}},
		{"requeue", func() error { return fetch("first", false).Requeue(ctx) }},
		// The requeue is not undone: it is on the master.
		{"reject", func() error { return fetch("first", true).Reject(ctx) }},
	} {
		err := tc.do()
		if !errors.Is(err, carrot.ErrUnavailable) || !strings.Contains(err.Error(), "0 of the 1 replicas") {
			t.Errorf("%s: got %v, want an ErrUnavailable saying that 0 of the 1 replicas acknowledged it", tc.name, err)
		}
	}
	// Acks are sent after Ack returns: Close reports that no replica acknowledged them.
	if err := fetch("second", false).Ack(ctx); err != nil {
		t.Errorf("ack: %v", err)
	}
	if st := conn.State(); !st.Connected || st.Recoveries != 0 {
		t.Errorf("State = %+v, want connected, never lost: too few replicas do not end the connection", st)
	}
	if err := conn.Close(); err == nil || !strings.Contains(err.Error(), "0 of the 1 replicas") {
		t.Errorf("Close after an ack: got %v, want an error saying that 0 of the 1 replicas acknowledged the ack", err)
	}
}
