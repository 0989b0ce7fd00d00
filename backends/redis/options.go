package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/internal/brokerurl"
)

// Defaults of the URL options.
const (
	DefaultNamespace         = "carrot"
	DefaultVisibilityTimeout = 30 * time.Second
	DefaultBlock             = time.Second
	DefaultPrefetch          = 100
	DefaultWaitTimeout       = time.Second
)

// Options configures a connection to Redis. [ParseURL] makes one from a URL; the zero value
// of each field means its default.
type Options struct {
	// Redis is go-redis's configuration: the addresses (several for a cluster), the
	// sentinel master's name, credentials, database, TLS, timeouts and pool.
	Redis goredis.UniversalOptions

	// Namespace prefixes every key carrot makes, in braces, so that all of them hash to
	// one Redis Cluster slot (DefaultNamespace when empty); it holds no { or }.
	// Connections with the same namespace share exchanges, queues and bindings.
	// [DeleteNamespace] deletes all of its keys.
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

	// Wait is how many replicas must have each write that a call reports done (a publish,
	// an ack, a requeue, a reject, a change of the topology, a purge) before the call
	// reports it: with Wait above 0, each such write is followed by Redis's WAIT. See
	// Replication and failover in the package documentation. 0, the default, waits for
	// none.
	Wait int

	// WaitTimeout is how long a write waits for Wait replicas (DefaultWaitTimeout); if
	// fewer have it by then, the call fails with an error classified as Unavailable (the
	// write stays on the master). It must be shorter than Redis.ReadTimeout, which bounds
	// the answer to WAIT too.
	WaitTimeout time.Duration

	// Logger receives what the connections log: the failures of their background work,
	// and go-redis's lines while they are open (see Logging in the package
	// documentation). slog.Default() when nil. A carrot.Dialer passes its own through
	// [Driver.OpenConnectorConfig].
	Logger *slog.Logger
}

// ParseURL parses a Redis URL:
//
//	redis://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]
//	rediss://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]
//	unix://[USER:PASSWORD@]/PATH/TO/SOCKET[?db=DB&OPTIONS]
//
// with the query options listed in the package documentation: carrot's own, and those of
// go-redis's ParseURL, which parses the URL's address, credentials, database and its own
// options. Unknown options, options given twice (but addr and sentinel, which may repeat)
// and bad values are errors naming the option.
func ParseURL(rawURL string) (*Options, error) {
	u, err := brokerurl.ParseFor("carrot/redis", rawURL, "redis", "rediss", "unix")
	if err != nil {
		return nil, err
	}
	if u.Scheme == "unix" && (u.Path == "" || u.Host != "") {
		return nil, u.Errorf("URL must be unix:///PATH/TO/SOCKET?OPTIONS")
	}
	if hosts := brokerurl.Hosts(u.URL); len(hosts) > 1 {
		return nil, u.Errorf("the URL names %d hosts: name one, and the others with addr=HOST:PORT and cluster=true (or with sentinel=HOST:PORT)", len(hosts))
	}
	o := &Options{}
	var (
		addrs, sentinels                   []string
		master, sentinelUser, sentinelPass string
		cluster                            bool
		db                                 = -1
		connectionTimeout                  time.Duration
		tlsOptions                         brokerurl.TLSOptions
		passed                             = make(url.Values) // go-redis's options
	)
	hostPort := func(list *[]string) func(string) error {
		return func(v string) error {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return brokerurl.Want("HOST:PORT")
			}
			*list = append(*list, v)
			return nil
		}
	}
	// Redis counts both in milliseconds; BLOCK 0 would wait forever, and a visibility
	// timeout of 0 would hand held messages to others at once.
	const atLeast1ms = "a duration of at least 1ms, such as 30s"
	err = u.Read(brokerurl.Query{
		Options: append([]brokerurl.Option{
			{Name: "namespace", Set: func(v string) error {
				if v == "" || strings.ContainsAny(v, "{}") {
					return brokerurl.Want("a name without { or }")
				}
				o.Namespace = v
				return nil
			}},
			{Name: "visibility_timeout", Set: brokerurl.Duration(&o.VisibilityTimeout, time.Millisecond, math.MaxInt64, atLeast1ms)},
			{Name: "block", Set: brokerurl.Duration(&o.Block, time.Millisecond, math.MaxInt64, atLeast1ms)},
			{Name: "prefetch", Set: brokerurl.Int(&o.Prefetch, 1, math.MaxInt, "a number, at least 1")},
			{Name: "wait", Set: brokerurl.Int(&o.Wait, 0, math.MaxInt32, "a number of replicas, at least 0")},
			{Name: "wait_timeout", Set: brokerurl.Duration(&o.WaitTimeout, time.Millisecond, math.MaxInt64, atLeast1ms)},
			{Name: "db", Set: func(v string) error {
				if u.Scheme != "unix" {
					return errors.New("db is for unix URLs; put the database in the path")
				}
				return brokerurl.Int(&db, 0, math.MaxInt, "a database number")(v)
			}},
			{Name: "connection_timeout", Set: brokerurl.Duration(&connectionTimeout, 1, math.MaxInt64, "a positive duration such as 10s")},
			{Name: "cluster", Set: brokerurl.Bool(&cluster)},
			{Name: "addr", Repeat: true, Set: hostPort(&addrs)},
			{Name: "sentinel", Repeat: true, Set: hostPort(&sentinels)},
			{Name: "master", Set: brokerurl.String(&master)},
			{Name: "sentinel_username", Set: brokerurl.String(&sentinelUser)},
			{Name: "sentinel_password", Set: brokerurl.String(&sentinelPass)},
		}, tlsOptions.Options()...),
		Other: func(key, v string) error {
			switch key {
			case "max_retries", "min_retry_backoff", "max_retry_backoff":
				return errors.New("go-redis's retries are off: a failed call ends the connection, and carrot reconnects and retries")
			case "pool_size":
				if n, err := strconv.Atoi(v); err == nil && n < 1 {
					return brokerurl.Want("a number, at least 1")
				}
			}
			if _, err := goredis.ParseURL("rediss://localhost/?" + url.QueryEscape(key) + "="); err != nil {
				return brokerurl.ErrUnknown
			}
			if _, err := goredis.ParseURL("rediss://localhost/?" + url.QueryEscape(key) + "=" + url.QueryEscape(v)); err != nil {
				return err // go-redis's error names the option and says what is wrong
			}
			passed.Set(key, v)
			return nil
		},
		OtherNames: "the options of go-redis's ParseURL, such as dial_timeout, read_timeout, write_timeout, pool_size and client_name",
	})
	if err != nil {
		return nil, err
	}

	// go-redis parses the rest: the address, credentials, database and its own options.
	gu := *u.URL
	gu.RawQuery = passed.Encode()
	ro, err := goredis.ParseURL(gu.String())
	if err != nil {
		return nil, u.Errorf("go-redis refuses the URL: %s", brokerurl.Scrub(brokerurl.Scrub(err.Error(), gu.String()), rawURL))
	}
	if ro.DB < 0 {
		return nil, u.Errorf("URL path %q: want a database number", u.Path)
	}
	o.Redis = universal(ro)
	r := &o.Redis
	r.MasterName, r.SentinelUsername, r.SentinelPassword = master, sentinelUser, sentinelPass
	r.IsClusterMode = cluster
	if u.Scheme == "unix" {
		r.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
	}
	if db >= 0 {
		r.DB = db
	}
	if connectionTimeout > 0 {
		if passed.Has("dial_timeout") {
			return nil, u.Errorf("URL options connection_timeout and dial_timeout are one option: give one of them")
		}
		r.DialTimeout = connectionTimeout
	}
	r.Addrs = append(r.Addrs, addrs...)
	if u.Query.Has("sentinel") {
		r.Addrs = sentinels // the sentinels, not the master, are dialled
	}
	if u.Query.Has("sentinel") != (r.MasterName != "") {
		return nil, u.Errorf("URL options sentinel and master go together")
	}
	if !u.Query.Has("sentinel") && (u.Query.Has("sentinel_username") || u.Query.Has("sentinel_password")) {
		return nil, u.Errorf("URL options sentinel_username and sentinel_password need sentinel and master")
	}
	if len(r.Addrs) > 1 && r.MasterName == "" && !r.IsClusterMode {
		return nil, u.Errorf("several addresses need cluster=true (or sentinel and master)")
	}
	if r.IsClusterMode && r.DB != 0 {
		return nil, u.Errorf("a Redis Cluster has only database 0")
	}
	if u.Query.Has("wait_timeout") && o.Wait == 0 {
		return nil, u.Errorf("URL option wait_timeout needs wait")
	}
	if err := o.checkWait(); err != nil {
		return nil, u.Errorf("URL options: %v", err)
	}
	if err := tlsOptions.Apply(u, r.TLSConfig, "rediss"); err != nil {
		return nil, err
	}
	return o, nil
}

