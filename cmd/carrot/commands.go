package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/redis"
)

// open connects to the URL of --url, $CARROT_URL or memory://, and warns on standard
// error when the broker is one that dies with the process.
func (c *cli) open(ctx context.Context, rawURL, command string, warnMemory bool) (*carrot.Conn, error) {
	rawURL = urlOrDefault(rawURL)
	if warnMemory && strings.HasPrefix(strings.ToLower(rawURL), "memory://") {
		fmt.Fprintf(c.stderr, "carrot %s: note: %s lives in this process only; use --url to reach a broker other commands can see\n", command, carrot.Redact(rawURL))
	}
	// What the connection and its backend log (a lost connection, a refused reconnection
	// attempt) goes to the command's standard error, beside its own lines.
	d := carrot.Dialer{Logger: c.logger()}
	return d.Open(ctx, rawURL)
}

// urlOrDefault returns rawURL, the URL of --url, or if empty $CARROT_URL, or memory://.
func urlOrDefault(rawURL string) string {
	if rawURL == "" {
		rawURL = os.Getenv(carrot.EnvURL)
	}
	if rawURL == "" {
		rawURL = "memory://"
	}
	return rawURL
}

// logger is the logger of what connections log: to the command's standard error.
func (c *cli) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

const feedURL = "http://cnn.com/rss/edition.rss"

