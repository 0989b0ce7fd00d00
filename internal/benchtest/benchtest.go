// Package benchtest runs a backend's raw client and carrot side by side in one benchmark,
// so that their rates compare on the same broker, at the same moment.
package benchtest

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// A Side handles n messages and returns when they are done.
type Side func(b *testing.B, n int)

// A Contestant is a named Side.
type Contestant struct {
	Name string
	Run  Side
}

// Rounds is how many times each contestant runs, alternately, so that a change of pace
// of the broker meanwhile falls on all of them.
const Rounds = 6

// SideBySide runs each contestant on b.N messages in all, over Rounds alternating rounds,
// with prepare (untimed) before each run, and reports each one's rate, allocations and
// CPU time per message, and for each pair {carrot, raw} of contestant names, the rate of
// the first as a share of the second's ("carrot/raw").
func SideBySide(b *testing.B, prepare func(b *testing.B, n int), sides []Contestant, pairs ...[2]string) {
	per := max(b.N/Rounds, 1)
	elapsed := make([]time.Duration, len(sides))
	cpu := make([]time.Duration, len(sides))
	allocs := make([]uint64, len(sides))
	b.ResetTimer()
	for range Rounds {
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
	total := float64(per * Rounds)
	rates := make(map[string]float64)
	for i, s := range sides {
		rates[s.Name] = total / elapsed[i].Seconds()
		b.ReportMetric(rates[s.Name], s.Name+"-msgs/s")
		b.ReportMetric(float64(allocs[i])/total, s.Name+"-allocs/msg")
		b.ReportMetric(float64(cpu[i].Microseconds())/total, s.Name+"-cpu-µs/msg")
	}
	for _, p := range pairs {
		b.ReportMetric(rates[p[0]]/rates[p[1]], p[0]+"/"+p[1])
	}
	b.ReportMetric(0, "ns/op") // the rates above say it better
}

// CPUTime returns the CPU time the process has used, user and system.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
