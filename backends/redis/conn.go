package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/lifetime"
	"github.com/carrot-go/carrot/internal/loglimit"
	"github.com/carrot-go/carrot/internal/route"
)

func init() {
	for _, scheme := range []string{"redis", "rediss", "unix"} {
		carrot.Register(scheme, Driver{})
	}
}

// Driver opens redis://, rediss:// and unix:// URLs. It is registered with carrot under
// the three schemes.
type Driver struct{}

var _ backend.ConfigDriver = Driver{}

// OpenConnector parses rawURL with [ParseURL] and returns a Connector for it, whose
// connections log to slog.Default().
func (d Driver) OpenConnector(rawURL string) (backend.Connector, error) {
	return d.OpenConnectorConfig(rawURL, backend.Config{Logger: slog.Default()})
}

// OpenConnectorConfig parses rawURL with [ParseURL] and returns a Connector for it, whose
// connections, and go-redis's lines while they are open, log to cfg.Logger (see Logging
// in the package documentation). carrot calls it with the Logger of a carrot.Dialer.
func (Driver) OpenConnectorConfig(rawURL string, cfg backend.Config) (backend.Connector, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	o.Logger = cfg.Logger
	return newConnector(o, rawURL), nil
}

// Connector connects to Redis as its Options say. It implements [backend.Connector]; use
// it with [carrot.Connect]. It remembers the consumers of its lost connections that held
// messages, and hands those messages back to their queues when it next connects, so that
// they are delivered again at once rather than after the visibility timeout.
type Connector struct {
	opts    Options
	secrets []string // URLs whose secrets no log line shows

	// goredisLines limits the lines of go-redis that reach the Connector's logger.
	goredisLines loglimit.Limiter

	mu      sync.Mutex
	orphans []orphan
}

// orphan is a consumer of a lost connection that may hold messages.
type orphan struct{ stream, consumer string }

// NewConnector returns a Connector for opts. The first Connector made in a process makes
// go-redis log through carrot (see Logging in the package documentation).
func NewConnector(opts *Options) *Connector {
	return newConnector(opts, "")
}

// newConnector returns a Connector for opts, made from rawURL if not empty.
func newConnector(opts *Options, rawURL string) *Connector {
	routeGoredisLines()
	o := opts.withDefaults()
	return &Connector{opts: o, secrets: secretURLs(&o, rawURL)}
}

// String describes where the Connector connects, without the password.
func (k *Connector) String() string { return k.opts.String() }

// adopt remembers consumers of a lost connection.
func (k *Connector) adopt(os ...orphan) {
	k.mu.Lock()
	k.orphans = append(k.orphans, os...)
	k.mu.Unlock()
}

// Conn is one connection to Redis: a go-redis client, which keeps a pool of network
// connections. It implements [backend.Conn]. When Redis stops answering, or has lost its
// data (restarted without persistence), the Conn ends, and carrot opens another.
type Conn struct {
	k          *Connector
	opts       Options
	rdb        goredis.UniversalClient
	untrack    func() // counts rdb as closed, for go-redis's lines
	log        *slog.Logger
	prefix     string // "{namespace}:"
	versionKey string
	connsKey   string // the namespace's open connections
	id         string // this connection's part of consumer names
	caps       backend.Capabilities

	topo     atomic.Pointer[snapshot]
	reloadMu sync.Mutex

	pubq      chan *pubReq
	enqueuing atomic.Int64 // publishes on their way into pubq
	ackq      chan ackReq

	mu              sync.Mutex
	gets            map[string]hold // messages got and not settled, by id
	getQueues       map[string]bool // queues fetched from, whose get consumer goes on Close
	subs            map[*subscription]struct{}
	getCur          string      // XAUTOCLAIM cursor of gets
	closing         atomic.Bool // Close was called
	closed          atomic.Bool // Close has given back what the connection held
	lifetime.Ending             // Done and Err

	takeSeq  atomic.Uint64 // the last take's token
	takesMu  sync.Mutex
	answered map[string][]any // by consumer, the tokens of takes whose answer came

	foreignReply atomic.Value  // the first bytes of a server that does not speak RESP
	sendingLarge atomic.Int32  // publishes of a batch with a body Redis may refuse, under way
	stop         chan struct{} // closed by Close: the background goroutines end
	delayed      chan struct{} // a delayed message was published: the promoter looks again
	wg           sync.WaitGroup
	ackDone      chan struct{}    // closed when the ack loop has stopped
	failures     loglimit.Limiter // the lines of failures in the background
}

