package otelcarrot_test

import (
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/otelcarrot"
	"github.com/carrot-go/carrot/otelcarrot/internal/tracecheck"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// namedConnector makes memory connections that carrot names as its String says, as it
// names the connections of a URL.
type namedConnector struct {
	backend.Connector
	name string
}

func (c namedConnector) String() string { return c.name }

// TestServerAddress: spans say server.address and server.port of the connection's URL;
// of a URL of several hosts, the first one's.
func TestServerAddress(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want map[string]any
	}{
		{"amqp://rabbit:5673/v", map[string]any{"server.address": "rabbit", "server.port": int64(5673), "messaging.system": "rabbitmq"}},
		{"amqps://node1:5671,node2:5672,node3/v", map[string]any{"server.address": "node1", "server.port": int64(5671), "messaging.system": "rabbitmq"}},
		{"amqp10://[::1]:5673,node2/", map[string]any{"server.address": "::1", "server.port": int64(5673), "messaging.system": "amqp"}},
		{"amqp://node1,node2:5672/", map[string]any{"server.address": "node1", "messaging.system": "rabbitmq"}},
	} {
		ctx := t.Context()
		conn, err := carrot.Connect(ctx, namedConnector{memory.NewConnector(&memory.Options{Name: t.Name()}), tc.url})
		if err != nil {
			t.Fatal(err)
		}
		exporter := tracetest.NewInMemoryExporter()
		tel, err := otelcarrot.New(otelcarrot.Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))})
		if err != nil {
			t.Fatal(err)
		}
		p, err := conn.NewPublisher(tel.Publisher(conn, carrot.PublisherOptions{AllowUnroutable: true}))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, &carrot.Message{RoutingKey: "nowhere"}); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		spans := exporter.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%s: %d spans, want the publish's", tc.url, len(spans))
		}
		tracecheck.Attrs(t, tc.url, spans[0].Attributes, tc.want)
		for _, a := range spans[0].Attributes {
			if _, wanted := tc.want[string(a.Key)]; a.Key == "server.port" && !wanted {
				t.Errorf("%s: server.port = %v, want none: the first host gives no port", tc.url, a.Value.AsInterface())
			}
		}
	}
}