func runDemo(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("demo", "", `Runs carrot 0.4's feed-import example: a consumer declares queue "feed", bound to
exchange "feed" with routing key "importer"; a publisher sends it
{"import_feed": "`+feedURL+`"}, and the consumer prints the feed.`)
	timeout := fs.Duration("timeout", 30*time.Second, "give up if the message has not arrived after this long")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := c.open(ctx, *rawURL, "demo", false)
	if err != nil {
		return err
	}
	defer conn.Close()

	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues: []carrot.Queue{{Name: "feed", Exchange: carrot.Exchange{Name: "feed"}, RoutingKey: "importer"}},
	})
	if err != nil {
		return err
	}
	id := fmt.Sprintf("carrot-demo-%d", time.Now().UnixNano())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
		var data map[string]string
		if err := m.Decode(&data); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Got feed import message for: %s\n", data["import_feed"])
		err := m.Ack(ctx)
		if m.MessageID == id {
			stop() // the demo's own message: done
		}
		return err
	})
	running := make(chan error, 1)
	go func() { running <- consumer.Run(runCtx) }()

	publisher, err := conn.NewPublisher(carrot.PublisherOptions{Exchange: "feed", RoutingKey: "importer"})
	if err != nil {
		return err
	}
	msg, err := publisher.Encode(map[string]string{"import_feed": feedURL})
	if err != nil {
		return err
	}
	msg.MessageID = id
	if err := publisher.Publish(ctx, msg); err != nil {
		return err
	}
	publisher.Close()

	err = <-running
	if ctx.Err() != nil {
		return fmt.Errorf("the message did not arrive within %v: %w", *timeout, ctx.Err())
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func runPublish(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("publish", "[BODY]", `Publishes BODY, or standard input when BODY is absent or "-", to an exchange.
With --lines, each line of standard input is a message of its own, with up to 256 in
flight at once. Publish waits for the broker to confirm each message; a message that
matches no queue is an error unless --allow-unroutable is given. With --lines, the first
failure stops the command, naming its line; up to 255 lines after it may have been
published.`)
	exchange := fs.String("exchange", "", `exchange to publish to ("" is the default exchange, which routes to the queue named by --key)`)
	key := fs.String("key", "", "routing key")
	contentType := fs.String("content-type", "", "content type (default application/json for a JSON body, text/plain for other UTF-8, application/octet-stream otherwise)")
	contentEncoding := fs.String("content-encoding", "", "content encoding")
	var headers multiFlag
	fs.Var(&headers, "header", "header `NAME=VALUE`, a string; repeatable")
	transient := fs.Bool("transient", false, "publish transient messages (default persistent)")
	priority := fs.Uint("priority", 0, "message priority, 0-255")
	expiration := fs.Duration("expiration", 0, "message time to live, such as 30s")
	messageID := fs.String("message-id", "", "message id")
	correlationID := fs.String("correlation-id", "", "correlation id")
	replyTo := fs.String("reply-to", "", "reply-to address")
	msgType := fs.String("type", "", "message type, such as order.created")
	appID := fs.String("app-id", "", "id of the publishing application")
	userID := fs.String("user-id", "", "user id: RabbitMQ takes only the user the URL logs in as")
	lines := fs.Bool("lines", false, "publish each line of standard input as a message")
	allowUnroutable := fs.Bool("allow-unroutable", false, "let the broker drop messages that match no queue")
	noConfirm := fs.Bool("no-confirm", false, "do not wait for the broker's confirms (implies --allow-unroutable)")
	body, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *priority > 255 {
		return usageError{fmt.Sprintf("--priority %d is more than 255", *priority)}
	}
	if *lines && len(body) > 0 && body[0] != "-" {
		return usageError{"--lines reads standard input: give no BODY"}
	}
	table := carrot.Table{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, "=")
		if !ok || name == "" {
			return usageError{fmt.Sprintf("--header %q is not NAME=VALUE", h)}
		}
		table[name] = value
	}
	mode := carrot.Persistent
	if *transient {
		mode = carrot.Transient
	}
	template := carrot.Message{
		RoutingKey: *key, ContentType: *contentType, ContentEncoding: *contentEncoding,
		DeliveryMode: mode, Priority: uint8(*priority), Expiration: *expiration,
		MessageID: *messageID, CorrelationID: *correlationID, ReplyTo: *replyTo,
		Type: *msgType, AppID: *appID, UserID: *userID,
	}
	if len(table) > 0 {
		template.Headers = table
	}

	conn, err := c.open(ctx, *rawURL, "publish", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	p, err := conn.NewPublisher(carrot.PublisherOptions{
		Exchange:        *exchange,
		RoutingKey:      *key,
		AllowUnroutable: *allowUnroutable || *noConfirm,
		NoConfirm:       *noConfirm,
		MaxInFlight:     linesWindow,
	})
	if err != nil {
		return err
	}
	message := func(body []byte) *carrot.Message {
		m := template
		m.Body = body
		if m.ContentType == "" {
			m.ContentType = guessContentType(body)
		}
		return &m
	}
	send := func(body []byte) error { return p.Publish(ctx, message(body)) }
	if !*lines {
		if len(body) == 1 && body[0] != "-" {
			return send([]byte(body[0]))
		}
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		return send(b)
	}
	// Up to linesWindow messages in flight; the oldest answered first, as they come.
	sc := bufio.NewScanner(c.stdin)
	sc.Buffer(make([]byte, 64<<10), 128<<20)
	var inFlight []*carrot.Confirmation // lines n-len(inFlight)+1 .. n
	n := 0
	check := func(wait bool) error {
		for len(inFlight) > 0 {
			c := inFlight[0]
			if !wait {
				select {
				case <-c.Done():
				default:
					return nil
				}
			}
			if err := c.Err(); err != nil {
				return fmt.Errorf("line %d: %w", n-len(inFlight)+1, err)
			}
			inFlight = inFlight[1:]
		}
		return nil
	}
	for sc.Scan() {
		inFlight = append(inFlight, p.PublishAsync(ctx, message(bytes.Clone(sc.Bytes()))))
		n++
		if err := check(false); err != nil {
			return err
		}
	}
	if err := check(true); err != nil {
		return err
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read standard input after %d messages: %w", n, err)
	}
	return nil
}

// linesWindow is how many messages publish --lines keeps in flight.
const linesWindow = 256

// guessContentType names what a body given on the command line most likely is.
func guessContentType(body []byte) string {
	switch {
	case json.Valid(body):
		return carrot.JSON
	case utf8.Valid(body):
		return carrot.Text + "; charset=utf-8"
	default:
		return carrot.Binary
	}
}

// queueFlags are the flags of commands that read and print messages from a queue, which
// they may also declare.
type queueFlags struct {
	fs       *flag.FlagSet
	queue    *string
	declare  *bool
	exchange *string
	kind     *string
	keys     multiFlag
	qtype    *string
	format   *string
}

func addQueueFlags(fs *flag.FlagSet) *queueFlags {
	q := &queueFlags{
		fs:       fs,
		queue:    fs.String("queue", "", "queue to read (required)"),
		declare:  fs.Bool("declare", false, "declare the queue (durable), and --exchange with its bindings, if they do not exist"),
		exchange: fs.String("exchange", "", "with --declare: exchange to bind the queue to"),
		kind:     fs.String("kind", "direct", "with --declare and --exchange: kind of --exchange: direct, fanout or topic"),
		qtype:    fs.String("type", "", "queue type on a broker that has several (RabbitMQ): classic, quorum or stream; with --declare, the type to declare it as, and without, the type it has, so that carrot refuses what that type cannot do, such as fetch from a stream"),
		format:   fs.String("format", "body", "output: body (the body and a newline) or json (one JSON object per message, with properties; a body that is not UTF-8 as body_base64, byte-string headers in base64, NaN and infinite floats as the strings NaN, +Inf and -Inf)"),
	}
	fs.Var(&q.keys, "key", "with --declare and --exchange: binding `key` (pattern for topic exchanges); repeatable")
	return q
}

// parsed returns the queue to read, passive unless --declare, and the printer for its
// messages.
func (q *queueFlags) parsed(w io.Writer) (carrot.Queue, *printer, error) {
	spec, err := q.spec()
	if err != nil {
		return spec, nil, err
	}
	if *q.format != "body" && *q.format != "json" {
		return spec, nil, usageError{fmt.Sprintf("--format %q: want body or json", *q.format)}
	}
	return spec, &printer{w: w, format: *q.format}, nil
}

func (q *queueFlags) spec() (carrot.Queue, error) {
	if *q.queue == "" {
		return carrot.Queue{}, usageError{"--queue is required"}
	}
	set := given(q.fs)
	if err := unless(set, *q.declare, "without --declare, nothing is declared: give --declare too", "exchange", "kind", "key"); err != nil {
		return carrot.Queue{}, err
	}
	if err := unless(set, *q.exchange != "", "it is the kind of --exchange, and none is given: give --exchange too", "kind"); err != nil {
		return carrot.Queue{}, err
	}
	if err := unless(set, *q.exchange != "", "a key binds the queue to --exchange, and none is given: give --exchange too", "key"); err != nil {
		return carrot.Queue{}, err
	}
	if !*q.declare {
		return carrot.Queue{Name: *q.queue, Passive: true, Type: carrot.QueueType(*q.qtype)}, nil
	}
	spec := carrot.Queue{Name: *q.queue, Type: carrot.QueueType(*q.qtype)}
	if *q.exchange != "" {
		spec.Exchange = carrot.Exchange{Name: *q.exchange, Kind: carrot.ExchangeKind(*q.kind)}
		keys := q.keys
		if len(keys) == 0 {
			keys = multiFlag{""}
		}
		spec.RoutingKey = keys[0]
		for _, k := range keys[1:] {
			spec.Bindings = append(spec.Bindings, carrot.Binding{Exchange: *q.exchange, Key: k})
		}
	}
	return spec, nil
}

// printer writes received messages in the --format the user chose.
type printer struct {
	w      io.Writer
	format string
}

// jsonMessage is a received message as --format json prints it.
type jsonMessage struct {
	Queue           string         `json:"queue"`
	Exchange        string         `json:"exchange"`
	RoutingKey      string         `json:"routing_key"`
	Redelivered     bool           `json:"redelivered"`
	DeliveryCount   int            `json:"delivery_count,omitempty"`
	StreamOffset    *int64         `json:"stream_offset,omitempty"` // when it came from a stream
	ContentType     string         `json:"content_type,omitempty"`
	ContentEncoding string         `json:"content_encoding,omitempty"`
	Headers         map[string]any `json:"headers,omitempty"`
	Persistent      bool           `json:"persistent"`
	Priority        uint8          `json:"priority,omitempty"`
	Expiration      string         `json:"expiration,omitempty"`
	MessageID       string         `json:"message_id,omitempty"`
	CorrelationID   string         `json:"correlation_id,omitempty"`
	ReplyTo         string         `json:"reply_to,omitempty"`
	Timestamp       *time.Time     `json:"timestamp,omitempty"`
	Type            string         `json:"type,omitempty"`
	AppID           string         `json:"app_id,omitempty"`
	UserID          string         `json:"user_id,omitempty"`
	Body            *string        `json:"body,omitempty"`        // when the body is UTF-8
	BodyBase64      []byte         `json:"body_base64,omitempty"` // otherwise
}

func (p *printer) print(m *carrot.Message) error {
	if p.format == "body" {
		_, err := fmt.Fprintf(p.w, "%s\n", m.Body)
		return err
	}
	j := jsonMessage{
		Queue: m.Queue(), Exchange: m.Exchange(), RoutingKey: m.RoutingKey,
		Redelivered: m.Redelivered(), DeliveryCount: m.DeliveryCount(),
		ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		Persistent: m.DeliveryMode == carrot.Persistent, Priority: m.Priority,
		MessageID: m.MessageID, CorrelationID: m.CorrelationID, ReplyTo: m.ReplyTo,
		Type: m.Type, AppID: m.AppID, UserID: m.UserID,
	}
	if off, ok := m.StreamOffset(); ok {
		j.StreamOffset = &off
	}
	if len(m.Headers) > 0 {
		j.Headers = make(map[string]any, len(m.Headers))
		for k, v := range m.Headers {
			j.Headers[k] = jsonValue(v)
		}
	}
	if m.Expiration > 0 {
		j.Expiration = m.Expiration.String()
	}
	if !m.Timestamp.IsZero() {
		j.Timestamp = &m.Timestamp
	}
	if utf8.Valid(m.Body) {
		s := string(m.Body)
		j.Body = &s
	} else {
		j.BodyBase64 = m.Body
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(p.w, "%s\n", b)
	return err
}

// jsonValue returns a header value as JSON can hold it: byte strings in base64, the
// floats NaN, +Inf and -Inf as those strings, and anything else JSON has no form for as
// Go prints it.
func jsonValue(v any) any {
	switch v := v.(type) {
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case float32:
		return jsonValue(float64(v))
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return strconv.FormatFloat(v, 'g', -1, 64) // NaN, +Inf, -Inf
		}
		return v
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = jsonValue(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = jsonValue(e)
		}
		return l
	}
	if _, err := json.Marshal(v); err != nil {
		return fmt.Sprint(v)
	}
	return v
}

func runConsume(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("consume", "", `Receives messages from a queue and prints them, acking each once printed, until
interrupted (Ctrl-C) or until --count messages have arrived. Standard output has only
the messages; standard error has the rest. Until the first message arrives, consume says
every so often that it is waiting; from then on, every --progress, it prints a progress
line: the messages received, the rate over the last interval and since the start, how
many were acked, requeued and rejected, how many are in flight (received and not yet
settled), and whether the connection is being recovered. A line that would only repeat
the one before is left out, but for one every 30s. When consume ends it prints a summary:
the messages received, in how long, at what rate, and how they were settled. With
--offset, the queue is a stream read from that offset on; acked or not, its messages
stay in it for the next reader.`)
	qf := addQueueFlags(fs)
	count := fs.Int("count", 0, "stop after handling exactly this many messages, holding no more than that at once (0: until interrupted)")
	prefetch := fs.Int("prefetch", 0, "prefetch limit, at most --count (0: the backend's default, or --count)")
	noAck := fs.Bool("no-ack", false, "let the broker settle messages on delivery (a message is lost if carrot fails before printing it)")
	requeue := fs.Bool("requeue", false, "requeue messages instead of acking them (they will come again)")
	offset := fs.String("offset", "", "read the queue as a stream (as with --type stream) from this `offset`: first, last (the last chunk written), next, a message's offset (0 is the first), or a time in RFC 3339, such as 2026-11-30T10:00:00Z")
	progress := fs.Duration("progress", 10*time.Second, "print a progress line on standard error this often, once messages arrive (0: no progress lines, no summary, and the waiting line whenever nothing arrives)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if err := checkInterval("progress", *progress); err != nil {
		return err
	}
	spec, out, err := qf.parsed(c.stdout)
	if err != nil {
		return err
	}
	var streamOffset carrot.StreamOffset
	if *offset != "" {
		from, err := parseOffset(*offset)
		if err != nil {
			return err
		}
		streamOffset = from
		if spec.Type == "" {
			spec.Type = carrot.StreamQueue // so that the core checks what a stream's consumer can do
		}
	}
	set := given(fs)
	switch {
	case *count < 0 || *prefetch < 0:
		return usageError{"--count and --prefetch cannot be negative"}
	case *noAck && *requeue:
		return usageError{"--no-ack and --requeue exclude each other"}
	case *noAck && set["prefetch"]:
		return usageError{"--prefetch would be ignored: it limits the messages delivered and not yet settled, and with --no-ack the broker settles each as it delivers it"}
	case *noAck && *count > 0:
		return usageError{"--count with --no-ack would lose messages: nothing limits what the broker sends a --no-ack consumer, settled, and all that came after the --count-th would be dropped; leave out --no-ack"}
	case *count > 0 && *prefetch > *count:
		return usageError{fmt.Sprintf("--prefetch %d would be ignored: consume --count %d never holds more than %d messages at once", *prefetch, *count, *count)}
	}
	conn, err := c.open(ctx, *rawURL, "consume", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *count > 0 && *prefetch == 0 {
		*prefetch = *count // hold no more than it will handle
	}
	t := &tally{}
	opts := carrot.ConsumerOptions{
		Queues:       []carrot.Queue{spec},
		Prefetch:     *prefetch,
		NoAck:        *noAck,
		StreamOffset: streamOffset,
		Middleware:   []func(carrot.Handler) carrot.Handler{t.middleware},
	}
	if !*noAck {
		opts.OnSettle = t.onSettle
	}
	consumer, err := conn.NewConsumer(ctx, opts)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var seen atomic.Int64
	var printErr error
	t.start = time.Now()
	w := c.waiting(spec.Name, *count, &seen, conn.State, *progress > 0)
	defer w.stop()
	if *progress > 0 {
		r := t.report(c.stderr, *progress, conn.State, func(s, prev snapshot) string {
			if s.received == 0 {
				return "" // until the first message, the waiting line speaks
			}
			return fmt.Sprintf("carrot consume: %d received (%s/s now, %s/s on average)%s%s\n", s.received,
				formatRate(perSecond(s.received-prev.received, s.at.Sub(prev.at))), formatRate(perSecond(s.received, t.elapsed(s))),
				settledCounts(s.counts, *noAck, false), recovering(s.state))
		})
		defer r.stop()
		defer func() {
			r.stop() // before the summary
			s := t.snapshot(nil)
			fmt.Fprintf(c.stderr, "carrot consume: %d received in %s (%s/s on average)%s\n", s.received,
				formatDuration(t.elapsed(s)), formatRate(perSecond(s.received, t.elapsed(s))), settledCounts(s.counts, *noAck, true))
		}()
	}
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
		w.arrive()
		if err := out.print(m); err != nil {
			// Nothing more can be printed: give the message back and stop.
			printErr = err
			stop()
			if !*noAck {
				m.Requeue(ctx)
			}
			return nil
		}
		var err error
		switch {
		case *requeue:
			err = m.Requeue(ctx)
		case !*noAck:
			err = m.Ack(ctx)
		}
		if n := seen.Add(1); *count > 0 && n >= int64(*count) {
			stop()
		}
		return err
	})
	err = consumer.Run(runCtx)
	w.stop() // before the summary, and before run reports an error on standard error
	if printErr != nil {
		return printErr
	}
	if errors.Is(err, context.Canceled) {
		return nil // --count reached, or interrupted
	}
	return err
}

