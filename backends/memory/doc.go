// Package memory is carrot's in-process broker, registered for memory:// URLs. It is the
// reference backend: it implements AMQP 0-9-1's model in full and passes the whole
// conformance suite, so it serves for tests, examples and single-process applications.
//
//	import _ "github.com/carrot-go/carrot/backends/memory"
//
//	conn, err := carrot.Open(ctx, "memory://")
//
// # URLs
//
//	memory://[NAME][?OPTIONS]
//
// NAME picks the broker: connections opened with the same NAME share one broker, which
// lives as long as the process; different names never share anything. Without a NAME,
// each connection gets a broker of its own. A broker never reaches another process: the
// carrot command line tool, for one, starts a new broker on every run.
//
// Options, each given at most once; any other is an error:
//
//   - max_body_size: the largest message body accepted, in bytes (default 134217728,
//     128 MiB, as RabbitMQ's max_message_size).
//   - prefetch: the prefetch limit of consumers that do not set one (default 100).
//   - max_depth: publisher flow control, as a broker's memory alarm does it: a publish
//     to a queue that holds this many ready messages waits, within its context, until a
//     consumer takes some (default 100000). A queue with a max length is never full: it
//     drops its oldest messages. Options.MaxDepth below zero turns it off.
//
// [ParseURL] turns a URL into [Options]; [NewConnector] makes a Connector from Options,
// for [carrot.Connect] without the registry.
//
// # Breaking the connection
//
// An in-process connection never breaks on its own. For tests of what a program does when
// one does, [Options.Link] puts a [Link] between the connections and the broker: Cut loses
// every connection at once (the broker takes back what they held, as a real one does when
// a client goes away), Block also refuses new connections, and Stall makes every call wait
// until Unblock or its context ends. carrot recovers from these as from a real network's
// failures; the conformance suite's Recover cases use them.
//
// # Delivery semantics
//
// Exchanges route as RabbitMQ's do: direct on equal keys, fanout to every bound queue,
// topic on patterns where "*" is exactly one word and "#" zero or more. The default
// exchange "" routes to the queue named by the routing key; amq.direct, amq.fanout and
// amq.topic exist from the start, and names beginning "amq." cannot be declared. A message
// that matches several bindings of one queue is queued there once.
//
// Queues are FIFO; a priority queue (MaxPriority) delivers higher priorities first, FIFO
// within one priority. Publish returns once the message is in every matching queue, so
// every publish is confirmed, and a mandatory message that matched no queue is an error.
// Consumers get at most their prefetch of unsettled messages. A requeued message, and the
// unsettled messages of a subscription or connection that closes, go back to the head of
// their queue in their original order, flagged redelivered, with their delivery count
// kept. A rejected message, one that expires (per-message Expiration or queue
// MessageTTL, checked at the head of the queue as RabbitMQ does) or one dropped from the
// head of a queue at its MaxLength goes to the queue's dead-letter exchange, with the
// dead-letter routing key if one is set, or is dropped if the queue has none. Exclusive
// queues belong to the connection that declared them and go with it; auto-delete queues go
// with their last consumer, auto-delete exchanges with their last binding.
//
// A consumer takes messages from its queue in batches, as a broker pushes messages to its
// clients up to their prefetch: as many as the queue holds and its prefetch allows, up to
// 256 at a time, under one lock of the broker, and hands them to its handlers one by one;
// acks take no lock. Messages taken and not handed out yet count against the prefetch,
// are not given to other consumers nor purged, and do not expire; when the consumer or its
// connection closes, they go back to the head of the queue as they were: not flagged
// redelivered, their delivery count unchanged.
//
// Every property of carrot.Message, Type, AppID and UserID included, and headers of
// every type, nested tables and lists included, arrive as they were published; UserID is
// not checked against anything. Bodies and headers (all the way down) are copied on
// publish and on delivery: neither side sees the other's changes. The broker's copy of a body of up to 64 KiB is used again for another message
// once every queue it went to has had it acked, queues keep their messages in blocks they
// reuse, and consumers reuse the records of settled deliveries: once warm, a message
// published and consumed costs the broker no allocation but the consumer's copy of the
// body. Nothing is written to disk: durable queues and persistent messages do not survive
// the process.
//
// # Capabilities
//
// Every capability but Persistence, SharedAcross and those of replicated brokers (the
// queue types Quorum and Streams, SingleActiveConsumer, ConsumerTimeout, which carrot
// refuses with ErrUnsupported): confirms, mandatory, dead-lettering,
// message and queue TTL, max length, priorities, delivery counts, exclusive and
// auto-delete queues, delays, nested headers, and MaxBodySize from the URL; UserID is
// empty (any is carried). Queue and exchange Args are not supported: use the fields of
// [carrot.Queue].
//
// InspectQueue reports every count (AllCounts), exactly: the messages ready in the queue
// (not those still delayed), the messages delivered to consumers (those a consumer took
// in its batch and has not handed out yet included) and got by fetches without being
// settled, and the queue's subscriptions.
//
// A delayed message is routed when it is published (an unroutable one is an error then)
// and enters each of its queues when its delay has passed, by a timer of the broker: to
// the millisecond, give or take the scheduler. Purge does not remove messages still
// delayed; a queue deleted meanwhile does not get them.
//
// # As
//
// There is no client underneath: [carrot.Conn.As] and [carrot.Message.As] return false.
package memory
