package otelcarrot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"os"
	"testing"

	"github.com/carrot-go/carrot"
	_ "github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/otelcarrot"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Example traces a message from its publisher to its consumer and writes the two spans to
// standard output, as JSON: one trace, "process orders" a child of "publish" (the default
// exchange's span). Change the URL to run it on any broker.
func Example() {
	ctx := context.Background()
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout), stdouttrace.WithPrettyPrint())
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer tp.Shutdown(ctx)
	tel, err := otelcarrot.New(otelcarrot.Options{TracerProvider: tp})
	if err != nil {
		log.Fatal(err)
	}

	d := tel.Dialer(carrot.Dialer{})
	conn, err := d.Open(ctx, "memory://")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	orders := carrot.Queue{Name: "orders"}
	if _, err := conn.DeclareQueue(ctx, orders); err != nil {
		log.Fatal(err)
	}
	pub, err := conn.NewPublisher(tel.Publisher(conn, carrot.PublisherOptions{RoutingKey: "orders"}))
	if err != nil {
		log.Fatal(err)
	}
	if err := pub.Send(ctx, map[string]int{"order": 42}); err != nil {
		log.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	cons, err := conn.NewConsumer(ctx, tel.Consumer(conn, carrot.ConsumerOptions{
		Queues:     []carrot.Queue{orders},
		AutoSettle: true,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			stop() // one message is all this example waits for
			return nil
		}),
	}))
	if err != nil {
		log.Fatal(err)
	}
	if err := cons.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// TestExample runs Example and checks what it wrote: a publish span and a process span,
// in one trace, the second a child of the first.
func TestExample(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	read := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		read <- b
	}()
	Example()
	os.Stdout = stdout
	w.Close()
	out := <-read

	type span struct {
		Name        string
		SpanContext struct{ TraceID, SpanID string }
		Parent      struct{ TraceID, SpanID string }
	}
	spans := map[string]span{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var s span
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("the example's output is not a stream of JSON spans: %v\n%s", err, out)
		}
		spans[s.Name] = s
	}
	pub, proc := spans["publish"], spans["process orders"]
	if pub.Name == "" || proc.Name == "" {
		t.Fatalf("spans %v, want publish and process orders:\n%s", spans, out)
	}
	if proc.SpanContext.TraceID != pub.SpanContext.TraceID || proc.Parent.SpanID != pub.SpanContext.SpanID {
		t.Errorf("process span %+v is not the child of publish span %+v", proc, pub)
	}
}