// parseOffset parses the value of consume --offset: first, last, next, an offset in the
// stream, or an RFC 3339 time.
func parseOffset(s string) (carrot.StreamOffset, error) {
	switch s {
	case "first":
		return carrot.FromFirst, nil
	case "last":
		return carrot.FromLast, nil
	case "next":
		return carrot.FromNext, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return carrot.FromOffset(n), nil // the core refuses a negative one
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return carrot.FromTime(t), nil
	}
	return carrot.StreamOffset{}, usageError{fmt.Sprintf("--offset %q: want first, last, next, an offset (a whole number, 0 for the first message) or a time in RFC 3339, such as 2026-11-30T10:00:00Z", s)}
}

// settledCounts says, after the count of messages received, how they were settled: the
// acked, requeued and rejected always, the retried, dead-lettered and those whose
// settling failed when there are any, and those in flight (on a progress line) or left
// unsettled (in the summary, when there are any). Nothing with noAck: the broker settled
// each as it delivered it.
func settledCounts(c counts, noAck, final bool) string {
	if noAck {
		return ""
	}
	s := fmt.Sprintf(", %d acked, %d requeued, %d rejected", c.settled[carrot.Acked], c.settled[carrot.Requeued], c.settled[carrot.Rejected])
	if n := c.settled[carrot.Retried]; n > 0 {
		s += fmt.Sprintf(", %d retried", n)
	}
	if n := c.settled[carrot.DeadLettered]; n > 0 {
		s += fmt.Sprintf(", %d dead-lettered", n)
	}
	if c.failed > 0 {
		s += fmt.Sprintf(", %d failed to settle", c.failed)
	}
	switch n := c.inFlight(); {
	case !final:
		s += fmt.Sprintf(", %d in flight", n)
	case n > 0:
		s += fmt.Sprintf(", %d unsettled", n)
	}
	return s
}

