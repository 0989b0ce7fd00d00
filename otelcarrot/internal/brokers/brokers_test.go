package brokers

import (
	"strings"
	"testing"

	_ "github.com/carrot-go/carrot/backends/amqp091"
	_ "github.com/carrot-go/carrot/backends/amqp10"
	_ "github.com/carrot-go/carrot/backends/redis"
	"github.com/carrot-go/carrot/internal/testbroker"
	"github.com/carrot-go/carrot/otelcarrot/internal/tracecheck"
)

func TestMain(m *testing.M) { testbroker.Main(m) }

// TestTraceAcrossProtocols: a span started around a publish over AMQP 0-9-1 continues in
// the consumer that receives the message over AMQP 1.0 from the same RabbitMQ 4, and the
// other way round: the trace context crosses RabbitMQ's conversion between the protocols
// (headers to application properties and back).
func TestTraceAcrossProtocols(t *testing.T) {
	url10 := testbroker.URL(t, testbroker.RabbitMQ4)
	url091 := "amqp" + strings.TrimPrefix(url10, "amqp10") // the same broker and port, AMQP 0-9-1
	c091, c10 := tracecheck.Open(t, url091), tracecheck.Open(t, url10)
	t.Run("amqp091 to amqp10", func(t *testing.T) {
		tracecheck.Check(t, c091, c10, tracecheck.Systems{Pub: "rabbitmq", Sub: "amqp"})
	})
	t.Run("amqp10 to amqp091", func(t *testing.T) {
		tracecheck.Check(t, c10, c091, tracecheck.Systems{Pub: "amqp", Sub: "rabbitmq"})
	})
}

// TestTraceRedis: the trace context crosses Redis in the stream entry's fields.
func TestTraceRedis(t *testing.T) {
	url := testbroker.URL(t, testbroker.Redis)
	tracecheck.Check(t, tracecheck.Open(t, url), tracecheck.Open(t, url), tracecheck.Systems{Pub: "redis", Sub: "redis"})
}

// TestTraceRabbitMQ: the trace context crosses RabbitMQ 3.10 in AMQP 0-9-1 headers.
func TestTraceRabbitMQ(t *testing.T) {
	url := testbroker.URL(t, testbroker.RabbitMQ)
	tracecheck.Check(t, tracecheck.Open(t, url), tracecheck.Open(t, url), tracecheck.Systems{Pub: "rabbitmq", Sub: "rabbitmq"})
}
