package testbroker

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Time limits and attempts for the Redis servers that tests start themselves.
const (
	redisReadyTimeout    = time.Minute      // from starting redis-server until it answers PING and has loaded its data
	redisStopTimeout     = 15 * time.Second // from SIGTERM until the process has exited, before SIGKILL
	redisClusterTimeout  = 2 * time.Minute  // for redis-cli --cluster create, then for every node to say cluster_state:ok
	redisFailoverTimeout = time.Minute      // for a replica to take over from a master that was killed, or to rejoin
	redisIOTimeout       = 2 * time.Second  // for one RESP exchange while waiting for a server
	redisPollInterval    = 20 * time.Millisecond
	redisPortAttempts    = 5 // fresh ports tried by StartRedis when the one picked is taken meanwhile
	redisRestartAttempts = 8 // tries of Start when its port is taken meanwhile, 250 ms apart
	redisClusterSlots    = 16384
	redisLogFile         = "redis.log"        // the server's log, in its directory
	redisOutputFile      = "redis-server.out" // its stdout and stderr, where errors before its log opens go
)

// errRedisPortInUse says that redis-server exited because one of its ports was taken.
var errRedisPortInUse = errors.New("a port it was given is already in use")

// RedisOptions configures a Redis server started by [StartRedis].
type RedisOptions struct {
	// AppendOnly turns on the append-only file, with "--appendonly yes --appendfsync
	// always": every write is on disk before the server answers it, so it survives
	// [RedisServer.Restart] and also [RedisServer.Kill]. Without it (the default) the server
	// keeps nothing on disk and starts again empty.
	AppendOnly bool
}

// RedisServer is a redis-server process started by [StartRedis] or [StartRedisCluster] for
// one test. Kill may be called from any goroutine; Stop, Start and Restart fail the test
// that started the server when they go wrong, so they must be called from its goroutine.
type RedisServer struct {
	// Addr is the server's address, 127.0.0.1:PORT. It stays the same across restarts.
	Addr string
	// Dir is the server's working directory, a temporary directory of the test's that is
	// removed when the test ends. It holds the server's log (redis.log), what it wrote to
	// stdout and stderr (redis-server.out), its append-only files (appendonlydir) and, in a
	// cluster, its nodes.conf.
	Dir string

	t    testing.TB
	bin  string   // the redis-server executable
	args []string // its arguments, but --replicaof

	mu        sync.Mutex
	replicaOf string       // the address of the master it starts as a replica of, or ""
	proc      *redisProc   // the running process, nil when stopped
	started   []*redisProc // every process started, for the tests
}

// redisProc is one run of redis-server.
type redisProc struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited and been waited for
	err    error         // what cmd.Wait returned, set before done is closed
	logOff int64         // the size of the server's log when the process started
	outOff int64         // the size of its output file when the process started
}

// StartRedis starts a redis-server process for t, waits until it answers PING, and stops
// it when t ends.
//
// # Redis servers of a test's own
//
// Tests that stop, crash or restart Redis must not do it to the shared server of
// CARROT_TEST_REDIS_URL, which other tests use. StartRedis starts a server of the test's
// own from the redis-server executable on PATH, in a new temporary directory ([RedisServer.Dir]),
// listening on 127.0.0.1 only, on a port that was free (if another process takes it before
// the server binds it, StartRedis tries other ports). The server is run with
//
//	redis-server --port PORT --bind 127.0.0.1 --protected-mode no --save "" \
//		--repl-diskless-sync-delay 0 --dir DIR --logfile DIR/redis.log --daemonize no
//
// so it writes no snapshot (and a replica's full synchronization starts at once), and, with [RedisOptions.AppendOnly], also with
// "--appendonly yes --appendfsync always". Its URL is [RedisServer.URL].
//
// [RedisServer.Kill] crashes the server (SIGKILL), [RedisServer.Stop] shuts it down
// (SIGTERM, which makes Redis flush its append-only file and exit), [RedisServer.Start]
// starts it again on the same port and directory, so that it reloads its append-only file,
// and [RedisServer.Restart] does Stop then Start. StartRedis and Start return once the
// server answers PING and INFO says it has finished loading its data (loading:0). When the
// test ends, the server is sent SIGTERM, then SIGKILL if it has not exited within
// 15 seconds, and is waited for; if it has crashed before (exited other than with status
// 0), the test fails. On Linux the server is also killed if the test binary dies before its
// cleanup runs (a timeout, an interrupt), so no process is left behind.
//
// When redis-server is not on PATH, StartRedis skips t saying so, or fails it if
// CARROT_TEST_REQUIRE_BROKERS=1, as [URL] does when it has no broker. Any other failure to
// start fails t, with the end of the server's log.
func StartRedis(t testing.TB, opts RedisOptions) *RedisServer {
	t.Helper()
	bins := redisBinaries(t, "redis-server")
	var extra []string
	if opts.AppendOnly {
		extra = append(extra, "--appendonly", "yes", "--appendfsync", "always")
	}
	return startRedisServer(t, bins[0], redisSpec{extra: extra})
}