// How long consume waits without a message before it says on standard error that it is
// waiting, and then between two such lines. Tests shorten them.
var (
	waitingAfter = 2 * time.Second
	waitingEvery = 30 * time.Second
)

// waiter says on standard error that consume is waiting, when no message has arrived for
// waitingAfter, and again at most every waitingEvery while none comes.
type waiter struct {
	start   time.Time
	last    atomic.Int64 // when the last message arrived, as time since start
	arrived atomic.Bool  // a message has arrived
	done    chan struct{}
	ended   chan struct{}
	once    sync.Once
}

// waiting starts a waiter for consume of queue, which has handled seen of count messages
// (count 0: no limit), on a connection in the state that state returns. With
// firstOnly, it falls silent once the first message has arrived: progress lines take
// over. Its stop must be called.
func (c *cli) waiting(queue string, count int, seen *atomic.Int64, state func() carrot.State, firstOnly bool) *waiter {
	w := &waiter{start: time.Now(), done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		timer := time.NewTimer(waitingAfter)
		defer timer.Stop()
		var printed time.Duration = -1 // when it last printed, as time since start
		for {
			select {
			case <-w.done:
				return
			case <-timer.C:
			}
			if firstOnly && w.arrived.Load() {
				return
			}
			now := time.Since(w.start)
			next := time.Duration(w.last.Load()) + waitingAfter // when the quiet is long enough
			if printed >= 0 && printed+waitingEvery > next {
				next = printed + waitingEvery
			}
			if now < next {
				timer.Reset(next - now)
				continue
			}
			so := ""
			if count > 0 {
				so = fmt.Sprintf("%d of %d so far; ", seen.Load(), count)
			}
			fmt.Fprintf(c.stderr, "carrot consume: waiting for messages on queue %q (%sCtrl-C to stop)%s\n", queue, so, recovering(state()))
			printed = now
			timer.Reset(waitingEvery)
		}
	}()
	return w
}