// hold is a message delivered and not yet settled.
type hold struct {
	queue string
	lost  bool // another consumer took it after the visibility timeout
}

var _ backend.Conn = (*Conn)(nil)
var _ backend.AsyncPublisher = (*Conn)(nil)
var _ backend.Pinger = (*Conn)(nil)

// Connect opens a go-redis client and checks that Redis answers, bounded by ctx. It then
// hands back to their queues the messages that consumers of the Connector's lost
// connections held.
func (k *Connector) Connect(ctx context.Context) (backend.Conn, error) {
	o := k.opts
	if err := o.checkWait(); err != nil {
		return nil, backend.Errorf(backend.Invalid, "carrot/redis: connect to %s: %v", o, err)
	}
	ro := o.Redis
	if ro.PoolSize == 0 {
		ro.PoolSize = 64
	}
	ro.ContextTimeoutEnabled = true // calls end at their context's deadline
	ro.MaxRetries = -1              // carrot recovers, once for every backend: a failed call ends the Conn
	ro.DialerRetries = 1            // one attempt
	c := &Conn{
		k:         k,
		opts:      o,
		log:       o.Logger,
		prefix:    "{" + o.Namespace + "}:",
		id:        randomID(),
		pubq:      make(chan *pubReq, 4096),
		ackq:      make(chan ackReq, 4096),
		gets:      make(map[string]hold),
		getQueues: make(map[string]bool),
		subs:      make(map[*subscription]struct{}),
		getCur:    "0-0",
		stop:      make(chan struct{}),
		delayed:   make(chan struct{}, 1),
		ackDone:   make(chan struct{}),
	}
	c.versionKey = c.prefix + "version"
	c.connsKey = c.prefix + "connections"
	ro.Dialer = c.dialer(ro.Dialer, ro.TLSConfig)
	c.untrack = lines.track(k)
	c.rdb = goredis.NewUniversalClient(&ro)
	if err := scriptInit.Run(ctx, c.rdb, []string{c.versionKey, c.connsKey}, c.prefix, c.id, connLease.Milliseconds()).Err(); err != nil {
		c.closeClient()
		if cerr := ctx.Err(); cerr != nil {
			return nil, backend.Errorf(backend.Unavailable, "carrot/redis: connect to %s: %w", o, cerr)
		}
		if reply, ok := c.foreignReply.Load().(string); ok {
			return nil, backend.Errorf(backend.Invalid, "carrot/redis: connect to %s: the server does not speak Redis's protocol (it answered %q): %w", o, reply, err)
		}
		code := c.ErrorCode(err)
		if code != backend.Invalid {
			code = backend.Unavailable
		}
		return nil, backend.Errorf(code, "carrot/redis: connect to %s: %w", o, err)
	}
	c.caps = c.capabilities(ctx)
	if err := c.releaseOrphans(ctx); err != nil {
		c.closeClient()
		return nil, err
	}
	free, answers := make(chan []*pubReq, pubBuffers), make(chan []*pubReq, pubBuffers)
	for range pubBuffers {
		free <- make([]*pubReq, 0, maxBatch)
	}
	c.wg.Add(6)
	go func() { defer c.wg.Done(); c.publishLoop(free, answers) }()
	go func() { defer c.wg.Done(); answerLoop(answers, free) }()
	go func() { defer c.wg.Done(); c.promoter() }()
	go func() { defer c.wg.Done(); c.heartbeat() }()
	go func() { defer c.wg.Done(); c.janitor() }()
	go func() { defer c.wg.Done(); c.monitor() }()
	go func() { defer close(c.ackDone); c.ackLoop() }()
	return c, nil
}