// URL returns the server's URL, redis://127.0.0.1:PORT/0.
func (s *RedisServer) URL() string {
	return "redis://" + s.Addr + "/0"
}

// Kill kills the server with SIGKILL, as in a crash, and waits until it has exited. With
// [RedisOptions.AppendOnly], every write it answered is in its append-only file. Kill does
// nothing if the server is not running, and marks the test failed, without stopping it, if
// the server had crashed already.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	select {
	case <-p.done:
		if p.err != nil {
			s.t.Errorf("testbroker: Kill: the Redis server at %s had already exited: %v%s", s.Addr, p.err, s.logTail(p))
		}
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.t.Errorf("testbroker: Kill: killing the Redis server at %s: %v", s.Addr, err)
	}
	<-p.done
}

// Stop shuts the server down with SIGTERM and waits until it has exited: with
// [RedisOptions.AppendOnly], Redis flushes and fsyncs its append-only file first. Stop fails
// the test if the server does not exit with status 0 within 15 seconds (it is then killed).
// Stop does nothing if the server is not running.
func (s *RedisServer) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		s.t.Fatalf("testbroker: Stop: %v", err)
	}
}

// Start starts the server again, on the same port and in the same directory, so that it
// reloads its append-only file if it has one, and returns once it answers PING and has
// finished loading. A cluster node rejoins its cluster from its nodes.conf, but Start does
// not wait for the cluster to be ok again (see [RedisCluster.Rejoin]). A server of a
// [RedisSentinel] starts with the --replicaof it was last given: what the Sentinels told
// it since is not kept (see [RedisSentinel.Rejoin]). Start fails the test if the server is running,
// or does not start; if its port has been taken meanwhile, Start tries again for 2 seconds.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.t.Fatalf("testbroker: Start: the Redis server at %s is already running", s.Addr)
	}
	began := time.Now()
	var err error
	for range redisRestartAttempts {
		if err = s.startLocked(); !errors.Is(err, errRedisPortInUse) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("testbroker: Start: %v", err)
	}
	s.t.Logf("testbroker: Redis server at %s started again, ready in %v", s.Addr, time.Since(began).Round(time.Millisecond))
}

// Restart stops the server as [RedisServer.Stop] does, then starts it again as
// [RedisServer.Start] does.
func (s *RedisServer) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// RedisClusterOptions configures a Redis Cluster started by [StartRedisCluster]; the zero
// value of each field means its default.
type RedisClusterOptions struct {
	// Masters is the number of masters, at least 3 (3 when zero).
	Masters int
	// Replicas is the number of replicas of each master (none when zero).
	Replicas int
	// NodeTimeout is the cluster-node-timeout, in whole milliseconds (5s when zero): how
	// long a node may not answer before the others count it as failing, and one of its
	// replicas, if it has any, takes over its slots.
	NodeTimeout time.Duration
}

