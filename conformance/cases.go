package conformance

import "github.com/carrot-go/carrot"

// cases lists the behaviours the suite checks, in the order it runs them.
func cases() []testCase {
	return []testCase{
		{name: "RoundTrip", doc: "publish then fetch returns the body, every property and every header unchanged", run: testRoundTrip},
		{name: "FetchEmpty", doc: "Fetch on an empty queue returns ErrEmpty at once", run: testFetchEmpty},
		{name: "ConsumeHandler", doc: "Run passes each message to the consumer's Handler", run: testConsumeHandler},
		{name: "ConsumeCallbacks", doc: "Run passes each message to every registered callback, in order", run: testConsumeCallbacks},
		{name: "AckRemoves", doc: "an acked message leaves its queue", run: testAckRemoves},
		{name: "SettleTwice", doc: "settling a message a second time returns ErrAlreadySettled", run: testSettleTwice},
		{name: "RequeueRedelivers", doc: "a requeued message comes back with the redelivered flag", run: testRequeueRedelivers},
		{name: "RejectDrops", doc: "a rejected message leaves a queue without a dead-letter exchange", run: testRejectDrops},
		{name: "RejectDeadLetters", doc: "a rejected message goes to the queue's dead-letter exchange", needs: need("DeadLetter", func(c carrot.Capabilities) bool { return c.DeadLetter }), run: testRejectDeadLetters},
		{name: "UnackedAfterConsumerClose", doc: "messages a consumer received and did not settle come back when it closes", run: testUnackedAfterConsumerClose},
		{name: "UnackedAfterFetchClose", doc: "a fetched message not settled comes back when its consumer closes", run: testUnackedAfterFetchClose},
		{name: "UnackedAfterConnClose", doc: "messages not settled come back when their connection closes", run: testUnackedAfterConnClose},
		{name: "RoutingDirect", doc: "a direct exchange routes on equal keys", run: testRoutingDirect},
		{name: "RoutingFanout", doc: "a fanout exchange routes to every bound queue whatever the key", run: testRoutingFanout},
		{name: "RoutingTopic", doc: `a topic exchange routes on patterns: "*" is one word, "#" zero or more`, run: testRoutingTopic},
		{name: "RoutingDefaultExchange", doc: "the default exchange routes to the queue named by the key", run: testRoutingDefaultExchange},
		{name: "SeveralBindings", doc: "a queue with several bindings gets each matching message once", run: testSeveralBindings},
		{name: "Unroutable", doc: "a message that matches no queue is an ErrUnroutable error, unless allowed", needs: need("Mandatory", func(c carrot.Capabilities) bool { return c.Mandatory }), run: testUnroutable},
		{name: "PublishAsync", doc: "PublishAsync keeps many publishes in flight, in order, each with its own outcome", run: testPublishAsync},
		{name: "MissingExchange", doc: "publishing to an exchange that does not exist is an ErrNotFound error", run: testMissingExchange},
		{name: "InspectQueue", doc: "InspectQueue counts a queue's ready and unacknowledged messages and its consumers, taking nothing", needs: need("InspectQueue", func(c carrot.Capabilities) bool { return c.InspectQueue != 0 }), run: testInspectQueue},
		{name: "List", doc: "List shows what was declared, sorted by name, or says with ErrUnsupported that the backend cannot list", run: testList},
		{name: "SeveralQueues", doc: "one consumer reads several queues, as carrot 0.4's ConsumerSet", run: testSeveralQueues},
		{name: "CompetingConsumers", doc: "consumers of one queue each get distinct messages", run: testCompetingConsumers},
		{name: "Prefetch", doc: "a consumer holds no more unsettled messages than its prefetch; the rest stay for others", run: testPrefetch},
		{name: "FIFO", doc: "one consumer receives a queue's messages in the order they were published", run: testFIFO},
		{name: "Purge", doc: "Purge removes the waiting messages and returns how many", run: testPurge},
		{name: "CancelRun", doc: "Run returns context.Canceled when its context is canceled", run: testCancelRun},
		{name: "CancelFetchPublish", doc: "Fetch and Publish return the context's error when it is done", run: testCancelFetchPublish},
		{name: "HandlerError", doc: "a message whose handler fails is requeued and delivered again", run: testHandlerError},
		{name: "HandlerPanic", doc: "a handler that panics does not stop the consumer; its message is requeued", run: testHandlerPanic},
		{name: "Undecodable", doc: "a body that does not decode gives a DecodeError and the message can still be acked", run: testUndecodable},
		{name: "Unacceptable", doc: "Decode refuses content types the consumer does not accept", run: testUnacceptable},
		{name: "DecodedRejects", doc: "a Decoded handler rejects a message that does not decode instead of retrying it", run: testDecodedRejects},
		{name: "NoAck", doc: "with NoAck the broker settles messages on delivery", run: testNoAck},
		{name: "InvalidHeader", doc: "a header of an unsupported type is an ErrInvalid error and nothing is sent", run: testInvalidHeader},
		{name: "NestedHeadersRefused", doc: "a table or list header on a backend that cannot carry one is an ErrUnsupported error naming it, and nothing is sent", needs: need("no NestedHeaders", func(c carrot.Capabilities) bool { return !c.NestedHeaders }), run: testNestedHeadersRefused},
		{name: "GeneratedQueueName", doc: "a queue declared without a name gets a unique one", run: testGeneratedQueueName},
		{name: "DeclareIdempotent", doc: "declaring the same exchange and queue twice is not an error", run: testDeclareIdempotent},
		{name: "DeclareMismatch", doc: "redeclaring with other properties is an ErrMismatch error", run: testDeclareMismatch},
		{name: "DeclarePassive", doc: "a passive declaration of a missing queue or exchange is an ErrNotFound error", run: testDeclarePassive},
		{name: "Expiration", doc: "a message past its expiration is not delivered", needs: need("Expiration", func(c carrot.Capabilities) bool { return c.Expiration }), run: testExpiration},
		{name: "QueueMessageTTL", doc: "messages older than the queue's message TTL are dead-lettered", needs: need("QueueMessageTTL and DeadLetter", func(c carrot.Capabilities) bool { return c.QueueMessageTTL && c.DeadLetter }), run: testQueueMessageTTL},
		{name: "MaxLength", doc: "a queue at its max length drops its oldest messages", needs: need("MaxLength", func(c carrot.Capabilities) bool { return c.MaxLength }), run: testMaxLength},
		{name: "Priority", doc: "a priority queue delivers higher priorities first", needs: need("Priority", func(c carrot.Capabilities) bool { return c.Priority }), run: testPriority},
		{name: "DeliveryCount", doc: "each delivery of a message counts one more", needs: need("DeliveryCount", func(c carrot.Capabilities) bool { return c.DeliveryCount }), run: testDeliveryCount},
		{name: "TooLarge", doc: "a body larger than the broker accepts is an ErrTooLarge error", needs: need("MaxBodySize", func(c carrot.Capabilities) bool { return c.MaxBodySize > 0 && c.MaxBodySize <= 256<<20 }), run: testTooLarge},
		{name: "Exclusive", doc: "an exclusive queue is its connection's alone and goes when it closes", needs: need("Exclusive", func(c carrot.Capabilities) bool { return c.Exclusive }), run: testExclusive},
		{name: "AutoDelete", doc: "an auto-delete queue goes when its last consumer does", needs: need("AutoDelete", func(c carrot.Capabilities) bool { return c.AutoDelete }), run: testAutoDelete},
		{name: "Shutdown", doc: "Shutdown lets the handlers in progress finish and settle", run: testShutdown},
		{name: "CloseConsumer", doc: "closing a consumer stops Run with ErrClosed; Close is idempotent", run: testCloseConsumer},
		{name: "Hostile", doc: "hostile input through the public API is refused with the right sentinel error, shows no secret, and leaves the connection working", run: testHostile},
		{name: "CloseConn", doc: "Close is idempotent, every call after it returns ErrClosed, and no goroutine is left", run: testCloseConn},
	}
}

// need returns a capability check for a testCase.
func need(name string, has func(carrot.Capabilities) bool) func(carrot.Capabilities) (string, bool) {
	return func(c carrot.Capabilities) (string, bool) { return name, has(c) }
}