// releaseOrphans hands back to their queues the messages that consumers of the
// Connector's lost connections held, and removes those consumers.
func (c *Conn) releaseOrphans(ctx context.Context) error {
	k := c.k
	k.mu.Lock()
	orphans := k.orphans
	k.orphans = nil
	k.mu.Unlock()
	for i, o := range orphans {
		err := scriptReleaseAll.Run(ctx, c.rdb, []string{o.stream}, o.consumer).Err()
		if err != nil && c.ErrorCode(err) != backend.NotFound {
			k.adopt(orphans[i:]...) // the next connection tries again
			return backend.Errorf(backend.Unavailable, "carrot/redis: handing back the messages of a lost connection: %w", err)
		}
	}
	return nil
}

func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// capabilities reports what Redis does; persistence depends on its configuration.
func (c *Conn) capabilities(ctx context.Context) backend.Capabilities {
	caps := backend.Capabilities{
		Confirms:        true,
		Mandatory:       true,
		DeadLetter:      true,
		Expiration:      true,
		QueueMessageTTL: true,
		DeliveryCount:   true,
		SharedAcross:    true,
		MaxBodySize:     512 << 20, // proto-max-bulk-len's default
		Delay:           true,
		DelayPrecision:  100 * time.Millisecond,
		InspectQueue:    backend.AllCounts,
		NestedHeaders:   true,
	}
	if cfg, err := c.rdb.ConfigGet(ctx, "appendonly").Result(); err == nil && cfg["appendonly"] == "yes" {
		caps.Persistence = true
	}
	if cfg, err := c.rdb.ConfigGet(ctx, "proto-max-bulk-len").Result(); err == nil {
		if n, err := strconv.ParseInt(cfg["proto-max-bulk-len"], 10, 64); err == nil && n > 0 {
			caps.MaxBodySize = n
		}
	}
	return caps
}

// Capabilities reports what the backend does: everything but priorities, max length,
// exclusive and auto-delete queues, which need a broker that knows its connections.
// Persistence is on when Redis has its append-only file on.
func (c *Conn) Capabilities() backend.Capabilities { return c.caps }

// stream returns the key of a queue's stream, and of its definition.
func (c *Conn) stream(queue string) (string, string) {
	return c.prefix + "s:" + queue, c.prefix + "q:" + queue
}

// checkName refuses exchange and queue names with a NUL byte. A binding is stored as the
// name of its queue (or exchange) and its key with a NUL between them, and read back by
// cutting at the first NUL: names never hold one, so keys may, and do not need escaping.
func checkName(what, name string) error {
	if strings.IndexByte(name, 0) >= 0 {
		return backend.Errorf(backend.Invalid, "carrot/redis: %s %q contains a NUL byte", what, name)
	}
	return nil
}

// try runs fn once. An error that says Redis is unreachable, not caused by ctx, ends the
// connection: its calls then fail at once, and carrot opens another.
func (c *Conn) try(ctx context.Context, fn func() error) error {
	if err := c.gone(); err != nil {
		return err
	}
	err := fn()
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if c.broken(err) {
		c.lose(err)
		return c.gone()
	}
	if errors.Is(err, goredis.ErrClosed) {
		return c.gone()
	}
	return err
}

var (
	errClosed    = backend.Errorf(backend.Closed, "carrot/redis: connection closed")
	errStateLost = errors.New("the namespace's data is gone from the Redis server (a restart without persistence, or DeleteNamespace?): the topology is declared again")
)

// broken reports whether err, of a call to Redis, says that the connection is broken, so
// that it must end: Redis cannot be reached or will not serve (Unavailable), other than
// for too few replicas, which a later call may have (a waitError).
func (c *Conn) broken(err error) bool {
	return c.ErrorCode(err) == backend.Unavailable && !notReplicated(err)
}

// lose ends the connection because of err.
func (c *Conn) lose(err error) {
	c.End(backend.Errorf(backend.Unavailable, "carrot/redis: connection lost: %w", err))
}

// gone returns the error of a call on an ended connection, or nil: why it was lost, or
// that it was closed.
func (c *Conn) gone() error {
	if err := c.Err(); err != nil {
		return err
	}
	if c.closed.Load() {
		return errClosed
	}
	return nil
}