// RedisCluster is a Redis Cluster started by [StartRedisCluster] for one test. Its
// methods fail that test when they go wrong, so they must be called from its goroutine.
type RedisCluster struct {
	// Addrs are the addresses of the nodes, 127.0.0.1:PORT, in the order given to
	// redis-cli --cluster create: first the masters, which it assigns the hash slots in
	// that order, then the replicas.
	Addrs []string
	// Nodes are the nodes' servers, in the order of Addrs.
	Nodes []*RedisServer

	t testing.TB
}

// StartRedisCluster starts a Redis Cluster of redis-server processes for t, as opts says,
// waits until every node says the cluster is ok and every replica is in sync with its
// master, and stops them all when t ends.
//
// # Redis clusters of a test's own
//
// Each node is started as by [StartRedis] without [RedisOptions.AppendOnly] (loopback
// only, in a directory of its own, no snapshot), and with
//
//	--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout MS --cluster-port BUSPORT
//
// where MS is [RedisClusterOptions.NodeTimeout] in milliseconds and BUSPORT, the port of
// the cluster bus, is a second free port: Redis's default, the client port plus 10000,
// would be above 65535 for the free ports above 55535, which Linux hands out (its default
// range is 32768 to 60999). Then StartRedisCluster runs
//
//	redis-cli --cluster create 127.0.0.1:PORT1 ... 127.0.0.1:PORTN --cluster-replicas REPLICAS --cluster-yes
//
// (redis-cli from PATH, with REDISCLI_AUTH removed from its environment), which makes the
// first [RedisClusterOptions.Masters] nodes of [RedisCluster.Addrs] masters, assigns them
// the 16384 hash slots in equal ranges in that order, and makes each of the other nodes a
// replica of one of them, of its choosing. It returns once CLUSTER INFO on every node says
// cluster_state:ok, cluster_slots_assigned:16384 and cluster_known_nodes equal to the
// number of nodes (redis-cli returns before that, while the nodes still say
// cluster_state:fail), and every replica says that its link to its master is up.
//
// A node can be killed, stopped and started again through [RedisCluster.Nodes]; it keeps
// its identity and slots in its nodes.conf, but not its keys, which are kept nowhere. A
// master that is killed while it has replicas is replaced by one of them, promoted by the
// cluster once the master has not answered for NodeTimeout, and a little more: see
// [RedisCluster.MasterOf], [RedisCluster.WaitFailover] and [RedisCluster.Rejoin].
//
// When redis-server or redis-cli is not on PATH, StartRedisCluster skips t saying so, or
// fails it if CARROT_TEST_REQUIRE_BROKERS=1. Any other failure fails t.
func StartRedisCluster(t testing.TB, opts RedisClusterOptions) *RedisCluster {
	t.Helper()
	masters := cmp.Or(opts.Masters, 3)
	if masters < 3 {
		t.Fatalf("testbroker: StartRedisCluster: %d masters: redis-cli --cluster create needs at least 3", masters)
	}
	if opts.Replicas < 0 || opts.NodeTimeout < 0 {
		t.Fatalf("testbroker: StartRedisCluster: %d replicas, node timeout %v: want neither negative", opts.Replicas, opts.NodeTimeout)
	}
	bins := redisBinaries(t, "redis-server", "redis-cli")
	began := time.Now()
	c := &RedisCluster{t: t}
	spec := redisSpec{nodeTimeout: cmp.Or(opts.NodeTimeout, 5*time.Second)}
	for range masters * (1 + opts.Replicas) {
		s := startRedisServer(t, bins[0], spec)
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), redisClusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opts.Replicas), "--cluster-yes")
	cmd := exec.CommandContext(ctx, bins[1], args...)
	cmd.Env = withoutEnv(os.Environ(), "REDISCLI_AUTH")
	cmd.WaitDelay = time.Second
	created := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testbroker: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	createdIn := time.Since(created)

	if err := waitRedisClusterOK(ctx, c.Addrs, len(c.Addrs)); err != nil {
		t.Fatalf("testbroker: Redis cluster %s: %v%s", strings.Join(c.Addrs, " "), err, redisLogs(c.Nodes))
	}
	for _, n := range c.Nodes[masters:] {
		if err := pollRedis(ctx, func() error { return redisReplicaUp(n.Addr, "") }); err != nil {
			t.Fatalf("testbroker: Redis cluster %s: replica %s: %v%s", strings.Join(c.Addrs, " "), n.Addr, err, redisLogs(c.Nodes))
		}
	}
	t.Logf("testbroker: Redis cluster of %d masters with %d replicas each at %s ready in %v (redis-cli --cluster create took %v)",
		masters, opts.Replicas, strings.Join(c.Addrs, " "), time.Since(began).Round(time.Millisecond), createdIn.Round(time.Millisecond))
	return c
}

