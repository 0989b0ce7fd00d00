package testbroker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// redisTestTimeout bounds each RESP exchange of these tests.
const redisTestTimeout = 10 * time.Second

// TestStartRedis checks what survives a restart and a crash of a server of the test's own,
// with and without the append-only file, and that no process is left behind.
func TestStartRedis(t *testing.T) {
	t.Parallel()
	redisBinaries(t, "redis-server")
	var servers []*RedisServer

	t.Run("AppendOnly", func(t *testing.T) {
		s := StartRedis(t, RedisOptions{AppendOnly: true})
		servers = append(servers, s)
		checkRedisServer(t, s)
		checkRedisConfig(t, s.Addr, map[string]string{
			"appendonly": "yes", "appendfsync": "always", "save": "",
			"bind": "127.0.0.1", "protected-mode": "no", "cluster-enabled": "no",
		})
		addr := s.Addr

		redisMustDo(t, s.Addr, "OK", "SET", "restarted", "kept")
		s.Restart()
		if s.Addr != addr {
			t.Fatalf("Addr after Restart: got %s, want %s", s.Addr, addr)
		}
		redisMustDo(t, s.Addr, "kept", "GET", "restarted")

		redisMustDo(t, s.Addr, "OK", "SET", "killed", "kept too")
		s.Kill()
		checkRedisDown(t, s.Addr)
		s.Start()
		redisMustDo(t, s.Addr, "kept too", "GET", "killed")
		redisMustDo(t, s.Addr, "kept", "GET", "restarted")

		if _, err := os.Stat(filepath.Join(s.Dir, "appendonlydir")); err != nil {
			t.Errorf("append-only directory: %v", err)
		}
		if pids := redisPIDs(s); len(pids) != 3 || pids[0] == pids[1] || pids[1] == pids[2] {
			t.Errorf("processes started: got pids %v, want 3 different ones", pids)
		}
	})

	t.Run("NoPersistence", func(t *testing.T) {
		s := StartRedis(t, RedisOptions{})
		servers = append(servers, s)
		checkRedisServer(t, s)
		checkRedisConfig(t, s.Addr, map[string]string{"appendonly": "no", "save": "", "bind": "127.0.0.1"})

		redisMustDo(t, s.Addr, "OK", "SET", "restarted", "lost")
		s.Restart()
		redisMustDo(t, s.Addr, nil, "GET", "restarted")

		redisMustDo(t, s.Addr, "OK", "SET", "killed", "lost")
		s.Kill()
		s.Start()
		redisMustDo(t, s.Addr, nil, "GET", "killed")

		for _, name := range []string{"appendonlydir", "dump.rdb"} {
			if _, err := os.Stat(filepath.Join(s.Dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s in the server's directory: got %v, want it not to exist", name, err)
			}
		}
	})

	t.Run("StopAndKillTwice", func(t *testing.T) {
		s := StartRedis(t, RedisOptions{})
		servers = append(servers, s)
		s.Stop()
		checkRedisDown(t, s.Addr)
		s.Stop() // does nothing
		s.Kill() // does nothing
		s.Start()
		redisMustDo(t, s.Addr, "PONG", "PING")
		s.Kill()
		s.Kill()
		checkRedisDown(t, s.Addr)
		// Left stopped: the cleanup must cope.
	})

	checkRedisGone(t, servers)
}

// TestStartRedisCluster starts a cluster of 3 masters, checks that every node says it is
// ok, and writes keys through the nodes that own their slots.
func TestStartRedisCluster(t *testing.T) {
	t.Parallel()
	redisBinaries(t, "redis-server", "redis-cli")
	var servers []*RedisServer

	t.Run("ThreeMasters", func(t *testing.T) {
		const masters = 3
		c := StartRedisCluster(t, RedisClusterOptions{})
		servers = append(servers, c.Nodes...)
		if len(c.Addrs) != masters || len(c.Nodes) != masters {
			t.Fatalf("got %d Addrs and %d Nodes, want %d of each", len(c.Addrs), len(c.Nodes), masters)
		}
		seen := make(map[string]bool)
		for i, n := range c.Nodes {
			if c.Addrs[i] != n.Addr {
				t.Errorf("Addrs[%d]: got %s, want Nodes[%d].Addr %s", i, c.Addrs[i], i, n.Addr)
			}
			if seen[n.Addr] || seen[n.Dir] {
				t.Errorf("node %d: address %s or directory %s used twice", i, n.Addr, n.Dir)
			}
			seen[n.Addr], seen[n.Dir] = true, true
			checkRedisServer(t, n)
			checkRedisConfig(t, n.Addr, map[string]string{"cluster-enabled": "yes", "cluster-node-timeout": "5000", "save": ""})
			if _, err := os.Stat(filepath.Join(n.Dir, "nodes.conf")); err != nil {
				t.Errorf("node %d: nodes.conf: %v", i, err)
			}
		}
		for _, addr := range c.Addrs {
			info, _ := redisMustDo(t, addr, anyReply, "CLUSTER", "INFO").(string)
			got := redisInfoFields(info)
			for k, want := range map[string]string{
				"cluster_state":          "ok",
				"cluster_known_nodes":    "3",
				"cluster_slots_assigned": "16384",
				"cluster_slots_ok":       "16384",
				"cluster_size":           "3",
			} {
				if got[k] != want {
					t.Errorf("%s: CLUSTER INFO %s: got %q, want %q", addr, k, got[k], want)
				}
			}
		}

		// Keys go to node 0 first; those whose slot another node owns are redirected once.
		var moved int
		owners := make(map[string]string) // key to owner
		for i := range 12 {
			key, value := fmt.Sprintf("carrot-%d", i), fmt.Sprintf("value %d", i)
			slot := redisMustDo(t, c.Addrs[0], anyReply, "CLUSTER", "KEYSLOT", key)
			owner := c.Addrs[0]
			reply, err := redisTestDo(t, owner, "SET", key, value)
			if err != nil {
				owner = checkMoved(t, err, slot, c.Addrs)
				moved++
				reply, err = redisTestDo(t, owner, "SET", key, value)
			}
			if err != nil || reply != "OK" {
				t.Fatalf("SET %s at %s: got %v, %v; want OK", key, owner, reply, err)
			}
			redisMustDo(t, owner, value, "GET", key)
			owners[key] = owner
			for _, addr := range c.Addrs {
				if addr == owner {
					continue
				}
				_, err := redisTestDo(t, addr, "GET", key)
				if got := checkMoved(t, err, slot, c.Addrs); got != owner {
					t.Errorf("GET %s at %s: redirected to %s, want %s", key, addr, got, owner)
				}
			}
		}
		t.Logf("%d of 12 keys were redirected from node 0", moved)
		if moved == 0 || moved == 12 {
			t.Errorf("%d of 12 keys were redirected from node 0: want some to be, and some not", moved)
		}

		checkRedisSlotOrder(t, c.Addrs)

		// A restarted node keeps its identity and slots, but not its keys.
		n := c.Nodes[1]
		id := redisMustDo(t, n.Addr, anyReply, "CLUSTER", "MYID")
		var lost string
		for key, owner := range owners {
			if owner == n.Addr {
				lost = key
			}
		}
		if lost == "" {
			t.Fatalf("no key is on node 1 (%s): %v", n.Addr, owners)
		}
		n.Restart()
		began := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), redisClusterTimeout)
		defer cancel()
		if err := waitRedisClusterOK(ctx, c.Addrs, masters); err != nil {
			t.Fatalf("after restarting node 1: %v", err)
		}
		t.Logf("the cluster was ok again %v after node 1 restarted", time.Since(began).Round(time.Millisecond))
		redisMustDo(t, n.Addr, id, "CLUSTER", "MYID")
		redisMustDo(t, n.Addr, nil, "GET", lost)
		checkRedisSlotOrder(t, c.Addrs)
	})

	checkRedisGone(t, servers)
}