// Ping reads the namespace's version: Redis answers, and still has the namespace.
func (c *Conn) Ping(ctx context.Context) error {
	return c.try(ctx, func() error { return c.checkState(ctx) })
}

// checkState reads the namespace's version; if it is gone, Redis lost its data, and the
// connection ends so that carrot declares the topology again.
func (c *Conn) checkState(ctx context.Context) error {
	err := c.rdb.Get(ctx, c.versionKey).Err()
	if errors.Is(err, goredis.Nil) {
		c.lose(errStateLost)
		return c.gone()
	}
	return err
}

// beat renews the connection's lease in the namespace's connections, and checks that
// Redis still has the namespace; if not, Redis lost its data, and the connection ends so
// that carrot declares the topology again.
func (c *Conn) beat(ctx context.Context) error {
	res, err := scriptBeat.Run(ctx, c.rdb, []string{c.versionKey, c.connsKey}, c.id, connLease.Milliseconds()).Text()
	if err == nil && res == "LOST" {
		c.lose(errStateLost)
		return c.gone()
	}
	return err
}

// connLease is how long a connection counts as open in its namespace's connections after
// its last beat: DeleteNamespace refuses while one does. Beats come every
// monitorInterval, and take at most monitorTimeout, or the connection ends.
const connLease = 10 * time.Second

// monitor checks, once a second, that Redis answers and still has the namespace, so that
// a connection that nobody uses notices a restart too, and renews the connection's lease.
func (c *Conn) monitor() {
	tick := time.NewTicker(monitorInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-c.Done():
			return
		case <-c.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), monitorTimeout)
		err := c.beat(ctx)
		switch {
		case err == nil || c.gone() != nil:
		case ctx.Err() != nil:
			c.lose(fmt.Errorf("no answer within %v", monitorTimeout))
		case c.ErrorCode(err) == backend.Unavailable:
			c.lose(err)
		}
		cancel()
	}
}

const (
	monitorInterval = time.Second
	monitorTimeout  = 5 * time.Second
)

// promoteIdle is the longest a connection waits before it looks for delayed messages
// that are due: those published by connections that have closed since. Otherwise it
// wakes when the next one is due, or when it has published one.
const promoteIdle = time.Second

// promoter moves due delayed messages to their queues, until the connection ends. Every
// connection of the namespace does; the script makes each move once.
func (c *Conn) promoter() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.delayed:
			t.Stop()
		case <-c.Done():
			return
		case <-c.stop:
			return
		}
		wait := promoteIdle
		ctx, cancel := context.WithTimeout(context.Background(), monitorTimeout)
		for {
			r, err := scriptPromote.Run(ctx, c.rdb, []string{c.prefix + "delayed", c.prefix + "due"}, 256).Int64Slice()
			if err != nil || len(r) != 2 {
				break // a lost connection is the monitor's to notice
			}
			if r[0] < 256 {
				if r[1] >= 0 {
					wait = min(wait, time.Duration(r[1])*time.Millisecond)
				}
				break
			}
		}
		cancel()
		t.Reset(wait)
	}
}

// ErrorCode classifies the errors of go-redis, of Redis and of the scripts.
func (c *Conn) ErrorCode(err error) backend.Code { return errorCode(err) }

// errorCode classifies the errors of go-redis, of Redis and of the scripts.
func errorCode(err error) backend.Code {
	if code := backend.CodeOf(err); code != backend.Unknown {
		return code
	}
	if notReplicated(err) {
		return backend.Unavailable
	}
	if errors.Is(err, goredis.ErrClosed) {
		return backend.Closed
	}
	var re goredis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []struct {
			prefix string
			code   backend.Code
		}{
			{"NOTFOUND", backend.NotFound},
			{"NOGROUP", backend.NotFound},
			{"UNBLOCKED the stream key no longer exists", backend.NotFound}, // deleted under a blocked read
			{"MISMATCH", backend.Mismatch},
			{"INVALID", backend.Invalid},
			{"OOM", backend.Refused},
			{"LOADING", backend.Unavailable},
			{"READONLY", backend.Unavailable},
			{"CLUSTERDOWN", backend.Unavailable},
			{"TRYAGAIN", backend.Unavailable},
			{"MASTERDOWN", backend.Unavailable},
			{"MOVED", backend.Unavailable}, // to a call on one node of a Cluster, whose slot moved in a failover
			{"BUSY", backend.Unavailable},
			{"NOAUTH", backend.Invalid},
			{"WRONGPASS", backend.Invalid},
			{"NOPERM", backend.Invalid},
			{"LOST", backend.Unavailable},
			{"ERR Protocol error: invalid bulk length", backend.TooLarge},
		} {
			if strings.HasPrefix(msg, p.prefix) {
				return p.code
			}
		}
		return backend.Unknown
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "connection pool timeout") {
		return backend.Unavailable
	}
	return backend.Unknown
}