// redisBinaries returns the paths of the named executables, found on PATH. When one is
// missing it skips t, or fails it if brokers are required, and does not return.
func redisBinaries(t testing.TB, names ...string) []string {
	t.Helper()
	paths, reason, fatal := findRedisBinaries(os.Getenv, exec.LookPath, names...)
	switch {
	case reason == "":
		return paths
	case fatal:
		t.Fatal(reason)
	default:
		t.Skip(reason)
	}
	panic("unreachable")
}

// findRedisBinaries looks the named executables up with lookPath. If one is missing, it
// returns why, and whether that is fatal rather than a reason to skip, as the environment
// read with getenv says.
func findRedisBinaries(getenv func(string) string, lookPath func(string) (string, error), names ...string) (paths []string, reason string, fatal bool) {
	for _, name := range names {
		p, err := lookPath(name)
		if err != nil {
			reason = fmt.Sprintf("testbroker: cannot start a Redis server of the test's own: %s is not on PATH (install Redis 7, Debian package redis-server): %v", name, err)
			if v := getenv(requireEnv); v != "" && v != "0" && v != "false" {
				return nil, reason + fmt.Sprintf(" (%s=%s: failing rather than skipping)", requireEnv, v), true
			}
			return nil, reason, false
		}
		paths = append(paths, p)
	}
	return paths, "", false
}

// redisSpec says what a server started by startRedisServer is, beyond the common arguments.
type redisSpec struct {
	extra       []string      // arguments after the common ones
	nodeTimeout time.Duration // a cluster node's cluster-node-timeout; zero for a server outside a cluster
	sentinel    bool          // a Sentinel, run with a configuration file of its own
	replicaOf   string        // the address of the master that a replica replicates, or ""
}

// startRedisServer starts a redis-server (bin) for t on free ports in a new directory, with
// the common arguments and those of spec. It stops the server when t ends, and fails t if
// the server does not start.
func startRedisServer(t testing.TB, bin string, spec redisSpec) *RedisServer {
	t.Helper()
	nports := 1
	if spec.nodeTimeout > 0 {
		nports = 2 // and one for the cluster bus
	}
	var err error
	for range redisPortAttempts {
		var ports []int
		ports, err = freeLoopbackPorts(nports)
		if err != nil {
			t.Fatalf("testbroker: picking a port for a Redis server: %v", err)
		}
		// A fresh directory each time: a cluster node that failed to bind its bus port has
		// already written a nodes.conf with the ports it was given.
		s := newRedisServer(t, bin, t.TempDir(), ports, spec)
		t.Cleanup(s.cleanup)
		began := time.Now()
		s.mu.Lock()
		err = s.startLocked()
		s.mu.Unlock()
		if err == nil {
			t.Logf("testbroker: Redis server at %s (dir %s) ready in %v", s.Addr, s.Dir, time.Since(began).Round(time.Millisecond))
			return s
		}
		if !errors.Is(err, errRedisPortInUse) {
			t.Fatal(err)
		}
		t.Logf("%v; trying other ports", err)
	}
	t.Fatalf("testbroker: no Redis server started after %d tries of free ports: %v", redisPortAttempts, err)
	panic("unreachable")
}

// redisSentinelConf is a Sentinel's configuration file, in its directory: Sentinel refuses
// to run without one, and writes what it learns to it.
const redisSentinelConf = "sentinel.conf"

