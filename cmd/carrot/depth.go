package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/carrot-go/carrot"
)

// watchQueue is stats --queue: it prints the queue's counts at once and then every
// interval, until ctx ends, after forDur (if not 0) or after count rows (if not 0).
func (c *cli) watchQueue(ctx context.Context, rawURL, queue string, interval, forDur time.Duration, count int, asJSON bool) error {
	conn, err := c.open(ctx, rawURL, "stats", true)
	if err != nil {
		return err
	}
	defer conn.Close()
	first, err := conn.InspectQueue(ctx, queue)
	switch {
	case errors.Is(err, carrot.ErrNotFound):
		return fmt.Errorf("queue %q does not exist: stats --queue watches a queue that exists, and declares none (carrot declare --queue makes one)", queue)
	case err != nil:
		return err
	}
	runCtx := ctx
	if forDur > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, forDur)
		defer cancel()
	}
	fmt.Fprintf(c.stderr, "carrot stats: watching queue %q every %v, taking nothing (Ctrl-C to stop)\n", queue, interval)
	w := &depthWriter{out: c.stdout, queue: queue, json: asJSON}
	if err := w.row(depthSample{at: time.Now(), QueueStats: first}); err != nil {
		return err
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for rows := 1; count == 0 || rows < count; rows++ {
		select {
		case <-runCtx.Done():
			return nil // interrupted, or --for
		case <-ticker.C:
		}
		// A sample waits for a connection being recovered for an interval at most.
		sctx, cancel := context.WithTimeout(runCtx, max(interval, time.Second))
		st, err := conn.InspectQueue(sctx, queue)
		cancel()
		switch {
		case runCtx.Err() != nil:
			return nil
		case errors.Is(err, carrot.ErrNotFound):
			return fmt.Errorf("queue %q was deleted", queue)
		case errors.Is(err, carrot.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded):
			fmt.Fprintf(c.stderr, "carrot stats: no counts at %s: %v%s\n", time.Now().Format("15:04:05"), err, recovering(conn.State()))
			st = carrot.QueueStats{Ready: -1, Unacked: -1, Consumers: -1}
		case err != nil:
			return err
		}
		if err := w.row(depthSample{at: time.Now(), QueueStats: st}); err != nil {
			return err
		}
	}
	return nil
}

// depthSample is a queue's counts at one time.
type depthSample struct {
	at time.Time
	carrot.QueueStats
}

// depthWriter prints the rows of stats --queue: a table whose header comes before the
// first row, or JSON objects.
type depthWriter struct {
	out    io.Writer
	queue  string
	json   bool
	prev   *depthSample
	header bool
}

// depthRow is a row of stats --queue --json; null for a count the broker cannot tell.
type depthRow struct {
	Time      time.Time `json:"time"`
	Queue     string    `json:"queue"`
	Ready     *int64    `json:"ready"`
	Unacked   *int64    `json:"unacked"`
	Consumers *int64    `json:"consumers"`
	// ReadyRate is how many ready messages more there are than at the row before, per
	// second; negative when there are fewer.
	ReadyRate *float64 `json:"ready_per_second"`
}

// row prints the row of s, with the rate of change since the row before.
func (w *depthWriter) row(s depthSample) error {
	var rate *float64
	if p := w.prev; p != nil && p.Ready >= 0 && s.Ready >= 0 {
		r := perSecond(s.Ready-p.Ready, s.at.Sub(p.at))
		rate = &r
	}
	w.prev = &s
	r := depthRow{Time: s.at, Queue: w.queue, Ready: known(s.Ready), Unacked: known(s.Unacked), Consumers: known(int64(s.Consumers)), ReadyRate: rate}
	if w.json {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w.out, "%s\n", b)
		return err
	}
	if !w.header {
		w.header = true
		if _, err := fmt.Fprintf(w.out, "%-8s  %10s  %10s  %10s  %10s\n", "TIME", "READY", "UNACKED", "CONSUMERS", "READY/S"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w.out, "%-8s  %10s  %10s  %10s  %10s\n", s.at.Format("15:04:05"), formatCount(r.Ready), formatCount(r.Unacked), formatCount(r.Consumers), signedRate(rate))
	return err
}

// known returns a count of carrot.QueueStats, nil when unknown (-1).
func known(n int64) *int64 {
	if n < 0 {
		return nil
	}
	return &n
}

// formatCount writes a count, "-" when unknown.
func formatCount(n *int64) string {
	if n == nil {
		return "-"
	}
	return strconv.FormatInt(*n, 10)
}

// signedRate writes a rate of change with its sign, "-" when unknown.
func signedRate(r *float64) string {
	switch {
	case r == nil:
		return "-"
	case *r == 0:
		return "0"
	case *r > 0:
		return "+" + formatRate(*r)
	default:
		return "-" + formatRate(-*r)
	}
}
