package testbroker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"
)

// RabbitMQCluster is a RabbitMQ 3.10 cluster of containers started by
// [StartRabbitMQCluster] for one test, on a Docker network of its own.
type RabbitMQCluster struct {
	// Nodes are the cluster's nodes, the first the one the others joined.
	Nodes []*ClusterNode
}

// ClusterNode is a node of a [RabbitMQCluster]. Its broker's port is published on the
// same loopback port for its whole life, so a URL naming it stays good across restarts.
type ClusterNode struct {
	// Name is the node's Erlang name, rabbit@HOST, as rabbitmqctl shows it.
	Name string
	// Addr is the loopback host:port where the node's AMQP port is published.
	Addr string
	*Container
}

// clusterCookie is the Erlang cookie every node of a test cluster shares.
const clusterCookie = "carrot-test-cluster-cookie"

// StartRabbitMQCluster starts a cluster of n RabbitMQ 3.10 nodes in containers for t
// alone, joined into one cluster, and removes them and their network when t ends. The
// nodes reach each other on the Docker network; the test reaches each through loopback
// only. It skips t unless the cluster tests are asked for (see [Clusters]); when Docker is
// not usable, it skips or fails t as [Start] does.
func StartRabbitMQCluster(t testing.TB, n int) *RabbitMQCluster {
	t.Helper()
	Clusters(t)
	p := decide(RabbitMQ, os.Getenv, false, dockerUsable)
	switch {
	case p.fatal:
		t.Fatal(p.reason)
	case !p.start:
		t.Skip(p.reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	nw, err := network.New(ctx)
	if err != nil {
		t.Fatalf("testbroker: creating a Docker network for the cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := nw.Remove(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "testbroker: removing the cluster's network %s: %v\n", nw.Name, err)
		}
	})
	ports, err := freeLoopbackPorts(n)
	if err != nil {
		t.Fatalf("testbroker: finding free loopback ports: %v", err)
	}
	image := p.image
	c := &RabbitMQCluster{Nodes: make([]*ClusterNode, n)}
	for i := range n {
		host := fmt.Sprintf("node%d", i+1)
		c.Nodes[i] = &ClusterNode{
			Name: "rabbit@" + host,
			Addr: fmt.Sprintf("127.0.0.1:%d", ports[i]),
			Container: startWith(t, RabbitMQ, image, t.Cleanup, tclog.TestLogger(t), nodeOptions{
				hostPort: ports[i],
				custom: []testcontainers.ContainerCustomizer{
					testcontainers.WithConfigModifier(func(cfg *container.Config) { cfg.Hostname = host }),
					testcontainers.WithEnv(map[string]string{"RABBITMQ_ERLANG_COOKIE": clusterCookie}),
					network.WithNetwork([]string{host}, nw),
				},
			}),
		}
	}
	for _, node := range c.Nodes[1:] {
		for _, cmd := range [][]string{
			{"rabbitmqctl", "stop_app"},
			{"rabbitmqctl", "join_cluster", c.Nodes[0].Name},
			{"rabbitmqctl", "start_app"},
		} {
			if out, err := node.Exec(ctx, cmd...); err != nil {
				t.Fatalf("testbroker: %s: %v\n%s", node.Name, err, out)
			}
		}
	}
	out, err := c.Nodes[0].Exec(ctx, "rabbitmqctl", "-q", "cluster_status", "--formatter", "json")
	if err != nil {
		t.Fatalf("testbroker: cluster status: %v", err)
	}
	for _, node := range c.Nodes {
		if !strings.Contains(out, node.Name) {
			t.Fatalf("testbroker: %s is not in the cluster: %s", node.Name, out)
		}
	}
	t.Logf("testbroker: RabbitMQ cluster of %d nodes at %s", n, strings.TrimPrefix(c.URL(), "amqp://guest:guest@"))
	return c
}

// URL returns the cluster's URL, naming every node: amqp://guest:guest@HOST:PORT,.../.
func (c *RabbitMQCluster) URL() string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return "amqp://guest:guest@" + strings.Join(addrs, ",") + "/"
}

// Node returns the node named name (rabbit@HOST), or nil.
func (c *RabbitMQCluster) Node(name string) *ClusterNode {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Running returns a node that is running, to run rabbitmqctl on.
func (c *RabbitMQCluster) Running(ctx context.Context) (*ClusterNode, error) {
	var errs []string
	for _, n := range c.Nodes {
		_, err := n.Exec(ctx, "rabbitmqctl", "-q", "status")
		if err == nil {
			return n, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, fmt.Errorf("testbroker: no node of the cluster runs: %s", strings.Join(errs, "; "))
}

// QueueLeader returns the node that leads the quorum queue or stream named queue.
func (c *RabbitMQCluster) QueueLeader(ctx context.Context, queue string) (*ClusterNode, error) {
	n, err := c.Running(ctx)
	if err != nil {
		return nil, err
	}
	out, err := n.Exec(ctx, "rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", "leader")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			if leader := c.Node(f[1]); leader != nil {
				return leader, nil
			}
		}
	}
	return nil, fmt.Errorf("testbroker: no leader for queue %q in: %s", queue, out)
}

// Kill kills the node's container at once, as a crash or a power cut does: its broker
// gets no signal it can handle.
func (n *ClusterNode) Kill(ctx context.Context) error {
	return docker(ctx, "kill", "--signal", "KILL", n.ctr.GetContainerID())
}

// Restart starts a killed node's container again, with its data, and waits until its
// broker is back in the cluster and accepts clients on the same port.
func (n *ClusterNode) Restart(ctx context.Context) error {
	if err := docker(ctx, "start", n.ctr.GetContainerID()); err != nil {
		return err
	}
	for {
		_, err := n.Exec(ctx, "rabbitmqctl", "-q", "await_startup", "--timeout", "10")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbroker: %s did not start again: %w", n.Name, err)
		case <-time.After(time.Second):
		}
	}
}

// docker runs the docker command with args.
func docker(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbroker: docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
