package amqp091

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/amqpurl"
)

// Defaults of the URL options.
const (
	DefaultHeartbeat         = 10 * time.Second
	DefaultConnectionTimeout = 30 * time.Second
	DefaultPrefetch          = 100
	DefaultMaxBodySize       = 128 << 20 // RabbitMQ 3's default max_message_size
	DefaultAckDelay          = 10 * time.Millisecond
)

// Options configures a connection to RabbitMQ. [ParseURL] makes one from a URL; the zero
// value of each field means its default.
type Options struct {
	// Addr is the broker's host:port.
	Addr string
	// Username and Password authenticate with PLAIN or AMQPLAIN; guest/guest when the URL
	// has none, as in amqp091-go.
	Username, Password string
	// Vhost is the virtual host; "/" when empty.
	Vhost string
	// TLS, when not nil, makes the connection use TLS (the amqps scheme).
	TLS *tls.Config
	// AuthMechanism is "PLAIN" (the default), "AMQPLAIN" or "EXTERNAL" (TLS client
	// certificates).
	AuthMechanism string

	Heartbeat         time.Duration // DefaultHeartbeat when zero
	ConnectionTimeout time.Duration // for the TCP dial, TLS and AMQP handshakes; DefaultConnectionTimeout when zero
	ChannelMax        uint16        // 0 lets the broker choose
	FrameSize         int           // 0 lets amqp091-go choose
	ConnectionName    string        // shown by RabbitMQ's management tools

	// Prefetch is the prefetch limit of consumers that do not set one (DefaultPrefetch).
	Prefetch int
	// AckDelay is how long a consumer's ack may wait to be sent with others
	// (DefaultAckDelay when zero; negative sends each ack at once). See the package
	// documentation for when a waiting ack is sent.
	AckDelay time.Duration
	// NoConfirms turns publisher confirms off: Publish returns once the message is written,
	// and unroutable messages cannot be reported.
	NoConfirms bool
	// MaxBodySize is the largest body the broker accepts. When zero, it is RabbitMQ's
	// default max_message_size for the version the broker reports: 16 MiB from RabbitMQ
	// 4.0, DefaultMaxBodySize before. Set it to match the broker's configuration; a
	// refusal from the broker lowers it for the connection.
	MaxBodySize int64

	// Logger receives the broker's flow control notices; slog.Default() when nil.
	Logger *slog.Logger
}

// ParseURL parses an AMQP URL as RabbitMQ documents it,
//
//	amqp://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqps://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// with the query options listed in the package documentation. Unknown options, options
// given twice and bad values are errors naming the option.
func ParseURL(rawURL string) (*Options, error) {
	u, err := amqpurl.Parse(rawURL, "carrot/amqp091", "amqp", "amqps")
	if err != nil {
		return nil, err
	}
	o := &Options{Addr: u.Addr, Username: u.Username, Password: u.Password, Vhost: u.Vhost, TLS: u.TLS}
	err = u.Options("server_name_indication", func(key, v string) error {
		switch key {
		case "heartbeat":
			// AMQP 0-9-1 carries whole seconds in 16 bits; the client would round
			// anything else, and use the server's interval below a second.
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > math.MaxUint16*time.Second || d%time.Second != 0 {
				return u.Bad(key, v, "whole seconds from 1s to 65535s")
			}
			o.Heartbeat = d
		case "connection_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return u.Bad(key, v, "a positive duration such as 10s")
			}
			o.ConnectionTimeout = d
		case "channel_max":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return u.Bad(key, v, "a number from 1 to 65535")
			}
			o.ChannelMax = uint16(n)
		case "frame_size":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < 4096 {
				return u.Bad(key, v, "a number of bytes from 4096 to 4294967295")
			}
			o.FrameSize = int(n)
		case "ack_delay":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > time.Minute {
				return u.Bad(key, v, "a duration from 0 (each ack at once) to 1m")
			}
			if d == 0 {
				d = -1
			}
			o.AckDelay = d
		case "prefetch":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 || n > 65535 {
				return u.Bad(key, v, "a number from 1 to 65535")
			}
			o.Prefetch = n
		case "confirms":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return u.Bad(key, v, "true or false")
			}
			o.NoConfirms = !b
		case "max_body_size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return u.Bad(key, v, "a positive number of bytes")
			}
			o.MaxBodySize = n
		case "connection_name":
			o.ConnectionName = v
		case "auth_mechanism":
			switch m := strings.ToUpper(v); m {
			case "PLAIN", "AMQPLAIN", "EXTERNAL":
				o.AuthMechanism = m
			default:
				return u.Bad(key, v, "plain, amqplain or external")
			}
		default:
			return backend.Errorf(backend.Invalid, "carrot/amqp091: unknown URL option %q (known: ack_delay, auth_mechanism, cacertfile, certfile, channel_max, confirms, connection_name, connection_timeout, frame_size, heartbeat, keyfile, max_body_size, prefetch, server_name_indication)", key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if o.TLS == nil && o.AuthMechanism == "EXTERNAL" {
		return nil, backend.Errorf(backend.Invalid, "carrot/amqp091: auth_mechanism=external needs the amqps scheme and a client certificate")
	}
	return o, nil
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Vhost == "" {
		o.Vhost = "/"
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.ConnectionTimeout == 0 {
		o.ConnectionTimeout = DefaultConnectionTimeout
	}
	if o.Prefetch == 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.AckDelay == 0 {
		o.AckDelay = DefaultAckDelay
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// String describes where o connects, without the user name and password.
func (o Options) String() string {
	scheme := "amqp"
	if o.TLS != nil {
		scheme = "amqps"
	}
	return amqpurl.String(scheme, o.Addr, o.Vhost)
}

// config returns the amqp091-go configuration for o, and the URL to dial.
func (o Options) config() (string, amqp.Config) {
	props := amqp.NewConnectionProperties()
	if o.ConnectionName != "" {
		props.SetClientConnectionName(o.ConnectionName)
	}
	cfg := amqp.Config{
		Vhost:      o.Vhost,
		ChannelMax: o.ChannelMax,
		FrameSize:  o.FrameSize,
		Heartbeat:  o.Heartbeat,
		Properties: props,
		Locale:     "en_US",
	}
	switch o.AuthMechanism {
	case "AMQPLAIN":
		cfg.SASL = []amqp.Authentication{&amqp.AMQPlainAuth{Username: o.Username, Password: o.Password}}
	case "EXTERNAL":
		cfg.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
	default:
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: o.Username, Password: o.Password}}
	}
	// TLS, when configured, is made by Connect's dialer, below the frame watcher.
	return fmt.Sprintf("amqp://%s/", o.Addr), cfg
}