// As sets *target to the go-redis client: a goredis.UniversalClient, or the concrete
// *goredis.Client or *goredis.ClusterClient.
func (c *Conn) As(target any) bool {
	switch t := target.(type) {
	case *goredis.UniversalClient:
		*t = c.rdb
		return true
	case **goredis.Client:
		cl, ok := c.rdb.(*goredis.Client)
		if ok {
			*t = cl
		}
		return ok
	case **goredis.ClusterClient:
		cl, ok := c.rdb.(*goredis.ClusterClient)
		if ok {
			*t = cl
		}
		return ok
	}
	return false
}

// Close flushes the acknowledgements accepted so far and returns their error, hands the
// messages got and not settled back to their queues, removes the consumer that fetched,
// and closes the client. Of a lost connection, it only remembers, for the Connector's
// next connection, the consumer that held messages.
func (c *Conn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	if c.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		// Subscriptions still open (their consumer's handler closed the connection): what
		// they delivered and was not settled goes back now.
		c.mu.Lock()
		open := slices.Collect(maps.Keys(c.subs))
		c.mu.Unlock()
		for _, s := range open {
			if rerr := s.giveBack(ctx); rerr != nil && err == nil {
				err = rerr
			}
		}
		if ferr := c.flushAcks(ctx); ferr != nil && err == nil {
			err = ferr
		}
		c.mu.Lock()
		byQueue := make(map[string][]string)
		for id, g := range c.gets {
			if !g.lost {
				byQueue[g.queue] = append(byQueue[g.queue], id)
			}
		}
		queues := c.getQueues
		c.gets, c.getQueues = nil, nil
		c.mu.Unlock()
		for q, ids := range byQueue {
			if rerr := c.release(ctx, q, c.getConsumer(), ids); rerr != nil && !errors.Is(rerr, errLost) && err == nil {
				err = rerr
			}
		}
		for q := range queues {
			stream, _ := c.stream(q)
			c.rdb.XGroupDelConsumer(ctx, stream, "carrot", c.getConsumer()) // it holds nothing now
		}
		c.rdb.ZRem(ctx, c.connsKey, c.id) // else its lease ends on its own
		cancel()
	} else {
		c.mu.Lock()
		var orphans []orphan
		for q := range c.getQueues {
			stream, _ := c.stream(q)
			orphans = append(orphans, orphan{stream, c.getConsumer()})
		}
		c.gets, c.getQueues = nil, nil
		c.mu.Unlock()
		c.k.adopt(orphans...)
	}
	c.closed.Store(true)
	c.End(errClosed)
	close(c.stop)
	c.wg.Wait()
	<-c.ackDone
	if cerr := c.closeClient(); err == nil && cerr != nil && !errors.Is(cerr, goredis.ErrClosed) {
		err = cerr
	}
	return err
}

// closeClient closes the go-redis client; from then on, go-redis's lines no longer go to
// the Connector's logger on its account.
func (c *Conn) closeClient() error {
	err := c.rdb.Close()
	c.untrack()
	return err
}

// closeTimeout bounds what Close does on a live connection.
const closeTimeout = 5 * time.Second

func (c *Conn) getConsumer() string { return c.id + ":get" }

