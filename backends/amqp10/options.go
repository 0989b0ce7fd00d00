package amqp10

import (
	"crypto/tls"
	"math"
	"strconv"
	"strings"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/amqpurl"
)

// Defaults of the URL options.
const (
	DefaultIdleTimeout = time.Minute
	DefaultPrefetch    = 100
	DefaultMaxBodySize = 16 << 20 // RabbitMQ 4's default max_message_size
)

// Options configures a connection to an AMQP 1.0 broker. [ParseURL] makes one from a URL;
// the zero value of each field means its default.
type Options struct {
	// Addr is the broker's host:port.
	Addr string
	// Username and Password authenticate with SASL PLAIN; guest/guest when the URL has
	// none.
	Username, Password string
	// Vhost is the RabbitMQ virtual host, sent as the hostname "vhost:NAME"; "/" when empty.
	Vhost string
	// TLS, when not nil, makes the connection use TLS (the amqp10s scheme).
	TLS *tls.Config
	// SASL is "plain" (the default), "anonymous" or "external" (a TLS client certificate).
	SASL string

	IdleTimeout  time.Duration // DefaultIdleTimeout when zero
	MaxFrameSize uint32        // go-amqp's default when zero
	ContainerID  string        // a random one when empty

	// Prefetch is the link credit of consumers that do not set one (DefaultPrefetch).
	Prefetch int
	// MaxBodySize is the largest body the broker accepts (DefaultMaxBodySize, RabbitMQ 4's
	// default max_message_size); set it to match the broker's configuration. Whatever it
	// is, go-amqp refuses before sending a message larger than the broker announces for
	// the link.
	MaxBodySize int64
}

// ParseURL parses an AMQP 1.0 URL,
//
//	amqp10://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqp10s://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// with the query options listed in the package documentation. Unknown options, options
// given twice and bad values are errors naming the option.
func ParseURL(rawURL string) (*Options, error) {
	u, err := amqpurl.Parse(rawURL, "carrot/amqp10", "amqp10", "amqp10s")
	if err != nil {
		return nil, err
	}
	o := &Options{Addr: u.Addr, Username: u.Username, Password: u.Password, Vhost: u.Vhost, TLS: u.TLS}
	err = u.Options("server_name", func(key, v string) error {
		switch key {
		case "idle_timeout":
			// AMQP 1.0 carries milliseconds in 32 bits.
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Millisecond || d > math.MaxUint32*time.Millisecond {
				return u.Bad(key, v, "a duration from 1ms to 49 days, such as 30s")
			}
			o.IdleTimeout = d
		case "max_frame_size":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < 512 {
				return u.Bad(key, v, "a number of bytes, at least 512")
			}
			o.MaxFrameSize = uint32(n)
		case "prefetch":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n <= 0 {
				return u.Bad(key, v, "a number from 1 to 2147483647")
			}
			o.Prefetch = int(n)
		case "max_body_size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return u.Bad(key, v, "a positive number of bytes")
			}
			o.MaxBodySize = n
		case "sasl":
			switch m := strings.ToLower(v); m {
			case "plain", "anonymous", "external":
				o.SASL = m
			default:
				return u.Bad(key, v, "plain, anonymous or external")
			}
		case "container_id":
			o.ContainerID = v
		default:
			return backend.Errorf(backend.Invalid, "carrot/amqp10: unknown URL option %q (known: cacertfile, certfile, container_id, idle_timeout, keyfile, max_body_size, max_frame_size, prefetch, sasl, server_name)", key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o.TLS == nil && o.SASL == "external" {
		return nil, backend.Errorf(backend.Invalid, "carrot/amqp10: sasl=external needs the amqp10s scheme and a client certificate")
	}
	return o, nil
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Vhost == "" {
		o.Vhost = "/"
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Prefetch == 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.MaxBodySize == 0 {
		o.MaxBodySize = DefaultMaxBodySize
	}
	return o
}

// String describes where o connects, without the user name and password.
func (o Options) String() string {
	scheme := "amqp10"
	if o.TLS != nil {
		scheme = "amqp10s"
	}
	return amqpurl.String(scheme, o.Addr, o.Vhost)
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