// newRedisServer returns a stopped RedisServer for t that runs bin in dir, on ports[0],
// with the common arguments, then those of spec; a cluster node has its bus on ports[1].
func newRedisServer(t testing.TB, bin, dir string, ports []int, spec redisSpec) *RedisServer {
	t.Helper()
	var args []string
	if spec.sentinel {
		conf := filepath.Join(dir, redisSentinelConf)
		if err := os.WriteFile(conf, nil, 0o644); err != nil {
			t.Fatalf("testbroker: writing a Sentinel's configuration file: %v", err)
		}
		args = append(args, conf, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(ports[0]),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--save", "",
		"--repl-diskless-sync-delay", "0",
		"--dir", dir,
		"--logfile", filepath.Join(dir, redisLogFile),
		"--daemonize", "no",
	)
	args = append(args, spec.extra...)
	if spec.nodeTimeout > 0 {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(spec.nodeTimeout.Milliseconds(), 10),
			"--cluster-port", strconv.Itoa(ports[1]),
		)
	}
	return &RedisServer{
		Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		Dir:       dir,
		t:         t,
		bin:       bin,
		args:      args,
		replicaOf: spec.replicaOf,
	}
}

// freeLoopbackPorts returns n distinct ports on 127.0.0.1 that were free a moment ago.
// Redis's default port and its cluster bus port are never among them.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, l)
		if p := l.Addr().(*net.TCPAddr).Port; p != 6379 && p != 16379 {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// withoutEnv returns env without the variable named name.
func withoutEnv(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// startLocked starts the server's process and waits until it is ready. If it is not, the
// process is killed and the error says why, wrapping errRedisPortInUse if a port was taken.
// s.mu is held.
func (s *RedisServer) startLocked() error {
	p, err := s.launch()
	if err != nil {
		return err
	}
	s.proc = p
	s.started = append(s.started, p)
	if err := s.waitReady(p); err != nil {
		p.cmd.Process.Kill()
		<-p.done
		s.proc = nil
		return err
	}
	return nil
}

// launch starts a redis-server process, and a goroutine that waits for it to exit. s.mu is
// held.
func (s *RedisServer) launch() (*redisProc, error) {
	p := &redisProc{done: make(chan struct{})}
	p.logOff = fileSize(filepath.Join(s.Dir, redisLogFile))
	outPath := filepath.Join(s.Dir, redisOutputFile)
	p.outOff = fileSize(outPath)
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testbroker: starting a Redis server: %w", err)
	}
	defer out.Close() // the process has its own copy
	args := s.args
	if s.replicaOf != "" {
		host, port, _ := net.SplitHostPort(s.replicaOf)
		args = append(slices.Clip(args), "--replicaof", host, port)
	}
	p.cmd = exec.Command(s.bin, args...)
	p.cmd.Dir = s.Dir
	p.cmd.Stdout = out
	p.cmd.Stderr = out
	p.cmd.SysProcAttr = redisSysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbroker: starting %s: %w", s.bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady waits until the server of process p answers PING and says in INFO that it is
// that process and has finished loading its data. It returns an error if the process exits
// first, or does not get ready in time.
func (s *RedisServer) waitReady(p *redisProc) error {
	deadline := time.Now().Add(redisReadyTimeout)
	pid := strconv.Itoa(p.cmd.Process.Pid)
	var last error
	for {
		select {
		case <-p.done:
			tail := s.logTail(p)
			if strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("testbroker: the Redis server at %s exited while starting: %w (%v)%s", s.Addr, errRedisPortInUse, p.err, tail)
			}
			return fmt.Errorf("testbroker: the Redis server at %s exited while starting: %v%s", s.Addr, p.err, tail)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testbroker: the Redis server at %s is not ready after %v: %v%s", s.Addr, redisReadyTimeout, last, s.logTail(p))
		}
		last = redisReady(s.Addr, pid)
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
		case <-time.After(redisPollInterval):
		}
	}
}

