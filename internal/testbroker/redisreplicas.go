package testbroker

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Sentinels of [StartRedisSentinel]: a master that does not answer for
// redisSentinelDownAfter is replaced by one of its replicas, within seconds.
const (
	redisSentinelMaster          = "carrot" // the name the Sentinels know the master by
	redisSentinels               = 3
	redisSentinelQuorum          = 2
	redisSentinelDownAfter       = time.Second
	redisSentinelFailoverTimeout = 5 * time.Second
)

// RedisSentinelOptions configures the servers started by [StartRedisSentinel]; the zero
// value of each field means its default.
type RedisSentinelOptions struct {
	// Replicas is the number of replicas of the master (1 when zero).
	Replicas int
}

// RedisSentinel is a Redis master, its replicas and three Sentinels that monitor them,
// started by [StartRedisSentinel] for one test. Its methods fail that test when they go
// wrong, so they must be called from its goroutine.
type RedisSentinel struct {
	// MasterName is the name the Sentinels know the master by: "carrot".
	MasterName string
	// Sentinels are the addresses of the Sentinels, 127.0.0.1:PORT.
	Sentinels []string
	// Nodes are the servers that hold the data: the first master, then its replicas. Which
	// of them is the master changes with each failover: see [RedisSentinel.Master].
	Nodes []*RedisServer

	t         testing.TB
	sentinels []*RedisServer // in the order of Sentinels
}

