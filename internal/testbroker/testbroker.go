package testbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
)

// Kind is a kind of broker that a test can ask for. The package's variables are the only
// kinds.
type Kind struct {
	// Name names the broker in test output, such as "RabbitMQ 3.10".
	Name string
	// URLEnv is the environment variable that, when set, holds the URL of a running
	// broker of this kind.
	URLEnv string
	// ImageEnv is the environment variable that names the container image to start.
	ImageEnv string
	// DefaultImage is the image started when ImageEnv is not set.
	DefaultImage string

	port      string // the broker's port in the container, such as "5672/tcp"
	extra     string // another port published, such as RabbitMQ's management API; "" for none
	readyLog  string // what the broker logs once it accepts clients
	urlFormat string // the broker's URL, with %s for host:port
}

var (
	// RabbitMQ is RabbitMQ 3.10, spoken to over AMQP 0-9-1 by the amqp091 backend. Its
	// URL is amqp://guest:guest@HOST:PORT/.
	RabbitMQ = Kind{
		Name:         "RabbitMQ 3.10",
		URLEnv:       "CARROT_TEST_AMQP091_URL",
		ImageEnv:     "CARROT_TEST_RABBITMQ_IMAGE",
		DefaultImage: "rabbitmq:3.10",
		port:         "5672/tcp",
		extra:        "15672/tcp", // the management API, where the image has it
		readyLog:     "Server startup complete",
		urlFormat:    "amqp://guest:guest@%s/",
	}

	// RabbitMQ4 is RabbitMQ 4.0, spoken to over AMQP 1.0 by the amqp10 backend. Its URL is
	// amqp10://guest:guest@HOST:PORT/.
	RabbitMQ4 = Kind{
		Name:         "RabbitMQ 4.0",
		URLEnv:       "CARROT_TEST_AMQP10_URL",
		ImageEnv:     "CARROT_TEST_RABBITMQ4_IMAGE",
		DefaultImage: "rabbitmq:4.0",
		port:         "5672/tcp",
		readyLog:     "Server startup complete",
		urlFormat:    "amqp10://guest:guest@%s/",
	}

	// Redis is Redis 7.0, for the redis backend. Its URL is redis://HOST:PORT/0.
	Redis = Kind{
		Name:         "Redis 7.0",
		URLEnv:       "CARROT_TEST_REDIS_URL",
		ImageEnv:     "CARROT_TEST_REDIS_IMAGE",
		DefaultImage: "redis:7.0",
		port:         "6379/tcp",
		readyLog:     "Ready to accept connections",
		urlFormat:    "redis://%s/0",
	}
)

// Environment variables read besides each kind's own.
const (
	requireEnv      = "CARROT_TEST_REQUIRE_BROKERS"
	hostOverrideEnv = "TESTCONTAINERS_HOST_OVERRIDE"
	ryukDisabledEnv = "TESTCONTAINERS_RYUK_DISABLED"
	hubPrefixEnv    = "TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX"
	dockerHostEnv   = "DOCKER_HOST"
	clustersEnv     = "CARROT_TEST_CLUSTERS"
)

// Clusters skips t unless CARROT_TEST_CLUSTERS=1: the cluster tests start several
// brokers and kill their nodes, which takes minutes, so they run when asked for (carrot's
// CI asks once, not in every run of the packages). A skip of this kind is a choice, not a
// missing broker: CARROT_TEST_REQUIRE_BROKERS does not turn it into a failure.
func Clusters(t testing.TB) {
	t.Helper()
	if v := os.Getenv(clustersEnv); v == "" || v == "0" || v == "false" {
		t.Skipf("a cluster test, which runs with %s=1 (it starts several brokers and kills their nodes)", clustersEnv)
	}
}

// dockerUpHint tells a developer how to make Docker usable for the tests. The script it
// names belongs to carrot's build machines, beside the clone, not to this repository.
const dockerUpHint = `start Docker with TESTCONTAINERS_HOST_OVERRIDE=localhost and TESTCONTAINERS_RYUK_DISABLED=true; on carrot's build machines, eval "$(../shared/ci/docker-up.sh)" (a script of the machine, beside the clone) does it`

// Time limits for the steps of starting a container.
const (
	probeTimeout   = 15 * time.Second // asking Docker whether it is usable
	startupTimeout = 3 * time.Minute  // creating the container and waiting until it is ready
	stopTimeout    = time.Minute      // removing it
)

