package testbroker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ioTimeout bounds each exchange with a broker in these tests.
const ioTimeout = 15 * time.Second

func TestRabbitMQ(t *testing.T) {
	t.Parallel()
	u := URL(t, RabbitMQ)
	props := amqp091Start(t, u)
	if got, want := props["product"], "RabbitMQ"; got != want {
		t.Errorf("server product: got %q, want %q", got, want)
	}
}

func TestRabbitMQ4(t *testing.T) {
	t.Parallel()
	u := URL(t, RabbitMQ4)
	if got, want := scheme(t, u), "amqp10"; got != want {
		t.Errorf("URL scheme: got %q, want %q", got, want)
	}
	props := amqp091Start(t, u)
	if got, want := props["product"], "RabbitMQ"; got != want {
		t.Errorf("server product: got %q, want %q", got, want)
	}
	// RabbitMQ4 exists for RabbitMQ 4's native AMQP 1.0: a 3.x broker is the wrong one.
	major, _, _ := strings.Cut(props["version"], ".")
	if n, err := strconv.Atoi(major); err != nil || n < 4 {
		t.Errorf("server version: got %q, want 4.0 or later", props["version"])
	}
	amqp10SASLHeader(t, u)
}

func TestRedis(t *testing.T) {
	t.Parallel()
	u := URL(t, Redis)
	if got, want := scheme(t, u), "redis"; got != want {
		t.Errorf("URL scheme: got %q, want %q", got, want)
	}
	redisPing(t, u)
}

// TestStartExec starts its own Redis container even though a URL is configured, and runs
// commands in it.
func TestStartExec(t *testing.T) {
	const envURL = "redis://127.0.0.1:1/0"
	t.Setenv(Redis.URLEnv, envURL)
	c := Start(t, Redis)
	if c.URL == envURL {
		t.Fatalf("Start returned the URL from %s, want its own container's", Redis.URLEnv)
	}
	redisPing(t, c.URL)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Exec(ctx, "redis-cli", "ping")
	if err != nil {
		t.Fatalf("Exec(redis-cli ping): %v", err)
	}
	if got, want := strings.TrimSpace(out), "PONG"; got != want {
		t.Errorf("Exec(redis-cli ping): got %q, want %q", got, want)
	}

	out, err = c.Exec(ctx, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Exec(exit 3): got error %v, want one saying exit status 3", err)
	}
	for _, want := range []string{"to-stdout", "to-stderr"} {
		if !strings.Contains(out, want) {
			t.Errorf("Exec(exit 3): got output %q, want it to contain %q", out, want)
		}
	}

	if _, err := c.Exec(ctx); err == nil {
		t.Errorf("Exec(): got no error, want one for the missing command")
	}
}