// arrive records that a message arrived: the quiet starts again.
func (w *waiter) arrive() {
	w.last.Store(int64(time.Since(w.start)))
	w.arrived.Store(true)
}

// stop stops the waiter and waits until it can print no more.
func (w *waiter) stop() {
	w.once.Do(func() { close(w.done) })
	<-w.ended
}

func runFetch(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("fetch", "", `Fetches one message from a queue, prints it and acks it. Exits with status 3 when
the queue is empty.`)
	qf := addQueueFlags(fs)
	requeue := fs.Bool("requeue", false, "requeue the message instead of acking it")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	spec, out, err := qf.parsed(c.stdout)
	if err != nil {
		return err
	}
	conn, err := c.open(ctx, *rawURL, "fetch", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{spec}})
	if err != nil {
		return err
	}
	m, err := consumer.Fetch(ctx)
	if errors.Is(err, carrot.ErrEmpty) {
		return fmt.Errorf("queue %q: %w", *qf.queue, errEmpty)
	}
	if err != nil {
		return err
	}
	if err := out.print(m); err != nil {
		m.Requeue(ctx)
		return err
	}
	if *requeue {
		return m.Requeue(ctx)
	}
	return m.Ack(ctx)
}

func runPurge(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("purge", "", "Removes the messages waiting in a queue and prints how many it removed.")
	queue := fs.String("queue", "", "queue to purge (required)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *queue == "" {
		return usageError{"--queue is required"}
	}
	conn, err := c.open(ctx, *rawURL, "purge", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	n, err := conn.Purge(ctx, *queue)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, n)
	return nil
}