// URL returns the URL of a broker of kind k for t: the kind's URL environment variable if it
// is set, else the URL of a container. Under [Main], every test of the package shares one
// container of each kind, removed when the tests are done; otherwise URL starts a
// container for t alone and removes it when t ends. When it can do
// neither, URL skips t, or fails it if CARROT_TEST_REQUIRE_BROKERS=1, saying why; so it
// returns only with a URL. The package documentation says when Docker is used.
func URL(t testing.TB, k Kind) string {
	t.Helper()
	p := decide(k, os.Getenv, true, dockerUsable)
	switch {
	case p.url != "":
		u, _ := url.Parse(p.url) // decide checked that it parses
		t.Logf("testbroker: %s at %s, from %s", k.Name, u.Redacted(), k.URLEnv)
		return p.url
	case p.start && shared.inMain:
		return shared.url(t, k, p.image)
	case p.start:
		return start(t, k, p.image).URL
	case p.fatal:
		t.Fatal(p.reason)
	default:
		t.Skip(p.reason)
	}
	panic("unreachable")
}

// Missing skips t saying why, or fails it if CARROT_TEST_REQUIRE_BROKERS=1, as [URL] does
// when it has no broker: for a test that needs something else the machine lacks, such as
// another client of the broker to check interoperability with. It does not return.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if v := os.Getenv(requireEnv); v != "" && v != "0" && v != "false" {
		t.Fatalf("%s (%s=%s: failing rather than skipping)", reason, requireEnv, v)
	}
	t.Skip(reason)
}

// Start starts a container of kind k for t alone, and removes it when t ends; unlike [URL],
// it never uses the kind's URL environment variable. A test that restarts or disturbs the
// broker uses it so as not to disturb other tests. When Docker is not usable, Start skips or
// fails t as [URL] does.
func Start(t testing.TB, k Kind) *Container {
	t.Helper()
	p := decide(k, os.Getenv, false, dockerUsable)
	switch {
	case p.start:
		return start(t, k, p.image)
	case p.fatal:
		t.Fatal(p.reason)
	default:
		t.Skip(p.reason)
	}
	panic("unreachable")
}

// Container is a broker container started for one test.
type Container struct {
	// URL is the broker's URL, on 127.0.0.1 and the port that Docker published.
	URL string

	addrs map[string]string // the other published ports' host:port, by container port

	ctr *testcontainers.DockerContainer
}

// Addr returns the loopback host:port where Docker published the container's port (such
// as "15672/tcp" for RabbitMQ's management API), and whether the kind publishes it.
func (c *Container) Addr(port string) (string, bool) {
	a, ok := c.addrs[port]
	return a, ok
}

// Exec runs the command cmd (a program and its arguments, without a shell) in the
// container and returns what it wrote to stdout and stderr. The error is non-nil when the
// command could not be run or exited with a status other than 0; the output is returned
// either way.
func (c *Container) Exec(ctx context.Context, cmd ...string) (string, error) {
	if len(cmd) == 0 {
		return "", errors.New("testbroker: Exec: no command")
	}
	code, r, err := c.ctr.Exec(ctx, cmd, tcexec.Multiplexed())
	if err != nil {
		return "", fmt.Errorf("testbroker: exec %q: %w", cmd, err)
	}
	var b strings.Builder
	if _, err := io.Copy(&b, r); err != nil {
		return b.String(), fmt.Errorf("testbroker: exec %q: reading its output: %w", cmd, err)
	}
	out := b.String()
	if code != 0 {
		return out, fmt.Errorf("testbroker: exec %q: exit status %d: %s", cmd, code, strings.TrimSpace(out))
	}
	return out, nil
}

// plan is what URL or Start does in one environment.
type plan struct {
	url    string // the URL from the environment: use it
	start  bool   // start a container of image
	image  string // the image to start
	reason string // why there is no broker, for a skip or a failure
	fatal  bool   // fail with reason rather than skip
}

// decide chooses what URL (fromEnv true) or Start (fromEnv false) does for kind k, reading
// the environment with getenv. It asks usable whether Docker can start image only when the
// environment allows containers at all.
func decide(k Kind, getenv func(string) string, fromEnv bool, usable func(k Kind, image string) error) plan {
	if k.port == "" {
		return plan{reason: fmt.Sprintf("testbroker: unknown Kind %q: use RabbitMQ, RabbitMQ4 or Redis", k.Name), fatal: true}
	}
	if fromEnv {
		if v := getenv(k.URLEnv); v != "" {
			if _, err := url.Parse(v); err != nil {
				// url.Parse's error quotes the URL, password and all: don't show it.
				return plan{reason: fmt.Sprintf("testbroker: %s is set but does not parse as a URL", k.URLEnv), fatal: true}
			}
			return plan{url: v}
		}
	}
	image := getenv(k.ImageEnv)
	if image == "" {
		image = k.DefaultImage
	}
	err := envAllowsDocker(getenv)
	if err == nil {
		err = usable(k, image)
	}
	if err == nil {
		return plan{start: true, image: image}
	}

	var reason string
	if fromEnv {
		reason = fmt.Sprintf("testbroker: no %s broker: set %s to its URL, or make Docker usable (%s); Docker is not usable: %v",
			k.Name, k.URLEnv, dockerUpHint, err)
	} else {
		reason = fmt.Sprintf("testbroker: cannot start a %s container: make Docker usable (%s); Docker is not usable: %v",
			k.Name, dockerUpHint, err)
	}
	p := plan{reason: reason}
	if v := getenv(requireEnv); v != "" && v != "0" && v != "false" {
		p.fatal = true
		p.reason += fmt.Sprintf(" (%s=%s: failing rather than skipping)", requireEnv, v)
	}
	return p
}

