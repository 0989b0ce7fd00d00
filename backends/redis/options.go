package redis

import (
	"context"
	"crypto/tls"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/tlsfiles"
)

// Defaults of the URL options.
const (
	DefaultNamespace         = "carrot"
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultBlock             = time.Second
	DefaultPrefetch          = 100
)

// Options configures a connection to Redis. [ParseURL] makes one from a URL; the zero value
// of each field means its default.
type Options struct {
	// Redis is go-redis's configuration: the addresses (several for a cluster), the
	// sentinel master's name, credentials, database, TLS, timeouts and pool.
	Redis goredis.UniversalOptions

	// Namespace prefixes every key carrot makes, in braces, so that all of them hash to
	// one Redis Cluster slot (DefaultNamespace when empty). Connections with the same
	// namespace share exchanges, queues and bindings.
	Namespace string

	// VisibilityTimeout is how long a message delivered to a consumer that stops
	// answering (its process died) stays with it before others may take it
	// (DefaultVisibilityTimeout). Live consumers extend it for the messages they hold.
	VisibilityTimeout time.Duration

	// Block is how long a consumer's read waits for a message before it looks for
	// requeued and abandoned ones again (DefaultBlock).
	Block time.Duration

	// Prefetch is the prefetch limit of consumers that do not set one (DefaultPrefetch).
	Prefetch int

	// Logger receives background errors (a janitor that could not expire messages); slog.Default()
	// when nil.
	Logger *slog.Logger
}