// TestRedisClusterTooSmall checks that StartRedisCluster refuses fewer than 3 masters.
func TestRedisClusterTooSmall(t *testing.T) {
	f := run(func(tb testing.TB) { StartRedisCluster(tb, RedisClusterOptions{Masters: 2}) })
	if !f.failed || !strings.Contains(f.msg, "at least 3") {
		t.Errorf("StartRedisCluster(2): got failed=%v, message %q; want a failure saying it needs at least 3", f.failed, f.msg)
	}
}

// TestRedisServerMissingBinary checks the skip or failure when redis-server or redis-cli is
// not on PATH.
func TestRedisServerMissingBinary(t *testing.T) {
	lookPath := func(missing string) func(string) (string, error) {
		return func(name string) (string, error) {
			if name == missing {
				return "", exec.ErrNotFound
			}
			return "/bin/" + name, nil
		}
	}
	for _, tc := range []struct {
		name      string
		missing   string
		require   string
		wantPaths []string
		wantFatal bool
	}{
		{name: "both there", wantPaths: []string{"/bin/redis-server", "/bin/redis-cli"}},
		{name: "both there, required", require: "1", wantPaths: []string{"/bin/redis-server", "/bin/redis-cli"}},
		{name: "no redis-cli", missing: "redis-cli"},
		{name: "no redis-server, required", missing: "redis-server", require: "1", wantFatal: true},
		{name: "no redis-cli, required=0", missing: "redis-cli", require: "0"},
		{name: "no redis-cli, required=false", missing: "redis-cli", require: "false"},
		{name: "no redis-cli, required=true", missing: "redis-cli", require: "true", wantFatal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "CARROT_TEST_REQUIRE_BROKERS" {
					return tc.require
				}
				return ""
			}
			paths, reason, fatal := findRedisBinaries(getenv, lookPath(tc.missing), "redis-server", "redis-cli")
			if diff := cmp.Diff(tc.wantPaths, paths); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			if fatal != tc.wantFatal {
				t.Errorf("fatal: got %v, want %v", fatal, tc.wantFatal)
			}
			if tc.missing == "" && reason != "" {
				t.Errorf("reason: got %q, want none", reason)
			}
			if tc.missing != "" && !strings.Contains(reason, tc.missing+" is not on PATH") {
				t.Errorf("reason: got %q, want it to say that %s is not on PATH", reason, tc.missing)
			}
		})
	}

	// And for real, with a PATH where nothing is found.
	t.Setenv("PATH", t.TempDir())
	for _, required := range []bool{false, true} {
		for name, call := range map[string]func(testing.TB){
			"StartRedis":         func(tb testing.TB) { StartRedis(tb, RedisOptions{}) },
			"StartRedisCluster":  func(tb testing.TB) { StartRedisCluster(tb, RedisClusterOptions{}) },
			"StartRedisSentinel": func(tb testing.TB) { StartRedisSentinel(tb, RedisSentinelOptions{}) },
		} {
			t.Run(fmt.Sprintf("%s/required=%v", name, required), func(t *testing.T) {
				if required {
					t.Setenv("CARROT_TEST_REQUIRE_BROKERS", "1")
				} else {
					t.Setenv("CARROT_TEST_REQUIRE_BROKERS", "")
				}
				f := run(call)
				if f.skipped != !required || f.failed != required || f.returned {
					t.Errorf("got skipped=%v failed=%v returned=%v, want skipped=%v failed=%v returned=false (message %q)",
						f.skipped, f.failed, f.returned, !required, required, f.msg)
				}
				if !strings.Contains(f.msg, "redis-server is not on PATH") {
					t.Errorf("message: got %q, want it to say that redis-server is not on PATH", f.msg)
				}
			})
		}
	}
}