// envAllowsDocker reports why the environment forbids starting containers, if it does.
func envAllowsDocker(getenv func(string) string) error {
	switch v := getenv(hostOverrideEnv); v {
	case "localhost", "127.0.0.1":
	case "":
		return fmt.Errorf("%s is not set; it must be localhost or 127.0.0.1, or testcontainers-go may dial an address off this machine", hostOverrideEnv)
	default:
		return fmt.Errorf("%s is %q; it must be localhost or 127.0.0.1, so that tests only talk to this machine", hostOverrideEnv, v)
	}
	if v := getenv(ryukDisabledEnv); v != "true" {
		return fmt.Errorf("%s is %q; it must be true: testbroker removes its containers itself, and the reaper image may not be pullable", ryukDisabledEnv, v)
	}
	if v := getenv(dockerHostEnv); v != "" && !localDockerHost(v) {
		return fmt.Errorf("%s is %q, not on this machine", dockerHostEnv, v)
	}
	if v := getenv(hubPrefixEnv); v != "" {
		return fmt.Errorf("%s is set: it would rename the image; name the full image in the CARROT_TEST_*_IMAGE variable instead", hubPrefixEnv)
	}
	return nil
}

// localDockerHost reports whether the Docker endpoint host is on this machine: a socket,
// or TCP to a loopback address.
func localDockerHost(host string) bool {
	u, err := url.Parse(host)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix", "npipe":
		return true
	case "tcp", "http", "https":
		return isLoopback(u.Hostname())
	}
	return false
}

// isLoopback reports whether host names or is a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dockerUsable reports why Docker cannot start a container of image for kind k, if it
// cannot. The environment has been checked already; this asks Docker itself.
func dockerUsable(k Kind, image string) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()

	// The properties file (~/.testcontainers.properties) may name an engine too.
	cfg := testcontainers.ReadConfig().Config
	if cfg.TestcontainersHost != "" && !localDockerHost(cfg.TestcontainersHost) {
		return fmt.Errorf("the testcontainers property tc.host is %q, not on this machine", cfg.TestcontainersHost)
	}
	if cfg.Host != "" && !localDockerHost(cfg.Host) {
		return fmt.Errorf("the testcontainers property docker.host is %q, not on this machine", cfg.Host)
	}
	if !cfg.RyukDisabled {
		return fmt.Errorf("testcontainers-go's configuration has the reaper enabled")
	}
	if cfg.HubImageNamePrefix != "" {
		return fmt.Errorf("the testcontainers property hub.image.name.prefix is set: it would rename the image")
	}

	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("no Docker engine found: %w", err)
	}
	defer cli.Close()
	if h := cli.DaemonHost(); !localDockerHost(h) {
		return fmt.Errorf("the Docker engine %q is not on this machine", h)
	}
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("the Docker engine at %s does not answer: %w", cli.DaemonHost(), err)
	}
	if _, err := cli.ImageInspect(ctx, image); err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("image %s is not present locally, and testbroker never pulls: pull or build it first, or name another image in %s", image, k.ImageEnv)
		}
		return fmt.Errorf("inspecting image %s: %w", image, err)
	}
	return nil
}

// CanStart reports why [Start] could not start a container of kind k here, or nil if it
// could, without starting one; for tests that prefer a container and can do without.
func CanStart(k Kind) error {
	p := decide(k, os.Getenv, false, dockerUsable)
	if p.start {
		return nil
	}
	return errors.New(p.reason)
}

// shared holds the containers that URL starts under Main, one of each kind.
var shared sharedContainers

type sharedContainers struct {
	mu       sync.Mutex
	inMain   bool
	urls     map[string]string // by Kind.Name
	removers []func()
}

// Main runs a package's tests, as TestMain must, and removes the containers URL started
// for them once they are done. With it, the tests of a package share one broker of each
// kind instead of starting one each:
//
//	func TestMain(m *testing.M) { testbroker.Main(m) }
func Main(m *testing.M) {
	shared.inMain = true
	code := m.Run()
	shared.mu.Lock()
	for _, remove := range shared.removers {
		remove()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

func (s *sharedContainers) url(t testing.TB, k Kind, image string) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.urls[k.Name]; ok {
		return u
	}
	c := startWith(t, k, image, func(f func()) { s.removers = append(s.removers, f) }, quietLogger{}, nodeOptions{})
	if s.urls == nil {
		s.urls = make(map[string]string)
	}
	s.urls[k.Name] = c.URL
	return c.URL
}

// quietLogger drops testcontainers-go's messages about shared containers, which outlive
// the test that started them.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
