// Package carrot publishes and consumes messages over RabbitMQ, AMQP 1.0 brokers, Redis or
// an in-process broker, through one API, with the broker chosen by a URL.
//
// carrot descends from the Python library carrot 0.4 and keeps its ideas: messages are
// published to exchanges (direct, fanout or topic), which route them by routing key to the
// queues bound to them; a [Publisher] sends; a [Consumer] declares its queue and binding,
// receives through callbacks or a handler type, or fetches one message at a time, and acks,
// rejects or requeues each message. Bodies are JSON by default, with pluggable codecs.
//
// # Connecting
//
// [Open] picks the backend from the URL's scheme; backends register themselves when their
// package is imported, as database/sql drivers do:
//
//	import _ "github.com/carrot-go/carrot/backends/memory"
//
//	conn, err := carrot.Open(ctx, "memory://")
//
// Each broker backend is a module of its own, so that a program's module graph holds only
// the clients of the brokers it uses; a program that chooses its broker by URL alone
// imports github.com/carrot-go/carrot/backends/all, which registers every backend.
//
// [OpenEnv] reads the URL from CARROT_URL. [Connect] opens a connection with a backend's
// Connector made without the registry, and a [Dialer] sets the options of either (dial
// timeout, reconnection backoff, an event callback, a logger). Errors never contain a
// URL's password.
//
// # Recovery
//
// A [Conn] recovers on its own, once for every backend: when its connection is lost, it
// connects again with capped exponential backoff and jitter, declares again the exchanges,
// queues and bindings it declared, resumes its consumers, and lets publishes retry within
// their context. Calls made meanwhile wait for the connection within their context; one
// whose context ends first returns an error wrapping both [ErrUnavailable] and the
// context's error. Messages delivered and not settled when the connection was lost come
// again, flagged redelivered; settling them is an [ErrUnavailable] error. A message the
// broker refuses because of what it is (too large, a header it cannot take) is an error
// at once ([ErrTooLarge], [ErrInvalid], [ErrRefused]) and is never sent again. A message
// the backend's client cannot read makes [Consumer.Run] return [ErrMalformed] after a few
// tries, without disturbing the Conn's other consumers for long. [Conn.State],
// [Conn.Ping] and [Dialer.OnEvent] tell how the connection fares.
//
// # Publishing
//
// A Publisher sends to one exchange with a default routing key. [Publisher.Send] encodes
// a Go value with the publisher's codec; [Publisher.Publish] sends a [Message] as it is,
// with its properties and headers. Publishing waits for the broker to take the message (a
// publisher confirm) unless NoConfirm is set, and a message that matches no queue is an
// error wrapping [ErrUnroutable] unless AllowUnroutable is set: nothing is dropped
// silently.
//
// # Consuming
//
// [Conn.NewConsumer] declares its queues, with their exchanges and bindings, and returns a
// Consumer. [Consumer.Run] passes messages to the [Handler] and the callbacks registered
// with [Consumer.Register] until its context ends; [Consumer.Fetch] returns one message,
// or [ErrEmpty] at once. Each message is settled once with [Message.Ack],
// [Message.Requeue] or [Message.Reject]; a handler that fails has its message requeued
// (rejected if it does not decode) and the failure logged. [Consumer.Shutdown] lets the
// handlers in progress finish; [Consumer.Close] stops at once. Messages not settled when a
// consumer or connection closes go back to their queue, flagged redelivered.
//
// # Observability
//
// [Dialer.Logger] receives what a connection, its consumers and its backend log (failures
// rate-limited, never a password); [ConsumerOptions.Middleware] wraps the handlers,
// [PublisherOptions.Hooks] are called around each publish, [ConsumerOptions.OnSettle]
// tells how each received message was settled ([Outcome]), and [Dialer.OnEvent] and
// [Conn.State] tell how the connection fares. Package
// [github.com/carrot-go/carrot/otelcarrot], a module of its own, builds OpenTelemetry
// traces and metrics on these hooks, for every backend.
//
// # Errors
//
// Errors wrap a sentinel error, such as [ErrNotFound], [ErrUnroutable] or [ErrClosed],
// for [errors.Is], and the backend's own error for [errors.As]. Context errors come back
// unwrapped, but for a call whose context ended while the broker was unavailable, whose
// error wraps both. What a backend does not support is an error wrapping [ErrUnsupported]; its
// [Capabilities] say beforehand.
//
// # Backends
//
// The backends live in the backends directory, each documenting its URLs, delivery
// semantics and capabilities. Anyone can write another by implementing package
// [github.com/carrot-go/carrot/backend] and proving it with package
// [github.com/carrot-go/carrot/conformance].
package carrot
