// Package delayq names and sizes the queues in which RabbitMQ holds delayed messages for
// carrot's AMQP backends, without plugins: a message published to exchange X with a delay
// goes to the fanout exchange "carrot.delay.<B>ms.X" (".X" left out for the default
// exchange), bound to the durable queue of the same name, whose messages live B
// milliseconds and are then dead-lettered to X with their own routing key. B is the delay
// rounded up to two significant digits, so that a few queues serve every delay, each
// expiring its messages in order. A name longer than 255 bytes ends with a hash of X
// instead. Both backends use the same names, so they share the queues on one broker.
package delayq

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"time"
)

// Max is the longest delay: the longest x-message-ttl RabbitMQ takes.
const Max = math.MaxUint32 * time.Millisecond

// Bucket rounds d up to whole milliseconds with two significant digits: the TTL of the
// queue that holds a message delayed by d.
func Bucket(d time.Duration) int64 {
	ms := (d + time.Millisecond - 1).Milliseconds()
	unit := int64(1)
	for ms/unit >= 100 {
		unit *= 10
	}
	return (ms + unit - 1) / unit * unit
}

// Name returns the name of the delay exchange and queue of exchange for bucket.
func Name(exchange string, bucket int64) string {
	name := "carrot.delay." + strconv.FormatInt(bucket, 10) + "ms"
	if exchange == "" {
		return name
	}
	if full := name + "." + exchange; len(full) <= 255 {
		return full
	}
	sum := sha256.Sum256([]byte(exchange))
	return name + ".~" + hex.EncodeToString(sum[:16])
}
