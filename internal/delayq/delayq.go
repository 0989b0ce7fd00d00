// Package delayq names and sizes the queues in which RabbitMQ holds delayed messages for
// carrot's AMQP backends, without plugins: a message published to exchange X with a delay
// goes to the fanout exchange "carrot.delay.<B>ms.X" (".X" left out for the default
// exchange), bound to the durable queue of the same name, whose messages live B
// milliseconds and are then dead-lettered to X with their own routing key. B is the delay
// rounded up to two significant digits, so that a few queues serve every delay, each
// expiring its messages in order. A name longer than 255 bytes ends with a hash of X
// instead. Both backends use the same names, so they share the queues on one broker.
// Deleting exchange X deletes the delay exchanges and queues of X that this process
// declared (see Remember); those that other processes declared stay, empty once their
// messages have expired.
package delayq

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
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

// declared holds the delay exchanges and queues declared in this process, by broker and
// by the exchange they deliver to, so that deleting that exchange deletes them too.
var declared struct {
	sync.Mutex
	m map[[2]string]map[string]bool // {broker, exchange} → names
}

// Remember records that the delay exchange and queue name, which deliver to exchange,
// were declared on broker (a key naming the broker, such as its redacted URL).
func Remember(broker, exchange, name string) {
	declared.Lock()
	defer declared.Unlock()
	if declared.m == nil {
		declared.m = make(map[[2]string]map[string]bool)
	}
	k := [2]string{broker, exchange}
	if declared.m[k] == nil {
		declared.m[k] = make(map[string]bool)
	}
	declared.m[k][name] = true
}

// Forget returns the names of the delay exchanges and queues declared in this process on
// broker for exchange, sorted, and forgets them: their exchange is being deleted.
func Forget(broker, exchange string) []string {
	declared.Lock()
	defer declared.Unlock()
	k := [2]string{broker, exchange}
	names := slices.Sorted(maps.Keys(declared.m[k]))
	delete(declared.m, k)
	return names
}
