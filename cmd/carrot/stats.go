package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/carrot-go/carrot"
)

// statsMaxKeys is how many routing keys stats counts apart, so that its memory stays
// bounded; the messages of the keys beyond them are counted together.
const statsMaxKeys = 10000

func runStats(ctx context.Context, c *cli, args []string) (err error) {
	fs, rawURL := c.flags("stats", "", `Watches the messages published to an exchange (--exchange) without taking anyone's,
or the depth of a queue (--queue) without taking any of its messages.

With --exchange, it binds a queue of its own (carrot-stats.<random>: transient, and
exclusive and auto-delete where the broker can) to the exchange with each --key, and
counts the messages that reach it. Every --interval it prints a progress line on
standard error: the messages and bytes (of the bodies) so far, and the rates over the
last interval and since the start. When it ends (interrupted with Ctrl-C, after --for,
or after --count messages) it prints a table on standard output: for each routing key,
the messages, bytes and share of the messages, the most first (a key that is empty,
holds a space, or could be mistaken for a row of the table's own is quoted, as in "").
With --json, it prints the report as one JSON object instead. It deletes its queue at
the end; on a broker without exclusive queues (Redis), a stats killed at once (kill -9)
leaves it: carrot delete removes it.

The exchange must exist. The default --key "#" matches every routing key on a topic
exchange; a fanout exchange ignores keys and sends everything; but a direct exchange
routes only the messages whose key is exactly the binding key, and "#" is no pattern
there: give the keys to watch.

With --queue, it asks the broker for the queue's counts at once and then every
--interval, and prints a row for each on standard output: the time, the messages ready
to be delivered, those delivered and not yet acknowledged, the consumers, and how fast
the ready messages grew (or, negative, shrank) per second since the row before; "-"
for what the broker cannot tell (RabbitMQ does not count unacknowledged messages but in
its management tools). With --json, each row is a JSON object on a line of its own,
null for what is unknown. It ends when interrupted, after --for, or after --count rows.
The queue must exist; memory:// and redis:// count all three, amqp:// and amqp10://
(RabbitMQ) ready messages and consumers.`)
	exchange := fs.String("exchange", "", "exchange to watch (this or --queue is required)")
	queue := fs.String("queue", "", "queue whose counts to watch, taking nothing from it")
	var keys multiFlag
	fs.Var(&keys, "key", "binding `key` to the exchange (a pattern on a topic exchange); repeatable (default \"#\")")
	interval := fs.Duration("interval", 5*time.Second, "print a progress line on standard error this often (0: no progress lines, no summary);\nwith --queue, a row this often")
	forDur := fs.Duration("for", 0, "stop after this long (0: until interrupted or --count)")
	count := fs.Int("count", 0, "stop after this many messages (0: until interrupted or --for); with --queue, rows")
	asJSON := fs.Bool("json", false, "print the report as JSON, with the counts of every routing key, instead of a table;\nwith --queue, each row as a JSON object")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	switch {
	case *exchange == "" && *queue == "":
		return usageError{"give --exchange or --queue (the default exchange routes by queue name, and cannot be watched)"}
	case *exchange != "" && *queue != "":
		return usageError{"--exchange and --queue exclude each other: stats watches one exchange or one queue"}
	case *count < 0:
		return usageError{"--count cannot be negative"}
	}
	if err := unless(given(fs), *exchange != "", "it binds stats' queue to --exchange, and none is given", "key"); err != nil {
		return err
	}
	if *queue != "" {
		if *interval < minInterval {
			return usageError{fmt.Sprintf("--interval %v with --queue: want at least %v between rows", *interval, minInterval)}
		}
		return c.watchQueue(ctx, *rawURL, *queue, *interval, *forDur, *count, *asJSON)
	}
	if err := checkInterval("interval", *interval); err != nil {
		return err
	}
	if len(keys) == 0 {
		keys = multiFlag{"#"}
	}

	conn, err := c.open(ctx, *rawURL, "stats", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.DeclareExchange(ctx, carrot.Exchange{Name: *exchange, Passive: true}); err != nil {
		if errors.Is(err, carrot.ErrNotFound) {
			return fmt.Errorf("exchange %q does not exist: stats watches an exchange that others publish to, and declares none (carrot declare --exchange makes one)", *exchange)
		}
		return err
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	caps := conn.Capabilities()
	q := carrot.Queue{
		Name:       "carrot-stats." + hex.EncodeToString(suffix[:]),
		Transient:  true,
		Exclusive:  caps.Exclusive,
		AutoDelete: caps.AutoDelete,
	}
	for _, k := range keys {
		q.Bindings = append(q.Bindings, carrot.Binding{Exchange: *exchange, Key: k})
	}
	// Deleted whatever happens next: the binding makes it fill up.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := conn.DeleteQueue(dctx, q.Name); derr != nil {
			fmt.Fprintf(c.stderr, "carrot stats: deleting queue %q: %v; carrot delete --queue %s removes it\n", q.Name, derr, q.Name)
			if err == nil {
				err = derr
			}
		}
	}()
	if _, err = conn.DeclareQueue(ctx, q); err != nil {
		return err
	}

	t := &tally{keys: &keyCounts{max: statsMaxKeys, m: map[string]*keyCount{}}}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if *forDur > 0 {
		runCtx, stop = context.WithTimeout(runCtx, *forDur)
		defer stop()
	}
	var mw []func(carrot.Handler) carrot.Handler
	if *count > 0 {
		mw = append(mw, limit(int64(*count), stop))
	}
	mw = append(mw, t.middleware)
	// The queue is stats' own: NoAck loses no one's messages, and saves an ack each.
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:     []carrot.Queue{{Name: q.Name, Passive: true}},
		NoAck:      true,
		Middleware: mw,
		Handler:    carrot.HandlerFunc(func(context.Context, *carrot.Message) error { return nil }),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "carrot stats: watching exchange %q with %s through queue %q (Ctrl-C to stop)\n", *exchange, keyList(keys), q.Name)
	t.start = time.Now()
	stopReport := func() {}
	if *interval > 0 {
		r := t.report(c.stderr, *interval, conn.State, func(s, prev snapshot) string {
			d := s.at.Sub(prev.at)
			return fmt.Sprintf("carrot stats: %d messages, %s (%s/s, %s/s now; %s/s, %s/s on average)%s\n",
				s.received, formatBytes(float64(s.bytes)),
				formatRate(perSecond(s.received-prev.received, d)), formatBytes(perSecond(s.bytes-prev.bytes, d)),
				formatRate(perSecond(s.received, t.elapsed(s))), formatBytes(perSecond(s.bytes, t.elapsed(s))),
				recovering(s.state))
		})
		defer r.stop()
		stopReport = r.stop
	}
	err = consumer.Run(runCtx)
	stopReport() // before the summary
	switch {
	case ctx.Err() != nil:
		// Interrupted: report what came.
	case runCtx.Err() != nil && errors.Is(err, runCtx.Err()):
		// --for or --count.
	default:
		return err
	}
	s := t.snapshot(nil)
	if *interval > 0 {
		fmt.Fprintf(c.stderr, "carrot stats: %d messages, %s in %s (%s/s on average)\n",
			s.received, formatBytes(float64(s.bytes)), formatDuration(t.elapsed(s)), formatRate(perSecond(s.received, t.elapsed(s))))
	}
	report := statsReport{
		Exchange: *exchange, BindingKeys: keys, Queue: q.Name,
		Started: t.start, Seconds: t.elapsed(s).Seconds(),
		Messages: s.received, Bytes: s.bytes, Rate: perSecond(s.received, t.elapsed(s)),
	}
	report.RoutingKeys, report.Other = t.keys.report(s.received)
	if *asJSON {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "%s\n", b)
		return err
	}
	return report.table(c.stdout)
}