// StartRedisSentinel starts, for t, a Redis master, its replicas and three Sentinels that
// monitor them; it waits until the replicas are in sync and every Sentinel knows them and
// the other Sentinels, and stops them all when t ends.
//
// # Redis Sentinels of a test's own
//
// The master and its replicas are started as by [StartRedis] without
// [RedisOptions.AppendOnly] (loopback only, each in a directory of its own, no snapshot),
// the replicas with "--replicaof 127.0.0.1 PORT", PORT the master's. Each Sentinel is a
// redis-server in Sentinel mode, started the same way but with a configuration file of its
// own, which it rewrites with what it learns:
//
//	redis-server DIR/sentinel.conf --sentinel --port PORT --bind 127.0.0.1 ...
//
// then told to monitor the master, under the name [RedisSentinel.MasterName], with a
// quorum of 2 and short timeouts:
//
//	SENTINEL MONITOR carrot 127.0.0.1 PORT 2
//	SENTINEL SET carrot down-after-milliseconds 1000 failover-timeout 5000
//
// So, once the master is killed, the Sentinels agree within seconds that it is down and
// promote a replica (the one that has the most of the master's writes), and make the other
// replicas follow it. [RedisSentinel.Master] returns the master of the moment,
// [RedisSentinel.WaitFailover] waits for a replica to take over from a master that was
// killed, and [RedisSentinel.Rejoin] starts a server that was killed again, as a replica of
// the master of the moment.
//
// When redis-server is not on PATH, StartRedisSentinel skips t saying so, or fails it if
// CARROT_TEST_REQUIRE_BROKERS=1. Any other failure fails t, with the end of the servers'
// logs.
func StartRedisSentinel(t testing.TB, opts RedisSentinelOptions) *RedisSentinel {
	t.Helper()
	replicas := cmp.Or(opts.Replicas, 1)
	if replicas < 0 {
		t.Fatalf("testbroker: StartRedisSentinel: %d replicas: want at least 1", replicas)
	}
	bin := redisBinaries(t, "redis-server")[0]
	began := time.Now()
	r := &RedisSentinel{MasterName: redisSentinelMaster, t: t}
	master := startRedisServer(t, bin, redisSpec{})
	r.Nodes = append(r.Nodes, master)
	for range replicas {
		r.Nodes = append(r.Nodes, startRedisServer(t, bin, redisSpec{replicaOf: master.Addr}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisClusterTimeout)
	defer cancel()
	for _, n := range r.Nodes[1:] {
		if err := pollRedis(ctx, func() error { return redisReplicaUp(n.Addr, master.Addr) }); err != nil {
			t.Fatalf("testbroker: Redis replica %s of %s: %v%s", n.Addr, master.Addr, err, redisLogs(r.Nodes))
		}
	}

	host, port, _ := net.SplitHostPort(master.Addr)
	for range redisSentinels {
		s := startRedisServer(t, bin, redisSpec{sentinel: true})
		r.sentinels = append(r.sentinels, s)
		r.Sentinels = append(r.Sentinels, s.Addr)
		for _, cmd := range [][]string{
			{"SENTINEL", "MONITOR", r.MasterName, host, port, strconv.Itoa(redisSentinelQuorum)},
			{"SENTINEL", "SET", r.MasterName,
				"down-after-milliseconds", strconv.FormatInt(redisSentinelDownAfter.Milliseconds(), 10),
				"failover-timeout", strconv.FormatInt(redisSentinelFailoverTimeout.Milliseconds(), 10)},
		} {
			if _, err := redisDo(s.Addr, redisIOTimeout, cmd...); err != nil {
				t.Fatalf("testbroker: Sentinel %s: %q: %v%s", s.Addr, cmd, err, redisLogs(r.sentinels))
			}
		}
	}
	// Sentinels find each other through the master, in a few seconds.
	err := pollRedis(ctx, func() error {
		for _, s := range r.sentinels {
			if err := r.sentinelReady(s.Addr, master.Addr, replicas); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("testbroker: Redis Sentinels %s: %v%s", strings.Join(r.Sentinels, " "), err, redisLogs(r.sentinels))
	}
	t.Logf("testbroker: Redis master %s with %d replicas and Sentinels at %s ready in %v",
		master.Addr, replicas, strings.Join(r.Sentinels, " "), time.Since(began).Round(time.Millisecond))
	return r
}

// sentinelReady says why the Sentinel at addr does not yet count the master at master as
// one, with replicas replicas and the other Sentinels, or returns nil.
func (r *RedisSentinel) sentinelReady(addr, master string, replicas int) error {
	reply, err := redisDo(addr, redisIOTimeout, "SENTINEL", "MASTER", r.MasterName)
	if err != nil {
		return fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", addr, err)
	}
	got := redisPairs(reply)
	host, port, _ := net.SplitHostPort(master)
	want := map[string]string{
		"ip":                  host,
		"port":                port,
		"flags":               "master",
		"num-slaves":          strconv.Itoa(replicas),
		"num-other-sentinels": strconv.Itoa(redisSentinels - 1),
	}
	for _, k := range []string{"ip", "port", "flags", "num-slaves", "num-other-sentinels"} {
		if got[k] != want[k] {
			return fmt.Errorf("sentinel %s: SENTINEL MASTER says %s %s, want %s", addr, k, got[k], want[k])
		}
	}
	return nil
}

// Master returns the server of [RedisSentinel.Nodes] that is the master now: the one that
// every running Sentinel names, and that says it is a master. While a failover is under
// way, it waits for its end, up to a minute.
func (r *RedisSentinel) Master() *RedisServer {
	r.t.Helper()
	return r.waitMaster("Master", nil)
}

// WaitFailover waits until a server other than old is the master, as [RedisSentinel.Master]
// says, and returns it: after old, the master, was killed, the replica that the Sentinels
// promoted. It fails the test if that takes more than a minute.
func (r *RedisSentinel) WaitFailover(old *RedisServer) *RedisServer {
	r.t.Helper()
	began := time.Now()
	m := r.waitMaster("WaitFailover", old)
	r.t.Logf("testbroker: Redis master %s took over from %s in %v", m.Addr, old.Addr, time.Since(began).Round(time.Millisecond))
	return m
}

// waitMaster waits until every running Sentinel names the same master, other than not,
// and that server says it is a master; it returns that server. op names the caller.
func (r *RedisSentinel) waitMaster(op string, not *RedisServer) *RedisServer {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisFailoverTimeout)
	defer cancel()
	var master *RedisServer
	err := pollRedis(ctx, func() error {
		addr := ""
		for _, s := range r.sentinels {
			if !s.running() {
				continue
			}
			reply, err := redisDo(s.Addr, redisIOTimeout, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", r.MasterName)
			if err != nil {
				return fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: %w", s.Addr, err)
			}
			hp, _ := reply.([]any)
			if len(hp) != 2 {
				return fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME: got %#v, want an address", s.Addr, reply)
			}
			got := net.JoinHostPort(fmt.Sprint(hp[0]), fmt.Sprint(hp[1]))
			if addr != "" && got != addr {
				return fmt.Errorf("the Sentinels name different masters: %s and %s", addr, got)
			}
			addr = got
		}
		if not != nil && addr == not.Addr {
			return fmt.Errorf("the Sentinels still name %s", addr)
		}
		i := slices.IndexFunc(r.Nodes, func(n *RedisServer) bool { return n.Addr == addr })
		if i < 0 || !r.Nodes[i].running() {
			return fmt.Errorf("the Sentinels name %q, which is none of the running servers", addr)
		}
		if role, err := redisRole(addr); err != nil || role != "master" {
			return fmt.Errorf("the Sentinels name %s, whose role is %q (%v), not master", addr, role, err)
		}
		master = r.Nodes[i]
		return nil
	})
	if err != nil {
		r.t.Fatalf("testbroker: %s: %v%s", op, err, redisLogs(append(slices.Clip(r.sentinels), r.Nodes...)))
	}
	return master
}

// Rejoin starts n, a server of [RedisSentinel.Nodes] that was killed or stopped (a former
// master, say), again as a replica of the master of the moment, and waits until it is in
// sync with it. (The Sentinels would make a former master that comes back a replica, but
// only seconds later: until then it would be a second master, without the data.)
func (r *RedisSentinel) Rejoin(n *RedisServer) {
	r.t.Helper()
	m := r.Master()
	n.mu.Lock()
	n.replicaOf = m.Addr
	n.mu.Unlock()
	n.Start()
	ctx, cancel := context.WithTimeout(context.Background(), redisFailoverTimeout)
	defer cancel()
	if err := pollRedis(ctx, func() error { return redisReplicaUp(n.Addr, m.Addr) }); err != nil {
		r.t.Fatalf("testbroker: Rejoin: %v%s", err, redisLogs([]*RedisServer{n, m}))
	}
}

// MasterOf returns the node that is the master of key's hash slot, as every running node
// says, and says itself. While a failover is under way, it waits for its end, up to a
// minute.
func (c *RedisCluster) MasterOf(key string) *RedisServer {
	c.t.Helper()
	return c.waitSlotMaster("MasterOf", key, nil)
}

// WaitFailover waits until a node other than old is the master of key's hash slot, as
// [RedisCluster.MasterOf] says, and returns it: after old, the master, was killed, the
// replica that took over. It fails the test if that takes more than a minute.
func (c *RedisCluster) WaitFailover(key string, old *RedisServer) *RedisServer {
	c.t.Helper()
	began := time.Now()
	m := c.waitSlotMaster("WaitFailover", key, old)
	c.t.Logf("testbroker: Redis cluster node %s took over from %s in %v", m.Addr, old.Addr, time.Since(began).Round(time.Millisecond))
	return m
}

// waitSlotMaster waits until every running node says that the cluster is ok and that the
// same node, other than not, is the master of key's slot, and that node says it is a
// master; it returns that node. op names the caller.
func (c *RedisCluster) waitSlotMaster(op, key string, not *RedisServer) *RedisServer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), redisFailoverTimeout)
	defer cancel()
	var master *RedisServer
	err := pollRedis(ctx, func() error {
		addr := ""
		for _, n := range c.Nodes {
			if !n.running() {
				continue
			}
			got, err := redisSlotMaster(n.Addr, key)
			if err != nil {
				return err
			}
			if addr != "" && got != addr {
				return fmt.Errorf("nodes say that %s and %s are the master of the slot of %q", addr, got, key)
			}
			addr = got
		}
		if not != nil && addr == not.Addr {
			return fmt.Errorf("the nodes still say that %s is the master of the slot of %q", addr, key)
		}
		i := slices.IndexFunc(c.Nodes, func(n *RedisServer) bool { return n.Addr == addr })
		if i < 0 || !c.Nodes[i].running() {
			return fmt.Errorf("the nodes say that %q, which is none of the running nodes, is the master of the slot of %q", addr, key)
		}
		if role, err := redisRole(addr); err != nil || role != "master" {
			return fmt.Errorf("the master of the slot of %q is %s, whose role is %q (%v)", key, addr, role, err)
		}
		master = c.Nodes[i]
		return nil
	})
	if err != nil {
		c.t.Fatalf("testbroker: %s: %v%s", op, err, redisLogs(c.Nodes))
	}
	return master
}

// redisSlotMaster returns the address of the master of key's slot, as the cluster node at
// addr says, if it also says that the cluster is ok.
func redisSlotMaster(addr, key string) (string, error) {
	c, err := dialRedis(addr, redisIOTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	info, err := c.Do("CLUSTER", "INFO")
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
	}
	s, _ := info.(string)
	if state := redisInfoFields(s)["cluster_state"]; state != "ok" {
		return "", fmt.Errorf("%s: CLUSTER INFO says cluster_state:%s", addr, state)
	}
	reply, err := c.Do("CLUSTER", "KEYSLOT", key)
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER KEYSLOT: %w", addr, err)
	}
	slot, _ := reply.(int64)
	slots, err := c.Do("CLUSTER", "SLOTS")
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	list, _ := slots.([]any)
	for _, e := range list {
		// [start end [ip port id ...] replicas...]
		r, _ := e.([]any)
		if len(r) < 3 {
			break
		}
		start, _ := r[0].(int64)
		end, _ := r[1].(int64)
		m, _ := r[2].([]any)
		if start <= slot && slot <= end && len(m) >= 2 {
			return net.JoinHostPort(fmt.Sprint(m[0]), fmt.Sprint(m[1])), nil
		}
	}
	return "", fmt.Errorf("%s: CLUSTER SLOTS: no master for slot %d in %#v", addr, slot, slots)
}

