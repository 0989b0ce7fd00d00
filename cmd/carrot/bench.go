package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot"
)

func runBench(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("bench", "", `Measures the broker through carrot: publishes --count messages of --size bytes to a
queue of its own through the default exchange, keeping --window unconfirmed, while a
consumer at --prefetch receives and acks each, and prints both rates. The queue
(carrot-bench.<random>) is deleted afterwards. Every message is checked: the run fails
if one is missing, or if the queue is not empty at the end.`)
	count := fs.Int("count", 10000, "messages to publish and consume")
	size := fs.Int("size", 100, "body size in bytes")
	window := fs.Int("window", 256, "publishes awaiting their confirms at once")
	prefetch := fs.Int("prefetch", 256, "consumer prefetch")
	transient := fs.Bool("transient", false, "transient messages and queue (default: persistent and durable)")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	switch {
	case *count <= 0:
		return usageError{"--count must be at least 1"}
	case *size < 8:
		return usageError{"--size must be at least 8 (each body starts with its number)"}
	case *window <= 0:
		return usageError{"--window must be at least 1"}
	case *prefetch <= 0:
		return usageError{"--prefetch must be at least 1"}
	}
	conn, err := c.open(ctx, *rawURL, "bench", false)
	if err != nil {
		return err
	}
	defer conn.Close()

	var suffix [6]byte
	rand.Read(suffix[:])
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "carrot-bench." + hex.EncodeToString(suffix[:]), Transient: *transient})
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		conn.DeleteQueue(dctx, q)
	}()
	fmt.Fprintf(c.stdout, "%d messages of %d B to %s, %d in flight, prefetch %d, %s\n",
		*count, *size, conn, *window, *prefetch, map[bool]string{false: "persistent", true: "transient"}[*transient])

	// Consuming runs beside publishing, as in a live system, and so that a broker's flow
	// control (memory:// holds at most max_depth waiting messages) cannot stall the run.
	start := time.Now()
	consumed := make(chan error, 1)
	go func() { consumed <- benchConsume(ctx, conn, q, *count, *prefetch) }()
	if err := benchPublish(ctx, conn, q, *count, *size, *window, *transient); err != nil {
		return err
	}
	c.rate("publish", *count, time.Since(start), "all confirmed")
	if err := <-consumed; err != nil {
		return err
	}
	c.rate("consume", *count, time.Since(start), "all acked, from the first publish")
	left, err := conn.Purge(ctx, q)
	if err != nil {
		return err
	}
	if left != 0 {
		return fmt.Errorf("%d messages were left in the queue after all %d were acked", left, *count)
	}
	return nil
}

func (c *cli) rate(what string, n int, d time.Duration, note string) {
	fmt.Fprintf(c.stdout, "%-8s %d in %.2fs: %.0f msg/s (%s)\n", what, n, d.Seconds(), float64(n)/d.Seconds(), note)
}

// benchPublish publishes n numbered messages, window at a time in flight, and waits for
// every confirm.
func benchPublish(ctx context.Context, conn *carrot.Conn, queue string, n, size, window int, transient bool) error {
	mode := carrot.Persistent
	if transient {
		mode = carrot.Transient
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: queue, MaxInFlight: window, DeliveryMode: mode})
	if err != nil {
		return err
	}
	defer p.Close()
	confirms := make([]*carrot.Confirmation, 0, window)
	wait := func(c *carrot.Confirmation) error {
		if err := c.Wait(ctx); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		return nil
	}
	for i := range n {
		body := make([]byte, size)
		binary.BigEndian.PutUint64(body, uint64(i))
		if len(confirms) == window {
			if err := wait(confirms[0]); err != nil {
				return err
			}
			confirms = confirms[1:]
		}
		confirms = append(confirms, p.PublishAsync(ctx, &carrot.Message{ContentType: carrot.Binary, Body: body}))
	}
	for _, c := range confirms {
		if err := wait(c); err != nil {
			return err
		}
	}
	return nil
}

// benchConsume consumes and acks the n messages benchPublish put in queue, each once:
// one that comes twice (delivery is at least once) counts once.
func benchConsume(ctx context.Context, conn *carrot.Conn, queue string, n, prefetch int) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	seen := make([]bool, n)
	var got atomic.Int64 // distinct messages seen
	errAck := make(chan error, 1)
	cons, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
		Queues:   []carrot.Queue{{Name: queue, Passive: true}},
		Prefetch: prefetch,
		Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
			if err := m.Ack(ctx); err != nil {
				select {
				case errAck <- err:
				default:
				}
				stop()
				return err
			}
			if len(m.Body) < 8 {
				return fmt.Errorf("a message of %d bytes that carrot bench did not publish", len(m.Body))
			}
			i := binary.BigEndian.Uint64(m.Body)
			if i >= uint64(n) {
				return fmt.Errorf("message number %d, beyond the %d published", i, n)
			}
			if !seen[i] { // one handler at a time: no lock needed
				seen[i] = true
				if got.Add(1) == int64(n) {
					stop()
				}
			}
			return nil
		}),
	})
	if err != nil {
		return err
	}
	err = cons.Run(ctx)
	if cerr := cons.Close(); err == nil || errors.Is(err, context.Canceled) {
		err = cerr
	}
	select {
	case aerr := <-errAck:
		return fmt.Errorf("ack: %w", aerr)
	default:
	}
	if int(got.Load()) != n {
		if err == nil {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("consumed %d of %d messages: %w", got.Load(), n, err)
	}
	return nil
}
