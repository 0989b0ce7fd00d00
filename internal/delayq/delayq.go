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

	"github.com/carrot-go/carrot/backend"
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

// Plan checks that p, a publishing with a delay, can wait in a delay queue, and returns
// the queue's TTL and name; backendName starts the errors ("carrot/amqp091").
func Plan(backendName string, p *backend.Publishing) (bucket int64, name string, err error) {
	if p.Expiration > 0 {
		return 0, "", backend.Errorf(backend.Unsupported, "%s: a delayed message cannot also expire: RabbitMQ drops the expiration of a message it dead-letters", backendName)
	}
	if p.Delay > Max {
		return 0, "", backend.Errorf(backend.Invalid, "%s: delay %v is longer than RabbitMQ's longest, %v", backendName, p.Delay, Max)
	}
	bucket = Bucket(p.Delay)
	return bucket, Name(p.Exchange, bucket), nil
}

// Redirect returns a copy of p published to the delay exchange name, without its delay.
func Redirect(p *backend.Publishing, name string) *backend.Publishing {
	d := *p
	d.Exchange = name
	d.Delay = 0
	return &d
}