// goredisReadTimeout is go-redis's read timeout when Options.Redis.ReadTimeout is 0.
const goredisReadTimeout = 5 * time.Second

// checkWait says why o's Wait and WaitTimeout do not work, or returns nil: the read timeout
// bounds the answer to WAIT, which would end the connection when cut short.
func (o *Options) checkWait() error {
	if o.Wait < 0 {
		return fmt.Errorf("wait %d: want a number of replicas, at least 0", o.Wait)
	}
	wait, read := cmp.Or(o.WaitTimeout, DefaultWaitTimeout), cmp.Or(o.Redis.ReadTimeout, goredisReadTimeout)
	if wait < time.Millisecond { // WAIT counts in ms, and 0 waits for ever
		return fmt.Errorf("wait_timeout %v: want a duration of at least 1ms", wait)
	}
	if o.Wait > 0 && read > 0 && wait >= read {
		return fmt.Errorf("wait_timeout %v is not shorter than read_timeout %v, which would cut WAIT short", wait, read)
	}
	return nil
}

// universal returns go-redis's options for one server as options for any client: every
// field of Options that UniversalOptions has too, so that no option go-redis's ParseURL
// reads is lost, whatever go-redis version adds.
func universal(o *goredis.Options) goredis.UniversalOptions {
	var u goredis.UniversalOptions
	src, dst := reflect.ValueOf(o).Elem(), reflect.ValueOf(&u).Elem()
	for i := range src.NumField() {
		f := src.Type().Field(i)
		if d := dst.FieldByName(f.Name); f.IsExported() && d.IsValid() && d.Type() == f.Type {
			d.Set(src.Field(i))
		}
	}
	u.Addrs = []string{o.Addr}
	return u
}

// withDefaults returns a copy of o with every zero field set to its default.
func (o Options) withDefaults() Options {
	o.Namespace = cmp.Or(o.Namespace, DefaultNamespace)
	o.VisibilityTimeout = cmp.Or(o.VisibilityTimeout, DefaultVisibilityTimeout)
	o.Block = cmp.Or(o.Block, DefaultBlock)
	o.Prefetch = cmp.Or(o.Prefetch, DefaultPrefetch)
	o.WaitTimeout = cmp.Or(o.WaitTimeout, DefaultWaitTimeout)
	o.Logger = cmp.Or(o.Logger, slog.Default())
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
