package otelcarrot_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/otelcarrot"
	"github.com/carrot-go/carrot/otelcarrot/internal/tracecheck"
	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestTraceMemory: a trace started around a publish continues in the consumer of the
// message, on another connection to the same in-process broker.
func TestTraceMemory(t *testing.T) {
	url := "memory://" + t.Name()
	tracecheck.Check(t, tracecheck.Open(t, url), tracecheck.Open(t, url), tracecheck.Systems{Pub: "memory", Sub: "memory"})
}

// TestFailedSpans: a handler's error and a publish the broker cannot route end their spans
// with error.type and an error status.
func TestFailedSpans(t *testing.T) {
	ctx := t.Context()
	conn := tracecheck.Open(t, "memory://"+t.Name())
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	tel, err := otelcarrot.New(otelcarrot.Options{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "jobs"}); err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(tel.Publisher(conn, carrot.PublisherOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, &carrot.Message{RoutingKey: "nowhere"}); !errors.Is(err, carrot.ErrUnroutable) {
		t.Fatalf("publish to no queue: %v, want ErrUnroutable", err)
	}
	if err := p.Publish(ctx, &carrot.Message{RoutingKey: "jobs", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	cons, err := conn.NewConsumer(ctx, tel.Consumer(conn, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: "jobs"}}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	m, err := cons.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A fetched message's context continues the publisher's trace.
	var published tracetest.SpanStub
	for _, s := range exporter.GetSpans() {
		if s.Name == "publish" && s.Status.Code.String() == "Unset" {
			published = s
		}
	}
	if sc := trace.SpanContextFromContext(tel.Extract(ctx, m)); sc.SpanID() != published.SpanContext.SpanID() || !sc.IsRemote() {
		t.Errorf("Extract gave span %v, want the publish span %v, remote", sc.SpanID(), published.SpanContext.SpanID())
	}
	// Fetch has no handlers: run the middleware by hand, as Run would.
	h := tel.Middleware(conn)(carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		return fmt.Errorf("the order service is down")
	}))
	if err := h.Receive(ctx, m); err == nil {
		t.Fatal("the handler's error was lost")
	}
	want := map[string]string{"publish": "unroutable", "process jobs": "_OTHER"}
	for _, s := range exporter.GetSpans() {
		if s.Name == "publish" && s.Status.Code.String() == "Unset" {
			continue // the publish that went through
		}
		et, ok := want[s.Name]
		if !ok {
			continue
		}
		delete(want, s.Name)
		tracecheck.Attrs(t, s.Name, s.Attributes, map[string]any{"error.type": et})
		if s.Status.Code.String() != "Error" {
			t.Errorf("%s span status %v, want Error", s.Name, s.Status.Code)
		}
	}
	if len(want) > 0 {
		t.Errorf("no failed span for %v", want)
	}
}

// TestMetrics runs a consumer through acks, a requeue, a reject, retries, a dead letter
// and a lost connection, and checks every counter.
func TestMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tel, err := otelcarrot.New(otelcarrot.Options{MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	link := new(memory.Link)
	d := tel.Dialer(carrot.Dialer{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	conn, err := d.Connect(ctx, memory.NewConnector(&memory.Options{Name: t.Name(), Link: link}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dlx := carrot.Exchange{Name: "dlx", Kind: carrot.Fanout}
	if _, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "dead", Exchange: dlx}); err != nil {
		t.Fatal(err)
	}
	work := carrot.Queue{Name: "work", DeadLetterExchange: "dlx"}
	if _, err := conn.DeclareQueue(ctx, work); err != nil {
		t.Fatal(err)
	}

	// Lose the connection once, and wait for it to come back.
	link.Cut()
	waitConnected(t, conn)

	p, err := conn.NewPublisher(tel.Publisher(conn, carrot.PublisherOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	// ok-*: acked; requeue: requeued once, then acked; reject: rejected; retry: fails once,
	// retried, then acked; dead: fails twice, retried, then dead-lettered.
	ids := []string{"ok-1", "ok-2", "ok-3", "requeue", "reject", "retry", "dead"}
	for _, id := range ids {
		if err := p.Publish(ctx, &carrot.Message{RoutingKey: "work", MessageID: id}); err != nil {
			t.Fatal(err)
		}
	}
	const settlements = 3 + 2 + 1 + 2 + 2 // ok, requeue+ack, reject, retry+ack, retry+dead letter
	settled := make(chan carrot.Outcome, settlements)
	cons, err := conn.NewConsumer(ctx, tel.Consumer(conn, carrot.ConsumerOptions{
		Queues:     []carrot.Queue{work},
		AutoSettle: true,
		Retry:      carrot.RetryPolicy{MaxDeliveries: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		OnSettle: func(ctx context.Context, m *carrot.Message, o carrot.Outcome, err error) {
			if err != nil {
				t.Errorf("settling %s: %v", m.MessageID, err)
			}
			settled <- o
		},
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			switch {
			case m.MessageID == "requeue" && !m.Redelivered():
				return m.Requeue(ctx)
			case m.MessageID == "reject":
				return m.Reject(ctx)
			case m.MessageID == "retry" && m.DeliveryCount() == 1, m.MessageID == "dead":
				return errors.New("failed")
			}
			return nil
		}),
	}))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- cons.Run(runCtx) }()
	for range settlements {
		select {
		case <-settled:
		case <-ctx.Done():
			t.Fatal("not every message was settled")
		}
	}
	stop()
	<-ran

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{} // instrument name and selected attribute values
	hists := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					sums[key(m.Name, dp.Attributes)] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					hists[key(m.Name, dp.Attributes)] += dp.Count
				}
			}
		}
	}
	// Deliveries to handlers: the 7 published, the requeued one again, and the retried
	// and dead-lettered ones' copies (3 of them failed: retry once, dead twice).
	want := map[string]int64{
		"messaging.client.sent.messages":                              int64(len(ids)),
		"messaging.client.consumed.messages":                          10,
		"carrot.consumer.settled.messages carrot.outcome=ack":         5,
		"carrot.consumer.settled.messages carrot.outcome=requeue":     1,
		"carrot.consumer.settled.messages carrot.outcome=reject":      1,
		"carrot.consumer.settled.messages carrot.outcome=retry":       2,
		"carrot.consumer.settled.messages carrot.outcome=dead_letter": 1,
		"carrot.consumer.in_flight":                                   0,
		"carrot.connection.events carrot.event=lost":                  1,
		"carrot.connection.events carrot.event=restored":              1,
	}
	if diff := cmp.Diff(want, sums); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
	wantHists := map[string]uint64{
		"messaging.client.operation.duration":          uint64(len(ids)), // publish to confirm
		"messaging.process.duration":                   7,
		"messaging.process.duration error.type=_OTHER": 3,
	}
	if diff := cmp.Diff(wantHists, hists); diff != "" {
		t.Errorf("histogram counts (-want +got):\n%s", diff)
	}
	// The dead letter and the rejected message went to the dead-letter queue.
	if n, err := conn.Purge(ctx, "dead"); err != nil || n != 2 {
		t.Errorf("dead-letter queue holds %d (%v), want 2", n, err)
	}
}

// key names a data point by its instrument and its attributes that tell outcomes apart.
func key(name string, set attribute.Set) string {
	var parts []string
	for _, k := range []attribute.Key{"carrot.outcome", "carrot.event", "error.type"} {
		if v, ok := set.Value(k); ok {
			parts = append(parts, string(k)+"="+v.String())
		}
	}
	if len(parts) == 0 {
		return name
	}
	return name + " " + strings.Join(parts, " ")
}

// waitConnected waits until conn has recovered.
func waitConnected(t *testing.T, conn *carrot.Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := conn.State(); s.Connected && s.Recoveries > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("not reconnected: %+v", conn.State())
}
