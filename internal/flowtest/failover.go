package flowtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/tlstest"
)

// ClosedPort returns a loopback address where nothing listens (a port that was free a
// moment ago), so that a dial there is refused.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// SilentPort returns the loopback HOST:PORT of a listener that accepts connections and
// never answers, as a node that hangs does; it closes them when t ends.
func SilentPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// hostOf returns the HOST:PORT of rawURL, failing t unless the URL names one.
func hostOf(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Port() == "" || strings.Contains(u.Host, ",") {
		t.Fatalf("flowtest: the broker's URL %s does not name one HOST:PORT", carrot.Redact(rawURL))
	}
	return u.Host
}

// withHosts returns rawURL, whose host hostOf checked, with hosts in its place.
func withHosts(rawURL string, hosts ...string) string {
	u, _ := url.Parse(rawURL)
	u.Host = strings.Join(hosts, ",")
	return u.String()
}

// Failover checks what a URL of several hosts does, on the broker at brokerURL (a URL of
// one HOST:PORT whose backend is registered), each host of the URL being a way to that
// broker: a URL whose first host refuses connections connects through the second; and
// when the node a connection goes through is lost, the connection recovers through the
// other, starting with it, and its consumer resumes and receives every message, those
// published before the loss and those published after the recovery.
func Failover(t *testing.T, brokerURL string) {
	broker := hostOf(t, brokerURL)

	t.Run("FirstHostRefuses", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		closed := ClosedPort(t)
		conn, err := carrot.Open(ctx, withHosts(brokerURL, closed, broker))
		if err != nil {
			t.Fatalf("Open with the first host refusing: %v", err)
		}
		t.Cleanup(func() { conn.Close() }) // after declare's cleanup, which uses it
		q := declare(t, conn, carrot.Queue{Name: queueName(t)})
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Send(ctx, "through the second host"); err != nil {
			t.Fatal(err)
		}
		if m := FetchAck(t, conn, q); string(m.Body) != `"through the second host"` {
			t.Errorf("fetched %q, want the message published", m.Body)
		}
	})

	t.Run("FirstHostSilent", func(t *testing.T) {
		// A node that accepts and never answers costs its share of the dial timeout,
		// not all of it: the second host is reached within the timeout of one attempt.
		d := carrot.Dialer{DialTimeout: 8 * time.Second}
		conn, err := d.Open(t.Context(), withHosts(brokerURL, SilentPort(t), broker))
		if err != nil {
			t.Fatalf("Open with the first host silent, within a dial timeout of %v: %v", d.DialTimeout, err)
		}
		t.Cleanup(func() { conn.Close() })
		q := declare(t, conn, carrot.Queue{Name: queueName(t)})
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Send(t.Context(), "past a silent host"); err != nil {
			t.Fatal(err)
		}
		if m := FetchAck(t, conn, q); string(m.Body) != `"past a silent host"` {
			t.Errorf("fetched %q, want the message published", m.Body)
		}
	})

	t.Run("EveryHostRefuses", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		closed1, closed2 := ClosedPort(t), ClosedPort(t)
		u, _ := url.Parse(brokerURL)
		u.User = url.UserPassword("guest", "S3CRet-pw")
		_, err := carrot.Open(ctx, withHosts(u.String(), closed1, closed2))
		if !errors.Is(err, carrot.ErrUnavailable) {
			t.Fatalf("Open with every host refusing = %v, want ErrUnavailable", err)
		}
		if msg := err.Error(); !strings.Contains(msg, closed1+": ") || !strings.Contains(msg, closed2+": ") || strings.Contains(msg, "S3CRet") {
			t.Errorf("Open with every host refusing = %q, want the failure of each host, without the password", msg)
		}
	})

	t.Run("NodeLost", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		// Two ways to the broker, as if they were two nodes of a cluster.
		node1, node2 := conformance.NewProxy(), conformance.NewProxy()
		t.Cleanup(func() { node1.Close(); node2.Close() }) // last: the queue is deleted through node 2
		addr1, err := node1.Forward(broker)
		if err != nil {
			t.Fatal(err)
		}
		addr2, err := node2.Forward(broker)
		if err != nil {
			t.Fatal(err)
		}
		events := make(chan carrot.Event, 1000)
		d := carrot.Dialer{MaxBackoff: time.Second, OnEvent: func(e carrot.Event) {
			select {
			case events <- e:
			default:
			}
		}}
		conn, err := d.Open(ctx, withHosts(brokerURL, addr1, addr2))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() }) // after declare's cleanup, which uses it
		if n1, n2 := node1.Accepted(broker), node2.Accepted(broker); n1 != 1 || n2 != 0 {
			t.Fatalf("the first connection went through node 1 %d times and node 2 %d times, want node 1 once", n1, n2)
		}

		// Half the messages are published before node 1 is lost, half after the
		// recovery. The handler holds message hold until the connection is restored, so
		// that it and those prefetched behind it are in flight when node 1 goes: its
		// ack then fails, and the broker delivers it again through node 2.
		const total, hold = 200, 50
		q := declare(t, conn, carrot.Queue{Name: queueName(t)}) // durable; messages persistent
		var (
			mu       sync.Mutex
			acked    = make(map[int]int) // the messages handled and acked, by number
			changed  = make(chan struct{}, 1)
			holding  = make(chan struct{})
			released = make(chan struct{})
			heldAck  error // the ack of the held message
			again    bool  // whether the held message came again, flagged redelivered
		)
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(acked)
		}
		waitFor := func(n int, what string) {
			t.Helper()
			for count() < n {
				select {
				case <-changed:
				case <-ctx.Done():
					t.Fatalf("%s: %d of %d messages arrived before the test's deadline", what, count(), n)
				}
			}
		}
		first := true
		consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:   []carrot.Queue{{Name: q, Passive: true}},
			Prefetch: 10,
			Handler: carrot.Decoded(func(ctx context.Context, n int, m *carrot.Message) error {
				held := n == hold && first
				if held {
					first = false // handlers run one at a time
					close(holding)
					select {
					case <-released:
					case <-ctx.Done():
					}
				}
				err := m.Ack(ctx)
				mu.Lock()
				switch {
				case held:
					heldAck = err
				case n == hold:
					again = m.Redelivered()
				}
				if err == nil {
					acked[n]++
				}
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
				return nil
			}),
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		runDone := make(chan error, 1)
		go func() { runDone <- consumer.Run(runCtx) }()
		defer func() {
			stop()
			<-runDone
		}()
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		for n := range total / 2 {
			if err := p.Send(ctx, n); err != nil {
				t.Fatalf("send %d: %v", n, err)
			}
		}
		select {
		case <-holding:
		case <-ctx.Done():
			t.Fatalf("message %d never reached the handler", hold)
		}

		t.Logf("node 1 lost, with message %d in the handler and %d acked", hold, count())
		node1.Block()
		var restored carrot.Event
		for restored.Kind != carrot.EventRestored {
			select {
			case restored = <-events:
				t.Logf("event: %v (attempt %d) %v", restored.Kind, restored.Attempt, restored.Err)
			case <-ctx.Done():
				t.Fatalf("the connection did not recover through node 2: %+v", conn.State())
			}
		}
		if n := node2.Accepted(broker); n == 0 {
			t.Fatal("restored, but not through node 2")
		}
		if n := node1.Accepted(broker); restored.Attempt == 1 && n != 1 {
			t.Errorf("the first reconnection attempt tried node 1 %d times before node 2, want node 2 first", n-1)
		}

		close(released)
		for n := total / 2; n < total; n++ {
			if err := p.Send(ctx, n); err != nil {
				t.Fatalf("send %d: %v", n, err)
			}
		}
		waitFor(total, "after the recovery")
		mu.Lock()
		defer mu.Unlock()
		for n := range total {
			if acked[n] == 0 {
				t.Errorf("message %d never arrived", n)
			}
		}
		if !errors.Is(heldAck, carrot.ErrUnavailable) || !again {
			t.Errorf("the message in the handler when node 1 was lost: ack = %v, delivered again flagged redelivered: %v; want ErrUnavailable, and true", heldAck, again)
		}
		t.Logf("%d messages arrived, through node 1 and then node 2", len(acked))
	})
}

