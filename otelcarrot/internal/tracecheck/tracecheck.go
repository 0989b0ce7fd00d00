// Package tracecheck checks, for otelcarrot's tests on every backend, that a trace
// started around a publish on one connection continues in the consumer of the message on
// another: one trace, the consumer's span a child of the publisher's, with the messaging
// semantic conventions' attributes.
package tracecheck

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/otelcarrot"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Open opens url for t, and closes it when t ends.
func Open(t *testing.T, url string) *carrot.Conn {
	t.Helper()
	conn, err := carrot.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Systems are the messaging.system values expected of the publishing and the consuming
// connection.
type Systems struct{ Pub, Sub string }

// Check publishes one message through pub, inside a span of the test's own, to a topic
// exchange of a unique name bound to a queue that a consumer on sub receives from, and
// checks the spans: the publish span is a child of the test's span, the process span a
// child of the publish span, in one trace, and both carry the attributes the messaging
// conventions name. The exchange and queue are deleted afterwards.
func Check(t *testing.T, pub, sub *carrot.Conn, want Systems) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer tp.Shutdown(context.Background())
	tel, err := otelcarrot.New(otelcarrot.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}

	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	x := carrot.Exchange{Name: "otel-x-" + suffix, Kind: carrot.Topic, Transient: true}
	q := carrot.Queue{Name: "otel-q-" + suffix, Exchange: x, RoutingKey: "order.*", Transient: true}
	if _, err := sub.DeclareQueue(ctx, q); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx := context.Background()
		sub.DeleteQueue(ctx, q.Name)
		sub.DeleteExchange(ctx, x.Name)
	}()

	got := make(chan trace.SpanContext, 1)
	cons, err := sub.NewConsumer(ctx, tel.Consumer(sub, carrot.ConsumerOptions{
		Queues: []carrot.Queue{q},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			err := m.Ack(ctx)
			got <- trace.SpanContextFromContext(ctx)
			return err
		}),
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- cons.Run(runCtx) }()

	p, err := pub.NewPublisher(tel.Publisher(pub, carrot.PublisherOptions{Exchange: x.Name}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rootCtx, root := tp.Tracer("test").Start(ctx, "checkout")
	body := []byte(`{"order":42}`)
	err = p.Publish(rootCtx, &carrot.Message{RoutingKey: "order.created", MessageID: "m-1", CorrelationID: "c-1", Body: body, ContentType: "application/json"})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	var inHandler trace.SpanContext
	select {
	case inHandler = <-got:
	case err := <-ran:
		t.Fatalf("the consumer stopped before the message came: %v", err)
	case <-ctx.Done():
		t.Fatal("the message did not arrive")
	}
	stop()
	<-ran

	var publish, process sdktrace.ReadOnlySpan
	for _, s := range exporter.GetSpans().Snapshots() {
		switch s.Name() {
		case "publish " + x.Name:
			publish = s
		case "process " + q.Name:
			process = s
		}
	}
	if publish == nil || process == nil {
		t.Fatalf("spans: publish %v, process %v; want both (got %d spans)", publish != nil, process != nil, len(exporter.GetSpans()))
	}
	rootSC := root.SpanContext()
	if publish.SpanContext().TraceID() != rootSC.TraceID() || publish.Parent().SpanID() != rootSC.SpanID() {
		t.Errorf("publish span: trace %s parent %s; want trace %s parent %s (the caller's span)",
			publish.SpanContext().TraceID(), publish.Parent().SpanID(), rootSC.TraceID(), rootSC.SpanID())
	}
	if process.SpanContext().TraceID() != rootSC.TraceID() {
		t.Errorf("process span is in trace %s, want %s: the trace did not cross the broker", process.SpanContext().TraceID(), rootSC.TraceID())
	}
	if process.Parent().SpanID() != publish.SpanContext().SpanID() || !process.Parent().IsRemote() {
		t.Errorf("process span's parent is %s (remote %v), want the publish span %s, remote", process.Parent().SpanID(), process.Parent().IsRemote(), publish.SpanContext().SpanID())
	}
	if inHandler.SpanID() != process.SpanContext().SpanID() {
		t.Errorf("the handler's context holds span %s, want the process span %s", inHandler.SpanID(), process.SpanContext().SpanID())
	}
	if publish.SpanKind() != trace.SpanKindProducer || process.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span kinds: publish %v, process %v; want producer, consumer", publish.SpanKind(), process.SpanKind())
	}
	Attrs(t, "publish", publish.Attributes(), map[string]any{
		"messaging.system":                           want.Pub,
		"messaging.operation.type":                   "send",
		"messaging.operation.name":                   "publish",
		"messaging.destination.name":                 x.Name,
		"messaging.rabbitmq.destination.routing_key": "order.created",
		"messaging.message.id":                       "m-1",
		"messaging.message.conversation_id":          "c-1",
		"messaging.message.body.size":                int64(len(body)),
	})
	Attrs(t, "process", process.Attributes(), map[string]any{
		"messaging.system":                           want.Sub,
		"messaging.operation.type":                   "process",
		"messaging.operation.name":                   "process",
		"messaging.destination.name":                 x.Name,
		"messaging.destination.subscription.name":    q.Name,
		"messaging.consumer.group.name":              q.Name,
		"messaging.rabbitmq.destination.routing_key": "order.created",
		"messaging.message.id":                       "m-1",
		"messaging.message.body.size":                int64(len(body)),
	})
	for _, a := range slices.Concat(publish.Attributes(), process.Attributes()) {
		if a.Key == "error.type" {
			t.Errorf("error.type %q on a span that did not fail", a.Value.String())
		}
	}
	settled := false
	for _, e := range process.Events() {
		for _, a := range e.Attributes {
			if e.Name == "settle" && a.Key == "carrot.outcome" && a.Value.AsString() == "ack" {
				settled = true
			}
		}
	}
	if !settled {
		t.Errorf("process span events %v: want a settle event with carrot.outcome ack", process.Events())
	}
}

// Attrs checks that attrs hold each of want's keys with its value (strings, int64s,
// bools), reporting the span's name in errors.
func Attrs(t testing.TB, span string, attrs []attribute.KeyValue, want map[string]any) {
	t.Helper()
	have := make(map[string]any, len(attrs))
	for _, a := range attrs {
		have[string(a.Key)] = a.Value.AsInterface()
	}
	for k, v := range want {
		if got, ok := have[k]; !ok {
			t.Errorf("%s span: no attribute %s (want %v)", span, k, v)
		} else if got != v {
			t.Errorf("%s span: %s = %v (%T), want %v (%T)", span, k, got, got, v, v)
		}
	}
}
