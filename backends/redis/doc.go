// Package redis is carrot's Redis backend, on github.com/redis/go-redis/v9, registered for
// redis://, rediss:// and unix:// URLs. It gives Redis the semantics of an AMQP broker:
// exchanges, queues and bindings that every process sees, routing by direct, fanout and
// topic exchanges, at-least-once delivery with acks, requeues and dead-lettering.
//
//	import _ "github.com/carrot-go/carrot/backends/redis"
//
//	conn, err := carrot.Open(ctx, "redis://localhost:6379/0")
//
// # URLs
//
//	redis://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]
//	rediss://[USER:PASSWORD@]HOST:PORT[/DB][?OPTIONS]          (TLS)
//	unix://[USER:PASSWORD@]/PATH/TO/SOCKET[?db=DB&OPTIONS]
//
// HOST defaults to localhost, PORT to 6379, DB to 0. Options, each given at most once but
// addr and sentinel; an unknown option or a bad value is an error naming it:
//
//   - namespace: the prefix of every key carrot makes (default carrot), without { or }.
//     Connections with the same namespace share exchanges, queues and bindings; different
//     namespaces never meet (see Key layout).
//   - visibility_timeout: how long a message delivered to a consumer that stopped
//     answering (its process died) stays with it before other consumers get it (default
//     30s). Live connections extend it for the messages they hold, a few times per
//     timeout, however long their handlers take.
//   - block: how long a consumer's read waits for new messages before it looks for
//     abandoned ones again (default 1s). It and visibility_timeout are at least 1ms.
//   - prefetch: the prefetch limit of consumers that do not set one (default 100).
//   - wait: how many replicas must have each write that a call reports done (a publish,
//     an ack, a requeue, a reject, a change of the topology, a purge) before it reports
//     it, by Redis's WAIT after the write (default 0: none); see Replication and failover.
//   - wait_timeout (with wait): how long a write waits for them (default 1s; at least 1ms,
//     and shorter than read_timeout, which bounds the answer to WAIT too). If fewer have
//     it by then, the call fails with an error wrapping carrot.ErrUnavailable.
//   - cluster=true and addr=HOST:PORT (repeatable): a Redis Cluster, with more seed nodes.
//   - sentinel=HOST:PORT (repeatable) and master=NAME, with sentinel_username and
//     sentinel_password: a master found through Redis Sentinel.
//   - connection_timeout: the limit on each dial, with its TLS handshake (default 5s,
//     go-redis's); the name every carrot backend gives it, for go-redis's dial_timeout,
//     which is read too (giving both is an error).
//   - certfile, keyfile, cacertfile, server_name (rediss only): the client certificate and
//     key, the CAs to trust instead of the system's, and the server name to verify
//     instead of HOST.
//   - db (unix only): the database, which the other schemes take in the path.
//   - The options of go-redis's ParseURL, which carrot passes to it, and go-redis reads
//     as it documents them: dial_timeout, read_timeout, write_timeout, pool_timeout,
//     conn_max_idle_time, conn_max_lifetime (durations; a number without a unit is
//     seconds, and 0 or less turns the timeout off), pool_size (at least 1, default 64
//     here), min_idle_conns, max_idle_conns, max_active_conns, pool_fifo, client_name,
//     protocol, skip_verify (rediss only) and the others go-redis knows. go-redis parses
//     the address, credentials and database of the URL too. Not max_retries,
//     min_retry_backoff and max_retry_backoff: go-redis's retries are off (see
//     Connections and recovery), and these are errors. A call whose context has a
//     deadline is bounded by it too.
//
// [ParseURL] turns a URL into [Options]; [NewConnector] makes a Connector from Options,
// for [carrot.Connect] without the registry. Errors never show the password.
//
// # Key layout
//
// Every key carrot makes starts with "{NAMESPACE}:", NAMESPACE being the namespace option
// (which holds no { or }), so that all the keys of a namespace hash to one Redis Cluster
// slot and every script touches a single slot: the backend runs unchanged on a Cluster.
// The trade-off is that one namespace lives on one shard, its load on one node; spread
// load over a Cluster by giving independent applications (or independent parts of one)
// namespaces of their own. A namespace is nothing but its keys, which nothing outside it
// refers to; a key without such a prefix is not carrot's. To see a namespace's keys:
//
//	redis-cli --scan --pattern '{carrot}:*'
//
// After the prefix, each key is one of these, names written as they are:
//
//	version      string  a counter, increased by every change of the topology; a
//	                     connection that finds it gone takes the namespace for lost
//	connections  zset    the ids of the open connections, each scored by the time
//	                     (Unix ms, Redis's clock) its lease ends; each connection renews
//	                     its own every second and removes it when closed
//	exchanges    set     the names of the exchanges (amq.direct, amq.fanout and
//	                     amq.topic are made by each connection that misses them)
//	x:EXCHANGE   hash    an exchange: kind (direct, fanout or topic) and durable (1 or 0)
//	b:EXCHANGE   hash    the exchange's bindings: fields QUEUE \0 KEY, of value 1
//	queues       set     the names of the queues
//	q:QUEUE      hash    a queue: durable, ttl (its MessageTTL in ms, 0 for none), dlx and
//	                     dlk (its dead-letter exchange and routing key)
//	qb:QUEUE     set     the bindings to the queue: members EXCHANGE \0 KEY
//	s:QUEUE      stream  the queue's messages (acknowledged ones until they are trimmed),
//	                     read through the consumer group "carrot"
//	delayed      stream  the messages published with a delay, an entry for each queue
//	                     a message goes to, whose first field, "to", is that queue's
//	                     stream key (s:QUEUE with the prefix)
//	due          zset    the ids of delayed's entries, scored by the time (Unix ms) each
//	                     is due
//	takes:CONSUMER hash  what the consumer's recent reads took, by a token of each read,
//	                     to undo a read whose answer was not waited for (see below);
//	                     it expires after twice the visibility timeout
//
// \0 is a NUL byte. Exchange and queue names cannot hold one (declaring one is an error
// wrapping carrot.ErrInvalid), so a binding's field or member is cut at its first NUL,
// and what follows, the binding's key, may hold any byte, a NUL too, as a routing key
// may: nothing is escaped.
//
// So a queue is its member of queues, q:QUEUE, qb:QUEUE and s:QUEUE, with a field of
// b:EXCHANGE for each of its bindings; an exchange is its member of exchanges, x:EXCHANGE
// and b:EXCHANGE, with a member of qb:QUEUE for each binding; a binding is that field and
// that member. A message is an entry of the stream of each queue it went to, whose fields
// codec.go lists (b the body, k the routing key, x the exchange, exp when it expires in
// that queue, and its properties); an entry whose field "carrot" is "nudge" carries no
// message, and wakes blocked readers. A message delivered and not yet settled is pending
// in the group, owned by a consumer named ID:N (a consumer of the connection ID), ID:get
// (what the connection fetched) or ~janitor (an expired message being dead-lettered); a
// requeued one by ~released. A delayed message is an entry of delayed and a member of due
// until it is due, then an entry of s:QUEUE. A dead-lettered message leaves its queue's
// stream for the streams of the queues its dead-letter exchange routes it to, in one
// script: dead letters have no key of their own.
//
// [DeleteNamespace] deletes every key of a namespace (with SCAN, on a Cluster too), and
// refuses while a connection holds a lease in its connections.
//
// # Delivery semantics
//
// Exchanges, queues and bindings are hashes and sets in Redis, so every process sees the
// same topology. Each queue is a Redis Stream read through a consumer group.
//
// Publishing routes each message with the connection's copy of the topology (topic
// patterns with carrot's shared matcher: "*" exactly one word, "#" zero or more). The
// publishes of all goroutines are gathered into batches of up to 1024 messages, each sent
// in one round trip: one call of a Lua script (EVALSHA) that checks that the topology's
// version is still the one the batch was routed with, and that every key it writes to
// holds a stream (a script does not roll back), before it adds each message to every
// queue it goes to. If the topology changed, the script adds nothing, and the connection
// loads the topology again and routes again (100 times at most; then the messages fail
// with an error wrapping carrot.ErrUnavailable, and the Publisher tries them again in a
// while). So all the matching queues get a message or none does, a message matching two
// bindings of one queue lands there once, a mandatory message that matches nothing is an
// error wrapping carrot.ErrUnroutable, and one to an exchange that does not exist an
// error wrapping carrot.ErrNotFound. Consecutive messages of a batch that go to the same
// queues with the same properties are sent as one run, their shared fields once. Publish
// returns once Redis has run the script (with Redis's append-only file and appendfsync
// always, once the messages are on disk; with the wait option, once replicas have them
// too), PublishAsync at once.
//
// A consumer reads new messages with XREADGROUP, up to its prefetch limit less the
// messages it holds; each is pending, owned by the consumer, until settled. Acks are
// coalesced: the XACK of the messages a consumer acked goes in the same round trip as
// its next read, which it makes as soon as it has handed out the messages it read and
// has room under its prefetch limit. A read waits for new messages at most the block
// time; if handing out the messages read takes longer than the block time since an ack
// was made, the acks go on their own when the consumer is next asked for a message, or,
// when it holds its prefetch limit, after the block time; and Close sends the acks made
// so far, and returns their error. So an ack waits at most the
// block time, or the handling of one message if that is longer. A message got with
// Fetch is acked by the connection's ack loop, at once, in one script call with the other
// acks queued meanwhile. An ack not yet sent when the connection is cut is lost with it;
// the message is not: it stays pending, and comes again, flagged redelivered, when the
// Connector's next connection is made, or after the visibility timeout. Acked messages
// are trimmed off the stream once no older message is pending (XTRIM MINID), so streams
// stay bounded. Requeue hands a message to the group's consumer "~released", from which
// readers take first, oldest first, with the redelivered flag and a delivery count of one more (a
// nudge entry wakes blocked readers). Reject moves the message, in one script, to the
// queues its queue's dead-letter exchange routes it to (with the dead-letter routing key
// if set), or drops it. Messages of a consumer that stopped answering are taken over by
// other consumers after the visibility timeout (XAUTOCLAIM), counted as another delivery.
// Nothing is lost in any crash window: a message leaves a queue only in the same script
// that puts it elsewhere, or when acked.
//
// A message expires after the shorter of its own Expiration and its queue's MessageTTL,
// reckoned by Redis's clock. An expired message is dead-lettered (or dropped) when a
// consumer reaches it; the queues that have a MessageTTL are also swept in the background
// by every connection, a few times a second, so that their expired messages are
// dead-lettered even when nobody reads them. Fetch never waits: requeued, abandoned and new
// messages, in that order, or carrot.ErrEmpty. A Fetch whose context ends before its
// answer comes may still be carried out by Redis afterwards (a stalled network delivers
// it late), so the connection undoes it: each take script records what it took under a
// token of its own, and the connection then hands that back to the queue (flagged
// redelivered), or, if the script has not run yet, marks it so that it takes nothing.
// Should undoing fail too, what it took comes again after the visibility timeout.
//
// # Connections and recovery
//
// A carrot connection is a go-redis client with a pool of network connections, plus one
// network connection of each consumer's own for its blocking reads, which closing the
// consumer cuts short (CLIENT UNBLOCK) rather than waiting for the block time. go-redis's
// own retries are off, and a network connection of the pool that breaks (reset, closed by
// Redis) ends the carrot connection (except on a Cluster, where go-redis still tries a
// call that failed on the network again, on a new connection, up to three times, so a
// broken connection may go unnoticed, and a script may be applied twice), as does Redis losing the namespace's data (a restart
// without persistence, or [DeleteNamespace], seen by the missing version key): carrot then
// connects again, declares its topology again and resumes its consumers, as it does for
// every backend. A monitor checks the version key every second, so that an idle
// connection notices too, in the script that renews the connection's lease.
// The messages that the consumers of a lost connection held go back to their queues when
// the next connection of the same Connector is made (or after the visibility timeout, if
// none is), flagged redelivered; acks accepted by a lost connection and not yet sent are
// lost with it, so those messages come again too. Close sends the acks accepted so far,
// and returns their error; it hands back the messages fetched and not settled, and
// removes the connection's consumers from the queues' groups.
//
// A message over proto-max-bulk-len (the MaxBodySize capability) is refused before it is
// sent; publishes are sent in batches of at most 16 MiB of bodies (a larger message goes
// alone), far below Redis's client-query-buffer-limit. Should Redis refuse a batch for
// the size of a message all the same (proto-max-bulk-len lowered since the connection
// was made: Redis closes the network connection), the connection asks Redis its limit:
// only the larger messages fail, with an error wrapping carrot.ErrTooLarge, and the
// others are sent again. (If Redis does not say, a batch it refused with an error is sent
// again one message at a time, and one whose network connection broke counts as a lost
// connection.)
//
// A message published with a delay is routed when it is published (an unroutable one is
// an error then) and kept, for each of its queues, in the namespace's "delayed" stream,
// scheduled in the sorted set "due" by Redis's clock; every connection of the namespace
// moves the messages that are due to their queues, in one script, when the next one is due
// as far as it knows (it learns of those it publishes at once, of others' when it looks),
// and at least once a second. So a delayed message is delivered within about 100ms after
// its delay while the connection that published it is open, within a second while another
// is, and as soon as one opens otherwise; it survives a restart as the server's
// persistence allows.
// A queue deleted meanwhile does not get it, and Purge does not remove it.
//
// # Replication and failover
//
// Redis replicates asynchronously: a master answers a write before its replicas have it.
// So, without the wait option, when a master dies and a replica takes over (promoted by
// Sentinel or by Redis Cluster), the writes that the replica had not got yet are lost,
// although the calls that made them succeeded: a lost publish is a lost message, that no
// one will know of; a lost ack, a message delivered again (as is a lost reject or
// requeue). The master's append-only file does not help once a replica has taken over.
//
// With wait=N, each write that a call reports done is followed by WAIT N TIMEOUT on the
// same network connection (WAIT counts the writes of its own connection; on a Cluster,
// the connection is one to the node that owns the namespace's slot), and the call
// succeeds only once N replicas have acknowledged the write: the batch of a publish, for
// Publish and PublishAsync alike (so a publish is confirmed only once N replicas have
// it), the acks (which then go on their own, not with a consumer's next read), a requeue,
// a reject or dead-lettering, a change of the topology, a purge. If fewer replicas
// acknowledge it within wait_timeout, the call fails with an error wrapping
// carrot.ErrUnavailable and the connection goes on: the Publisher publishes the message
// again after a while (so it may arrive twice), a consumer sends its acks again with its
// next read, Close returns their error. So a failover to a replica that has the write
// loses nothing a caller was told succeeded: with N equal to the number of replicas,
// every replica has it; with fewer, the replica promoted has it as long as it is one of
// the N, which Sentinel and Redis Cluster see to by promoting the replica that has the
// most of the master's data, as far as they know.
//
// WAIT does not make replication synchronous, nor Redis a consensus system. A write whose
// wait failed is not undone: it is on the master, may still reach the replicas and be
// delivered (and published again: a duplicate). A write that N replicas acknowledged is
// still lost if none of them is promoted (all N died with the master, or an operator
// promoted another); and it is in the replicas' memory, not on their disks (Redis 7.0 has
// WAIT, not WAITAOF). And it costs time: each of those calls waits for its write to
// reach the replicas and their answer, a round trip more (the batches of publishes and
// acks share it); while fewer than N replicas are connected, as after a failover until
// the old master has come back as a replica, every such call waits the whole
// wait_timeout and fails, and publishing stops. Choose N no higher than the replicas a
// master keeps through the failures it must survive. The writes a connection makes for
// itself do not wait: its lease, moving due delayed messages to their queues, handing
// back the messages of a lost connection, the reads that make messages pending; losing
// one delivers a message again, or a little later, and loses none.
//
// With a Sentinel URL (sentinel=HOST:PORT, repeated, and master=NAME), go-redis asks the
// Sentinels for the master's address when it connects; with a Cluster URL (cluster=true,
// addr=HOST:PORT), it asks the nodes which node owns which slot. When the master dies,
// the calls on it fail and the connection ends, as when any network connection breaks;
// carrot connects again, with backoff, and so reaches the master that the Sentinels or
// the Cluster name once the failover is done (within seconds of down-after-milliseconds
// or cluster-node-timeout), declares its topology again and resumes its consumers, and
// the Publisher publishes again the messages whose confirm the failure cut off. The
// messages that consumers of the lost connection held are handed back to their queues on
// the new master, and come again flagged redelivered. A master that comes back must come
// back as a replica of the new one (Sentinel and Redis Cluster make it one, after some
// seconds); without persistence it comes back empty.
//
// # Logging
//
// A connection logs, as warnings, the failures of the work it does in the background: an
// expired message it could not dead-letter, acknowledgements that failed. It logs the
// same failure at most once a second; the next line says in its failures_not_logged
// attribute how many were held back. The lines go to the Logger of the carrot.Dialer that
// opened the URL (the driver takes it through [Driver.OpenConnectorConfig]), to
// [Options.Logger] for a Connector made with [NewConnector], and to slog.Default()
// otherwise. No line shows a password.
//
// go-redis has one logger for the whole process, which writes to stderr (several lines for
// one refused dial). carrot replaces it, with goredis.SetLogger, when the first Connector
// of this package is made, by carrot.Open, NewConnector or DeleteNamespace (importing the
// package changes nothing). From then on, each line of go-redis goes to the loggers of the
// Connectors that have a connection open (or being opened), each logger once, or to
// slog.Default() when none has: go-redis does not say which client a line is about. It is
// a warning with the message "carrot/redis: go-redis logged" and go-redis's text in the
// attribute line, without the user info and secret options of those Connectors' URLs. Each
// Connector takes a line of the same format at most once a second; the next one says in
// lines_not_logged how many were held back. A Connector whose connections are all closed
// gets no more lines. A program that wants go-redis's lines elsewhere calls
// goredis.SetLogger after opening its first connection.
//
// # Capabilities
//
// Confirms, Mandatory, DeadLetter, Expiration, QueueMessageTTL, DeliveryCount, Delay,
// SharedAcross and NestedHeaders: every property of carrot.Message (UserID as it is, checked
// against nothing) and headers of every type, tables and lists included, come back as
// they were published. Persistence when the server has appendonly on; MaxBodySize is the server's
// proto-max-bulk-len. Not MaxLength, Priority, Exclusive or AutoDelete: a queue of one
// connection, or one deleted with its last consumer, needs a broker that knows when a
// client goes away, which Redis does not. Nor the queue types (Quorum, Streams) or
// SingleActiveConsumer and ConsumerTimeout: carrot refuses them with ErrUnsupported; Redis's
// own replication is the wait option's (see Replication and failover). Queues and
// exchanges take no Args.
//
// InspectQueue reports every count (AllCounts), in one script that changes nothing; a
// missing queue is an ErrNotFound error:
//
//   - Ready: the stream's entries not yet delivered to the group, plus the requeued
//     messages the consumer "~released" holds; not the delayed messages still waiting in
//     "delayed". The group's lag (XINFO GROUPS) says how many entries are undelivered;
//     when it says 32 or fewer, the script reads them, to leave the nudges of requeues
//     out; beyond, it takes the lag as it is, which may then count a nudge for each
//     requeue (or consumer closed holding messages) since a consumer last read the
//     queue. After a Purge, while the stream still holds messages delivered before it and
//     no consumer has read past the purged entries, Redis cannot reckon the lag: with
//     more than 32 entries undelivered, Ready is then -1 (as always on Redis before 7.0,
//     which has no lag).
//   - Unacked: the group's pending entries but the requeued ones: the messages delivered
//     to consumers and fetches of every connection, those of a process that died included,
//     until the visibility timeout hands them to another consumer.
//   - Consumers: the group's consumers that subscriptions made (not those that fetch, nor
//     carrot's own "~released" and "~janitor") and that were active within the visibility
//     timeout (or twice the block time, if longer) of the inspecting connection: a
//     consumer reads at least once per block time, or has its messages claimed again by
//     its connection's heartbeat. The consumer of a process that died stays in the group,
//     and stops counting once that time has passed.
//
// # As
//
// [carrot.Conn.As] takes a *goredis.UniversalClient, and a **goredis.Client or a
// **goredis.ClusterClient when the client is of that kind. [carrot.Message.As] takes a
// **goredis.XMessage, the stream entry with its fields as stored.
package redis
