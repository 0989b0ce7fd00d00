package otelcarrot

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/brokerurl"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation is the name of the tracer and meter.
const instrumentation = "github.com/carrot-go/carrot/otelcarrot"

// Options configures [New].
type Options struct {
	// TracerProvider makes the tracer; otel.GetTracerProvider() when nil.
	TracerProvider trace.TracerProvider

	// MeterProvider makes the meter; otel.GetMeterProvider() when nil.
	MeterProvider metric.MeterProvider

	// Propagator writes trace context into the headers of published messages and reads
	// it from received ones; W3C Trace Context and Baggage when nil (not the global
	// propagator, which does nothing until a program sets it).
	Propagator propagation.TextMapPropagator

	// System is the messaging.system attribute; when empty, it follows the connection's
	// URL scheme (see the package documentation).
	System string
}

// Telemetry instruments carrot's publishers, consumers and connections. It is safe for
// concurrent use, and one Telemetry may serve many connections.
type Telemetry struct {
	system string
	tracer trace.Tracer
	prop   propagation.TextMapPropagator

	sent       metric.Int64Counter
	opDuration metric.Float64Histogram
	consumed   metric.Int64Counter
	procDur    metric.Float64Histogram
	settled    metric.Int64Counter
	inFlight   metric.Int64UpDownCounter
	connEvents metric.Int64Counter
}

// New returns a Telemetry that records with opts' providers. It fails only when the meter
// refuses to make an instrument.
func New(opts Options) (*Telemetry, error) {
	tp := opts.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := opts.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	prop := opts.Propagator
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	t := &Telemetry{
		system: opts.System,
		tracer: tp.Tracer(instrumentation, trace.WithInstrumentationVersion(version), trace.WithSchemaURL(semconv.SchemaURL)),
		prop:   prop,
	}
	m := mp.Meter(instrumentation, metric.WithInstrumentationVersion(version), metric.WithSchemaURL(semconv.SchemaURL))
	seconds := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"), seconds)
		errs = append(errs, err)
		return h
	}
	t.sent = counter("messaging.client.sent.messages", "Messages published, confirmed or failed.", "{message}")
	t.opDuration = histogram("messaging.client.operation.duration", "Time from a publish to the broker's confirm.")
	t.consumed = counter("messaging.client.consumed.messages", "Messages delivered to a consumer's handlers.", "{message}")
	t.procDur = histogram("messaging.process.duration", "Time in a consumer's handlers.")
	t.settled = counter("carrot.consumer.settled.messages", "Messages settled, by outcome.", "{message}")
	t.connEvents = counter("carrot.connection.events", "Connection events: lost, reconnection attempts failed, restored, declarations refused on replay.", "{event}")
	var err error
	t.inFlight, err = m.Int64UpDownCounter("carrot.consumer.in_flight", metric.WithDescription("Messages in a consumer's handlers."), metric.WithUnit("{message}"))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// version is reported as the instrumentation's version.
const version = "0.2.0"

// endpoint is what spans and metrics say of a connection.
type endpoint struct {
	system string
	attrs  []attribute.KeyValue // messaging.system, server.address, server.port
}

// endpoint returns what spans say of conn. server.address and server.port are the host of
// the conn's URL, or the first host of a URL that names several: which node the current
// connection reached is not known here.
func (t *Telemetry) endpoint(conn *carrot.Conn) endpoint {
	var e endpoint
	var host, port string
	if conn != nil {
		if u, _, err := brokerurl.Parse(conn.String()); err == nil {
			e.system = systems[strings.ToLower(u.Scheme)]
			if e.system == "" {
				e.system = strings.ToLower(u.Scheme)
			}
			if hosts := brokerurl.Hosts(u); len(hosts) > 0 {
				host, port = hosts[0].Name, hosts[0].Port
			}
		}
	}
	if t.system != "" {
		e.system = t.system
	}
	if e.system == "" {
		e.system = "carrot"
	}
	e.attrs = append(e.attrs, semconv.MessagingSystemKey.String(e.system))
	if host != "" {
		e.attrs = append(e.attrs, semconv.ServerAddress(host))
		if n, err := strconv.Atoi(port); err == nil {
			e.attrs = append(e.attrs, semconv.ServerPort(n))
		}
	}
	return e
}

// systems maps URL schemes to messaging.system values.
var systems = map[string]string{
	"amqp":    "rabbitmq",
	"amqps":   "rabbitmq",
	"amqp10":  "amqp",
	"amqp10s": "amqp",
	"redis":   "redis",
	"rediss":  "redis",
	"memory":  "memory",
}

