// Package amqp10 is carrot's AMQP 1.0 backend, on github.com/Azure/go-amqp, registered for
// amqp10:// and amqp10s:// URLs (amqp:// is the AMQP 0-9-1 backend's). Its broker is
// RabbitMQ 4, where AMQP 1.0 is native and topology is declared over AMQP 1.0 itself.
//
//	import _ "github.com/carrot-go/carrot/backends/amqp10"
//
//	conn, err := carrot.Open(ctx, "amqp10://guest:guest@localhost:5672/")
//
// # URLs
//
//	amqp10://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqp10s://USER:PASSWORD@HOST:PORT/VHOST?OPTIONS
//	amqp10://USER:PASSWORD@NODE1:PORT,NODE2:PORT,NODE3/VHOST?OPTIONS
//
// USER and PASSWORD default to guest, HOST to localhost, PORT to 5672 (5671 for
// amqp10s), VHOST to "/"; the virtual host is sent as the connection's hostname
// "vhost:VHOST", as RabbitMQ expects. Options, each given at most once; an unknown option
// or a bad value is an error naming it:
//
//   - auth_mechanism: the SASL mechanism, plain (the default, with USER and PASSWORD),
//     anonymous, or external (a TLS client certificate, amqp10s only).
//   - connection_timeout: the limit on the TCP dial and the TLS and AMQP handshakes,
//     with each host (default 30s).
//   - idle_timeout: the longest silence accepted from the broker, from 1ms to 49 days
//     (default 1m).
//   - max_frame_size: the largest frame accepted, in bytes (default go-amqp's, 65536).
//   - prefetch: the link credit of consumers that do not set one (default 100).
//   - max_body_size: the largest body the broker accepts (default 16777216, RabbitMQ 4's
//     max_message_size); larger messages are refused before sending, and so is any
//     message larger than the broker announces for the publishing link.
//   - container_id: the connection's container id (default a random one).
//   - certfile, keyfile, cacertfile, server_name (amqp10s only): the client certificate
//     and key, the CAs to trust instead of the system's, the server name to verify
//     instead of each HOST.
//
// The option names are those of every carrot backend: server_name and auth_mechanism
// mean the same on amqp://, connection_timeout on amqp:// and redis://. Deprecated:
// sasl, this backend's first name for auth_mechanism, is still read as auth_mechanism;
// giving both is an error.
//
// A URL may name several hosts, the nodes of a RabbitMQ cluster, separated by commas as
// libpq and MongoDB write them: each with its own port or 5672 (5671 for amqp10s), an
// IPv6 address in brackets ([::1]:5672), all sharing the URL's user, password, vhost and
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
// carrot.ErrUnavailable otherwise. With amqp10s, each host's certificate is verified
// against the host's own name, which is also sent for SNI, unless server_name gives one
// name for all the hosts.
//
// Moving to another node is a reconnection like any other: carrot declares the exchanges,
// queues and bindings it recorded again on the new node, over its management link, and
// resumes the consumers there; messages delivered and not settled on the lost node come
// again, and publishes whose outcomes were lost are sent again (see Delivery semantics).
// What a node holds is RabbitMQ's to say: a classic queue lives on one node and cannot be
// used while that node is down, whereas quorum queues (x-queue-type=quorum) are replicated on
// several.
//
// [ParseURL] turns a URL into [Options]; [NewConnector] makes a Connector from Options,
// for [carrot.Connect] without the registry. Errors and logs never show the password.
//
// # Delivery semantics
//
// Topology goes through RabbitMQ's "HTTP over AMQP" management link pair at
// "/management": PUT /queues/NAME (durable, exclusive, auto_delete and the arguments
// x-message-ttl, x-max-length, x-max-priority, x-dead-letter-exchange,
// x-dead-letter-routing-key, plus Args such as x-queue-type), PUT /exchanges/NAME,
// POST /bindings, DELETE of each, GET /queues/NAME for passive declarations, and DELETE
// /queues/NAME/messages to purge, which returns the count. Names are percent-encoded
// (every byte but A-Z a-z 0-9 - . _ ~).
//
// Publishing starts on a sending link with a null target: each message carries its
// address in its to property, /exchanges/EXCHANGE/ROUTING-KEY, or /queues/NAME for the
// default exchange, so that a message to a missing exchange is refused alone. Once the
// broker has accepted a message for an address, a link with that address as its target
// (up to 64 of them) is attached on the same session and carries the later messages
// there, which spares the broker resolving each one's address; the messages of one
// goroutine keep their order across the switch. A message such a link gets back as
// released is sent again through the null target, which tells an exchange deleted since
// from one that routes nowhere. Properties and headers go as the section Properties and
// headers says; the body is one data section. Each publish waits for the broker's
// outcome: accepted is taken, released (RabbitMQ's answer for a message no queue took)
// is an error wrapping carrot.ErrUnroutable unless the publisher allows unroutable
// messages, rejected is carrot.ErrNotFound for a missing exchange and carrot.ErrRefused
// otherwise. PublishAsync returns once the message is sent.
//
// Each consumer attaches a receiver to /queues/NAME with link credit as its prefetch.
// Ack is the accepted outcome; requeue is modified with delivery-failed (the message goes
// back to the head of its queue, and quorum queues count the failed delivery); reject is
// rejected (dead-lettered if the queue has a dead-letter exchange, dropped otherwise).
// Each is sent at once, as a settled disposition of its own delivery, and Settle returns
// once it is written: go-amqp v1.7 has no public way to settle a range of deliveries in
// one disposition (its Batching option was removed in v1.0), so acks are not coalesced
// on this backend. A redelivered message is one whose header says it is not its first acquirer. The
// exchange and routing key of a delivery come from RabbitMQ's x-exchange and
// x-routing-key annotations. Fetch asks for the queue's message count, gives a receiver
// of its own one credit and waits for the message (200ms when the count says there is
// one, 20ms when it says none, since a quorum queue's count lags), then drains the credit:
// a message the broker sent meanwhile arrives before its answer to the drain.
//
// RabbitMQ ends the whole session of a link it refuses, so the management link pair, the
// publishing link, each consumer and each queue fetched from have a session of their own.
// A connection has room for as many sessions at once as the broker's channel-max allows
// (RabbitMQ 4 allows 64, its session_max_per_connection): a consumer, fetch or publish
// that needs a session when none is left gets an ErrUnsupported error naming the limit,
// and the connection carries on (go-amqp alone would close it). Use another carrot.Conn
// for more consumers.
// RabbitMQ before 4.1 now and then ignores the begin of a session on the channel number of
// a session that has just ended; a begin not answered within a second is sent again on
// another channel number (waiting longer each time), and a broker that answers none in
// 30 seconds is taken for lost. The number of an unanswered begin stays taken for the rest
// of the connection (go-amqp waits for an end the broker never sends): when such numbers
// leave no room for a session, the Conn ends as unavailable, and carrot reconnects.
// The Conn owns its connection, sessions and links. It is one AMQP connection and never
// reconnects: when the connection is lost, carrot opens a new Conn, declares its topology
// again and resumes its consumers (see package carrot). A publish whose outcome was lost
// with the connection is an error wrapping carrot.ErrUnavailable, which carrot's Publisher
// retries; messages delivered and not settled come again, and settling them is an
// ErrUnavailable error. Close waits at most two seconds for a broker that does not answer.
//
// A message whose AMQP 0-9-1 headers hold a decimal value, which other AMQP 0-9-1
// clients can publish (carrot never does), makes RabbitMQ 4.0 close the AMQP 1.0
// connection that is to receive it (seen with 4.0.5). The Conn then ends with a
// Malformed error, and carrot waits longer before each reconnection while such losses go
// on, so that the message cannot make it reconnect in a hot loop. The broker does not say
// which receiver the message was for: the Conn tells when only one receiver was attached,
// and otherwise the next connections of the same Connector attach their receivers one at
// a time, each given 300ms to fail alone, until one does. That consumer's Receive then
// fails with a Malformed error, and after a few in a row its Run returns an error wrapping
// carrot.ErrMalformed that names the queue; the other consumers resume after each loss.
// (A poisoned message behind others in its queue may be reached after those 300ms, and is
// then not told apart.) Remove the message with an AMQP 0-9-1 client, or purge the queue.
//
// A message published with a delay waits in the same delay queues as the amqp091
// backend's (see there): the fanout exchange and durable queue "carrot.delay.<B>ms.<X>",
// declared over management on first use, whose messages live B ms (the delay rounded up
// to two significant digits) and are then dead-lettered to the exchange X with their
// routing key. RabbitMQ delivers a dead-lettered message as not its first acquisition, so
// a delayed message arrives flagged redelivered. A delayed message cannot also expire
// (ErrUnsupported). Deleting an exchange deletes the delay exchanges and queues of it that
// this process declared.
//
// RabbitMQ 3.x's AMQP 1.0 plugin has its own addresses (/exchange/X/KEY to send,
// /amq/queue/Q to receive), cannot declare topology over AMQP 1.0 and ends the session on
// the modified outcome: this backend does not support it; use RabbitMQ 4.
// Other AMQP 1.0 brokers (ActiveMQ Artemis, Azure Service Bus) address and declare things
// their own way and are not supported yet.
//
// # Properties and headers
//
// The fields of carrot.Message go in these parts of an AMQP 1.0 message, which RabbitMQ 4
// converts to and from the AMQP 0-9-1 properties of the same meaning, so that a message
// published with either protocol arrives with every property over the other:
//
//	carrot.Message   AMQP 1.0                              AMQP 0-9-1, as RabbitMQ converts
//	DeliveryMode     header durable                        delivery-mode
//	Priority         header priority                       priority
//	Expiration       header ttl                            expiration
//	MessageID        properties message-id                 message-id
//	CorrelationID    properties correlation-id             correlation-id
//	ReplyTo          properties reply-to                   reply-to
//	ContentType      properties content-type               content-type
//	ContentEncoding  properties content-encoding           content-encoding
//	Timestamp        properties creation-time (ms)         timestamp (s)
//	UserID           properties user-id (binary)           user-id
//	AppID            properties group-id                   app-id
//	Type             message annotation x-basic-type       type
//	Headers          application-properties                headers
//
// RabbitMQ refuses a message whose user-id is not the user the connection logged in as,
// detaching the link that carried it: carrot refuses such a UserID before sending, with
// an error wrapping carrot.ErrInvalid, as Capabilities().UserID is the URL's user. With
// auth_mechanism=anonymous or external RabbitMQ derives the user itself, unknown to the
// Conn: its refusal is then an ErrInvalid error of that publish alone, which is not
// retried.
//
// AMQP 1.0 allows only simple values in application-properties, so the backend has no
// NestedHeaders capability: a table or list header is an error wrapping
// carrot.ErrUnsupported that names it, and nothing is sent (RabbitMQ 4.0 would take one,
// but other AMQP 1.0 clients need not read it). Each header type goes out as below, and
// arrives so at AMQP 1.0 consumers; the next columns say what RabbitMQ 4 makes of it for
// AMQP 0-9-1 consumers (carrot's amqp091 backend, Kombu), and what a header published over
// AMQP 0-9-1 becomes here:
//
//	carrot      AMQP 1.0 sent      to AMQP 0-9-1     from AMQP 0-9-1 (field types)
//	string      string             'S' string        'S' → string, or []byte if it holds NUL
//	[]byte      binary             'S' string (1)    'x' → []byte
//	bool        boolean            't'               't' → bool
//	int64       int (fits 32 bits) 'I'               'b' 'B' 's' 'u' 'I' 'i' 'l' 'L' → int64
//	            or long            'l' (2)
//	float64     double             'd'               'f' 'd' → float64
//	time.Time   timestamp          'T' (seconds)     'T' → time.Time
//	nil         null               'V'               'V' → nil
//	table, list refused            -                 'F' 'A': dropped by RabbitMQ (3)
//	-           -                  -                 'D' decimal: the connection closes (4)
//
// (1) RabbitMQ 4.0 gives AMQP 0-9-1 consumers binary values as strings, so a []byte
// header published here arrives there as a string of its bytes. (2) py-amqp (Kombu,
// Celery) reads 'l' as unsigned: a negative integer beyond 32 bits reaches it as its
// unsigned 64-bit value; those that fit in 32 bits go as int so that they arrive as 'I'.
// (3) RabbitMQ does not convert tables and arrays to AMQP 1.0, and carrot cannot see that
// they were there: publish such headers to AMQP 0-9-1 consumers with the amqp091 backend.
// (4) See above: the consumer's Run returns ErrMalformed. Headers whose names begin with
// "x-" published over AMQP 0-9-1 become message annotations, not application properties:
// they are not in Headers here, but reachable through [carrot.Message.As]; an "x-" header
// published here reaches AMQP 0-9-1 consumers as a header. Received maps and lists, which
// other AMQP 1.0 clients may send and RabbitMQ 4.0 passes on, become map[string]any and
// []any; symbols become strings, UUIDs their text, and every integer an int64.
//
// # Logging
//
// The backend logs nothing, and go-amqp logs only when built with its debug tag: the lines
// a carrot.Dialer's Logger receives about an amqp10:// connection are carrot's own, and the
// driver takes no logger.
//
// # Capabilities
//
// Confirms, Mandatory, DeadLetter, Expiration, QueueMessageTTL, MaxLength, Priority, Exclusive
// (exclusive to this connection), AutoDelete, Persistence, SharedAcross, MaxBodySize
// from the URL, Delay (up to 2^32-1 ms), MaxPrefetch 2147483647 (link credit as go-amqp
// carries it), and UserID the URL's user (none with anonymous or external logins). Not
// NestedHeaders (see Properties and headers). DeliveryCount is off, because classic queues do not count deliveries;
// quorum queues do, and their messages' DeliveryCount is set.
//
// InspectQueue reports ready messages and consumers (ReadyCount and ConsumerCount), from
// the management node's GET /queues/NAME (message_count and consumer_count); a missing
// queue is an ErrNotFound error. Not unacknowledged messages, which RabbitMQ 4's
// management node does not count: Unacked is -1. RabbitMQ counts as a consumer the
// receiver that a connection keeps attached to a queue it fetched from (Fetch, above):
// the inspecting connection leaves its own out, but counts those of others. A quorum
// queue's counts may lag a moment behind its deliveries.
//
// # Queue types
//
// Quorum, Streams and SingleActiveConsumer: the fields of carrot.Queue go to the management
// node's PUT /queues/NAME as the same x- arguments the amqp091 backend sends
// (x-queue-type, x-delivery-limit, x-max-age, ...). Not ConsumerTimeout: RabbitMQ 4.0
// enforces x-consumer-timeout on AMQP 0-9-1 channels only (an AMQP 1.0 receiver kept a
// message 150 seconds past a timeout of 2), so carrot refuses it here with ErrUnsupported;
// declared over amqp://, the same queue's timeout applies to 0-9-1 consumers. A stream's receiver attaches
// with RabbitMQ's source filter rabbitmq:stream-offset-spec ("first", "last", "next", an
// offset, or a timestamp, to the millisecond); each message's x-stream-offset annotation
// becomes its Message.StreamOffset. RabbitMQ 4's quorum queues have a delivery limit of
// 20 unless DeliveryLimit sets another.
//
// # As
//
// [carrot.Conn.As] takes a **amqp.Conn (the current connection, which changes when
// carrot reconnects) and a **amqp.Session (a new session, which the caller closes). Such
// a session needs room to begin, like carrot's own; carrot does not see it end, so it
// does not count it after: sessions a caller holds on to can still fill the connection,
// which go-amqp then closes.
// [carrot.Message.As] takes a **amqp.Message.
package amqp10