// snapshot is the topology as this connection knows it, at one version.
type snapshot struct {
	version   string
	exchanges map[string]*exchange
	queues    map[string]*queueDef
	streams   map[string]string   // stream keys, by queue
	direct    map[string][]string // {queue}, by queue: routes of the default exchange
	routes    sync.Map            // exchange \0 key → []string, routes computed so far
	cached    atomic.Int32        // entries in routes
}

// maxCachedRoutes bounds the routes a snapshot keeps, for publishers with many keys.
const maxCachedRoutes = 4096

// exchange is an exchange's routing, to queue names.
type exchange = route.Exchange[string]

type queueDef struct {
	ttl      time.Duration
	dlx, dlk string
}

// route returns the queues a message published to exchange with key goes to, each once,
// and whether the exchange exists.
func (s *snapshot) route(exchangeName, key string) ([]string, bool) {
	if exchangeName == "" {
		return s.direct[key], true
	}
	x := s.exchanges[exchangeName]
	if x == nil {
		return nil, false
	}
	rk := exchangeName + "\x00" + key
	if qs, ok := s.routes.Load(rk); ok {
		return qs.([]string), true
	}
	qs := x.Route(nil, key)
	if s.cached.Add(1) <= maxCachedRoutes {
		s.routes.Store(rk, qs)
	}
	return qs, true
}

// ttl returns how long a message with expiration exp lives in queue: the shorter of the
// two, 0 for ever.
func (s *snapshot) ttl(queue string, exp time.Duration) time.Duration {
	if q := s.queues[queue]; q != nil && q.ttl > 0 && (exp == 0 || q.ttl < exp) {
		return q.ttl
	}
	return exp
}

// current returns the topology, loading it if it never was.
func (c *Conn) current(ctx context.Context) (*snapshot, error) {
	if s := c.topo.Load(); s != nil {
		return s, nil
	}
	return c.reload(ctx, nil)
}