// limit returns a middleware that hands on the first n messages only, and calls stop
// after the n-th.
func limit(n int64, stop func()) func(carrot.Handler) carrot.Handler {
	var mu sync.Mutex
	seen := int64(0)
	return func(next carrot.Handler) carrot.Handler {
		return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			mu.Lock()
			seen++
			last, over := seen == n, seen > n
			mu.Unlock()
			if over {
				return nil
			}
			err := next.Receive(ctx, m)
			if last {
				stop()
			}
			return err
		})
	}
}

// keyList names binding keys for a line: key "#", keys "a.*" and "b.#".
func keyList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	if len(q) == 1 {
		return "key " + q[0]
	}
	return "keys " + strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// keyCounts counts messages and bytes by routing key, for up to max keys; those of
// other keys are counted together. It is safe for concurrent use.
type keyCounts struct {
	mu        sync.Mutex
	max       int
	m         map[string]*keyCount
	other     keyCount
	extra     map[string]struct{} // the keys beyond max, up to max of them, to say how many
	uncounted bool                // there were more keys beyond max than extra holds
}

type keyCount struct{ messages, bytes int64 }

func (k *keyCounts) add(key string, size int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.m[key]
	if c == nil {
		if len(k.m) >= k.max {
			k.other.messages++
			k.other.bytes += int64(size)
			if k.extra == nil {
				k.extra = map[string]struct{}{}
			}
			if _, ok := k.extra[key]; !ok {
				if len(k.extra) < k.max {
					k.extra[key] = struct{}{}
				} else {
					k.uncounted = true
				}
			}
			return
		}
		c = &keyCount{}
		k.m[key] = c
	}
	c.messages++
	c.bytes += int64(size)
}

