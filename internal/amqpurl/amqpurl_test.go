package amqpurl

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/tlstest"
)

func TestTLSOptions(t *testing.T) {
	_, cert, key := tlstest.Cert(t, "rabbit")
	for _, tc := range []struct {
		query, serverName string
	}{
		{"", ""}, // each host's own: see TestTLSFor
		{"?server_name=other&certfile=" + cert + "&keyfile=" + key + "&cacertfile=" + cert + "&x=1", "other"},
	} {
		u, err := Parse("amqps://rabbit"+tc.query, "test", "amqp", "amqps")
		if err != nil {
			t.Fatal(err)
		}
		var others []string
		x := brokerurl.Option{Name: "x", Set: func(v string) error { others = append(others, "x="+v); return nil }}
		if err := u.Read(x); err != nil {
			t.Fatalf("%q: %v", tc.query, err)
		}
		if !slices.Equal(u.Addrs, []string{"rabbit:5671"}) || u.TLS == nil || u.TLS.ServerName != tc.serverName {
			t.Errorf("%q: addresses %q, TLS %+v; want rabbit:5671 with server name %q", tc.query, u.Addrs, u.TLS, tc.serverName)
		}
		if tc.query == "" {
			continue
		}
		if len(u.TLS.Certificates) != 1 || u.TLS.RootCAs == nil {
			t.Errorf("%q: %d client certificates, root CAs %v; want the files'", tc.query, len(u.TLS.Certificates), u.TLS.RootCAs)
		}
		if len(others) != 1 || others[0] != "x=1" {
			t.Errorf("%q: the backend was given %q, want only x=1", tc.query, others)
		}
	}
}

func TestTLSOptionsNeedTheScheme(t *testing.T) {
	u, err := Parse("amqp://rabbit/?server_name=other", "test", "amqp", "amqps")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Read(); err == nil || !strings.Contains(err.Error(), "need the amqps scheme") {
		t.Errorf("server_name on amqp: %v, want an error saying it needs amqps", err)
	}
}

func TestParseHosts(t *testing.T) {
	for _, tc := range []struct {
		url   string
		addrs []string
	}{
		{"amqp://", []string{"localhost:5672"}},
		{"amqps://u:p@/v", []string{"localhost:5671"}},
		{"amqp://rabbit:5673/", []string{"rabbit:5673"}},
		{"amqp://u:p@node1:5672,node2:5673,node3/v", []string{"node1:5672", "node2:5673", "node3:5672"}},
		{"amqps://u:p@node1,[::1],[::2]:6000/v", []string{"node1:5671", "[::1]:5671", "[::2]:6000"}},
	} {
		u, err := Parse(tc.url, "test", "amqp", "amqps")
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.url, err)
			continue
		}
		if !slices.Equal(u.Addrs, tc.addrs) {
			t.Errorf("Parse(%q): addresses %q, want %q", tc.url, u.Addrs, tc.addrs)
		}
		if u.Username != "guest" && u.Username != "u" || u.Vhost != "/" && u.Vhost != "v" {
			t.Errorf("Parse(%q): user %q, vhost %q", tc.url, u.Username, u.Vhost)
		}
	}
	for _, tc := range []struct{ url, says string }{
		{"amqp://u:S3CRet@node1,,node3/", "test: the URL's hosts have an empty one at byte 23"},
		{"amqp://u:S3CRet@node1,node2:x/", "test: the URL's host at byte 23 has a port that is not a number"},
		{"amqp://u:S3CRet@node1,node2:65536/", "test: the URL's host at byte 23 has a port out of range"},
		{"amqp://u:S3CRet@node1,/", "test: the URL's hosts have an empty one at byte 23"},
	} {
		_, err := Parse(tc.url, "test", "amqp", "amqps")
		if err == nil || !strings.HasPrefix(err.Error(), tc.says) || strings.Contains(err.Error(), "S3CRet") || backend.CodeOf(err) != backend.Invalid {
			t.Errorf("Parse(%q) = %v, want an error of code Invalid saying %q, without the password", tc.url, err, tc.says)
		}
	}
}

func TestTLSFor(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	for addr, want := range map[string]string{"node1:5671": "node1", "[::1]:5671": "::1", "10.0.0.2:5671": "10.0.0.2"} {
		got := TLSFor(base, addr)
		if got.ServerName != want || got.MinVersion != tls.VersionTLS12 {
			t.Errorf("TLSFor(%s) verifies %q (min version %x), want %q", addr, got.ServerName, got.MinVersion, want)
		}
	}
	if base.ServerName != "" {
		t.Errorf("TLSFor changed the configuration it was given: server name %q", base.ServerName)
	}
	named := &tls.Config{ServerName: "rabbit.example"}
	if got := TLSFor(named, "node1:5671"); got.ServerName != "rabbit.example" {
		t.Errorf("TLSFor with server_name verifies %q, want rabbit.example for every host", got.ServerName)
	}
	if TLSFor(nil, "node1:5672") != nil {
		t.Error("TLSFor(nil) is not nil")
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		addrs       []string
		vhost, want string
	}{
		{[]string{"h:5672"}, "/", "amqp://h:5672/"},
		{[]string{"node1:5672", "[::1]:5673"}, "prod", "amqp://node1:5672,[::1]:5673/prod"},
	} {
		if got := String("amqp", tc.addrs, tc.vhost); got != tc.want {
			t.Errorf("String(%q, %q) = %q, want %q", tc.addrs, tc.vhost, got, tc.want)
		}
	}
}