// ParseURL parses a Redis URL:
//
//	redis://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]
//	rediss://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]
//	unix://[USER:PASSWORD@]/PATH/TO/SOCKET[?db=DB&OPTIONS]
//
// with the query options listed in the package documentation. Unknown options, options
// given twice (but addr and sentinel, which may repeat) and bad values are errors naming
// the option.
func ParseURL(rawURL string) (*Options, error) {
	u, q, err := brokerurl.Parse(rawURL)
	if err != nil {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: %w", err)
	}
	o := &Options{}
	r := &o.Redis
	bad := func(key, v, want string) error {
		return backend.Errorf(backend.Invalid, "carrot/redis: URL option %s=%q: want %s", key, v, want)
	}
	if u.Opaque != "" || u.Fragment != "" {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL must be %s://[USER:PASSWORD@]HOST:PORT/DB?OPTIONS", u.Scheme)
	}
	if u.User != nil {
		r.Username = u.User.Username()
		r.Password, _ = u.User.Password()
	}
	switch u.Scheme {
	case "redis", "rediss":
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "6379"
		}
		r.Addrs = []string{net.JoinHostPort(host, port)}
		if db := strings.Trim(u.Path, "/"); db != "" {
			n, err := strconv.Atoi(db)
			if err != nil || n < 0 {
				return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL path %q: want a database number", u.Path)
			}
			r.DB = n
		}
		if u.Scheme == "rediss" {
			r.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
		}
	case "unix":
		if u.Path == "" || u.Host != "" {
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL must be unix:///PATH/TO/SOCKET?OPTIONS")
		}
		r.Addrs = []string{u.Path}
		r.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
	default:
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL scheme is %q, want redis, rediss or unix", u.Scheme)
	}

	var certFile, keyFile, caFile string
	for _, key := range slices.Sorted(maps.Keys(q)) {
		vals := q[key]
		if len(vals) != 1 && key != "addr" && key != "sentinel" {
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL option %q is given %d times", key, len(vals))
		}
		v := vals[0]
		duration := func() (time.Duration, error) {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return 0, bad(key, v, "a positive duration such as 30s")
			}
			return d, nil
		}
		number := func(min int) (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil || n < min {
				return 0, bad(key, v, "a number, at least "+strconv.Itoa(min))
			}
			return n, nil
		}
		switch key {
		case "namespace":
			if v == "" || strings.ContainsAny(v, "{}") {
				return nil, bad(key, v, "a name without { or }")
			}
			o.Namespace = v
		case "visibility_timeout", "block":
			// Redis counts both in milliseconds; BLOCK 0 would wait forever, and a
			// visibility timeout of 0 would hand held messages to others at once.
			d, err := duration()
			if err == nil && d < time.Millisecond {
				err = bad(key, v, "at least 1ms")
			}
			if err != nil {
				return nil, err
			}
			if key == "block" {
				o.Block = d
			} else {
				o.VisibilityTimeout = d
			}
		case "prefetch":
			if o.Prefetch, err = number(1); err != nil {
				return nil, err
			}
		case "db":
			if u.Scheme != "unix" {
				return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL option db is for unix URLs; put the database in the path")
			}
			if r.DB, err = number(0); err != nil {
				return nil, err
			}
		case "dial_timeout":
			if r.DialTimeout, err = duration(); err != nil {
				return nil, err
			}
		case "read_timeout":
			if r.ReadTimeout, err = duration(); err != nil {
				return nil, err
			}
		case "write_timeout":
			if r.WriteTimeout, err = duration(); err != nil {
				return nil, err
			}
		case "pool_size":
			if r.PoolSize, err = number(1); err != nil {
				return nil, err
			}
		case "client_name":
			r.ClientName = v
		case "cluster":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, bad(key, v, "true or false")
			}
			r.IsClusterMode = b
		case "addr":
			for _, a := range vals {
				if _, _, err := net.SplitHostPort(a); err != nil {
					return nil, bad(key, a, "HOST:PORT")
				}
				r.Addrs = append(r.Addrs, a)
			}
		case "sentinel":
			r.Addrs = nil // the sentinels, not the master, are dialled
			for _, a := range vals {
				if _, _, err := net.SplitHostPort(a); err != nil {
					return nil, bad(key, a, "HOST:PORT")
				}
				r.Addrs = append(r.Addrs, a)
			}
		case "master":
			r.MasterName = v
		case "sentinel_username":
			r.SentinelUsername = v
		case "sentinel_password":
			r.SentinelPassword = v
		case "certfile":
			certFile = v
		case "keyfile":
			keyFile = v
		case "cacertfile":
			caFile = v
		case "server_name":
			if r.TLSConfig == nil {
				return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL option server_name needs the rediss scheme")
			}
			r.TLSConfig.ServerName = v
		default:
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: unknown URL option %q (known: addr, block, cacertfile, certfile, client_name, cluster, db, dial_timeout, keyfile, master, namespace, pool_size, prefetch, read_timeout, sentinel, sentinel_password, sentinel_username, server_name, visibility_timeout, write_timeout)", key)
		}
	}
	if q.Has("sentinel") != (r.MasterName != "") {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL options sentinel and master go together")
	}
	if !q.Has("sentinel") && (q.Has("sentinel_username") || q.Has("sentinel_password")) {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL options sentinel_username and sentinel_password need sentinel and master")
	}
	if len(r.Addrs) > 1 && r.MasterName == "" && !r.IsClusterMode {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: several addresses need cluster=true (or sentinel and master)")
	}
	if r.IsClusterMode && r.DB != 0 {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: a Redis Cluster has only database 0")
	}
	if certFile != "" || keyFile != "" || caFile != "" {
		if r.TLSConfig == nil {
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: URL options certfile, keyfile and cacertfile need the rediss scheme")
		}
		if err := tlsfiles.Load(r.TLSConfig, certFile, keyFile, caFile); err != nil {
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: %w", err)
		}
	}
	return o, nil
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.Block == 0 {
		o.Block = DefaultBlock
	}
	if o.Prefetch == 0 {
		o.Prefetch = DefaultPrefetch
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// String describes where o connects, without the password.
func (o Options) String() string {
	s := strings.Join(o.Redis.Addrs, ",")
	switch {
	case o.Redis.MasterName != "":
		s = "sentinel " + s + " master " + o.Redis.MasterName
	case o.Redis.IsClusterMode:
		s = "cluster " + s
	}
	return "redis " + s + " namespace " + o.Namespace
}
