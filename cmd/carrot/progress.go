package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrot-go/carrot"
)

// tally counts what a consumer receives, through its middleware, and how each message is
// settled, through its OnSettle hook. The progress lines and summaries of consume and
// stats are printed from it, and it is safe for concurrent use.
type tally struct {
	start    time.Time // set before the consumer runs
	received atomic.Int64
	bytes    atomic.Int64                 // of the bodies received
	settled  [maxOutcome + 1]atomic.Int64 // by carrot.Outcome, settled without error
	failed   atomic.Int64                 // settling calls that returned an error
	keys     *keyCounts                   // per routing key, when set
}

// maxOutcome is the highest carrot.Outcome a tally counts; an Outcome it does not know
// counts as a settlement that failed.
const maxOutcome = carrot.DeadLettered

// middleware counts each message that reaches the handlers, then hands it on.
func (t *tally) middleware(next carrot.Handler) carrot.Handler {
	return carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
		t.received.Add(1)
		t.bytes.Add(int64(len(m.Body)))
		if t.keys != nil {
			t.keys.add(m.RoutingKey, len(m.Body))
		}
		return next.Receive(ctx, m)
	})
}

// onSettle is the consumer's OnSettle hook: it counts how a message was settled.
func (t *tally) onSettle(_ context.Context, _ *carrot.Message, o carrot.Outcome, err error) {
	if err != nil || o < 1 || o > maxOutcome {
		t.failed.Add(1)
		return
	}
	t.settled[o].Add(1)
}

// counts is what a tally held at one time.
type counts struct {
	received, bytes int64
	settled         [maxOutcome + 1]int64
	failed          int64
}

// inFlight is how many messages were received and not yet settled.
func (c counts) inFlight() int64 {
	n := c.received - c.failed
	for _, s := range c.settled {
		n -= s
	}
	return n
}

// snapshot is a tally's counts at a time, with the connection's state then.
type snapshot struct {
	counts
	at    time.Time
	state carrot.State
}

func (t *tally) snapshot(state func() carrot.State) snapshot {
	s := snapshot{at: time.Now()}
	// Settlements first, so that a message is never counted settled and not received.
	for o := range s.settled {
		s.settled[o] = t.settled[o].Load()
	}
	s.failed = t.failed.Load()
	s.received = t.received.Load()
	s.bytes = t.bytes.Load()
	if state != nil {
		s.state = state()
	}
	return s
}

// elapsed is the time from the start of the tally to s.
func (t *tally) elapsed(s snapshot) time.Duration { return s.at.Sub(t.start) }

// perSecond is n over d, 0 for an empty d.
func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// formatRate writes a rate with as many digits as say something: 1510, 12.5, 0.25.
func formatRate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r >= 100:
		return strconv.FormatFloat(r, 'f', 0, 64)
	case r >= 1:
		return strconv.FormatFloat(r, 'f', 1, 64)
	default:
		return strconv.FormatFloat(r, 'f', 2, 64)
	}
}

// formatBytes writes a number of bytes in B, KiB, MiB or GiB.
func formatBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatFloat(n, 'f', 0, 64) + " B"
	}
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		n /= unit
		if n < unit || u == "GiB" {
			return strconv.FormatFloat(n, 'f', 1, 64) + " " + u
		}
	}
	panic("unreachable")
}

// formatDuration rounds a run's duration to what is worth reading.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// recovering says, after a line's counts, that the connection is being recovered, and
// since when and why; "" while it is up (or after Close).
func recovering(st carrot.State) string {
	if st.Connected || st.Closed || st.Since.IsZero() {
		return ""
	}
	s := "; recovering since " + st.Since.Format("15:04:05")
	if st.Attempts > 0 {
		s += fmt.Sprintf(" (attempt %d)", st.Attempts)
	}
	if st.Err != nil {
		s += ": " + st.Err.Error()
	}
	return s
}

// reporter prints a progress line every so often, from snapshots of a tally, until it
// is stopped. A line that would only repeat the one before it (nothing received or
// settled since, nothing arriving, the connection up) is left out, but for one every
// waitingEvery, so that a quiet run still shows that it lives.
type reporter struct {
	done  chan struct{}
	ended chan struct{}
	once  sync.Once
}

// lineKey is what a progress line says beyond its rates and times: lines with the same
// key repeat each other.
type lineKey struct {
	counts
	moving     bool // something was received since the snapshot before
	recovering bool
}

// report starts a reporter that writes line(s, prev) on w every interval, for the
// snapshot s and the one before it, prev (at the start: all zero, at the tally's start).
// An empty line is not written. Its stop must be called.
func (t *tally) report(w io.Writer, every time.Duration, state func() carrot.State, line func(s, prev snapshot) string) *reporter {
	r := &reporter{done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(r.ended)
		ticker := time.NewTicker(every)
		defer ticker.Stop()
		prev := snapshot{at: t.start}
		var last lineKey
		var printed time.Time // when the last line was written
		for {
			select {
			case <-r.done:
				return
			case <-ticker.C:
			}
			s := t.snapshot(state)
			key := lineKey{counts: s.counts, moving: s.received != prev.received, recovering: recovering(s.state) != ""}
			if key != last || key.recovering || s.at.Sub(printed) >= waitingEvery {
				if l := line(s, prev); l != "" {
					fmt.Fprint(w, l)
					last, printed = key, s.at
				}
			}
			prev = s
		}
	}()
	return r
}

// stop stops the reporter and waits until it can print no more.
func (r *reporter) stop() {
	r.once.Do(func() { close(r.done) })
	<-r.ended
}

// minInterval is the shortest interval between progress lines: more often is noise.
const minInterval = 10 * time.Millisecond

// checkInterval refuses an interval between progress lines too short to read.
func checkInterval(flag string, d time.Duration) error {
	if d > 0 && d < minInterval {
		return usageError{fmt.Sprintf("--%s %v: too often; want 0 (no progress lines) or at least %v", flag, d, minInterval)}
	}
	return nil
}