// TestRedisServerPortClash checks that a server whose port, or cluster bus port, is taken
// reports errRedisPortInUse, which makes StartRedis try other ports, and leaves no process.
func TestRedisServerPortClash(t *testing.T) {
	t.Parallel()
	bin := redisBinaries(t, "redis-server")[0]
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	for _, tc := range []struct {
		name    string
		cluster bool
	}{{"port", false}, {"cluster bus port", true}} {
		t.Run(tc.name, func(t *testing.T) {
			free, err := freeLoopbackPorts(1)
			if err != nil {
				t.Fatal(err)
			}
			ports := []int{takenPort}
			if tc.cluster {
				ports = []int{free[0], takenPort}
			}
			spec := redisSpec{}
			if tc.cluster {
				spec.nodeTimeout = 5 * time.Second
			}
			s := newRedisServer(t, bin, t.TempDir(), ports, spec)
			t.Cleanup(s.cleanup)
			s.mu.Lock()
			err = s.startLocked()
			running := s.proc != nil
			s.mu.Unlock()
			if !errors.Is(err, errRedisPortInUse) {
				t.Fatalf("starting on a taken port: got %v, want errRedisPortInUse", err)
			}
			t.Logf("as expected: %v", err)
			if running {
				t.Errorf("the server counts as running after failing to start")
			}
			checkRedisGone(t, []*RedisServer{s})
		})
	}
}

