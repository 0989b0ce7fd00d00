package amqp10

import (
	"cmp"
	"crypto/tls"
	"math"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/internal/amqpurl"
	"github.com/carrot-go/carrot/internal/brokerurl"
)

// Defaults of the URL options.
const (
	DefaultIdleTimeout       = time.Minute
	DefaultConnectionTimeout = 30 * time.Second
	DefaultPrefetch          = 100
	DefaultMaxBodySize       = 16 << 20 // RabbitMQ 4's default max_message_size
)

// Options configures a connection to an AMQP 1.0 broker. [ParseURL] makes one from a URL;
// the zero value of each field means its default.
type Options struct {
	// Addrs are the host:port of the broker, or of each node of a cluster, in the order
	// the first connection tries them (see URLs in the package documentation);
	// localhost:5672 (5671 with TLS) when empty.
	Addrs []string
	// Username and Password authenticate with SASL PLAIN; guest/guest when the URL has
	// none.
	Username, Password string
	// Vhost is the RabbitMQ virtual host, sent as the hostname "vhost:NAME"; "/" when empty.
	Vhost string
	// TLS, when not nil, makes the connection use TLS (the amqp10s scheme). When its
	// ServerName is empty, each host's own name is verified (and sent for SNI), as
	// tls.Dial does; the URL's server_name sets it for every host.
	TLS *tls.Config
	// SASL is the SASL mechanism, the URL's auth_mechanism: "plain" (the default),
	// "anonymous" or "external" (a TLS client certificate).
	SASL string

	IdleTimeout       time.Duration // DefaultIdleTimeout when zero
	ConnectionTimeout time.Duration // for the TCP dial, TLS and AMQP handshakes, with each host; DefaultConnectionTimeout when zero
	MaxFrameSize      uint32        // go-amqp's default when zero
	ContainerID       string        // a random one when empty

	// Prefetch is the link credit of consumers that do not set one (DefaultPrefetch).
	Prefetch int
	// MaxBodySize is the largest body the broker accepts (DefaultMaxBodySize, RabbitMQ 4's
	// default max_message_size); set it to match the broker's configuration. Whatever it
	// is, go-amqp refuses before sending a message larger than the broker announces for
	// the link.
	MaxBodySize int64
}

// userID returns the user name RabbitMQ takes as a message's user-id on connections with
// o, which their Capabilities report: the one they log in with, or "" when RabbitMQ
// derives it (anonymous, from its anonymous_login_user; external, from the certificate).
func (o Options) userID() string {
	switch o.SASL {
	case "anonymous", "external":
		return ""
	}
	return o.Username
}

// ParseURL parses an AMQP 1.0 URL,
//
//	amqp10://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqp10s://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// or with the nodes of a cluster, HOST:PORT,HOST:PORT,..., in place of HOST:PORT, and
// with the query options listed in the package documentation. Unknown options, options
// given twice and bad values are errors naming the option.
func ParseURL(rawURL string) (*Options, error) {
	u, err := amqpurl.Parse(rawURL, "carrot/amqp10", "amqp10", "amqp10s")
	if err != nil {
		return nil, err
	}
	o := &Options{Addrs: u.Addrs, Username: u.Username, Password: u.Password, Vhost: u.Vhost, TLS: u.TLS}
	mechanism := brokerurl.OneOf(&o.SASL, "plain", "anonymous", "external")
	err = u.Read(
		// AMQP 1.0 carries milliseconds in 32 bits.
		brokerurl.Option{Name: "idle_timeout", Set: brokerurl.Duration(&o.IdleTimeout, time.Millisecond, math.MaxUint32*time.Millisecond, "a duration from 1ms to 49 days, such as 30s")},
		brokerurl.Option{Name: "connection_timeout", Set: brokerurl.Duration(&o.ConnectionTimeout, 1, math.MaxInt64, "a positive duration such as 10s")},
		brokerurl.Option{Name: "max_frame_size", Set: brokerurl.Int(&o.MaxFrameSize, 512, math.MaxUint32, "a number of bytes, at least 512")},
		brokerurl.Option{Name: "prefetch", Set: brokerurl.Int(&o.Prefetch, 1, math.MaxInt32, "a number from 1 to 2147483647")},
		brokerurl.Option{Name: "max_body_size", Set: brokerurl.Int(&o.MaxBodySize, 1, math.MaxInt64, "a positive number of bytes")},
		brokerurl.Option{Name: "auth_mechanism", Set: mechanism},
		brokerurl.Option{Name: "sasl", Deprecated: "auth_mechanism", Set: mechanism},
		brokerurl.Option{Name: "container_id", Set: brokerurl.String(&o.ContainerID)},
	)
	if err != nil {
		return nil, err
	}
	if o.TLS == nil && o.SASL == "external" {
		return nil, u.Errorf("auth_mechanism=external needs the amqp10s scheme and a client certificate")
	}
	return o, nil
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	o.Addrs = amqpurl.DefaultAddrs(o.Addrs, o.TLS != nil)
	o.Vhost = cmp.Or(o.Vhost, "/")
	o.IdleTimeout = cmp.Or(o.IdleTimeout, DefaultIdleTimeout)
	o.ConnectionTimeout = cmp.Or(o.ConnectionTimeout, DefaultConnectionTimeout)
	o.Prefetch = cmp.Or(o.Prefetch, DefaultPrefetch)
	o.MaxBodySize = cmp.Or(o.MaxBodySize, DefaultMaxBodySize)
	return o
}

// String describes where o connects, without the user name and password.
func (o Options) String() string {
	scheme := "amqp10"
	if o.TLS != nil {
		scheme = "amqp10s"
	}
	return amqpurl.String(scheme, amqpurl.DefaultAddrs(o.Addrs, o.TLS != nil), o.Vhost)
}

// connOptions returns go-amqp's options for o. TLS is not among them: Connect makes the
// TLS connection itself.
func (o Options) connOptions() *amqp.ConnOptions {
	co := &amqp.ConnOptions{
		ContainerID:  o.ContainerID,
		HostName:     "vhost:" + o.Vhost,
		IdleTimeout:  o.IdleTimeout,
		MaxFrameSize: o.MaxFrameSize,
	}
	switch o.SASL {
	case "anonymous":
		co.SASLType = amqp.SASLTypeAnonymous()
	case "external":
		co.SASLType = amqp.SASLTypeExternal("")
	default:
		co.SASLType = amqp.SASLTypePlain(o.Username, o.Password)
	}
	return co
}
