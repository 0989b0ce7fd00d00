// Package otelcarrot traces and measures carrot's publishers, consumers and connections
// with OpenTelemetry, on every backend.
//
// It is a module of its own, so that programs which do not use OpenTelemetry do not
// depend on it. It is built on carrot's public hooks only: a [carrot.PublishHook] for
// publishers, a middleware and [carrot.ConsumerOptions].OnSettle for consumers, and
// [carrot.Dialer].OnEvent for connections.
//
//	tel, err := otelcarrot.New(otelcarrot.Options{}) // the global providers
//	d := tel.Dialer(carrot.Dialer{})
//	conn, err := d.Open(ctx, url)
//	pub, err := conn.NewPublisher(tel.Publisher(conn, carrot.PublisherOptions{Exchange: "orders"}))
//	cons, err := conn.NewConsumer(ctx, tel.Consumer(conn, carrot.ConsumerOptions{Queues: ..., Handler: ...}))
//
// # Traces
//
// Each publish is a span of kind producer, "publish EXCHANGE", from the call to the
// broker's confirm; its trace context is written into the message's headers with the
// W3C Trace Context format ("traceparent", "tracestate") and baggage, unless
// [Options].Propagator says otherwise. Headers travel on every backend: AMQP 0-9-1
// headers, AMQP 1.0 application properties, Redis stream fields, memory, and between
// RabbitMQ's two protocols. Each message a consumer's handlers receive is a span of kind
// consumer, "process QUEUE", a child of the publish span whose context the message
// carries; how the message was then settled is an event on it ("settle", with
// carrot.outcome) when the handler settles it. For a message fetched with
// [carrot.Consumer.Fetch], [Telemetry.Extract] gives the context that continues its
// trace.
//
// Spans follow the OpenTelemetry messaging semantic conventions: messaging.system,
// messaging.operation.type ("send", "process") and messaging.operation.name ("publish",
// "process"), messaging.destination.name (the exchange the message was published to),
// messaging.destination.subscription.name and messaging.consumer.group.name (the queue:
// the consumers of one queue share its messages, as a group does),
// messaging.rabbitmq.destination.routing_key (carrot's routing key, AMQP's on every
// backend), messaging.message.id, messaging.message.conversation_id (the correlation
// id), messaging.message.body.size, server.address and server.port, and error.type on
// failure: the carrot error category ("unavailable", "unroutable", "timeout"...) or
// "_OTHER".
//
// messaging.system is "rabbitmq" for amqp:// and amqps://, "amqp" for amqp10:// (any
// AMQP 1.0 broker), "redis" and "memory"; [Options].System overrides it. server.address
// and server.port are the host and port of the connection's URL; of a URL that names
// several hosts (a cluster's nodes), the first one's, whichever node the connection
// reached.
//
// # Metrics
//
// The messaging conventions' instruments, with the attributes above that have few
// values (system, operation, destination, queue, error.type):
//   - messaging.client.sent.messages: messages published (confirmed or failed);
//   - messaging.client.operation.duration: seconds from a publish to its confirm
//     (operation "publish");
//   - messaging.client.consumed.messages: messages delivered to handlers;
//   - messaging.process.duration: seconds in the handlers.
//
// And carrot's own:
//   - carrot.consumer.settled.messages: messages settled, by carrot.outcome: "ack",
//     "requeue", "reject", "retry" (a retry of the [carrot.RetryPolicy]) and
//     "dead_letter";
//   - carrot.consumer.in_flight: messages in handlers now;
//   - carrot.connection.events: connection events by carrot.event: "lost",
//     "attempt_failed", "restored" (a reconnection), "replay_refused".
package otelcarrot