// reload loads the topology again, unless another call did since stale was current.
func (c *Conn) reload(ctx context.Context, stale *snapshot) (*snapshot, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	if s := c.topo.Load(); s != nil && s != stale {
		return s, nil
	}
	var res any
	err := c.try(ctx, func() error {
		var err error
		res, err = scriptLoad.Run(ctx, c.rdb, []string{c.versionKey}, c.prefix).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	s, err := parseSnapshot(c.prefix, res)
	if err != nil {
		return nil, err
	}
	c.topo.Store(s)
	return s, nil
}

func parseSnapshot(prefix string, res any) (*snapshot, error) {
	bad := errors.New("carrot/redis: unexpected reply loading the topology")
	top, ok := res.([]any)
	if !ok || len(top) != 3 {
		return nil, bad
	}
	s := &snapshot{exchanges: make(map[string]*exchange), queues: make(map[string]*queueDef), streams: make(map[string]string), direct: make(map[string][]string)}
	s.version, _ = top[0].(string)
	xs, _ := top[1].([]any)
	for _, xv := range xs {
		x, _ := xv.([]any)
		if len(x) != 4 {
			return nil, bad
		}
		name, _ := x[0].(string)
		kind, _ := x[1].(string)
		e := &exchange{Kind: backend.ExchangeKind(kind)}
		fs, _ := x[3].([]any)
		for _, fv := range fs {
			f, _ := fv.(string)
			q, key, ok := strings.Cut(f, "\x00")
			if !ok {
				return nil, bad
			}
			e.Add(q, key) // a member of a set: new
		}
		s.exchanges[name] = e
	}
	qs, _ := top[2].([]any)
	for _, qv := range qs {
		q, _ := qv.([]any)
		if len(q) != 5 {
			return nil, bad
		}
		name, _ := q[0].(string)
		ttl, _ := q[2].(string)
		ms, _ := strconv.ParseInt(ttl, 10, 64)
		dlx, _ := q[3].(string)
		dlk, _ := q[4].(string)
		s.queues[name] = &queueDef{ttl: time.Duration(ms) * time.Millisecond, dlx: dlx, dlk: dlk}
		s.streams[name] = prefix + "s:" + name
		s.direct[name] = []string{name}
	}
	return s, nil
}

// topology runs a script that changes the topology, or, if passive, only checks it (and
// so waits for no replica), then forgets the known topology.
func (c *Conn) topology(ctx context.Context, passive bool, script *goredis.Script, args ...any) error {
	keys, argv := []string{c.versionKey}, append([]any{c.prefix}, args...)
	err := c.try(ctx, func() error {
		if passive {
			return script.Run(ctx, c.rdb, keys, argv...).Err()
		}
		return c.run(ctx, script, keys, argv...).Err()
	})
	if err == nil {
		c.topo.Store(nil)
	}
	return err
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (c *Conn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	if err := checkName("exchange", x.Name); err != nil {
		return err
	}
	if len(x.Args) > 0 {
		return backend.Errorf(backend.Unsupported, "carrot/redis: exchanges take no arguments")
	}
	if !x.Passive && strings.HasPrefix(x.Name, "amq.") {
		// The built-in exchanges exist, and may be declared again; other amq. names are
		// reserved, as in RabbitMQ.
		err := c.topology(ctx, true, scriptDeclareExchange, x.Name, string(x.Kind), flag(x.Durable), "1")
		if c.ErrorCode(err) == backend.NotFound {
			return backend.Errorf(backend.Invalid, "carrot/redis: exchange name %q is reserved (it starts with \"amq.\")", x.Name)
		}
		if err != nil {
			return err
		}
	}
	return c.topology(ctx, x.Passive, scriptDeclareExchange, x.Name, string(x.Kind), flag(x.Durable), flag(x.Passive))
}

func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	return c.topology(ctx, false, scriptDeleteExchange, name)
}

func (c *Conn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	if err := checkName("queue", q.Name); err != nil {
		return err
	}
	if len(q.Args) > 0 {
		return backend.Errorf(backend.Unsupported, "carrot/redis: queues take no arguments; use the fields of the queue")
	}
	ttl := strconv.FormatInt(q.MessageTTL.Milliseconds(), 10)
	return c.topology(ctx, q.Passive, scriptDeclareQueue, q.Name, flag(q.Durable), ttl, q.DeadLetterExchange, q.DeadLetterRoutingKey, flag(q.Passive))
}

func (c *Conn) DeleteQueue(ctx context.Context, name string) error {
	return c.topology(ctx, false, scriptDeleteQueue, name)
}

// Bind binds a queue to an exchange with a key, which may hold any byte, NUL included, as
// the routing keys of the messages published may.
func (c *Conn) Bind(ctx context.Context, b backend.Binding) error {
	return c.topology(ctx, false, scriptBind, b.Exchange, b.Queue, b.Key, "1")
}

func (c *Conn) Unbind(ctx context.Context, b backend.Binding) error {
	return c.topology(ctx, false, scriptBind, b.Exchange, b.Queue, b.Key, "0")
}

func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	s, q := c.stream(queue)
	var n int64
	err := c.try(ctx, func() error {
		var err error
		n, err = c.run(ctx, scriptPurge, []string{s, q}).Int64()
		return err
	})
	return int(n), err
}

// String describes the connection, without the password.
func (c *Conn) String() string { return fmt.Sprint(c.opts) }

// List returns the namespace's exchanges and queues, sorted by name, from the topology
// as Redis holds it now. Everything in Redis is as durable as Redis's persistence makes it:
// all are listed durable.
func (c *Conn) List(ctx context.Context) ([]backend.Exchange, []backend.Queue, error) {
	s, err := c.reload(ctx, c.topo.Load())
	if err != nil {
		return nil, nil, err
	}
	xs := make([]backend.Exchange, 0, len(s.exchanges))
	for name, x := range s.exchanges {
		xs = append(xs, backend.Exchange{Name: name, Kind: x.Kind, Durable: true})
	}
	qs := make([]backend.Queue, 0, len(s.queues))
	for name, q := range s.queues {
		qs = append(qs, backend.Queue{Name: name, Durable: true, MessageTTL: q.ttl, DeadLetterExchange: q.dlx, DeadLetterRoutingKey: q.dlk})
	}
	slices.SortFunc(xs, func(a, b backend.Exchange) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(qs, func(a, b backend.Queue) int { return strings.Compare(a.Name, b.Name) })
	return xs, qs, nil
}
