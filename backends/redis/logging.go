package redis

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/carrot-go/carrot/internal/brokerurl"
	"github.com/carrot-go/carrot/internal/loglimit"
)

// go-redis has one logger for the whole process, which writes to stderr. The first
// Connector made installs lines in its place (goredis.SetLogger), so that what go-redis
// logs reaches the loggers of the Connectors whose clients are open, scrubbed of their
// secrets and limited, as carrot's own lines are.

// Attributes of the lines that carry go-redis's.
const (
	goredisLine = "line"             // go-redis's text
	goredisHeld = "lines_not_logged" // lines of the same format held back since the last
)

// goredisMessage is the message of the lines that carry go-redis's.
const goredisMessage = "carrot/redis: go-redis logged"

var (
	lines        = &lineRouter{open: make(map[*Connector]int)}
	installLines sync.Once
)

// routeGoredisLines makes go-redis log to lines, once in the process.
func routeGoredisLines() {
	installLines.Do(func() { goredis.SetLogger(lines) })
}

// lineRouter is the logger carrot gives go-redis: each line goes to the loggers of the
// Connectors that have a go-redis client open (each logger once), or to slog.Default()
// when none has.
type lineRouter struct {
	mu   sync.Mutex
	open map[*Connector]int // go-redis clients not yet closed, by the Connector that made them
	idle loglimit.Limiter   // for the lines logged while no Connector has a client open
}

// track counts a go-redis client of k as open until the returned function, which may be
// called more than once, is called.
func (r *lineRouter) track(k *Connector) (untrack func()) {
	r.mu.Lock()
	r.open[k]++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.open[k]--; r.open[k] <= 0 {
				delete(r.open, k)
			}
		})
	}
}

// Printf logs a line of go-redis's: a warning whose message is goredisMessage, with the
// line, without the secrets of the open Connectors, in the attribute goredisLine. Each
// Connector lets a line of each format through once a second, and counts the others in
// the next one's goredisHeld.
func (r *lineRouter) Printf(ctx context.Context, format string, v ...any) {
	now := time.Now()
	if ctx == nil {
		ctx = context.Background()
	}
	r.mu.Lock()
	open := make([]*Connector, 0, len(r.open))
	for k := range r.open {
		open = append(open, k)
	}
	r.mu.Unlock()

	line := fmt.Sprintf(format, v...)
	for _, k := range open {
		line = k.scrub(line)
	}
	if len(open) == 0 {
		if ok, held := r.idle.Allow(format, now); ok {
			logGoredis(ctx, slog.Default(), line, held)
		}
		return
	}
	// Each logger once, with the count of the Connector that held back the most.
	type dest struct {
		ok   bool
		held int
	}
	dests := make(map[*slog.Logger]*dest, len(open))
	var order []*slog.Logger
	for _, k := range open {
		ok, held := k.goredisLines.Allow(format, now)
		d := dests[k.opts.Logger]
		if d == nil {
			d = new(dest)
			dests[k.opts.Logger] = d
			order = append(order, k.opts.Logger)
		}
		d.ok = d.ok || ok
		d.held = max(d.held, held)
	}
	for _, l := range order {
		if d := dests[l]; d.ok {
			logGoredis(ctx, l, line, d.held)
		}
	}
}

func logGoredis(ctx context.Context, l *slog.Logger, line string, held int) {
	attrs := []slog.Attr{slog.String(goredisLine, line)}
	if held > 0 {
		attrs = append(attrs, slog.Int(goredisHeld, held))
	}
	l.LogAttrs(ctx, slog.LevelWarn, goredisMessage, attrs...)
}

// secretURLs returns URLs whose secrets [brokerurl.Scrub] removes from a text: rawURL,
// when the options come from one, and URLs made of the options' credentials, which may
// have been set without a URL.
func secretURLs(o *Options, rawURL string) []string {
	var urls []string
	if rawURL != "" {
		urls = append(urls, rawURL)
	}
	for _, c := range []struct{ user, password string }{
		{o.Redis.Username, o.Redis.Password},
		{o.Redis.SentinelUsername, o.Redis.SentinelPassword},
	} {
		if c.password != "" {
			u := url.URL{Scheme: "redis", User: url.UserPassword(c.user, c.password), Host: "localhost"}
			urls = append(urls, u.String())
		}
	}
	return urls
}

// scrub returns msg without the secrets of k's URL and options.
func (k *Connector) scrub(msg string) string {
	for _, u := range k.secrets {
		msg = brokerurl.Scrub(msg, u)
	}
	return msg
}

// logFailure logs a failure of the connection, at most once a second for each message
// (see [loglimit.Limiter.Log]); err's text is scrubbed of the connection's secrets.
func (c *Conn) logFailure(msg string, err error, attrs ...slog.Attr) {
	attrs = append(attrs, slog.String("error", c.k.scrub(err.Error())))
	c.failures.Log(context.Background(), c.log, slog.LevelWarn, msg, attrs...)
}
