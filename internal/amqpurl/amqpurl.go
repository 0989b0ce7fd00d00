// Package amqpurl parses the URLs RabbitMQ documents for its clients,
//
//	SCHEME://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// for carrot's AMQP 0-9-1 and AMQP 1.0 backends, which differ in their schemes and in
// most of their options. The URL is parsed strictly, and its options read, by package
// brokerurl: errors are carrot backend errors of code Invalid, start with the backend's
// name and never show the password.
package amqpurl

import (
	"crypto/tls"
	"net"
	"net/url"

	"github.com/carrot-go/carrot/internal/brokerurl"
)

// URL is a parsed AMQP URL.
type URL struct {
	Addr     string      // HOST:PORT; localhost, and 5672 (5671 with TLS), by default
	Username string      // guest by default
	Password string      // guest by default
	Vhost    string      // "/" by default
	TLS      *tls.Config // for the TLS scheme (at least TLS 1.2, verifying HOST); nil otherwise

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
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "5672"
		if u.Scheme == secure {
			port = "5671"
		}
	}
	if u.Scheme == secure {
		r.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	r.Addr = net.JoinHostPort(host, port)
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	if len(u.Path) > 1 {
		r.Vhost = u.Path[1:]
	}
	return r, nil
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

// String formats an AMQP URL without its user info.
func String(scheme, addr, vhost string) string {
	path := "/" + vhost
	if vhost == "/" {
		path = "/"
	}
	u := url.URL{Scheme: scheme, Host: addr, Path: path}
	return u.String()
}