// redisReady says why the Redis server at addr, which should have process id pid, is not
// ready, or returns nil if it is.
func redisReady(addr, pid string) error {
	c, err := dialRedis(addr, redisIOTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if reply, err := c.Do("PING"); err != nil {
		return fmt.Errorf("PING: %w", err) // -LOADING while it loads its data
	} else if reply != "PONG" {
		return fmt.Errorf("PING: got %q, want PONG", reply)
	}
	reply, err := c.Do("INFO", "server", "persistence")
	if err != nil {
		return fmt.Errorf("INFO: %w", err)
	}
	info, _ := reply.(string)
	fields := redisInfoFields(info)
	if got := fields["process_id"]; got != pid {
		return fmt.Errorf("INFO: process_id is %q, want %s: another process listens there", got, pid)
	}
	if got := fields["loading"]; got != "0" && fields["redis_mode"] != "sentinel" { // a Sentinel loads no data
		return fmt.Errorf("INFO: loading is %q, want 0", got)
	}
	return nil
}

// stopLocked sends the server SIGTERM and waits until it has exited, killing it if it takes
// too long. It returns an error if it had to kill it, or the server did not exit with
// status 0. s.mu is held.
func (s *RedisServer) stopLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("sending SIGTERM to the Redis server at %s: %v; killed it", s.Addr, err)
	}
	timer := time.NewTimer(redisStopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("the Redis server at %s did not exit within %v of SIGTERM; killed it%s", s.Addr, redisStopTimeout, s.logTail(p))
	}
	if p.err != nil {
		return fmt.Errorf("the Redis server at %s exited after SIGTERM with %v%s", s.Addr, p.err, s.logTail(p))
	}
	return nil
}

// cleanup stops the server at the end of the test. It reports a server that crashed during
// the test; one that exited with status 0, as after a SHUTDOWN command, did as it was told.
func (s *RedisServer) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proc; p != nil {
		select {
		case <-p.done:
			s.proc = nil
			if p.err != nil {
				s.t.Errorf("testbroker: the Redis server at %s exited during the test: %v%s", s.Addr, p.err, s.logTail(p))
			}
			return
		default:
		}
	}
	if err := s.stopLocked(); err != nil {
		s.t.Errorf("testbroker: stopping a Redis server at the end of the test: %v", err)
	}
}

// redisLogTailLines is how many of their last lines the server's log and output show.
const redisLogTailLines = 20

// logTail returns the last lines that process p wrote to the server's log and output, to
// show why it failed, or "".
func (s *RedisServer) logTail(p *redisProc) string {
	var b strings.Builder
	for _, f := range []struct {
		name string
		off  int64
	}{{redisLogFile, p.logOff}, {redisOutputFile, p.outOff}} {
		lines := lastLines(filepath.Join(s.Dir, f.name), f.off, redisLogTailLines)
		if len(lines) > 0 {
			fmt.Fprintf(&b, "\nlast lines of %s:\n\t%s", f.name, strings.Join(lines, "\n\t"))
		}
	}
	return b.String()
}

// redisLogs returns the last lines of the logs and output of the servers' last processes,
// each under its address, to show why a group of servers failed.
func redisLogs(servers []*RedisServer) string {
	var b strings.Builder
	for _, s := range servers {
		s.mu.Lock()
		if n := len(s.started); n > 0 {
			if tail := s.logTail(s.started[n-1]); tail != "" {
				fmt.Fprintf(&b, "\nthe Redis server at %s:%s", s.Addr, strings.ReplaceAll(tail, "\n", "\n\t"))
			}
		}
		s.mu.Unlock()
	}
	return b.String()
}

// lastLines returns the last n lines of the file at path from offset off on.
func lastLines(path string, off int64, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == "" {
			continue
		}
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return lines
}

// fileSize returns the size of the file at path, or 0 if it cannot tell.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitRedisClusterOK waits until CLUSTER INFO on every node at addrs says cluster_state:ok,
// that all the hash slots are assigned, and that the cluster knows known nodes.
func waitRedisClusterOK(ctx context.Context, addrs []string, known int) error {
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": strconv.Itoa(redisClusterSlots),
		"cluster_known_nodes":    strconv.Itoa(known),
	}
	return pollRedis(ctx, func() error {
		for _, addr := range addrs {
			if err := redisClusterOK(addr, want); err != nil {
				return err
			}
		}
		return nil
	})
}