func runList(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("list", "", `Lists the exchanges and then the queues the broker holds, one a line, the fields
separated by tabs: "exchange", its name and kind; "queue", its name, its messages ready
to be delivered, those delivered and not yet acknowledged, and its consumers ("-" for
what the backend cannot tell); then "transient" for what does not survive a broker
restart. Backends that cannot list (RabbitMQ names its queues only through its
management tools, such as rabbitmqctl list_queues) make it fail; carrot stats --queue
shows the counts of a queue on every backend.`)
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	conn, err := c.open(ctx, *rawURL, "list", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	xs, qs, err := conn.List(ctx)
	if err != nil {
		return err
	}
	for _, x := range xs {
		fmt.Fprintf(c.stdout, "exchange\t%s\t%s%s\n", x.Name, x.Kind, map[bool]string{true: "\ttransient"}[x.Transient])
	}
	inspect := conn.Capabilities().InspectQueue != 0
	for _, q := range qs {
		counts := "-\t-\t-"
		if inspect {
			st, err := conn.InspectQueue(ctx, q.Name)
			switch {
			case errors.Is(err, carrot.ErrNotFound):
				continue // deleted since it was listed
			case err != nil:
				return err
			}
			counts = fmt.Sprintf("%s\t%s\t%s", formatCount(known(st.Ready)), formatCount(known(st.Unacked)), formatCount(known(int64(st.Consumers))))
		}
		fmt.Fprintf(c.stdout, "queue\t%s\t%s%s\n", q.Name, counts, map[bool]string{true: "\ttransient"}[q.Transient])
	}
	return nil
}

func runDeclare(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("declare", "", `Declares an exchange (--exchange), a queue (--queue), or both, bound with each
--key. Exchanges and queues are durable unless --transient is given. A queue's --type
has settings of its own; one that the type or the broker does not have is refused.`)
	exchange := fs.String("exchange", "", "exchange to declare")
	kind := fs.String("kind", "direct", "kind of --exchange: direct, fanout or topic")
	queue := fs.String("queue", "", "queue to declare")
	var keys multiFlag
	fs.Var(&keys, "key", "binding `key` from --exchange to --queue (a pattern for topic exchanges); repeatable")
	transient := fs.Bool("transient", false, "declare a transient exchange and queue")
	autoDelete := fs.Bool("auto-delete", false, "delete the queue with its last consumer, the exchange with its last binding")
	ttl := fs.Duration("ttl", 0, "with --queue: queue message time to live, such as 1h")
	maxLength := fs.Int("max-length", 0, "with --queue: queue max length; the oldest messages are dropped beyond it")
	maxPriority := fs.Uint("max-priority", 0, "with --queue: highest message priority the queue orders by, 0-255")
	dlx := fs.String("dead-letter-exchange", "", "with --queue: exchange for the queue's rejected, expired and dropped messages")
	dlk := fs.String("dead-letter-key", "", "with --dead-letter-exchange: routing key of dead-lettered messages (default: their own)")
	qtype := fs.String("type", "", "with --queue: queue type on a broker that has several (RabbitMQ): classic, quorum or stream (default: the broker's)")
	replicas := fs.Int("replicas", 0, "with --type quorum or stream: how many nodes of the cluster the queue is first placed on (0: the broker's default)")
	deliveryLimit := fs.Int("delivery-limit", 0, "with --type quorum: how many times a message may be delivered; returned once more, it is dead-lettered or dropped (0: the broker's default)")
	dlStrategy := fs.String("dead-letter-strategy", "", "with --type quorum and --dead-letter-exchange: at-most-once (a dead letter whose move fails is dropped; the default) or at-least-once (kept until the queues it goes to have it)")
	maxAge := fs.Duration("max-age", 0, "with --type stream: discard messages older than this, a segment at a time, such as 24h (whole seconds)")
	maxBytes := fs.Int64("max-bytes", 0, "with --type stream: discard the oldest messages, a segment at a time, beyond this many bytes in all")
	singleActive := fs.Bool("single-active-consumer", false, "with --queue: deliver to one consumer at a time, in order; when it goes, the next takes over")
	consumerTimeout := fs.Duration("consumer-timeout", 0, "with --queue: how long a delivered message may stay unsettled before the broker takes it back, such as 1h (whole milliseconds; RabbitMQ 3.12 and later)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *exchange == "" && *queue == "" {
		return usageError{"give --exchange, --queue or both"}
	}
	if len(keys) > 0 && (*exchange == "" || *queue == "") {
		return usageError{"--key binds --queue to --exchange: give both"}
	}
	set := given(fs)
	if err := unless(set, *exchange != "", "it is the kind of --exchange, and none is given: give --exchange too", "kind"); err != nil {
		return err
	}
	if err := unless(set, *queue != "", "it is a setting of --queue, and none is given: give --queue too",
		"ttl", "max-length", "max-priority", "dead-letter-exchange", "dead-letter-key", "type", "replicas", "delivery-limit",
		"dead-letter-strategy", "max-age", "max-bytes", "single-active-consumer", "consumer-timeout"); err != nil {
		return err
	}
	if err := unless(set, *dlx != "", "it is the routing key of the messages dead-lettered to --dead-letter-exchange, and none is given: give --dead-letter-exchange too", "dead-letter-key"); err != nil {
		return err
	}
	if *maxPriority > 255 {
		return usageError{fmt.Sprintf("--max-priority %d is more than 255", *maxPriority)}
	}
	x := carrot.Exchange{Name: *exchange, Kind: carrot.ExchangeKind(*kind), Transient: *transient, AutoDelete: *autoDelete}
	conn, err := c.open(ctx, *rawURL, "declare", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *queue == "" {
		if err := conn.DeclareExchange(ctx, x); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "declared exchange %q (%s)\n", x.Name, kindOrDirect(x.Kind))
		return nil
	}
	q := carrot.Queue{
		Name: *queue, Transient: *transient, AutoDelete: *autoDelete,
		MessageTTL: *ttl, MaxLength: *maxLength, MaxPriority: uint8(*maxPriority),
		DeadLetterExchange: *dlx, DeadLetterRoutingKey: *dlk,
		// The core refuses the settings that do not fit the type, or the backend.
		Type: carrot.QueueType(*qtype), Replicas: *replicas, DeliveryLimit: *deliveryLimit,
		DeadLetterStrategy: carrot.DeadLetterStrategy(*dlStrategy), MaxAge: *maxAge, MaxBytes: *maxBytes,
		SingleActiveConsumer: *singleActive, ConsumerTimeout: *consumerTimeout,
	}
	if *exchange != "" {
		q.Exchange = x
		if len(keys) == 0 {
			keys = multiFlag{""}
		}
		q.RoutingKey = keys[0]
		for _, k := range keys[1:] {
			q.Bindings = append(q.Bindings, carrot.Binding{Exchange: x.Name, Key: k})
		}
	}
	if _, err := conn.DeclareQueue(ctx, q); err != nil {
		return err
	}
	if *exchange != "" {
		fmt.Fprintf(c.stdout, "declared exchange %q (%s)\n", x.Name, kindOrDirect(x.Kind))
	}
	if q.Type != "" {
		fmt.Fprintf(c.stdout, "declared queue %q (%s)\n", q.Name, q.Type)
	} else {
		fmt.Fprintf(c.stdout, "declared queue %q\n", q.Name)
	}
	for _, k := range keys {
		fmt.Fprintf(c.stdout, "bound queue %q to exchange %q with key %q\n", q.Name, x.Name, k)
	}
	return nil
}

func kindOrDirect(k carrot.ExchangeKind) carrot.ExchangeKind {
	if k == "" {
		return carrot.Direct
	}
	return k
}

func runDelete(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("delete", "", `Deletes a queue (--queue) with its messages and bindings, an exchange (--exchange)
with its bindings, or both, queue first. Deleting one that does not exist is not an
error. With --namespace, deletes every key of the namespace of a Redis URL (its
namespace option, default carrot): all its exchanges, queues, bindings and messages;
refused while a connection is open on it.`)
	exchange := fs.String("exchange", "", "exchange to delete")
	queue := fs.String("queue", "", "queue to delete, with the messages in it")
	namespace := fs.Bool("namespace", false, "delete the whole namespace of the Redis URL (redis, rediss, unix)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *namespace {
		if *exchange != "" || *queue != "" {
			return usageError{"--namespace deletes every exchange and queue: give it without --exchange and --queue"}
		}
		return c.deleteNamespace(ctx, urlOrDefault(*rawURL))
	}
	if *exchange == "" && *queue == "" {
		return usageError{"give --exchange, --queue or both, or --namespace"}
	}
	conn, err := c.open(ctx, *rawURL, "delete", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *queue != "" {
		if err := conn.DeleteQueue(ctx, *queue); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "deleted queue %q\n", *queue)
	}
	if *exchange != "" {
		if err := conn.DeleteExchange(ctx, *exchange); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "deleted exchange %q\n", *exchange)
	}
	return nil
}

