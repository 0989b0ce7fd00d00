package testbroker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// loopback is the only address that started containers publish their ports on.
var loopback = netip.MustParseAddr("127.0.0.1")

// start starts a container of image for kind k, waits until its broker is ready, and
// removes it when t ends. It fails t if any of that goes wrong: Docker was found usable.
func start(t testing.TB, k Kind, image string) *Container {
	t.Helper()
	return startWith(t, k, image, t.Cleanup, tclog.TestLogger(t), nodeOptions{})
}

// nodeOptions are what the container of a cluster's node has beyond a lone broker's.
type nodeOptions struct {
	hostPort int // publish the broker's port on this loopback port, kept across restarts; 0 for any
	custom   []testcontainers.ContainerCustomizer
}

// startWith is start with the removal of the container registered with cleanup,
// testcontainers-go's messages sent to logger, and the options of a cluster's node.
func startWith(t testing.TB, k Kind, image string, cleanup func(func()), logger tclog.Logger, node nodeOptions) *Container {
	t.Helper()
	// Creating the container takes a little time of its own, before the wait.
	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout+time.Minute)
	defer cancel()

	port, err := network.ParsePort(k.port)
	if err != nil {
		t.Fatalf("testbroker: %s: bad port %q: %v", k.Name, k.port, err)
	}
	began := time.Now()
	// Each strategy and all of them together would give up after 60 seconds by default;
	// testcontainers.WithWaitStrategy sets that deadline too, whatever the strategies say.
	ready := testcontainers.WithWaitStrategyAndDeadline(startupTimeout,
		wait.ForLog(k.readyLog).WithStartupTimeout(startupTimeout),
		wait.ForListeningPort(k.port).WithStartupTimeout(startupTimeout),
	)
	// Run pulls the image only if it is missing, and dockerUsable made sure it is not.
	ports := []string{k.port}
	bindings := network.PortMap{port: {{HostIP: loopback}}}
	if node.hostPort != 0 {
		bindings[port] = []network.PortBinding{{HostIP: loopback, HostPort: strconv.Itoa(node.hostPort)}}
	}
	if k.extra != "" {
		ep, err := network.ParsePort(k.extra)
		if err != nil {
			t.Fatalf("testbroker: %s: bad port %q: %v", k.Name, k.extra, err)
		}
		ports = append(ports, k.extra)
		bindings[ep] = []network.PortBinding{{HostIP: loopback}}
	}
	custom := append([]testcontainers.ContainerCustomizer{
		testcontainers.WithExposedPorts(ports...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = bindings
		}),
		ready,
		testcontainers.WithLogger(logger),
	}, node.custom...)
	ctr, err := testcontainers.Run(ctx, image, custom...)
	if ctr != nil {
		// Run returns the container it created even when waiting for it failed.
		cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			if err := ctr.Terminate(ctx, testcontainers.StopTimeout(0)); err != nil {
				fmt.Fprintf(os.Stderr, "testbroker: removing the %s container %.12s: %v\n", k.Name, ctr.GetContainerID(), err)
			}
		})
	}
	if err != nil {
		t.Fatalf("testbroker: starting a %s container of %s: %v%s", k.Name, image, err, logTail(ctr))
	}

	host, err := ctr.Host(ctx)
	if err != nil {
		t.Fatalf("testbroker: %s container: host: %v", k.Name, err)
	}
	if !isLoopback(host) {
		t.Fatalf("testbroker: %s container: testcontainers-go gives the host %q, not a loopback address", k.Name, host)
	}
	mapped, err := ctr.MappedPort(ctx, k.port)
	if err != nil {
		t.Fatalf("testbroker: %s container: published port of %s: %v", k.Name, k.port, err)
	}
	c := &Container{
		URL:   fmt.Sprintf(k.urlFormat, net.JoinHostPort(loopback.String(), mapped.Port())),
		ctr:   ctr,
		addrs: map[string]string{},
	}
	if k.extra != "" {
		m, err := ctr.MappedPort(ctx, k.extra)
		if err != nil {
			t.Fatalf("testbroker: %s container: published port of %s: %v", k.Name, k.extra, err)
		}
		c.addrs[k.extra] = net.JoinHostPort(loopback.String(), m.Port())
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatalf("testbroker: %s container: bad URL: %v", k.Name, err)
	}
	t.Logf("testbroker: %s at %s, in container %.12s of %s, ready in %v",
		k.Name, u.Redacted(), ctr.GetContainerID(), image, time.Since(began).Round(time.Millisecond))
	return c
}

// logTailLines is how many of its last log lines a container that did not start shows.
const logTailLines = 30

// logTail returns the last lines of ctr's log, to show why it did not start, or "".
func logTail(ctr *testcontainers.DockerContainer) string {
	if ctr == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return ""
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > logTailLines {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "\nlast lines of its log:\n\t" + strings.Join(lines, "\n\t")
}