// report returns the counts of each key, the most messages first (then by key), and
// those of the keys beyond max, if any; shares are of total.
func (k *keyCounts) report(total int64) ([]keyStats, *otherKeys) {
	k.mu.Lock()
	defer k.mu.Unlock()
	share := func(n int64) float64 {
		if total == 0 {
			return 0
		}
		return float64(n) / float64(total)
	}
	rows := make([]keyStats, 0, len(k.m))
	for key, c := range k.m {
		rows = append(rows, keyStats{RoutingKey: key, Messages: c.messages, Bytes: c.bytes, Share: share(c.messages)})
	}
	slices.SortFunc(rows, func(a, b keyStats) int {
		return cmp.Or(cmp.Compare(b.Messages, a.Messages), strings.Compare(a.RoutingKey, b.RoutingKey))
	})
	if k.other.messages == 0 {
		return rows, nil
	}
	return rows, &otherKeys{Keys: len(k.extra), AtLeast: k.uncounted, Messages: k.other.messages, Bytes: k.other.bytes, Share: share(k.other.messages)}
}

// statsReport is what stats reports at the end; --json prints it as it is.
type statsReport struct {
	Exchange    string     `json:"exchange"`
	BindingKeys []string   `json:"binding_keys"`
	Queue       string     `json:"queue"`
	Started     time.Time  `json:"started"`
	Seconds     float64    `json:"seconds"`
	Messages    int64      `json:"messages"`
	Bytes       int64      `json:"bytes"` // of the bodies
	Rate        float64    `json:"messages_per_second"`
	RoutingKeys []keyStats `json:"routing_keys"` // the most messages first
	Other       *otherKeys `json:"other_keys,omitempty"`
}

// keyStats is the traffic of one routing key.
type keyStats struct {
	RoutingKey string  `json:"routing_key"`
	Messages   int64   `json:"messages"`
	Bytes      int64   `json:"bytes"`
	Share      float64 `json:"share"` // of the messages, from 0 to 1
}

// otherKeys is the traffic of the routing keys beyond the ones counted apart.
type otherKeys struct {
	Keys     int     `json:"keys"`               // how many keys
	AtLeast  bool    `json:"at_least,omitempty"` // Keys is a lower bound
	Messages int64   `json:"messages"`
	Bytes    int64   `json:"bytes"`
	Share    float64 `json:"share"`
}

// table writes the report as a table: a row for each routing key, then one for the other
// keys if any, then the total.
func (r *statsReport) table(w io.Writer) error {
	rows := [][4]string{{"ROUTING KEY", "MESSAGES", "BYTES", "SHARE"}}
	pct := func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" }
	for _, k := range r.RoutingKeys {
		rows = append(rows, [4]string{showKey(k.RoutingKey), fmt.Sprint(k.Messages), fmt.Sprint(k.Bytes), pct(k.Share)})
	}
	if o := r.Other; o != nil {
		more := ""
		if o.AtLeast {
			more = " or more"
		}
		rows = append(rows, [4]string{fmt.Sprintf("(%d%s other keys)", o.Keys, more), fmt.Sprint(o.Messages), fmt.Sprint(o.Bytes), pct(o.Share)})
	}
	total := "0.0%"
	if r.Messages > 0 {
		total = "100.0%"
	}
	rows = append(rows, [4]string{"(total)", fmt.Sprint(r.Messages), fmt.Sprint(r.Bytes), total})
	var width [4]int
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len([]rune(cell)))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		// The key on the left, the numbers on the right.
		fmt.Fprintf(&b, "%s%s", row[0], strings.Repeat(" ", width[0]-len([]rune(row[0]))))
		for i := 1; i < len(row); i++ {
			fmt.Fprintf(&b, "  %*s", width[i], row[i])
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// showKey writes a routing key for the table: as it is, or quoted when it is empty,
// starts as a quoted key or the table's own rows do, or holds a space or a character
// that does not print.
func showKey(k string) string {
	if k == "" || strings.HasPrefix(k, `"`) || strings.HasPrefix(k, "(") ||
		strings.IndexFunc(k, func(r rune) bool { return !unicode.IsGraphic(r) || unicode.IsSpace(r) }) >= 0 {
		return strconv.Quote(k)
	}
	return k
}
