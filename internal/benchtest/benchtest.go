// Package benchtest runs a backend's raw client and carrot side by side in one benchmark,
// so that their rates compare on the same broker, at the same moment.
package benchtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// A Side handles n messages and returns when they are done.
type Side func(b *testing.B, n int)

// A Contestant is a named Side.
type Contestant struct {
	Name string
	Run  Side
}

// Each contestant runs in rounds of RoundSize messages (fewer for a short run, at least
// MinRounds rounds), alternately, so that a change of pace of the broker (a disk flush,
// a garbage collection) falls on all of them alike. Brokers on a small machine change
// pace often: short rounds make the ratios steadier.
const (
	RoundSize = 2000
	MinRounds = 6
)

// SideBySide runs each contestant on b.N messages in all, over alternating rounds,
// with prepare (untimed) before each run and once more, with n 0, after the last, and
// reports each one's rate, allocations and CPU time per message, and for each pair {carrot, raw} of contestant names, the rate of
// the first as a share of the second's ("carrot/raw").
func SideBySide(b *testing.B, prepare func(b *testing.B, n int), sides []Contestant, pairs ...[2]string) {
	SideBySideWith(b, Options{}, prepare, sides, pairs...)
}

// Options change how [SideBySideWith] runs and what it reports.
type Options struct {
	// Rounds is how many rounds each contestant runs; when zero, b.N/RoundSize, at least
	// MinRounds. Fewer, longer rounds let a contestant reach its steady state, such as a
	// queue filled to its limit, which short rounds never do.
	Rounds int

	// PeakRSS reports each contestant's peak resident set size as "<name>-peak-MB": after
	// the timed rounds, each contestant runs once more, untimed, on all b.N messages at
	// once, from a heap collected and returned to the system, with the peak reset before,
	// so that the peak is that run's own (with what the test binary holds anyway, the same
	// for every contestant). The timed rounds do not return memory to the system, which
	// would make them pay again for the pages they use. It needs Linux's
	// /proc/self/clear_refs; elsewhere the metric is left out, with a log line saying so.
	PeakRSS bool
}

// SideBySideWith is [SideBySide] with options.
func SideBySideWith(b *testing.B, opts Options, prepare func(b *testing.B, n int), sides []Contestant, pairs ...[2]string) {
	rounds := opts.Rounds
	if rounds <= 0 {
		rounds = max(b.N/RoundSize, MinRounds)
	}
	per := max(b.N/rounds, 1)
	elapsed := make([]time.Duration, len(sides))
	cpu := make([]time.Duration, len(sides))
	allocs := make([]uint64, len(sides))
	peak := make([]int64, len(sides))
	peakRSS := opts.PeakRSS
	if peakRSS {
		if err := resetPeakRSS(); err != nil {
			b.Logf("peak RSS not reported: %v", err)
			peakRSS = false
		}
	}
	b.ResetTimer()
	for range rounds {
		for i, s := range sides {
			prepare(b, per)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			c := CPUTime()
			start := time.Now()
			s.Run(b, per)
			elapsed[i] += time.Since(start)
			cpu[i] += CPUTime() - c
			runtime.ReadMemStats(&after)
			allocs[i] += after.Mallocs - before.Mallocs
		}
	}
	b.StopTimer()
	if peakRSS {
		for i, s := range sides {
			prepare(b, b.N)
			debug.FreeOSMemory() // a GC too, so that the run starts from what is live
			if err := resetPeakRSS(); err != nil {
				b.Fatal(err)
			}
			s.Run(b, b.N)
			kB, err := readPeakRSS()
			if err != nil {
				b.Fatal(err)
			}
			peak[i] = kB
		}
	}
	prepare(b, 0) // after the last run, for checks of what it left
	total := float64(per * rounds)
	rates := make(map[string]float64)
	for i, s := range sides {
		rates[s.Name] = total / elapsed[i].Seconds()
		b.ReportMetric(rates[s.Name], s.Name+"-msgs/s")
		b.ReportMetric(float64(allocs[i])/total, s.Name+"-allocs/msg")
		b.ReportMetric(float64(cpu[i].Microseconds())/total, s.Name+"-cpu-µs/msg")
		if peakRSS {
			b.ReportMetric(float64(peak[i])/1024, s.Name+"-peak-MB")
		}
	}
	for _, p := range pairs {
		b.ReportMetric(rates[p[0]]/rates[p[1]], p[0]+"/"+p[1])
	}
	b.ReportMetric(0, "ns/op") // the rates above say it better
}

// resetPeakRSS resets the process's peak resident set size (VmHWM) to its current one, as
// writing "5" to /proc/self/clear_refs does on Linux.
func resetPeakRSS() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("cannot reset the peak RSS: %w", err)
	}
	if _, err := readPeakRSS(); err != nil {
		return err
	}
	return nil
}

// readPeakRSS returns the process's peak resident set size in kB, VmHWM in
// /proc/self/status.
func readPeakRSS() (int64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("cannot read the peak RSS: %w", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kB, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cannot read the peak RSS from %q: %w", line, err)
			}
			return kB, nil
		}
	}
	return 0, errors.New("cannot read the peak RSS: no VmHWM in /proc/self/status")
}

// CPUTime returns the CPU time the process has used, user and system.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// CarrotPublisher publishes body to queue through the default exchange from goroutines
// goroutines, each waiting for its own confirm: carrot's Publish as a program with many
// senders uses it.
func CarrotPublisher(conn *carrot.Conn, queue string, body []byte, goroutines int) Side {
	return func(b *testing.B, n int) {
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: queue})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		var next atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				msg := &carrot.Message{ContentType: carrot.Binary, Body: body}
				for next.Add(1) <= int64(n) {
					if err := p.Publish(b.Context(), msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}

// CarrotAsyncPublisher publishes body to queue from one goroutine with PublishAsync,
// keeping window messages unconfirmed.
func CarrotAsyncPublisher(conn *carrot.Conn, queue string, body []byte, window int) Side {
	return func(b *testing.B, n int) {
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: queue})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msg := &carrot.Message{ContentType: carrot.Binary, Body: body}
		pending := make([]*carrot.Confirmation, 0, window)
		for range n {
			if len(pending) == window {
				if err := pending[0].Err(); err != nil {
					b.Fatal(err)
				}
				pending = pending[1:]
			}
			pending = append(pending, p.PublishAsync(b.Context(), msg))
		}
		for _, c := range pending {
			if err := c.Err(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// CarrotConsumer consumes n messages of queue with a Consumer at prefetch, acking each in
// its handler.
func CarrotConsumer(conn *carrot.Conn, queue string, prefetch int) Side {
	return func(b *testing.B, n int) {
		ctx, stop := context.WithCancel(b.Context())
		defer stop()
		var got atomic.Int64
		c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{
			Queues:   []carrot.Queue{{Name: queue, Passive: true}},
			Prefetch: prefetch,
			Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				err := m.Ack(ctx)
				if got.Add(1) == int64(n) {
					stop()
				}
				return err
			}),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		c.Run(ctx)
	}
}
