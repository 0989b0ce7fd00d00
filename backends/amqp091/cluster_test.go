package amqp091_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// TestCluster runs carrot on a three-node RabbitMQ 3.10 cluster, through a URL that
// names every node: streams of persistent messages through quorum queues while a node
// is killed and restarted, and the conformance suite on quorum queues.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node RabbitMQ cluster; not in -short mode")
	}
	cluster := testbroker.StartRabbitMQCluster(t, 3)
	url := cluster.URL()

	// The flow's connection is on the first node, the URL's first; the queue's leader on
	// the node of the connection that declared it.
	t.Run("KillConnectedNode", func(t *testing.T) {
		testClusterFailover(t, cluster, cluster.Nodes[1], cluster.Nodes[0])
	})
	t.Run("KillLeaderNode", func(t *testing.T) {
		testClusterFailover(t, cluster, cluster.Nodes[2], cluster.Nodes[2])
	})
	t.Run("Conformance", func(t *testing.T) {
		h := harness(url) // its faulty connections go through a proxy to the first node
		h.QueueType = carrot.QuorumQueue
		conformance.Run(t, h)
	})
}

// testClusterFailover streams 20,000 persistent messages through a quorum queue led by
// leader, on a connection to the cluster's URL, while victim is killed (after a quarter
// of the stream) and restarted (after half of it): every message arrives, and the
// duplicates are counted.
func testClusterFailover(t *testing.T, cluster *testbroker.RabbitMQCluster, leader, victim *testbroker.ClusterNode) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Declared on the leader's node, which a quorum queue makes its first leader.
	q := uniqueName(t)
	declarer, err := carrot.Open(ctx, "amqp://guest:guest@"+leader.Addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := declarer.DeclareQueue(ctx, carrot.Queue{Name: q, Type: carrot.QuorumQueue, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	declarer.Close()
	if got, err := cluster.QueueLeader(ctx, q); err != nil || got != leader {
		t.Fatalf("the queue's leader is %v (%v), want %s", got, err, leader.Name)
	}

	d := carrot.Dialer{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	conn, err := d.Open(ctx, cluster.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := connectedNode(ctx, t, cluster); got != cluster.Nodes[0] {
		t.Fatalf("the connection is on %s, want %s, the URL's first node", got.Name, cluster.Nodes[0].Name)
	}

	flow := &flowtest.Flow{Conn: conn, Queue: q, Total: 20000, Prefetch: 200}
	flow.Run(ctx, t, func(f *flowtest.Flow) {
		f.WaitReceived(int64(f.Total / 4))
		before := conn.State().Recoveries
		f.Logf("killing %s", victim.Name)
		if err := victim.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if victim == leader {
			// The queue stays available: the other two members elect a leader.
			for {
				now, err := cluster.QueueLeader(ctx, q)
				if err == nil && now != victim {
					f.Logf("%s leads the queue now", now.Name)
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("no new leader for the queue after %s was killed: %v", victim.Name, err)
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		if victim == cluster.Nodes[0] {
			for conn.State().Recoveries <= before {
				select {
				case <-ctx.Done():
					t.Fatalf("the connection did not fail over from %s", victim.Name)
				case <-time.After(10 * time.Millisecond):
				}
			}
			now := connectedNode(ctx, t, cluster)
			f.Logf("the connection failed over to %s", now.Name)
			if now == victim {
				t.Errorf("the connection is on %s, which was killed", now.Name)
			}
		}
		f.WaitReceived(int64(f.Total / 2))
		f.Logf("restarting %s", victim.Name)
		if err := victim.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		f.Logf("%s is back", victim.Name)
	})
	if leader, err := cluster.QueueLeader(ctx, q); err == nil {
		t.Logf("the queue's leader at the end: %s", leader.Name)
	}
	if err := conn.DeleteQueue(ctx, q); err != nil {
		t.Error(err)
	}
}

// connectedNode returns the node that holds the test's only client connection, as
// rabbitmqctl lists the cluster's connections.
func connectedNode(ctx context.Context, t *testing.T, cluster *testbroker.RabbitMQCluster) *testbroker.ClusterNode {
	t.Helper()
	for {
		n, err := cluster.Running(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A connection's pid, <rabbit@HOST.N.N.N>, names its node (HOST has no dots).
		out, err := n.Exec(ctx, "rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid")
		if err != nil {
			t.Fatal(err)
		}
		if pids := strings.Fields(out); len(pids) == 1 {
			name, _, _ := strings.Cut(strings.TrimPrefix(pids[0], "<"), ".")
			if node := cluster.Node(name); node != nil {
				return node
			}
		}
		select { // between a failure and the recovery, none or two
		case <-ctx.Done():
			t.Fatalf("no single client connection in the cluster: %q", out)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