// Publisher returns opts with a [carrot.PublishHook] that traces and measures each publish
// of a Publisher made with them on conn, added after opts' own hooks.
func (t *Telemetry) Publisher(conn *carrot.Conn, opts carrot.PublisherOptions) carrot.PublisherOptions {
	opts.Hooks = append(slices.Clip(opts.Hooks), t.PublishHook(conn, opts.Exchange))
	return opts
}

// startKey keys a publish's start time in its context.
type startKey struct{}

// PublishHook returns a hook for a Publisher to exchange on conn: it starts a producer
// span, writes its context into the message's headers, and records the outcome when the
// broker confirmed the message or the publish failed. [Telemetry.Publisher] adds it.
func (t *Telemetry) PublishHook(conn *carrot.Conn, exchange string) carrot.PublishHook {
	ep := t.endpoint(conn)
	name := "publish"
	if exchange != "" {
		name += " " + exchange
	}
	spanAttrs := slices.Concat(ep.attrs, []attribute.KeyValue{
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(exchange),
	})
	metricAttrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(ep.system),
		semconv.MessagingOperationName("publish"),
		semconv.MessagingDestinationName(exchange),
	}
	ok := metric.WithAttributeSet(attribute.NewSet(metricAttrs...))
	return carrot.PublishHook{
		Before: func(ctx context.Context, m *carrot.Message) context.Context {
			attrs := spanAttrs
			if m != nil {
				attrs = append(slices.Clip(attrs), messageAttrs(m)...)
			}
			ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
			if m != nil && span.SpanContext().IsValid() {
				if m.Headers == nil {
					m.Headers = carrot.Table{}
				}
				t.prop.Inject(ctx, headers(m.Headers))
			}
			return context.WithValue(ctx, startKey{}, time.Now())
		},
		After: func(ctx context.Context, m *carrot.Message, err error) {
			span := trace.SpanFromContext(ctx)
			opt := ok
			if err != nil {
				et := errorType(err)
				span.SetAttributes(semconv.ErrorTypeKey.String(et))
				span.SetStatus(codes.Error, err.Error())
				opt = metric.WithAttributes(append(slices.Clip(metricAttrs), semconv.ErrorTypeKey.String(et))...)
			}
			span.End()
			t.sent.Add(ctx, 1, opt)
			if start, isTime := ctx.Value(startKey{}).(time.Time); isTime {
				t.opDuration.Record(ctx, time.Since(start).Seconds(), opt)
			}
		},
	}
}

// messageAttrs returns a message's span attributes.
func messageAttrs(m *carrot.Message) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 4)
	if m.RoutingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(m.RoutingKey))
	}
	if m.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(m.MessageID))
	}
	if m.CorrelationID != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(m.CorrelationID))
	}
	return append(attrs, semconv.MessagingMessageBodySize(len(m.Body)))
}

// Consumer returns opts with a middleware that traces and measures each message the
// handlers receive (outermost, before opts' own), and an OnSettle that counts how each
// was settled (after opts' own, if any).
func (t *Telemetry) Consumer(conn *carrot.Conn, opts carrot.ConsumerOptions) carrot.ConsumerOptions {
	opts.Middleware = slices.Concat([]func(carrot.Handler) carrot.Handler{t.Middleware(conn)}, opts.Middleware)
	count := t.OnSettle(conn)
	if own := opts.OnSettle; own != nil {
		opts.OnSettle = func(ctx context.Context, m *carrot.Message, o carrot.Outcome, err error) {
			own(ctx, m, o, err)
			count(ctx, m, o, err)
		}
	} else {
		opts.OnSettle = count
	}
	return opts
}

