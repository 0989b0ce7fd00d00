// Package amqpurl parses the URLs RabbitMQ documents for its clients,
//
//	SCHEME://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// for carrot's AMQP 0-9-1 and AMQP 1.0 backends, which differ in their schemes and in
// most of their options. Errors are carrot backend errors of code Invalid, start with the
// backend's name and never show the password; the URL is parsed strictly, as package
// brokerurl does.
package amqpurl

import (
	"crypto/tls"
	"maps"
	"net"
	"net/url"
	"slices"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/tlsfiles"
)

// URL is a parsed AMQP URL.
type URL struct {
	Addr     string      // HOST:PORT; localhost, and 5672 (5671 with TLS), by default
	Username string      // guest by default
	Password string      // guest by default
	Vhost    string      // "/" by default
	TLS      *tls.Config // for the TLS scheme (at least TLS 1.2, verifying HOST once Options ran); nil otherwise

	name   string // the backend's, to start errors with
	secure string // the TLS scheme
	host   string
	query  url.Values
}

// Parse parses rawURL, whose scheme is plain, or secure for TLS. name starts the errors
// ("carrot/amqp091").
func Parse(rawURL, name, plain, secure string) (*URL, error) {
	u, q, err := brokerurl.Parse(rawURL)
	if err != nil {
		return nil, backend.Errorf(backend.Invalid, "%s: %w", name, err)
	}
	r := &URL{Username: "guest", Password: "guest", Vhost: "/", name: name, secure: secure, query: q}
	port := "5672"
	switch u.Scheme {
	case plain:
	case secure:
		port = "5671"
		r.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	default:
		return nil, backend.Errorf(backend.Invalid, "%s: URL scheme is %q, want %s or %s", name, u.Scheme, plain, secure)
	}
	r.host = u.Hostname()
	if r.host == "" {
		r.host = "localhost"
	}
	if p := u.Port(); p != "" {
		port = p
	}
	r.Addr = net.JoinHostPort(r.host, port)
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	if len(u.Path) > 1 {
		r.Vhost = u.Path[1:]
	}
	return r, nil
}

// Options calls set with each query option but the TLS ones, in the order of their
// names, until set returns an error; an option given more than once is an error. The TLS
// options certfile, keyfile, cacertfile and serverName (named as the backend names it)
// configure u.TLS, and need the TLS scheme.
func (u *URL) Options(serverName string, set func(key, value string) error) error {
	var certFile, keyFile, caFile, server string
	for _, key := range slices.Sorted(maps.Keys(u.query)) {
		if n := len(u.query[key]); n != 1 {
			return backend.Errorf(backend.Invalid, "%s: URL option %q is given %d times", u.name, key, n)
		}
		v := u.query[key][0]
		switch key {
		case "certfile":
			certFile = v
		case "keyfile":
			keyFile = v
		case "cacertfile":
			caFile = v
		case serverName:
			server = v
		default:
			if err := set(key, v); err != nil {
				return err
			}
		}
	}
	if u.TLS == nil {
		if certFile != "" || keyFile != "" || caFile != "" || server != "" {
			return backend.Errorf(backend.Invalid, "%s: URL options certfile, keyfile, cacertfile and %s need the %s scheme", u.name, serverName, u.secure)
		}
		return nil
	}
	u.TLS.ServerName = u.host
	if server != "" {
		u.TLS.ServerName = server
	}
	if err := tlsfiles.Load(u.TLS, certFile, keyFile, caFile); err != nil {
		return backend.Errorf(backend.Invalid, "%s: %w", u.name, err)
	}
	return nil
}

// Bad returns the error for a bad value v of option key, saying what is wanted.
func (u *URL) Bad(key, v, want string) error {
	return backend.Errorf(backend.Invalid, "%s: URL option %s=%q: want %s", u.name, key, v, want)
}

// String formats an AMQP URL without its user info.
func String(scheme, addr, vhost string) string {
	path := "/" + vhost
	if vhost == "/" {
		path = "/"
	}
	u := url.URL{Scheme: scheme, Host: addr, Path: path}
	return u.String()
}
