// Package amqpurl parses the URLs RabbitMQ documents for its clients,
//
//	SCHEME://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	SCHEME://USER:PASSWORD@HOST:PORT,HOST:PORT,.../VHOST?OPTIONS
//
// for carrot's AMQP 0-9-1 and AMQP 1.0 backends, which differ in their schemes and in
// most of their options. The URL is parsed strictly, and its options read, by package
// brokerurl: errors are carrot backend errors of code Invalid, start with the backend's
// name and never show the password. A URL may name several hosts, the nodes of a
// cluster, which share the user info, vhost and options; [Connect] tries them in turn.
package amqpurl

import (
	"crypto/tls"
	"net"
	"net/url"
	"strings"

	"github.com/carrot-go/carrot/internal/brokerurl"
)

// URL is a parsed AMQP URL.
type URL struct {
	// Addrs are the HOST:PORT of each host, in the URL's order; localhost, and 5672
	// (5671 with TLS), by default.
	Addrs    []string
	Username string // guest by default
	Password string // guest by default
	Vhost    string // "/" by default
	// TLS is the TLS configuration for the TLS scheme (at least TLS 1.2), nil for the other.
	// Its ServerName is set by the server_name option only: when empty, each host's own
	// name is verified (see [TLSFor]).
	TLS *tls.Config

	// TLSOptions are the URL's TLS options, which Read applies to TLS.
	TLSOptions brokerurl.TLSOptions

	u      *brokerurl.URL
	secure string // the TLS scheme
}

// Parse parses rawURL, whose scheme is plain, or secure for TLS. name starts the errors
// ("carrot/amqp091").
func Parse(rawURL, name, plain, secure string) (*URL, error) {
	u, err := brokerurl.ParseFor(name, rawURL, plain, secure)
	if err != nil {
		return nil, err
	}
	r := &URL{Username: "guest", Password: "guest", Vhost: "/", u: u, secure: secure}
	if u.Scheme == secure {
		r.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	hosts := brokerurl.Hosts(u.URL)
	if len(hosts) == 0 {
		hosts = []brokerurl.Host{{}}
	}
	for _, h := range hosts {
		r.Addrs = append(r.Addrs, addr(h.Name, h.Port, r.TLS != nil))
	}
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	if len(u.Path) > 1 {
		r.Vhost = u.Path[1:]
	}
	return r, nil
}

// addr returns HOST:PORT for a host of a URL, with the defaults: localhost, and 5672, or
// 5671 with TLS.
func addr(host, port string, secure bool) string {
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "5672"
		if secure {
			port = "5671"
		}
	}
	return net.JoinHostPort(host, port)
}

// DefaultAddrs returns addrs, or the default address when it is empty: localhost:5672, or
// localhost:5671 with TLS. The slice is a copy.
func DefaultAddrs(addrs []string, secure bool) []string {
	if len(addrs) == 0 {
		return []string{addr("", "", secure)}
	}
	return append([]string(nil), addrs...)
}

// Read reads the query options with opts and the TLS options (certfile, keyfile,
// cacertfile, server_name), which configure u.TLS and need the TLS scheme.
func (u *URL) Read(opts ...brokerurl.Option) error {
	opts = append(opts, u.TLSOptions.Options()...)
	if err := u.u.Read(brokerurl.Query{Options: opts}); err != nil {
		return err
	}
	return u.TLSOptions.Apply(u.u, u.TLS, u.secure)
}

// Errorf returns an error of code Invalid whose text starts with the backend's name.
func (u *URL) Errorf(format string, args ...any) error { return u.u.Errorf(format, args...) }

// TLSFor returns cfg for a connection to addr (HOST:PORT): cfg itself if it names the
// server to verify, otherwise a copy that verifies HOST, as tls.Dial does. Nil stays nil.
func TLSFor(cfg *tls.Config, addr string) *tls.Config {
	if cfg == nil || cfg.ServerName != "" {
		return cfg
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c := cfg.Clone()
	c.ServerName = host
	return c
}

// String formats an AMQP URL, with each of addrs, without its user info.
func String(scheme string, addrs []string, vhost string) string {
	path := "/" + vhost
	if vhost == "/" {
		path = "/"
	}
	u := url.URL{Scheme: scheme, Host: strings.Join(addrs, ","), Path: path}
	return u.String()
}