// pollRedis calls check every redisPollInterval until it returns nil, and returns nil; or,
// once ctx ends, an error that says how long it waited and what check last returned.
func pollRedis(ctx context.Context, check func() error) error {
	began := time.Now()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still not so after %v: %w", time.Since(began).Round(time.Millisecond), err)
		case <-time.After(redisPollInterval):
		}
	}
}

// redisClusterOK says how CLUSTER INFO on the node at addr differs from want, or returns
// nil if it does not.
func redisClusterOK(addr string, want map[string]string) error {
	reply, err := redisDo(addr, redisIOTimeout, "CLUSTER", "INFO")
	if err != nil {
		return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
	}
	info, _ := reply.(string)
	got := redisInfoFields(info)
	for _, k := range []string{"cluster_state", "cluster_slots_assigned", "cluster_known_nodes"} {
		if got[k] != want[k] {
			return fmt.Errorf("%s: CLUSTER INFO says %s:%s, want %s", addr, k, got[k], want[k])
		}
	}
	return nil
}

// redisInfoFields returns the "name:value" lines of the answer to INFO or CLUSTER INFO.
func redisInfoFields(info string) map[string]string {
	fields := make(map[string]string)
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	return fields
}

// redisError is an error reply of a Redis server, such as "MOVED 3999 127.0.0.1:6381".
type redisError string

func (e redisError) Error() string { return string(e) }

// redisConn is a connection to a Redis server that speaks just enough RESP2 for this package
// and its tests. It is not safe for concurrent use.
type redisConn struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// dialRedis connects to the Redis server at addr; timeout bounds the dial and each Do.
func dialRedis(addr string, timeout time.Duration) (*redisConn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	return &redisConn{conn: c, r: bufio.NewReader(c), timeout: timeout}, nil
}

// Close closes the connection.
func (c *redisConn) Close() error { return c.conn.Close() }

// Do sends the command args and returns the reply: a string for a simple or bulk string,
// an int64 for an integer, nil for a null, a []any for an array. An error reply is returned
// as a redisError.
func (c *redisConn) Do(args ...string) (any, error) {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		return nil, err
	}
	return readRedisReply(c.r, 0)
}

// redisDo sends the command args to the Redis server at addr on a connection of its own,
// and returns the reply as [redisConn.Do] does.
func redisDo(addr string, timeout time.Duration, args ...string) (any, error) {
	c, err := dialRedis(addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(args...)
}

// Limits on the replies readRedisReply accepts.
const (
	redisMaxBulk  = 64 << 20
	redisMaxArray = 1 << 20
	redisMaxDepth = 8
)

// readRedisReply reads one RESP2 reply from r, nested depth arrays deep.
func readRedisReply(r *bufio.Reader, depth int) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return nil, fmt.Errorf("bad RESP line %q", line)
	}
	kind, rest := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return rest, nil
	case '-':
		return nil, redisError(rest)
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad RESP integer %q", line)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > redisMaxBulk {
			return nil, fmt.Errorf("bad RESP bulk string length %q", line)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if string(buf[n:]) != "\r\n" {
			return nil, fmt.Errorf("RESP bulk string of %d bytes not followed by CRLF", n)
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > redisMaxArray || depth >= redisMaxDepth {
			return nil, fmt.Errorf("bad RESP array %q at depth %d", line, depth)
		}
		if n == -1 {
			return nil, nil
		}
		arr := make([]any, 0, n)
		for range n {
			v, err := readRedisReply(r, depth+1)
			if err != nil {
				var re redisError
				if !errors.As(err, &re) {
					return nil, err
				}
				v = re // an error inside an array, as in the reply to EXEC
			}
			arr = append(arr, v)
		}
		return arr, nil
	}
	return nil, fmt.Errorf("unknown RESP reply %q", line)
}
