package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/carrot-go/carrot"
)

// errHelp is returned when -h was asked for; the usage is printed already.
var errHelp = flag.ErrHelp

// flags returns a flag set for a command, with --url.
func (c *cli) flags(name, args, about string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("carrot "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: carrot %s [flags] %s\n\n%s\n\nFlags:\n", name, args, about)
		fs.PrintDefaults()
	}
	rawURL := fs.String("url", "", "broker URL (default $CARROT_URL, then memory://)")
	return fs, rawURL
}

// parse parses args, turning flag errors into usage errors; -h prints the command's
// usage to standard output.
func (c *cli) parse(fs *flag.FlagSet, args []string, positional int) error {
	usage := fs.Usage
	fs.Usage = func() {}
	fs.SetOutput(io.Discard) // run reports the error itself
	err := fs.Parse(args)
	fs.SetOutput(c.stdout)
	if errors.Is(err, flag.ErrHelp) {
		usage()
		return errHelp
	}
	if err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > positional {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(positional))}
	}
	return nil
}

// open connects to the URL of --url, $CARROT_URL or memory://, and warns on standard
// error when the broker is one that dies with the process.
func (c *cli) open(ctx context.Context, rawURL, command string, warnMemory bool) (*carrot.Conn, error) {
	if rawURL == "" {
		rawURL = os.Getenv(carrot.EnvURL)
	}
	if rawURL == "" {
		rawURL = "memory://"
	}
	if warnMemory && strings.HasPrefix(strings.ToLower(rawURL), "memory://") {
		fmt.Fprintf(c.stderr, "carrot %s: note: %s lives in this process only; use --url to reach a broker other commands can see\n", command, carrot.Redact(rawURL))
	}
	return carrot.Open(ctx, rawURL)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

const feedURL = "http://cnn.com/rss/edition.rss"

func runDemo(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("demo", "", `Runs the seed's feed-import example: a consumer declares queue "feed", bound to
exchange "feed" with routing key "importer"; a publisher sends it
{"import_feed": "`+feedURL+`"}, and the consumer prints the feed.`)
	timeout := fs.Duration("timeout", 30*time.Second, "give up if the message has not arrived after this long")
	if err := c.parse(fs, args, 0); err != nil {
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
	fs.Var(&headers, "header", "header NAME=VALUE, a string; repeatable")
	transient := fs.Bool("transient", false, "publish transient messages (default persistent)")
	priority := fs.Uint("priority", 0, "message priority, 0-255")
	expiration := fs.Duration("expiration", 0, "message time to live, such as 30s")
	messageID := fs.String("message-id", "", "message id")
	correlationID := fs.String("correlation-id", "", "correlation id")
	replyTo := fs.String("reply-to", "", "reply-to address")
	lines := fs.Bool("lines", false, "publish each line of standard input as a message")
	allowUnroutable := fs.Bool("allow-unroutable", false, "let the broker drop messages that match no queue")
	noConfirm := fs.Bool("no-confirm", false, "do not wait for the broker's confirms (implies --allow-unroutable)")
	if err := c.parse(fs, args, 1); err != nil {
		return err
	}
	if *priority > 255 {
		return usageError{fmt.Sprintf("--priority %d is more than 255", *priority)}
	}
	if *lines && fs.NArg() > 0 && fs.Arg(0) != "-" {
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
		var body []byte
		if fs.NArg() == 1 && fs.Arg(0) != "-" {
			body = []byte(fs.Arg(0))
		} else if body, err = io.ReadAll(c.stdin); err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		return send(body)
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
	queue    *string
	declare  *bool
	exchange *string
	kind     *string
	keys     multiFlag
	format   *string
}

func addQueueFlags(fs *flag.FlagSet) *queueFlags {
	q := &queueFlags{
		queue:    fs.String("queue", "", "queue to read (required)"),
		declare:  fs.Bool("declare", false, "declare the queue (durable), and --exchange with its bindings, if they do not exist"),
		exchange: fs.String("exchange", "", "with --declare: exchange to bind the queue to"),
		kind:     fs.String("kind", "direct", "with --declare: kind of --exchange: direct, fanout or topic"),
		format:   fs.String("format", "body", "output: body (the body and a newline) or json (one JSON object per message, with properties; a body that is not UTF-8 as body_base64, byte-string headers in base64, NaN and infinite floats as the strings NaN, +Inf and -Inf)"),
	}
	fs.Var(&q.keys, "key", "with --declare: binding key (pattern for topic exchanges); repeatable")
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
	if !*q.declare {
		if *q.exchange != "" || len(q.keys) > 0 {
			return carrot.Queue{}, usageError{"--exchange and --key declare bindings: give --declare too"}
		}
		return carrot.Queue{Name: *q.queue, Passive: true}, nil
	}
	spec := carrot.Queue{Name: *q.queue}
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
	} else if len(q.keys) > 0 {
		return carrot.Queue{}, usageError{"--key needs --exchange"}
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
interrupted (Ctrl-C) or until --count messages have arrived.`)
	qf := addQueueFlags(fs)
	count := fs.Int("count", 0, "stop after handling exactly this many messages, holding no more than that at once (0: until interrupted)")
	prefetch := fs.Int("prefetch", 0, "prefetch limit (0: the backend's default)")
	noAck := fs.Bool("no-ack", false, "let the broker settle messages on delivery")
	requeue := fs.Bool("requeue", false, "requeue messages instead of acking them (they will come again)")
	if err := c.parse(fs, args, 0); err != nil {
		return err
	}
	spec, out, err := qf.parsed(c.stdout)
	if err != nil {
		return err
	}
	if *count < 0 || *prefetch < 0 {
		return usageError{"--count and --prefetch cannot be negative"}
	}
	if *noAck && *requeue {
		return usageError{"--no-ack and --requeue exclude each other"}
	}
	conn, err := c.open(ctx, *rawURL, "consume", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	if *count > 0 && (*prefetch == 0 || *count < *prefetch) {
		*prefetch = *count // hold no more than it will handle
	}
	consumer, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{spec}, Prefetch: *prefetch, NoAck: *noAck})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	seen := 0
	var printErr error
	consumer.Register(func(ctx context.Context, m *carrot.Message) error {
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
		if seen++; *count > 0 && seen >= *count {
			stop()
		}
		return err
	})
	err = consumer.Run(runCtx)
	if printErr != nil {
		return printErr
	}
	if errors.Is(err, context.Canceled) {
		return nil // --count reached, or interrupted
	}
	return err
}

func runFetch(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("fetch", "", `Fetches one message from a queue, prints it and acks it. Exits with status 3 when
the queue is empty.`)
	qf := addQueueFlags(fs)
	requeue := fs.Bool("requeue", false, "requeue the message instead of acking it")
	if err := c.parse(fs, args, 0); err != nil {
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
	if err := c.parse(fs, args, 0); err != nil {
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

func runDeclare(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("declare", "", `Declares an exchange (--exchange), a queue (--queue), or both, bound with each
--key. Exchanges and queues are durable unless --transient is given.`)
	exchange := fs.String("exchange", "", "exchange to declare")
	kind := fs.String("kind", "direct", "exchange kind: direct, fanout or topic")
	queue := fs.String("queue", "", "queue to declare")
	var keys multiFlag
	fs.Var(&keys, "key", "binding key from --exchange to --queue (a pattern for topic exchanges); repeatable")
	transient := fs.Bool("transient", false, "declare a transient exchange and queue")
	autoDelete := fs.Bool("auto-delete", false, "delete the queue with its last consumer, the exchange with its last binding")
	ttl := fs.Duration("ttl", 0, "queue message time to live, such as 1h")
	maxLength := fs.Int("max-length", 0, "queue max length; the oldest messages are dropped beyond it")
	maxPriority := fs.Uint("max-priority", 0, "highest message priority the queue orders by, 0-255")
	dlx := fs.String("dead-letter-exchange", "", "exchange for the queue's rejected, expired and dropped messages")
	dlk := fs.String("dead-letter-key", "", "routing key of dead-lettered messages (default: their own)")
	if err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *exchange == "" && *queue == "" {
		return usageError{"give --exchange, --queue or both"}
	}
	if len(keys) > 0 && (*exchange == "" || *queue == "") {
		return usageError{"--key binds --queue to --exchange: give both"}
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
	fmt.Fprintf(c.stdout, "declared queue %q\n", q.Name)
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

func runBackends(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("carrot backends", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: carrot backends\n\nLists the URL schemes this carrot binary has backends for.")
	}
	if err := c.parse(fs, args, 0); err != nil {
		return err
	}
	for _, s := range carrot.Backends() {
		fmt.Fprintln(c.stdout, s)
	}
	return nil
}
