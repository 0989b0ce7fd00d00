package testbroker

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRabbitMQCluster checks that the nodes form one cluster, and that a killed node
// leaves it running on the others and comes back on the same port.
func TestRabbitMQCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three RabbitMQ containers")
	}
	c := StartRabbitMQCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	running := func(from *ClusterNode) string {
		t.Helper()
		out, err := from.Exec(ctx, "rabbitmqctl", "-q", "eval", "lists:sort(rabbit_nodes:all_running()).")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if got, want := running(c.Nodes[0]), "[rabbit@node1,rabbit@node2,rabbit@node3]"; got != want {
		t.Fatalf("running nodes: %s, want %s", got, want)
	}
	if err := c.Nodes[1].Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// The others see it gone when its connections to them break, or at the latest
	// after net_ticktime (60s).
	for got, want := running(c.Nodes[0]), "[rabbit@node1,rabbit@node3]"; got != want; got = running(c.Nodes[0]) {
		select {
		case <-ctx.Done():
			t.Fatalf("running nodes after killing node2: %s, want %s", got, want)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if err := c.Nodes[1].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := running(c.Nodes[2]), "[rabbit@node1,rabbit@node2,rabbit@node3]"; got != want {
		t.Errorf("running nodes after restarting node2: %s, want %s", got, want)
	}
}