func TestDecide(t *testing.T) {
	// usableEnv lets testbroker start containers.
	usableEnv := map[string]string{
		"TESTCONTAINERS_HOST_OVERRIDE": "localhost",
		"TESTCONTAINERS_RYUK_DISABLED": "true",
	}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := make(map[string]string)
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	noDocker := errors.New("no Docker engine found: socket not found")

	tests := []struct {
		name      string
		kind      Kind
		env       map[string]string
		fromEnv   bool  // URL rather than Start
		dockerErr error // what the Docker probe says, if asked
		wantProbe bool  // whether the Docker probe must be asked

		wantURL    string
		wantStart  bool
		wantImage  string
		wantFatal  bool
		wantReason []string // substrings of the skip or failure reason
		notReason  []string // substrings the reason must not have
	}{{
		name:    "URL from the environment",
		kind:    RabbitMQ,
		env:     map[string]string{"CARROT_TEST_AMQP091_URL": "amqp://guest:guest@127.0.0.1:5672/"},
		fromEnv: true,
		wantURL: "amqp://guest:guest@127.0.0.1:5672/",
	}, {
		name:    "URL from the environment wins over Docker",
		kind:    Redis,
		env:     with(usableEnv, "CARROT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		fromEnv: true,
		wantURL: "redis://127.0.0.1:6379/0",
	}, {
		name:    "only the kind's own variable counts",
		kind:    RabbitMQ4,
		env:     map[string]string{"CARROT_TEST_AMQP091_URL": "amqp://guest:guest@127.0.0.1:5672/"},
		fromEnv: true,
		wantReason: []string{
			"no RabbitMQ 4.0 broker", "set CARROT_TEST_AMQP10_URL", "TESTCONTAINERS_HOST_OVERRIDE is not set",
		},
	}, {
		name:       "unparseable URL fails without showing it",
		kind:       RabbitMQ,
		env:        map[string]string{"CARROT_TEST_AMQP091_URL": "amqp://guest:s3cret@[::1/"},
		fromEnv:    true,
		wantFatal:  true,
		wantReason: []string{"CARROT_TEST_AMQP091_URL is set but does not parse"},
		notReason:  []string{"s3cret"},
	}, {
		name:       "no override: skip without asking Docker",
		kind:       Redis,
		env:        map[string]string{"TESTCONTAINERS_RYUK_DISABLED": "true"},
		fromEnv:    true,
		wantReason: []string{"set CARROT_TEST_REDIS_URL", "TESTCONTAINERS_HOST_OVERRIDE is not set", "docker-up.sh"},
	}, {
		name:       "no override and required: fail",
		kind:       Redis,
		env:        map[string]string{"CARROT_TEST_REQUIRE_BROKERS": "1"},
		fromEnv:    true,
		wantFatal:  true,
		wantReason: []string{"set CARROT_TEST_REDIS_URL", "TESTCONTAINERS_HOST_OVERRIDE is not set", "CARROT_TEST_REQUIRE_BROKERS=1"},
	}, {
		name:       "override off the machine",
		kind:       RabbitMQ,
		env:        with(usableEnv, "TESTCONTAINERS_HOST_OVERRIDE", "192.0.2.1"),
		fromEnv:    true,
		wantReason: []string{`TESTCONTAINERS_HOST_OVERRIDE is "192.0.2.1"`},
	}, {
		name:       "override 127.0.0.1 is fine",
		kind:       RabbitMQ,
		env:        with(usableEnv, "TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1"),
		fromEnv:    true,
		wantProbe:  true,
		wantStart:  true,
		wantImage:  "rabbitmq:3.10",
		wantReason: nil,
	}, {
		name:       "reaper not disabled",
		kind:       RabbitMQ,
		env:        with(usableEnv, "TESTCONTAINERS_RYUK_DISABLED", ""),
		fromEnv:    true,
		wantReason: []string{"TESTCONTAINERS_RYUK_DISABLED"},
	}, {
		name:       "Docker engine off the machine",
		kind:       Redis,
		env:        with(usableEnv, "DOCKER_HOST", "tcp://10.1.2.3:2375"),
		fromEnv:    true,
		wantReason: []string{"DOCKER_HOST", "not on this machine"},
	}, {
		name:      "Docker engine on loopback TCP",
		kind:      Redis,
		env:       with(usableEnv, "DOCKER_HOST", "tcp://127.0.0.1:2375"),
		fromEnv:   true,
		wantProbe: true,
		wantStart: true,
		wantImage: "redis:7.0",
	}, {
		name:       "hub prefix would rename the image",
		kind:       Redis,
		env:        with(usableEnv, "TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX", "mirror.example"),
		fromEnv:    true,
		wantReason: []string{"TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX"},
	}, {
		name:       "Docker does not answer: skip",
		kind:       RabbitMQ,
		env:        usableEnv,
		fromEnv:    true,
		dockerErr:  noDocker,
		wantProbe:  true,
		wantReason: []string{"set CARROT_TEST_AMQP091_URL", "socket not found"},
	}, {
		name:       "Docker does not answer and required: fail",
		kind:       RabbitMQ,
		env:        with(usableEnv, "CARROT_TEST_REQUIRE_BROKERS", "1"),
		fromEnv:    true,
		dockerErr:  noDocker,
		wantProbe:  true,
		wantFatal:  true,
		wantReason: []string{"set CARROT_TEST_AMQP091_URL", "socket not found", "CARROT_TEST_REQUIRE_BROKERS=1"},
	}, {
		name:       "required switched off",
		kind:       RabbitMQ,
		env:        with(usableEnv, "CARROT_TEST_REQUIRE_BROKERS", "0"),
		fromEnv:    true,
		dockerErr:  noDocker,
		wantProbe:  true,
		wantReason: []string{"socket not found"},
	}, {
		name:      "Docker usable: default image",
		kind:      RabbitMQ4,
		env:       usableEnv,
		fromEnv:   true,
		wantProbe: true,
		wantStart: true,
		wantImage: "rabbitmq:4.0",
	}, {
		name:      "Docker usable: image from the environment",
		kind:      RabbitMQ4,
		env:       with(usableEnv, "CARROT_TEST_RABBITMQ4_IMAGE", "local/rabbitmq:4.0"),
		fromEnv:   true,
		wantProbe: true,
		wantStart: true,
		wantImage: "local/rabbitmq:4.0",
	}, {
		name:      "Start ignores the URL variable",
		kind:      Redis,
		env:       with(usableEnv, "CARROT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
		wantProbe: true,
		wantStart: true,
		wantImage: "redis:7.0",
	}, {
		name:       "Start without Docker: skip",
		kind:       Redis,
		env:        map[string]string{"CARROT_TEST_REDIS_URL": "redis://127.0.0.1:6379/0"},
		wantReason: []string{"cannot start a Redis 7.0 container", "TESTCONTAINERS_HOST_OVERRIDE is not set"},
		notReason:  []string{"CARROT_TEST_REDIS_URL"},
	}, {
		name:       "Start without Docker and required: fail",
		kind:       Redis,
		env:        with(usableEnv, "CARROT_TEST_REQUIRE_BROKERS", "1"),
		dockerErr:  noDocker,
		wantProbe:  true,
		wantFatal:  true,
		wantReason: []string{"cannot start a Redis 7.0 container", "socket not found"},
	}, {
		name:       "zero Kind",
		kind:       Kind{},
		env:        usableEnv,
		fromEnv:    true,
		wantFatal:  true,
		wantReason: []string{"unknown Kind"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probed := false
			usable := func(k Kind, image string) error {
				probed = true
				if k != tt.kind {
					t.Errorf("probe asked about %q, want %q", k.Name, tt.kind.Name)
				}
				return tt.dockerErr
			}
			getenv := func(key string) string { return tt.env[key] }
			p := decide(tt.kind, getenv, tt.fromEnv, usable)

			if probed != tt.wantProbe {
				t.Errorf("Docker probed: got %v, want %v", probed, tt.wantProbe)
			}
			if p.url != tt.wantURL {
				t.Errorf("url: got %q, want %q", p.url, tt.wantURL)
			}
			if p.start != tt.wantStart {
				t.Errorf("start: got %v, want %v", p.start, tt.wantStart)
			}
			if p.image != tt.wantImage {
				t.Errorf("image: got %q, want %q", p.image, tt.wantImage)
			}
			if p.fatal != tt.wantFatal {
				t.Errorf("fatal: got %v, want %v", p.fatal, tt.wantFatal)
			}
			noBroker := p.url == "" && !p.start
			if noBroker && !strings.HasPrefix(p.reason, "testbroker: ") {
				t.Errorf("reason: got %q, want it to start with %q", p.reason, "testbroker: ")
			}
			if !noBroker && p.reason != "" {
				t.Errorf("reason: got %q with a broker, want none", p.reason)
			}
			for _, s := range tt.wantReason {
				if !strings.Contains(p.reason, s) {
					t.Errorf("reason: got %q, want it to contain %q", p.reason, s)
				}
			}
			for _, s := range tt.notReason {
				if strings.Contains(p.reason, s) {
					t.Errorf("reason: got %q, want it not to contain %q", p.reason, s)
				}
			}
		})
	}
}

// TestURLWithoutDocker checks that URL and Start really skip, or fail when brokers are
// required, where the environment rules Docker out.
func TestURLWithoutDocker(t *testing.T) {
	for _, k := range []Kind{RabbitMQ, RabbitMQ4, Redis} {
		t.Setenv(k.URLEnv, "")
	}
	t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "")

	for _, required := range []bool{false, true} {
		for name, call := range map[string]func(testing.TB){
			"URL":   func(tb testing.TB) { URL(tb, Redis) },
			"Start": func(tb testing.TB) { Start(tb, Redis) },
		} {
			t.Run(fmt.Sprintf("%s/required=%v", name, required), func(t *testing.T) {
				if required {
					t.Setenv("CARROT_TEST_REQUIRE_BROKERS", "1")
				} else {
					t.Setenv("CARROT_TEST_REQUIRE_BROKERS", "")
				}
				f := run(call)
				if got, want := f.skipped, !required; got != want {
					t.Errorf("skipped: got %v, want %v (message %q)", got, want, f.msg)
				}
				if got, want := f.failed, required; got != want {
					t.Errorf("failed: got %v, want %v (message %q)", got, want, f.msg)
				}
				if f.returned {
					t.Errorf("%s returned, want it to stop the test", name)
				}
				if !strings.Contains(f.msg, "TESTCONTAINERS_HOST_OVERRIDE") {
					t.Errorf("message: got %q, want it to name TESTCONTAINERS_HOST_OVERRIDE", f.msg)
				}
			})
		}
	}
}

// TestMissing checks that Missing skips, or fails when brokers are required, saying why.
func TestMissing(t *testing.T) {
	for _, required := range []bool{false, true} {
		t.Run(fmt.Sprintf("required=%v", required), func(t *testing.T) {
			t.Setenv("CARROT_TEST_REQUIRE_BROKERS", map[bool]string{false: "", true: "1"}[required])
			f := run(func(tb testing.TB) { Missing(tb, "no kombu here") })
			if f.skipped == required || f.failed != required || f.returned {
				t.Errorf("skipped %v, failed %v, returned %v; want skipped %v, failed %v, not returned", f.skipped, f.failed, f.returned, !required, required)
			}
			if !strings.Contains(f.msg, "no kombu here") {
				t.Errorf("message %q does not say why", f.msg)
			}
		})
	}
}

// fakeTB records how a test would have ended. Methods it does not define panic.
type fakeTB struct {
	testing.TB
	skipped, failed, returned bool
	msg                       string
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Logf(string, ...any)       {}
func (f *fakeTB) Skip(args ...any)          { f.skipped = true; f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) Fatal(args ...any)         { f.failed = true; f.msg = fmt.Sprint(args...); runtime.Goexit() }
func (f *fakeTB) Skipf(s string, a ...any)  { f.Skip(fmt.Sprintf(s, a...)) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.Fatal(fmt.Sprintf(s, a...)) }

// run calls call with a fakeTB in a goroutine of its own, as Skip and Fatal end it.
func run(call func(testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(f)
		f.returned = true
	}()
	<-done
	return f
}

func scheme(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("bad URL: %v", err)
	}
	return u.Scheme
}

// dial connects to the host and port of the broker URL rawURL.
func dial(t *testing.T, rawURL string) net.Conn {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("bad URL: %v", err)
	}
	c, err := net.DialTimeout("tcp", u.Host, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	return c
}

// amqp091Start sends the AMQP 0-9-1 protocol header to the broker at rawURL, checks that it
// answers with a connection.start method frame, and returns the server properties that
// are strings.
func amqp091Start(t *testing.T, rawURL string) map[string]string {
	t.Helper()
	c := dial(t, rawURL)
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Fatalf("writing the AMQP 0-9-1 header: %v", err)
	}
	var hdr [7]byte // type, channel, payload size
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("reading the first frame: %v", err)
	}
	if hdr[0] != 1 {
		t.Fatalf("first frame: got type %d (% x), want 1, a method frame", hdr[0], hdr)
	}
	size := binary.BigEndian.Uint32(hdr[3:])
	if size < 4 || size > 1<<20 {
		t.Fatalf("first frame: got payload size %d", size)
	}
	payload := make([]byte, size+1) // and the frame-end octet
	if _, err := io.ReadFull(c, payload); err != nil {
		t.Fatalf("reading the first frame's payload: %v", err)
	}
	if end := payload[size]; end != 0xCE {
		t.Fatalf("first frame: got frame end %#x, want 0xce", end)
	}
	class, method := binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:])
	if class != 10 || method != 10 {
		t.Fatalf("first frame: got method %d.%d, want 10.10, connection.start", class, method)
	}
	props := map[string]string{}
	for _, key := range []string{"product", "version"} {
		props[key] = longString(payload, key)
	}
	t.Logf("AMQP 0-9-1 connection.start from %s %s", props["product"], props["version"])
	return props
}

