// Package brokers holds otelcarrot's tests against real brokers: traces that cross
// RabbitMQ (both protocols, either way), Redis and AMQP 0-9-1. It is a module of its own
// so that otelcarrot's module requires no broker client or container library.
package brokers
