package testbroker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	args []string // its arguments

	mu      sync.Mutex
	proc    *redisProc   // the running process, nil when stopped
	started []*redisProc // every process started, for the tests
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
//		--dir DIR --logfile DIR/redis.log --daemonize no
//
// so it writes no snapshot, and, with [RedisOptions.AppendOnly], also with
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
	return startRedisServer(t, bins[0], extra, false)
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
// not wait for the cluster to be ok again. Start fails the test if the server is running,
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

// RedisCluster is a Redis Cluster of masters without replicas, started by
// [StartRedisCluster] for one test.
type RedisCluster struct {
	// Addrs are the addresses of the masters, 127.0.0.1:PORT, in the order given to
	// redis-cli --cluster create, which assigns them the hash slots in that order.
	Addrs []string
	// Nodes are the masters' servers, in the order of Addrs.
	Nodes []*RedisServer
}

// StartRedisCluster starts a Redis Cluster of masters redis-server processes for t, without
// replicas, waits until every node says the cluster is ok, and stops them all when t ends.
// It needs at least 3 masters, as redis-cli --cluster create does.
//
// # Redis clusters of a test's own
//
// Each node is started as by [StartRedis] without [RedisOptions.AppendOnly] (loopback
// only, in a directory of its own, no snapshot), and with
//
//	--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 --cluster-port BUSPORT
//
// where BUSPORT, the port of the cluster bus, is a second free port: Redis's default, the
// client port plus 10000, would be above 65535 for the free ports above 55535, which Linux
// hands out (its default range is 32768 to 60999). Then StartRedisCluster runs
//
//	redis-cli --cluster create 127.0.0.1:PORT1 ... 127.0.0.1:PORTN --cluster-replicas 0 --cluster-yes
//
// (redis-cli from PATH, with REDISCLI_AUTH removed from its environment), which assigns the
// 16384 hash slots in equal ranges to the nodes in the order of [RedisCluster.Addrs]. It
// returns once CLUSTER INFO on every node says cluster_state:ok, cluster_slots_assigned:16384
// and cluster_known_nodes equal to masters: redis-cli returns before that, while the nodes
// still say cluster_state:fail.
//
// A node can be killed, stopped and started again through [RedisCluster.Nodes]; it keeps
// its identity and slots in its nodes.conf, but not its keys, which are kept nowhere.
//
// When redis-server or redis-cli is not on PATH, StartRedisCluster skips t saying so, or
// fails it if CARROT_TEST_REQUIRE_BROKERS=1. Any other failure fails t.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("testbroker: StartRedisCluster: %d masters: redis-cli --cluster create needs at least 3", masters)
	}
	bins := redisBinaries(t, "redis-server", "redis-cli")
	began := time.Now()
	c := &RedisCluster{}
	for range masters {
		s := startRedisServer(t, bins[0], nil, true)
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), redisClusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.CommandContext(ctx, bins[1], args...)
	cmd.Env = withoutEnv(os.Environ(), "REDISCLI_AUTH")
	cmd.WaitDelay = time.Second
	created := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testbroker: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	createdIn := time.Since(created)

	if err := waitRedisClusterOK(ctx, c.Addrs); err != nil {
		t.Fatalf("testbroker: Redis cluster %s: %v", strings.Join(c.Addrs, " "), err)
	}
	t.Logf("testbroker: Redis cluster of %d masters at %s ready in %v (redis-cli --cluster create took %v)",
		masters, strings.Join(c.Addrs, " "), time.Since(began).Round(time.Millisecond), createdIn.Round(time.Millisecond))
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

// startRedisServer starts a redis-server (bin) for t on free ports in a new directory, with
// the common arguments, then extra, then those of a cluster node if cluster is true. It
// stops the server when t ends, and fails t if the server does not start.
func startRedisServer(t testing.TB, bin string, extra []string, cluster bool) *RedisServer {
	t.Helper()
	nports := 1
	if cluster {
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
		s := newRedisServer(t, bin, t.TempDir(), ports, extra, cluster)
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

// newRedisServer returns a stopped RedisServer for t that runs bin in dir, on ports[0],
// with the common arguments, then extra, then, if cluster is true, those of a cluster node
// with its bus on ports[1].
func newRedisServer(t testing.TB, bin, dir string, ports []int, extra []string, cluster bool) *RedisServer {
	args := []string{
		"--port", strconv.Itoa(ports[0]),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--save", "",
		"--dir", dir,
		"--logfile", filepath.Join(dir, redisLogFile),
		"--daemonize", "no",
	}
	args = append(args, extra...)
	if cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000",
			"--cluster-port", strconv.Itoa(ports[1]),
		)
	}
	return &RedisServer{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		Dir:  dir,
		t:    t,
		bin:  bin,
		args: args,
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

// launch starts a redis-server process, and a goroutine that waits for it to exit.
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
	p.cmd = exec.Command(s.bin, s.args...)
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
	if got := fields["loading"]; got != "0" {
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
// that all the hash slots are assigned, and that the cluster knows len(addrs) nodes.
func waitRedisClusterOK(ctx context.Context, addrs []string) error {
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": strconv.Itoa(redisClusterSlots),
		"cluster_known_nodes":    strconv.Itoa(len(addrs)),
	}
	var last error
	for {
		last = nil
		for _, addr := range addrs {
			if last = redisClusterOK(addr, want); last != nil {
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ok after %v: %v", redisClusterTimeout, last)
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