// queueName returns a queue name no other test run uses.
func queueName(t *testing.T) string {
	return fmt.Sprintf("carrot-test.%s.%d", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
}

// declare declares q with conn, and deletes it with conn when the test ends: conn must be
// open then (closed by a cleanup registered before).
func declare(t *testing.T, conn *carrot.Conn, q carrot.Queue) string {
	t.Helper()
	name, err := conn.DeclareQueue(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.DeleteQueue(ctx, name); err != nil {
			t.Errorf("deleting queue %s: %v", name, err)
		}
	})
	return name
}

// TLSServerNames checks that each host of a URL of the TLS scheme (amqps, amqp10s; its
// backend registered) is verified, and asked for with SNI, by its own name: with two
// hosts, the first refusing connections, the handshake with the second names the second;
// and that the server_name option names the server for every host. The server is a TLS
// server that speaks nothing above TLS, so each Open fails after the handshake.
func TLSServerNames(t *testing.T, scheme string) {
	srv := tlstest.NewServer(t, "localhost", "other.example")
	_, port, _ := net.SplitHostPort(srv.Addr)
	for _, tc := range []struct {
		name   string
		hosts  []string
		option string
		want   string
	}{
		// 127.0.0.1 first: were its name used for both, no SNI would be sent.
		{"OwnName", []string{ClosedPort(t), "localhost:" + port}, "", "localhost"},
		{"ServerNameOption", []string{ClosedPort(t), srv.Addr}, "&server_name=other.example", "other.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			raw := scheme + "://guest:S3CRet-pw@" + strings.Join(tc.hosts, ",") + "/?connection_timeout=20s&cacertfile=" + url.QueryEscape(srv.CAFile) + tc.option
			_, err := carrot.Open(ctx, raw)
			if err == nil {
				t.Fatal("Open succeeded, with a server that speaks no AMQP")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.hosts[0]+": ") || !strings.Contains(msg, tc.hosts[1]+": ") || strings.Contains(msg, "S3CRet") {
				t.Errorf("Open = %q, want the failure of each host, without the password", msg)
			}
			h, err := srv.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != tc.want || h.Err != nil {
				t.Errorf("the second host's handshake asked for %q (handshake error: %v), want %q, verified", h.ServerName, h.Err, tc.want)
			}
		})
	}

	// A TLS handshake that gets no answer says the host failed, not the settings: the
	// Conn would try again, where ErrInvalid would tell it not to.
	t.Run("HandshakeUnanswered", func(t *testing.T) {
		d := carrot.Dialer{DialTimeout: 10 * time.Second} // connection_timeout ends each host's first
		raw := scheme + "://guest:guest@" + SilentPort(t) + "," + SilentPort(t) + "/?connection_timeout=1s&cacertfile=" + url.QueryEscape(srv.CAFile)
		if _, err := d.Open(t.Context(), raw); !errors.Is(err, carrot.ErrUnavailable) || errors.Is(err, carrot.ErrInvalid) {
			t.Errorf("Open with hosts that never answer the TLS handshake = %v, want ErrUnavailable", err)
		}
	})
}
