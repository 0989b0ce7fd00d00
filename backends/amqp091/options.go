package amqp091

import (
	"cmp"
	"crypto/tls"
	"log/slog"
	"math"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/internal/amqpurl"
	"github.com/carrot-go/carrot/internal/brokerurl"
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
	// Addrs are the host:port of the broker, or of each node of a cluster, in the order
	// the first connection tries them (see URLs in the package documentation);
	// localhost:5672 (5671 with TLS) when empty.
	Addrs []string
	// Username and Password authenticate with PLAIN or AMQPLAIN; guest/guest when the URL
	// has none, as in amqp091-go.
	Username, Password string
	// Vhost is the virtual host; "/" when empty.
	Vhost string
	// TLS, when not nil, makes the connection use TLS (the amqps scheme). When its
	// ServerName is empty, each host's own name is verified (and sent for SNI), as
	// tls.Dial does; the URL's server_name sets it for every host.
	TLS *tls.Config
	// AuthMechanism is "PLAIN" (the default), "AMQPLAIN" or "EXTERNAL" (TLS client
	// certificates).
	AuthMechanism string

	Heartbeat         time.Duration // DefaultHeartbeat when zero
	ConnectionTimeout time.Duration // for the TCP dial, TLS and AMQP handshakes, with each host; DefaultConnectionTimeout when zero
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

	// Logger receives what the connections log: the broker's flow control notices (see
	// Logging in the package documentation). slog.Default() when nil. A carrot.Dialer
	// passes its own through [Driver.OpenConnectorConfig].
	Logger *slog.Logger
}

// ParseURL parses an AMQP URL as RabbitMQ documents it,
//
//	amqp://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqps://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//
// or with the nodes of a cluster, HOST:PORT,HOST:PORT,..., in place of HOST:PORT, and
// with the query options listed in the package documentation. Unknown options, options
// given twice and bad values are errors naming the option.
func ParseURL(rawURL string) (*Options, error) {
	u, err := amqpurl.Parse(rawURL, "carrot/amqp091", "amqp", "amqps")
	if err != nil {
		return nil, err
	}
	o := &Options{Addrs: u.Addrs, Username: u.Username, Password: u.Password, Vhost: u.Vhost, TLS: u.TLS}
	err = u.Read(
		// AMQP 0-9-1 carries whole seconds in 16 bits; the client would round anything
		// else, and use the server's interval below a second.
		brokerurl.Option{Name: "heartbeat", Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second || d > math.MaxUint16*time.Second || d%time.Second != 0 {
				return brokerurl.Want("whole seconds from 1s to 65535s")
			}
			o.Heartbeat = d
			return nil
		}},
		brokerurl.Option{Name: "connection_timeout", Set: brokerurl.Duration(&o.ConnectionTimeout, 1, math.MaxInt64, "a positive duration such as 10s")},
		brokerurl.Option{Name: "channel_max", Set: brokerurl.Int(&o.ChannelMax, 1, math.MaxUint16, "a number from 1 to 65535")},
		brokerurl.Option{Name: "frame_size", Set: brokerurl.Int(&o.FrameSize, 4096, math.MaxUint32, "a number of bytes from 4096 to 4294967295")},
		brokerurl.Option{Name: "ack_delay", Set: func(v string) error {
			if err := brokerurl.Duration(&o.AckDelay, 0, time.Minute, "a duration from 0 (each ack at once) to 1m")(v); err != nil {
				return err
			}
			if o.AckDelay == 0 {
				o.AckDelay = -1
			}
			return nil
		}},
		brokerurl.Option{Name: "prefetch", Set: brokerurl.Int(&o.Prefetch, 1, 65535, "a number from 1 to 65535")},
		brokerurl.Option{Name: "confirms", Set: func(v string) error {
			var confirms bool
			err := brokerurl.Bool(&confirms)(v)
			o.NoConfirms = !confirms
			return err
		}},
		brokerurl.Option{Name: "max_body_size", Set: brokerurl.Int(&o.MaxBodySize, 1, math.MaxInt64, "a positive number of bytes")},
		brokerurl.Option{Name: "connection_name", Set: brokerurl.String(&o.ConnectionName)},
		brokerurl.Option{Name: "auth_mechanism", Set: brokerurl.OneOf(&o.AuthMechanism, "PLAIN", "AMQPLAIN", "EXTERNAL")},
		// RabbitMQ's URI spec and amqp091-go name the server name so.
		brokerurl.Option{Name: "server_name_indication", Deprecated: "server_name", Set: brokerurl.String(&u.TLSOptions.ServerName)},
	)
	if err != nil {
		return nil, err
	}
	if o.TLS == nil && o.AuthMechanism == "EXTERNAL" {
		return nil, u.Errorf("auth_mechanism=external needs the amqps scheme and a client certificate")
	}
	return o, nil
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	o.Addrs = amqpurl.DefaultAddrs(o.Addrs, o.TLS != nil)
	o.Vhost = cmp.Or(o.Vhost, "/")
	o.Heartbeat = cmp.Or(o.Heartbeat, DefaultHeartbeat)
	o.ConnectionTimeout = cmp.Or(o.ConnectionTimeout, DefaultConnectionTimeout)
	o.Prefetch = cmp.Or(o.Prefetch, DefaultPrefetch)
	o.AckDelay = cmp.Or(o.AckDelay, DefaultAckDelay)
	o.Logger = cmp.Or(o.Logger, slog.Default())
	return o
}

// userID returns the user name RabbitMQ takes as a message's user-id on connections with
// o, which their Capabilities report: the one they log in with, or "" when the login is a
// certificate's (EXTERNAL), whose name RabbitMQ derives itself.
func (o Options) userID() string {
	if o.AuthMechanism == "EXTERNAL" {
		return ""
	}
	return o.Username
}

// String describes where o connects, without the user name and password.
func (o Options) String() string {
	scheme := "amqp"
	if o.TLS != nil {
		scheme = "amqps"
	}
	return amqpurl.String(scheme, amqpurl.DefaultAddrs(o.Addrs, o.TLS != nil), o.Vhost)
}

// config returns the amqp091-go configuration for o.
func (o Options) config() amqp.Config {
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
	return cfg
}