// TestRedisServerRESP checks the RESP2 replies that readRedisReply understands.
func TestRedisServerRESP(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    any
		wantErr string
	}{
		{in: "+OK\r\n", want: "OK"},
		{in: "-MOVED 3999 127.0.0.1:6381\r\n", wantErr: "MOVED 3999 127.0.0.1:6381"},
		{in: ":-42\r\n", want: int64(-42)},
		{in: "$5\r\nhe\r\no\r\n", want: "he\r\no"},
		{in: "$0\r\n\r\n", want: ""},
		{in: "$-1\r\n", want: nil},
		{in: "*-1\r\n", want: nil},
		{in: "*3\r\n:1\r\n*1\r\n$1\r\nx\r\n-ERR inside\r\n", want: []any{int64(1), []any{"x"}, redisError("ERR inside")}},
		{in: "$5\r\nhello", wantErr: "EOF"},
		{in: "$3\r\nhello\r\n", wantErr: "not followed by CRLF"},
		{in: "$-2\r\n", wantErr: "bad RESP bulk string length"},
		{in: "\r\n", wantErr: "bad RESP line"},
		{in: "+\r\n", want: ""},
		{in: "!5\r\n", wantErr: "unknown RESP reply"},
		{in: "+OK\n", wantErr: "bad RESP line"},
		{in: strings.Repeat("*1\r\n", 20) + ":1\r\n", wantErr: "bad RESP array"},
	} {
		got, err := readRedisReply(bufio.NewReader(strings.NewReader(tc.in)), 0)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: got %v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: got error %v, want %#v", tc.in, err, tc.want)
		case tc.wantErr == "":
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%q (-want +got):\n%s", tc.in, diff)
			}
		}
	}
	var re redisError
	if _, err := readRedisReply(bufio.NewReader(strings.NewReader("-ERR x\r\n")), 0); !errors.As(err, &re) {
		t.Errorf("error reply: got %T %v, want a redisError", err, err)
	}
}

// anyReply tells redisMustDo to accept any reply but an error.
var anyReply = new(int)

// redisTestDo sends a command to the Redis server at addr on a connection of its own and
// returns its reply, or the server's error reply. It fails t on any other error.
func redisTestDo(t *testing.T, addr string, args ...string) (any, error) {
	t.Helper()
	reply, err := redisDo(addr, redisTestTimeout, args...)
	var re redisError
	if err != nil && !errors.As(err, &re) {
		t.Fatalf("%s: %q: %v", addr, args, err)
	}
	return reply, err
}

// redisMustDo sends a command to the Redis server at addr and checks that the reply is
// want, or anything but an error if want is anyReply; it returns the reply.
func redisMustDo(t *testing.T, addr string, want any, args ...string) any {
	t.Helper()
	reply, err := redisTestDo(t, addr, args...)
	if err != nil {
		t.Fatalf("%s: %q: got error %v", addr, args, err)
	}
	if want != anyReply && reply != want {
		t.Fatalf("%s: %q: got %#v, want %#v", addr, args, reply, want)
	}
	return reply
}

// checkRedisSlotOrder checks that CLUSTER SLOTS on every node says that the nodes at addrs
// own contiguous ranges of slots, covering all of them, in the order of addrs.
func checkRedisSlotOrder(t *testing.T, addrs []string) {
	t.Helper()
	type slotRange struct {
		start, end int64
		addr       string
	}
	for _, at := range addrs {
		reply, _ := redisMustDo(t, at, anyReply, "CLUSTER", "SLOTS").([]any)
		var ranges []slotRange
		for _, e := range reply {
			// [start end [ip port id ...] replicas...]
			r, _ := e.([]any)
			if len(r) < 3 {
				t.Fatalf("%s: CLUSTER SLOTS: bad entry %#v", at, e)
			}
			master, _ := r[2].([]any)
			if len(master) < 2 {
				t.Fatalf("%s: CLUSTER SLOTS: bad master %#v", at, r[2])
			}
			start, _ := r[0].(int64)
			end, _ := r[1].(int64)
			ip, _ := master[0].(string)
			port, _ := master[1].(int64)
			ranges = append(ranges, slotRange{start, end, net.JoinHostPort(ip, strconv.FormatInt(port, 10))})
		}
		slices.SortFunc(ranges, func(a, b slotRange) int { return int(a.start - b.start) })
		var got []string
		next := int64(0)
		for _, r := range ranges {
			if r.start != next || r.end < r.start {
				t.Errorf("%s: CLUSTER SLOTS: got range %d-%d, want one from %d", at, r.start, r.end, next)
			}
			next = r.end + 1
			got = append(got, r.addr)
		}
		if next != redisClusterSlots {
			t.Errorf("%s: CLUSTER SLOTS: the ranges end at %d, want %d", at, next-1, redisClusterSlots-1)
		}
		if diff := cmp.Diff(addrs, got); diff != "" {
			t.Errorf("%s: CLUSTER SLOTS: owners of the ranges in order (-want +got):\n%s", at, diff)
		}
	}
}

