// Package amqp091 is carrot's RabbitMQ backend, on AMQP 0-9-1 with
// github.com/rabbitmq/amqp091-go, registered for amqp:// and amqps:// URLs.
//
//	import _ "github.com/carrot-go/carrot/backends/amqp091"
//
//	conn, err := carrot.Open(ctx, "amqp://guest:guest@localhost:5672/")
//
// # URLs
//
//	amqp://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqps://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqp://USER:PASSWORD@NODE1:PORT,NODE2:PORT,NODE3/VHOST?OPTIONS
//
// USER and PASSWORD default to guest, HOST to localhost, PORT to 5672 (5671 for amqps),
// and VHOST to "/" (write a vhost named "/" as %2F, other names as they are). Options, each
// given at most once; an unknown option or a bad value is an error naming it:
//
//   - heartbeat: the heartbeat interval, whole seconds from 1s to 65535s, as AMQP 0-9-1
//     carries it (default 10s).
//   - connection_timeout: the limit on the TCP dial and the TLS and AMQP handshakes,
//     with each host (default 30s).
//   - channel_max, frame_size: channel and frame limits asked of the broker (default: the
//     broker's).
//   - prefetch: the prefetch (basic.qos) of consumers that do not set one (default 100).
//   - ack_delay: how long a consumer's ack may wait to be sent with others (default
//     10ms; 0 sends each ack at once).
//   - confirms: false turns publisher confirms off (default true). Without confirms,
//     publishers must set NoConfirm and AllowUnroutable.
//   - max_body_size: the largest body the broker accepts, in bytes (default: RabbitMQ's
//     default max_message_size for the version the broker reports, 16777216 from
//     RabbitMQ 4.0 and 134217728 before); larger messages are refused before sending.
//   - connection_name: the name RabbitMQ's management tools show for the connection.
//   - auth_mechanism: plain (the default), amqplain or external (a TLS client
//     certificate, amqps only).
//   - certfile, keyfile, cacertfile, server_name (amqps only): the client certificate and
//     key, the CAs to trust instead of the system's, and the server name to verify
//     instead of each HOST.
//
// The option names are those of every carrot backend: server_name and auth_mechanism
// mean the same on amqp10://, connection_timeout on amqp10:// and redis://. Deprecated:
// server_name_indication, the name of RabbitMQ's URI spec and amqp091-go, is still
// read as server_name; giving both is an error.
//
// A URL may name several hosts, the nodes of a RabbitMQ cluster, separated by commas as
// libpq and MongoDB write them: each with its own port or 5672 (5671 for amqps), an IPv6
// address in brackets ([::1]:5672), all sharing the URL's user, password, vhost and
// options. An empty host between two commas or a bad port is an error that says where. A
// connection tries the hosts in turn, each once, and takes the first that opens: the first
// connection starts with the first host, and each later one, such as a reconnection, with
// the host after the one of the previous connection, so that a node that has just failed
// is tried last. carrot's dial timeout (carrot.Dialer.DialTimeout, 30s by default) bounds
// the whole attempt, and each host gets an equal part of the time left for the hosts still
// to try (at least 2s; the last one all of it), within connection_timeout: a node that
// hangs, accepting and never answering, costs its part, and the attempt goes on to the
// next. If the attempt ends before every host was tried, the next one starts with the
// first host not tried. When
// every host fails, the error names each host and its failure; it wraps
// carrot.ErrInvalid only when every host refused the settings (such as the password),
// carrot.ErrUnavailable otherwise. With amqps, each host's certificate is verified
// against the host's own name, which is also sent for SNI, unless server_name gives one
// name for all the hosts.
//
// Moving to another node is a reconnection like any other: carrot declares the exchanges,
// queues and bindings it recorded again on the new node and resumes the consumers there;
// messages delivered and not acked on the lost node come again, flagged redelivered, and
// publishes whose confirms were lost are sent again (see Delivery semantics). What a node
// holds is RabbitMQ's to say: a classic queue lives on one node and cannot be used while
// that node is down, whereas quorum queues (x-queue-type=quorum) are replicated on several.
//
// [ParseURL] turns a URL into [Options]; [NewConnector] makes a Connector from Options,
// for [carrot.Connect] without the registry. Errors and logs never show the password.
//
// # Delivery semantics
//
// Everything RabbitMQ does, natively: direct, fanout and topic exchanges, queues with
// their arguments (the fields of carrot.Queue map to x-message-ttl, x-max-length,
// x-max-priority, x-dead-letter-exchange and x-dead-letter-routing-key; Args adds others,
// such as x-queue-type=quorum or x-overflow), bindings, basic.get for Fetch, basic.consume
// with basic.qos for Run, basic.ack and basic.reject for settling, queue.purge with its
// count.
//
// Publishing uses one channel in confirm mode shared by every publisher of the
// connection. Each publish writes its message from its own goroutine and joins a window
// of messages awaiting their confirms, which one goroutine answers in order: many
// publishes are in flight at once, each Publish returns when its own confirm arrives (a
// nack is an error wrapping carrot.ErrRefused), and PublishAsync returns as soon as the
// message is written. Mandatory messages that RabbitMQ returns as unroutable (312
// NO_ROUTE) are an error wrapping carrot.ErrUnroutable on the publish that sent them:
// RabbitMQ sends a message's return before its confirm, and amqp091-go queues returns as
// it reads them, so the goroutine that answers a confirm has the return, if any, in hand.
// A publish to an exchange not known to exist is preceded by a passive declaration, so
// that a missing exchange is an ErrNotFound error rather than a closed channel under the
// other publishes in flight.
//
// Each consumer has a channel of its own, so its prefetch is its own and closing it
// requeues what it received and did not settle. Acks are coalesced: Ack records the ack
// and returns, and the consumer sends the acks waiting when a quarter of its prefetch is
// waiting, when ack_delay has passed since the first of them, and before its Close
// returns, each run of acked delivery tags with nothing unsettled before it as one
// basic.ack with multiple set (acks behind a message still being handled go one by one).
// An ack is applied once the basic.ack that carries it is written (AMQP 0-9-1 acks have
// no answer); if the connection is lost before, RabbitMQ delivers the message again,
// flagged redelivered. Requeues and rejects are sent at once. Gets share one channel; a get from a
// queue that does not exist closes it, and RabbitMQ requeues what was got on it and not
// yet settled. A connection has as many channels as the broker's channel_max allows
// (RabbitMQ's default: 2047): a consumer or fetch that needs one when none is left gets an
// ErrUnsupported error naming the limit, at once, and the connection carries on.
//
// The Conn owns its connection and channels, and drains every notification channel it
// registers. It is one AMQP connection and never reconnects: when the connection is lost,
// carrot opens a new Conn, declares its topology again and resumes its consumers (see
// package carrot). A publish whose confirm was lost with the connection is an error
// wrapping carrot.ErrUnavailable, which carrot's Publisher retries: delivery is
// at-least-once, and a message may arrive twice. Messages delivered and not acked when
// the connection was lost come again, flagged redelivered; settling them is an
// ErrUnavailable error. Close waits at most two seconds for a broker that does not answer.
//
// # Properties and headers
//
// Each field of carrot.Message is the AMQP 0-9-1 basic property of the same name:
// content-type, content-encoding, delivery-mode, priority, expiration (milliseconds, as a
// string), message-id, correlation-id, reply-to, timestamp (seconds), type, app-id and
// user-id; Headers are the headers table. RabbitMQ refuses a message whose user-id is not
// the user the connection logged in as, closing the channel (406 PRECONDITION_FAILED):
// carrot refuses such a UserID before sending, with an error wrapping carrot.ErrInvalid,
// as Capabilities().UserID is the URL's user. With auth_mechanism=external RabbitMQ
// derives the user from the certificate, unknown to the Conn: its refusal is then an
// ErrInvalid error of that publish alone, which is not retried (the others in flight on the
// channel are, on a new one). A RabbitMQ user with the impersonator tag, which may publish
// any user-id, cannot do so through carrot.
//
// Header values go out with these field types (this package's interop tests check what
// Debian's Kombu 5.2, with py-amqp 5.1, reads of each, and the other way round):
//
//	string          'S' long string
//	[]byte          'x' byte array (bytes in Python)
//	bool            't'
//	int64           'I' (signed 32 bits) when it fits in 32 bits, else 'l' (signed 64 bits)
//	float64         'd'
//	time.Time       'T' (seconds)
//	nil             'V'
//	map[string]any  'F' nested table
//	[]any           'A' array
//
// Integers go out as 'I' when they can because py-amqp reads 'l' as unsigned: an int64 -1
// sent as 'l' would reach Kombu as 18446744073709551615. So negative integers beyond 32
// bits reach Kombu as their unsigned 64-bit values (-2^40 as 2^64-2^40): the 'L' that
// py-amqp reads as signed is a field type amqp091-go can neither write nor read (see
// below). Positive ones arrive as they were. From Kombu, bytes arrive as
// strings (py-amqp writes them as 'S'), decimals as float64, dicts and lists as tables and
// lists.
// Received header values are converted to carrot's types: every integer field type
// ('b', 'B', 's', 'u', 'I', 'i', 'l') to int64, 'f' and 'd' to float64, a decimal 'D' to
// float64 (its value divided by 10^scale), 'T' to a UTC time.Time, 'S' to a string, 'x' to
// []byte, 'V' to nil, nested tables 'F' (such as RabbitMQ's x-death) to map[string]any
// and arrays 'A' to []any, converted inside too. Field types amqp091-go cannot parse,
// such as the 'L' py-amqp sends for integers beyond 32 bits, are described below.
//
// # Refusals
//
// RabbitMQ refuses some messages by closing the publishing channel (a body over its
// max_message_size) or the whole connection (a content header frame over the negotiated
// frame size; a NaN header, which carrot refuses for every backend). The Conn refuses such
// messages before sending them, with errors wrapping carrot.ErrTooLarge: a body over
// max_body_size (RabbitMQ's default for its version, unless the URL says otherwise), and
// properties and headers that do not fit in one frame (frame_size, 128 KiB by default); a
// message with more headers than amqp091-go can read back (8192) is an ErrInvalid error.
// A body over a limit the broker was configured with is refused by the broker at the first
// attempt, closing the publishing channel: that publish is an ErrTooLarge error and is not
// retried (the others in flight on the channel are, on a new one), and the Conn lowers its
// limit to the one RabbitMQ names, so that the next such message is refused before it is
// sent.
//
// # Messages amqp091-go cannot read
//
// amqp091-go cannot parse some header field types that other clients send, such as 'L',
// which py-amqp (Kombu, Celery) uses for integers beyond 32 bits: it then closes the whole
// connection. The Conn watches the frames it reads and finds the consumer (or fetch) whose
// message it was: that subscription's Receive fails with a Malformed error, carrot's
// consumer subscribes again after a growing delay, and after a few failures in a row its
// Run returns an error wrapping carrot.ErrMalformed that names the queue; the Conn's other
// consumers and publishers resume after each loss. The message stays at the head of its
// queue: remove it with a client that can read it, or with RabbitMQ's tools (a purge, or
// the management UI's "get messages" with "reject requeue false").
//
// A message published with a delay waits in RabbitMQ, without plugins: it goes to the
// fanout exchange "carrot.delay.<B>ms.<EXCHANGE>" (no ".<EXCHANGE>" for the default
// exchange), declared on first use with the durable queue of the same name, whose messages
// live B milliseconds and are then dead-lettered to EXCHANGE with their own routing key,
// for every exchange kind; the amqp10 backend uses the same queues. B is the delay rounded up to two significant digits (1234ms
// waits 1300ms), so a few queues serve every delay and each expires its messages in order;
// beyond that rounding a message arrives within about 100ms. A persistent delayed message
// survives a broker restart. It is routed when it is due, so the mandatory check cannot
// apply to where it goes then (RabbitMQ drops it if nothing matches); it arrives with
// RabbitMQ's x-death header. A delayed message cannot also have an expiration (RabbitMQ
// drops the expiration of what it dead-letters): that is an ErrUnsupported error. Deleting
// an exchange deletes the delay exchanges and queues of it that this process declared;
// others stay on the broker, empty once their messages have expired.
//
// # Logging
//
// A connection logs the broker's flow control: a warning when RabbitMQ blocks publishers
// (connection.blocked, a memory or disk alarm, with its reason) and when it lets them go
// on (connection.unblocked). Both are logged each time, as the broker sends them only when
// an alarm goes off or clears. The lines go to the Logger of the carrot.Dialer that opened
// the URL (the driver takes it through OpenConnectorConfig), to [Options.Logger] for a
// Connector made with [NewConnector], and to slog.Default() otherwise; they name the
// broker without the user name and password. amqp091-go's own logger (amqp091.SetLogger,
// for the whole process, silent by default) is left as it is.
//
// # Capabilities
//
// Confirms and Mandatory (unless confirms=false), DeadLetter, Expiration, QueueMessageTTL,
// MaxLength, Priority, Exclusive, AutoDelete, Persistence, SharedAcross, NestedHeaders,
// MaxBodySize from the URL, UserID the URL's user (none with auth_mechanism=external),
// and Delay (up to 2^32-1 ms). MaxPrefetch is 65535, the most basic.qos carries:
// a larger prefetch is an ErrInvalid error rather than the 16-bit remainder the client
// would send. DeliveryCount
// is off, because classic queues do not count deliveries; quorum queues do, and their
// messages' DeliveryCount is x-delivery-count plus one.
//
// InspectQueue reports ready messages and consumers (ReadyCount and ConsumerCount), from a
// passive queue.declare on the control channel, whose declare-ok carries both; a missing
// queue is an ErrNotFound error. Not unacknowledged messages: AMQP 0-9-1 has no count of
// them, only RabbitMQ's management plugin (its HTTP API, rabbitmqctl list_queues
// messages_unacknowledged) does, so Unacked is -1. Consumers counts basic.consume
// subscriptions of every connection (basic.get is not one, but a quorum queue counts
// the channel of a fetched message until it is settled); a quorum queue's counts may
// lag a moment behind its deliveries.
//
// # Queue types
//
// The queue types of carrot.Queue go out as RabbitMQ's arguments: Type as x-queue-type,
// Replicas as x-quorum-initial-group-size (quorum) or x-initial-cluster-size (stream),
// DeliveryLimit as x-delivery-limit, DeadLetterStrategy as x-dead-letter-strategy (with
// x-overflow=reject-publish, which at-least-once needs), MaxAge as x-max-age in seconds,
// MaxBytes as x-max-length-bytes, SingleActiveConsumer as x-single-active-consumer and
// ConsumerTimeout as x-consumer-timeout; a field whose argument Args sets too is an
// ErrInvalid error. The capabilities follow the version the broker reports: Quorum and
// SingleActiveConsumer from RabbitMQ 3.8, Streams from 3.9, ConsumerTimeout from 3.12
// (RabbitMQ before it takes the argument and ignores it, so carrot refuses it there).
// A broker that is not RabbitMQ reports none.
//
// A stream is consumed with basic.consume and x-stream-offset (a timestamp for
// FromTime, which RabbitMQ reads to the second), on a channel with a prefetch, as
// RabbitMQ requires; each delivery's x-stream-offset header becomes its
// Message.StreamOffset, and a quorum queue's x-delivery-count its DeliveryCount: those
// two headers, the broker's, are not in Headers.
//
// Quorum queues differ from classic ones in ways carrot cannot hide: a requeued message
// goes behind the others on RabbitMQ 3 (to its place on classic queues); a queue's
// dead-lettering happens a moment after the reject; and RabbitMQ may drop acks that
// reach a channel just before it closes (a channel holds back a quorum queue's
// settlements while many are in flight, and drops those it holds when it closes), so
// after a Consumer's Close some messages acked just before may come again, redelivered:
// delivery stays at least once. The amqp10 backend, on RabbitMQ 4, does not lose them.
//
// # As
//
// [carrot.Conn.As] takes a **amqp091.Connection (the current connection, which changes
// when carrot reconnects) and a **amqp091.Channel (the channel the Conn declares topology
// on; if it closes, the Conn opens another). [carrot.Message.As] takes a
// *amqp091.Delivery.
package amqp091
