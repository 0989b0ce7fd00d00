package conformance_test

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/brokerurl"
)

// recordingDriver opens memory connections, recording the URL each was opened with.
type recordingDriver struct {
	mu   sync.Mutex
	urls []string
}

func (d *recordingDriver) OpenConnector(rawURL string) (backend.Connector, error) {
	d.mu.Lock()
	d.urls = append(d.urls, rawURL)
	d.mu.Unlock()
	return memory.NewConnector(&memory.Options{Name: "proxied-harness-test"}), nil
}

func (d *recordingDriver) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.urls[len(d.urls)-1]
}

var recorder = new(recordingDriver)

func init() {
	carrot.Register("proxiedtest", recorder)
	carrot.Register("proxiedtests", recorder) // a TLS scheme, by its name
}

// nameServer listens on loopback and writes name to each connection it accepts.
func nameServer(t *testing.T, name string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(name))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestProxiedHarnessSeveralHosts checks that OpenFaulty puts a listener of its proxy in
// front of each host of a URL, in order, and keeps the rest of the URL.
func TestProxiedHarnessSeveralHosts(t *testing.T) {
	ctx := t.Context()
	a, b := nameServer(t, "a"), nameServer(t, "b")
	h, err := conformance.ProxiedHarness(nil, "proxiedtest://u:p@"+a+","+b+"/v?x=1")
	if err != nil {
		t.Fatal(err)
	}
	conn, breaker, err := h.OpenFaulty(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	defer breaker.(io.Closer).Close()
	u, _, err := brokerurl.Parse(recorder.last())
	if err != nil {
		t.Fatal(err)
	}
	hosts := brokerurl.Hosts(u)
	if len(hosts) != 2 || u.User.String() != "u:p" || u.Path != "/v" || u.RawQuery != "x=1" {
		t.Fatalf("OpenFaulty opened %s, want two hosts and the URL's user info, path and options", recorder.last())
	}
	for i, want := range []string{"a", "b"} {
		c, err := net.Dial("tcp", hosts[i].String())
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != want || hosts[i].String() == a || hosts[i].String() == b {
			t.Errorf("host %d of the faulty URL is %s, which reaches %q; want a proxy of host %s", i+1, hosts[i], got, want)
		}
	}
}

func TestProxiedHarnessTLSNames(t *testing.T) {
	for _, tc := range []struct {
		url        string
		serverName string // set by OpenFaulty; "" for none
		err        string // ProxiedHarness's error
	}{
		{"proxiedtests://node1:1/", "node1", ""},
		{"proxiedtests://node1:1,node1:2/", "node1", ""},
		{"proxiedtests://node1:1,127.0.0.1:2/", "node1", ""},
		{"proxiedtests://127.0.0.1:1,[::1]:2/", "", ""},
		{"proxiedtests://node1:1,node2:2/?server_name=rabbit", "rabbit", ""},
		{"proxiedtests://node1:1,node2:2/", "", "server_name option must name"},
		{"proxiedtest://node1:1,node2/", "", "names no port for host node2"},
		{"proxiedtest://u:S3CRet@node1:1,,node2:2/", "", "empty one at byte"},
	} {
		h, err := conformance.ProxiedHarness(nil, tc.url)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "S3CRet") {
				t.Errorf("ProxiedHarness(%s) = %v, want an error saying %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ProxiedHarness(%s): %v", tc.url, err)
			continue
		}
		conn, breaker, err := h.OpenFaulty(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		breaker.(io.Closer).Close()
		_, q, _ := brokerurl.Parse(recorder.last())
		if got := q.Get("server_name"); got != tc.serverName {
			t.Errorf("OpenFaulty of %s set server_name=%q, want %q", tc.url, got, tc.serverName)
		}
	}
}