// deleteNamespace deletes the namespace of a Redis URL.
func (c *cli) deleteNamespace(ctx context.Context, rawURL string) error {
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "unix":
	default:
		return usageError{fmt.Sprintf("--namespace is for Redis URLs (redis://, rediss://, unix://), not %s", carrot.Redact(rawURL))}
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return err
	}
	opts.Logger = c.logger()
	n, err := redis.DeleteNamespace(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "deleted namespace %q: %d keys\n", cmp.Or(opts.Namespace, redis.DefaultNamespace), n)
	return nil
}

func runUnbind(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("unbind", "", `Removes the bindings from --exchange to --queue with each --key, as declare made
them; with no --key, the binding with the empty key, which declare makes when given
none. Removing a binding that does not exist is not an error.`)
	exchange := fs.String("exchange", "", "exchange the queue is bound to (required)")
	queue := fs.String("queue", "", "queue to unbind (required)")
	var keys multiFlag
	fs.Var(&keys, "key", "binding `key` to remove (a pattern for topic exchanges); repeatable")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *exchange == "" || *queue == "" {
		return usageError{"--exchange and --queue are required: unbind removes the bindings between them"}
	}
	if len(keys) == 0 {
		keys = multiFlag{""}
	}
	conn, err := c.open(ctx, *rawURL, "unbind", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, k := range keys {
		if err := conn.Unbind(ctx, carrot.Binding{Exchange: *exchange, Queue: *queue, Key: k}); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "unbound queue %q from exchange %q with key %q\n", *queue, *exchange, k)
	}
	return nil
}

// modulePath is the module whose version carrot version prints.
const modulePath = "github.com/carrot-go/carrot"

func runVersion(ctx context.Context, c *cli, args []string) error {
	fs := c.bareFlags("version", "", `Prints the version of the carrot module this binary was built from, "(devel)" when
it was built from a source tree, and the Go version that built it.`)
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, versionLine(debug.ReadBuildInfo()))
	return nil
}

// versionLine is what carrot version prints, from the build information of the binary.
func versionLine(info *debug.BuildInfo, ok bool) string {
	version, goVersion := "(unknown)", runtime.Version()
	if ok {
		goVersion = info.GoVersion
		for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
			if m.Path == modulePath {
				version = m.Version
				if m.Replace != nil {
					version = m.Replace.Version
				}
				if version == "" {
					version = "(devel)"
				}
				break
			}
		}
	}
	return fmt.Sprintf("carrot %s, built with %s", version, goVersion)
}

func runBackends(ctx context.Context, c *cli, args []string) error {
	fs := c.bareFlags("backends", "", "Lists the URL schemes this carrot binary has backends for.")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	for _, s := range carrot.Backends() {
		fmt.Fprintln(c.stdout, s)
	}
	return nil
}
