package amqp091

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

// Delayed messages wait in RabbitMQ, without plugins: a message published to exchange X
// with a delay goes to the fanout exchange "carrot.delay.<B>ms.X" (".X" left out for the
// default exchange), bound to the durable queue of the same name, whose messages live B
// milliseconds and are then dead-lettered to X with their own routing key. B is the delay
// rounded up to two significant digits, so that a few queues serve every delay, each
// expiring its messages in order. A name longer than 255 bytes ends with a hash of X
// instead.

// maxDelay is the longest x-message-ttl RabbitMQ takes.
const maxDelay = math.MaxUint32 * time.Millisecond

// delayBucket rounds d up to whole milliseconds with two significant digits.
func delayBucket(d time.Duration) int64 {
	ms := (d + time.Millisecond - 1).Milliseconds()
	unit := int64(1)
	for ms/unit >= 100 {
		unit *= 10
	}
	return (ms + unit - 1) / unit * unit
}

// delayName returns the name of the delay exchange and queue of exchange for bucket.
func delayName(exchange string, bucket int64) string {
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

// delayed returns p as it is published to wait out its delay: to the delay exchange for
// its exchange and delay, declared on first use.
func (c *Conn) delayed(ctx context.Context, p *backend.Publishing) (*backend.Publishing, error) {
	if p.Expiration > 0 {
		return nil, backend.Errorf(backend.Unsupported, "carrot/amqp091: a delayed message cannot also expire: RabbitMQ drops the expiration of a message it dead-letters")
	}
	if p.Delay > maxDelay {
		return nil, backend.Errorf(backend.Invalid, "carrot/amqp091: delay %v is longer than RabbitMQ's longest, %v", p.Delay, maxDelay)
	}
	bucket := delayBucket(p.Delay)
	name := delayName(p.Exchange, bucket)
	if _, ok := c.known.Load(name); !ok {
		err := c.control(ctx, func(ch *amqp.Channel) error {
			if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
				return err
			}
			args := amqp.Table{"x-message-ttl": bucket, "x-dead-letter-exchange": p.Exchange}
			if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
				return err
			}
			return ch.QueueBind(name, "", name, false, nil)
		})
		if err != nil {
			return nil, err
		}
		c.known.Store(name, true)
	}
	d := *p
	d.Exchange = name
	d.Delay = 0
	return &d, nil
}