// checkMoved checks that err is a MOVED redirection for slot to one of addrs, and returns
// the address it names.
func checkMoved(t *testing.T, err error, slot any, addrs []string) string {
	t.Helper()
	var re redisError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want a MOVED error", err)
	}
	f := strings.Fields(string(re))
	if len(f) != 3 || f[0] != "MOVED" || f[1] != fmt.Sprint(slot) || !slices.Contains(addrs, f[2]) {
		t.Fatalf("got %q, want MOVED %v to one of %v", re, slot, addrs)
	}
	return f[2]
}

// checkRedisServer checks the fields of a running server s, and that it answers there as
// the process that s started.
func checkRedisServer(t *testing.T, s *RedisServer) {
	t.Helper()
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" {
		t.Errorf("Addr: got %q, want 127.0.0.1:PORT", s.Addr)
	}
	if got, want := s.URL(), "redis://127.0.0.1:"+port+"/0"; got != want {
		t.Errorf("URL: got %q, want %q", got, want)
	}
	if port == "6379" {
		t.Errorf("Addr: got %s, the shared server's port", s.Addr)
	}
	if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() || !filepath.IsAbs(s.Dir) {
		t.Errorf("Dir %q: not an absolute directory (%v)", s.Dir, err)
	}
	info, _ := redisMustDo(t, s.Addr, anyReply, "INFO", "server").(string)
	pids := redisPIDs(s)
	if got, want := redisInfoFields(info)["process_id"], strconv.Itoa(pids[len(pids)-1]); got != want {
		t.Errorf("INFO process_id: got %s, want %s, the process started", got, want)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, redisLogFile)); err != nil {
		t.Errorf("log file: %v", err)
	}
}

// checkRedisConfig checks the configuration of the Redis server at addr with CONFIG GET,
// and that its working directory is where its log is.
func checkRedisConfig(t *testing.T, addr string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		reply := redisMustDo(t, addr, anyReply, "CONFIG", "GET", k)
		if diff := cmp.Diff([]any{k, v}, reply); diff != "" {
			t.Errorf("%s: CONFIG GET %s (-want +got):\n%s", addr, k, diff)
		}
	}
	reply := redisMustDo(t, addr, anyReply, "CONFIG", "GET", "logfile")
	dir := redisMustDo(t, addr, anyReply, "CONFIG", "GET", "dir")
	if l, d := reply.([]any), dir.([]any); len(l) != 2 || len(d) != 2 || filepath.Dir(l[1].(string)) != mustEvalSymlinks(t, d[1].(string)) {
		t.Errorf("%s: logfile %v is not in dir %v", addr, l, d)
	}
}

func mustEvalSymlinks(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkRedisDown checks that nothing accepts connections at addr.
func checkRedisDown(t *testing.T, addr string) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections", addr)
	}
}

// redisPIDs returns the ids of the processes that s started, in order.
func redisPIDs(s *RedisServer) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pids []int
	for _, p := range s.started {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// checkRedisGone checks that the servers, whose tests have ended, are stopped and that
// every process they started has exited and been waited for; and, with pgrep, that no
// redis-server runs on their ports.
func checkRedisGone(t *testing.T, servers []*RedisServer) {
	t.Helper()
	var ports []string
	for _, s := range servers {
		s.mu.Lock()
		if s.proc != nil {
			t.Errorf("the Redis server at %s still counts as running", s.Addr)
		}
		for _, p := range s.started {
			select {
			case <-p.done:
			default:
				t.Errorf("the redis-server process %d for %s has not exited", p.cmd.Process.Pid, s.Addr)
			}
		}
		s.mu.Unlock()
		_, port, _ := net.SplitHostPort(s.Addr)
		ports = append(ports, port)
	}
	if len(ports) == 0 {
		return
	}
	pgrep, err := exec.LookPath("pgrep")
	if err != nil {
		t.Logf("no pgrep to look for redis-server processes left behind: %v", err)
		return
	}
	// redis-server shows itself as "redis-server 127.0.0.1:PORT [cluster]" once started,
	// and as its command line before.
	pattern := fmt.Sprintf(`redis-server (127\.0\.0\.1:|.*--port )(%s)( |$)`, strings.Join(ports, "|"))
	if _, err := regexp.Compile(pattern); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pgrep, "-a", "-f", pattern).Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 1: // no process matched
	case err != nil:
		t.Errorf("pgrep -f %q: %v", pattern, err)
	default:
		t.Errorf("redis-server processes left behind:\n%s", out)
	}
}