// Rejoin starts n, a node of [RedisCluster.Nodes] that was killed or stopped (a former
// master, say), again, and waits until it has rejoined the cluster as a replica in sync
// with its master (a former master follows the replica that took its slots) and every
// running node says that the cluster is ok.
func (c *RedisCluster) Rejoin(n *RedisServer) {
	c.t.Helper()
	n.Start()
	ctx, cancel := context.WithTimeout(context.Background(), redisFailoverTimeout)
	defer cancel()
	var running []string
	for _, s := range c.Nodes {
		if s.running() {
			running = append(running, s.Addr)
		}
	}
	err := pollRedis(ctx, func() error { return redisReplicaUp(n.Addr, "") })
	if err == nil {
		err = waitRedisClusterOK(ctx, running, len(c.Nodes))
	}
	if err != nil {
		c.t.Fatalf("testbroker: Rejoin: %v%s", err, redisLogs(c.Nodes))
	}
}

// running reports whether the server's process was started and not killed or stopped
// since (it may have crashed).
func (s *RedisServer) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// redisRole returns the role of the Redis server at addr: master or slave.
func redisRole(addr string) (string, error) {
	fields, err := redisReplication(addr)
	return fields["role"], err
}

// redisReplicaUp says why the Redis server at addr is not a replica whose link to its
// master, at master if not empty, is up, or returns nil.
func redisReplicaUp(addr, master string) error {
	f, err := redisReplication(addr)
	if err != nil {
		return err
	}
	if f["role"] != "slave" || f["master_link_status"] != "up" {
		return fmt.Errorf("%s: INFO replication says role:%s master_link_status:%s, want a replica whose link is up", addr, f["role"], f["master_link_status"])
	}
	if got := net.JoinHostPort(f["master_host"], f["master_port"]); master != "" && got != master {
		return fmt.Errorf("%s: INFO replication says it replicates %s, want %s", addr, got, master)
	}
	return nil
}

// redisReplication returns the fields of INFO replication of the Redis server at addr.
func redisReplication(addr string) (map[string]string, error) {
	reply, err := redisDo(addr, redisIOTimeout, "INFO", "replication")
	if err != nil {
		return nil, fmt.Errorf("%s: INFO replication: %w", addr, err)
	}
	info, _ := reply.(string)
	return redisInfoFields(info), nil
}

// redisPairs returns the reply of a command that answers with names and values in turn,
// such as SENTINEL MASTER, as a map.
func redisPairs(reply any) map[string]string {
	list, _ := reply.([]any)
	m := make(map[string]string, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		m[fmt.Sprint(list[i])] = fmt.Sprint(list[i+1])
	}
	return m
}