// Middleware returns a consumer middleware for conn: it reads the trace context the
// message carries, and runs the handlers in a consumer span that is its child.
func (t *Telemetry) Middleware(conn *carrot.Conn) func(carrot.Handler) carrot.Handler {
	ep := t.endpoint(conn)
	base := slices.Concat(ep.attrs, []attribute.KeyValue{
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
	})
	return func(next carrot.Handler) carrot.Handler {
		return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			ctx = t.Extract(ctx, m)
			q := m.Queue()
			attrs := slices.Concat(base, []attribute.KeyValue{
				semconv.MessagingDestinationName(m.Exchange()),
				semconv.MessagingDestinationSubscriptionName(q),
				semconv.MessagingConsumerGroupName(q),
			}, messageAttrs(m))
			ctx, span := t.tracer.Start(ctx, "process "+q, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
			metricAttrs := []attribute.KeyValue{
				semconv.MessagingSystemKey.String(ep.system),
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(m.Exchange()),
				semconv.MessagingDestinationSubscriptionName(q),
			}
			set := metric.WithAttributes(metricAttrs...)
			t.consumed.Add(ctx, 1, set)
			t.inFlight.Add(ctx, 1, set)
			start := time.Now()
			returned := false
			var err error
			defer func() {
				t.inFlight.Add(ctx, -1, set)
				opt := set
				if !returned || err != nil {
					et := "panic"
					if returned {
						et = errorType(err)
						span.SetStatus(codes.Error, err.Error())
					} else {
						span.SetStatus(codes.Error, "the handler panicked")
					}
					span.SetAttributes(semconv.ErrorTypeKey.String(et))
					opt = metric.WithAttributes(append(metricAttrs, semconv.ErrorTypeKey.String(et))...)
				}
				t.procDur.Record(ctx, time.Since(start).Seconds(), opt)
				span.End()
			}()
			err = next.Receive(ctx, m)
			returned = true
			return err
		})
	}
}

// Extract returns ctx with the trace context that m carries, for a message received
// outside a consumer's handlers (with [carrot.Consumer.Fetch]): spans started from it are
// children of the span that published m.
func (t *Telemetry) Extract(ctx context.Context, m *carrot.Message) context.Context {
	return t.prop.Extract(ctx, headers(m.Headers))
}

// OnSettle returns a [carrot.ConsumerOptions].OnSettle for conn: it counts each settled
// message by outcome, and adds an event to the span of the handler that settled it, if
// any. [Telemetry.Consumer] sets it.
func (t *Telemetry) OnSettle(conn *carrot.Conn) func(ctx context.Context, m *carrot.Message, o carrot.Outcome, err error) {
	system := semconv.MessagingSystemKey.String(t.endpoint(conn).system)
	return func(ctx context.Context, m *carrot.Message, o carrot.Outcome, err error) {
		attrs := []attribute.KeyValue{system, semconv.MessagingDestinationSubscriptionName(m.Queue()), outcomeKey.String(o.String())}
		if err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
		}
		t.settled.Add(ctx, 1, metric.WithAttributes(attrs...))
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.AddEvent("settle", trace.WithAttributes(outcomeKey.String(o.String())))
		}
	}
}

// outcomeKey and eventKey are carrot's own attributes.
const (
	outcomeKey = attribute.Key("carrot.outcome")
	eventKey   = attribute.Key("carrot.event")
)

// Dialer returns d with an OnEvent that counts connection events, after d's own.
func (t *Telemetry) Dialer(d carrot.Dialer) carrot.Dialer {
	if own := d.OnEvent; own != nil {
		d.OnEvent = func(e carrot.Event) {
			own(e)
			t.OnEvent(e)
		}
	} else {
		d.OnEvent = t.OnEvent
	}
	return d
}

// OnEvent counts a connection event. [Telemetry.Dialer] sets it.
func (t *Telemetry) OnEvent(e carrot.Event) {
	name := strings.ReplaceAll(e.Kind.String(), " ", "_")
	// No error.type: an event's error is the backend's own, which carrot does not
	// classify; carrot.event says what happened.
	attrs := []attribute.KeyValue{semconv.MessagingSystemKey.String(t.endpoint(e.Conn).system), eventKey.String(name)}
	t.connEvents.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

// errorType returns the error.type of err: carrot's category of it, or "_OTHER".
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	if de := (*carrot.DecodeError)(nil); errors.As(err, &de) {
		return "decode"
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "_OTHER"
}

// errorKinds names carrot's error categories.
var errorKinds = []struct {
	err  error
	name string
}{
	{carrot.ErrUnavailable, "unavailable"},
	{carrot.ErrClosed, "closed"},
	{carrot.ErrUnroutable, "unroutable"},
	{carrot.ErrRefused, "refused"},
	{carrot.ErrTooLarge, "too_large"},
	{carrot.ErrNotFound, "not_found"},
	{carrot.ErrMismatch, "mismatch"},
	{carrot.ErrInUse, "in_use"},
	{carrot.ErrInvalid, "invalid"},
	{carrot.ErrAlreadySettled, "already_settled"},
	{carrot.ErrUnacceptable, "unacceptable"},
	{carrot.ErrMalformed, "malformed"},
	{carrot.ErrUnsupported, "unsupported"},
	{carrot.ErrEmpty, "empty"},
	{carrot.ErrBackend, "backend"},
}

// headers carries trace context in message headers.
type headers carrot.Table

func (h headers) Get(key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (h headers) Set(key, value string) { h[key] = value }

func (h headers) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
