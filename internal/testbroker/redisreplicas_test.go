package testbroker

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestStartRedisSentinel starts a master with two replicas under three Sentinels, kills the
// master, and checks that a replica takes over with the writes that WAIT said the replicas
// had, that the other replica follows it, and that the former master rejoins as a replica.
func TestStartRedisSentinel(t *testing.T) {
	t.Parallel()
	redisBinaries(t, "redis-server")
	var servers []*RedisServer

	t.Run("Failover", func(t *testing.T) {
		r := StartRedisSentinel(t, RedisSentinelOptions{Replicas: 2})
		servers = append(append(servers, r.Nodes...), r.sentinels...)
		if len(r.Nodes) != 3 || len(r.Sentinels) != 3 || len(r.sentinels) != 3 || r.MasterName != "carrot" {
			t.Fatalf("got %d Nodes, %d Sentinels (%d servers), master name %q; want 3, 3 and carrot", len(r.Nodes), len(r.Sentinels), len(r.sentinels), r.MasterName)
		}
		for i, s := range r.sentinels {
			checkRedisServer(t, s)
			if r.Sentinels[i] != s.Addr {
				t.Errorf("Sentinels[%d]: got %s, want %s", i, r.Sentinels[i], s.Addr)
			}
			info, _ := redisMustDo(t, s.Addr, anyReply, "INFO", "server").(string)
			if mode := redisInfoFields(info)["redis_mode"]; mode != "sentinel" {
				t.Errorf("Sentinel %s: redis_mode:%s, want sentinel", s.Addr, mode)
			}
		}
		for i, n := range r.Nodes {
			checkRedisServer(t, n)
			checkRedisConfig(t, n.Addr, map[string]string{"save": "", "appendonly": "no", "repl-diskless-sync-delay": "0", "bind": "127.0.0.1"})
			want := "slave"
			if i == 0 {
				want = "master"
			}
			if role, err := redisRole(n.Addr); err != nil || role != want {
				t.Errorf("Nodes[%d]: role %q (%v), want %s", i, role, err, want)
			}
		}

		m := r.Master()
		if m != r.Nodes[0] {
			t.Fatalf("Master: got %s, want Nodes[0] %s", m.Addr, r.Nodes[0].Addr)
		}
		setWait(t, m.Addr, "k", "before the failover", 2)

		m.Kill()
		n := r.WaitFailover(m)
		if n == m || !slices.Contains(r.Nodes[1:], n) {
			t.Fatalf("WaitFailover: got %s, want one of the replicas", n.Addr)
		}
		if got := r.Master(); got != n {
			t.Errorf("Master after the failover: got %s, want %s", got.Addr, n.Addr)
		}
		redisMustDo(t, n.Addr, "before the failover", "GET", "k")
		other := r.Nodes[1]
		if other == n {
			other = r.Nodes[2]
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisFailoverTimeout)
		defer cancel()
		if err := pollRedis(ctx, func() error { return redisReplicaUp(other.Addr, n.Addr) }); err != nil {
			t.Errorf("the other replica does not follow the new master: %v", err)
		}

		r.Rejoin(m)
		if err := redisReplicaUp(m.Addr, n.Addr); err != nil {
			t.Errorf("after Rejoin: %v", err)
		}
		redisMustDo(t, m.Addr, "before the failover", "GET", "k")
		setWait(t, n.Addr, "k", "after the failover", 2)
		redisMustDo(t, m.Addr, "after the failover", "GET", "k")
	})

	checkRedisGone(t, servers)
}

// TestStartRedisClusterReplicas starts a cluster of three masters with a replica each,
// kills the master of a key's slot, and checks that its replica takes over with the key,
// and that the former master rejoins as the replica of the new one.
func TestStartRedisClusterReplicas(t *testing.T) {
	t.Parallel()
	redisBinaries(t, "redis-server", "redis-cli")
	var servers []*RedisServer

	t.Run("Failover", func(t *testing.T) {
		c := StartRedisCluster(t, RedisClusterOptions{Replicas: 1, NodeTimeout: 2 * time.Second})
		servers = append(servers, c.Nodes...)
		if len(c.Addrs) != 6 || len(c.Nodes) != 6 {
			t.Fatalf("got %d Addrs and %d Nodes, want 6 of each", len(c.Addrs), len(c.Nodes))
		}
		for i, n := range c.Nodes {
			if c.Addrs[i] != n.Addr {
				t.Errorf("Addrs[%d]: got %s, want Nodes[%d].Addr %s", i, c.Addrs[i], i, n.Addr)
			}
			checkRedisServer(t, n)
			checkRedisConfig(t, n.Addr, map[string]string{"cluster-enabled": "yes", "cluster-node-timeout": "2000", "repl-diskless-sync-delay": "0"})
			want := "slave"
			if i < 3 {
				want = "master"
			}
			if role, err := redisRole(n.Addr); err != nil || role != want {
				t.Errorf("Nodes[%d]: role %q (%v), want %s", i, role, err, want)
			}
		}
		checkRedisSlotOrder(t, c.Addrs[:3])

		const key = "{carrot}:k"
		m := c.MasterOf(key)
		if !slices.Contains(c.Nodes[:3], m) {
			t.Fatalf("MasterOf(%q): got %s, want one of the first three nodes", key, m.Addr)
		}
		setWait(t, m.Addr, key, "before the failover", 1)

		m.Kill()
		n := c.WaitFailover(key, m)
		if !slices.Contains(c.Nodes[3:], n) {
			t.Fatalf("WaitFailover: got %s, want one of the replicas", n.Addr)
		}
		if got := c.MasterOf(key); got != n {
			t.Errorf("MasterOf after the failover: got %s, want %s", got.Addr, n.Addr)
		}
		redisMustDo(t, n.Addr, "before the failover", "GET", key)

		c.Rejoin(m)
		if err := redisReplicaUp(m.Addr, n.Addr); err != nil {
			t.Errorf("after Rejoin: %v", err)
		}
		setWait(t, n.Addr, key, "after the failover", 1)
	})

	checkRedisGone(t, servers)
}

// setWait sets key to value on the master at addr, and waits until replicas replicas have
// it: WAIT counts the writes of its own connection, so both go on one.
func setWait(t *testing.T, addr, key, value string, replicas int) {
	t.Helper()
	c, err := dialRedis(addr, redisTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, step := range []struct {
		args []string
		want any
	}{
		{[]string{"SET", key, value}, "OK"},
		{[]string{"WAIT", strconv.Itoa(replicas), "5000"}, int64(replicas)},
	} {
		if got, err := c.Do(step.args...); err != nil || got != step.want {
			t.Fatalf("%s: %q: got %#v, %v; want %#v", addr, step.args, got, err, step.want)
		}
	}
}