// longString finds the field key of type long string in an AMQP field table in b, and
// returns its value, or "".
func longString(b []byte, key string) string {
	field := append([]byte{byte(len(key))}, key+"S"...)
	i := bytes.Index(b, field)
	if i < 0 {
		return ""
	}
	b = b[i+len(field):]
	if len(b) < 4 {
		return ""
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return ""
	}
	return string(b[4 : 4+n])
}

// amqp10SASLHeader sends the AMQP 1.0 SASL protocol header to the broker at rawURL and
// checks that it echoes it, as an AMQP 1.0 broker does.
func amqp10SASLHeader(t *testing.T, rawURL string) {
	t.Helper()
	c := dial(t, rawURL)
	const header = "AMQP\x03\x01\x00\x00"
	if _, err := c.Write([]byte(header)); err != nil {
		t.Fatalf("writing the AMQP 1.0 SASL header: %v", err)
	}
	got := make([]byte, len(header))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the AMQP 1.0 header: %v", err)
	}
	if string(got) != header {
		t.Fatalf("AMQP 1.0 SASL header: got % x, want % x", got, header)
	}
}

// redisPing sends PING to the Redis server at rawURL and checks that it answers PONG, then
// logs its version.
func redisPing(t *testing.T, rawURL string) {
	t.Helper()
	c := dial(t, rawURL)
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		t.Fatalf("writing PING: %v", err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer to PING: %v", err)
	}
	if got, want := line, "+PONG\r\n"; got != want {
		t.Fatalf("PING: got %q, want %q", got, want)
	}

	if _, err := io.WriteString(c, "INFO server\r\n"); err != nil {
		t.Fatalf("writing INFO: %v", err)
	}
	line, err = r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "$") {
		t.Fatalf("INFO: got %q, %v, want a bulk string", line, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 || n > 1<<20 {
		t.Fatalf("INFO: got length %q", line)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading INFO: %v", err)
	}
	for l := range strings.SplitSeq(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(l, "redis_version:"); ok {
			t.Logf("Redis %s answers PONG", v)
			return
		}
	}
	t.Errorf("INFO server: no redis_version in %q", body)
}
