package loglimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	steps := []struct {
		key      string
		at       time.Duration
		wantOK   bool
		wantHeld int
	}{
		{"dial", 0, true, 0},
		{"dial", 10 * time.Millisecond, false, 0},
		{"ack", 20 * time.Millisecond, true, 0}, // another key has a window of its own
		{"dial", 500 * time.Millisecond, false, 0},
		{"dial", 999 * time.Millisecond, false, 0},
		{"dial", time.Second, true, 3}, // the three held back since t0
		{"dial", 1500 * time.Millisecond, false, 0},
		{"ack", 1500 * time.Millisecond, true, 0},
		{"dial", 5 * time.Second, true, 1},
		{"dial", 7 * time.Second, true, 0},
	}
	for i, s := range steps {
		ok, held := l.Allow(s.key, t0.Add(s.at))
		if ok != s.wantOK || held != s.wantHeld {
			t.Errorf("step %d: Allow(%q, +%v) = %v, %d; want %v, %d", i, s.key, s.at, ok, held, s.wantOK, s.wantHeld)
		}
	}
}

func TestAllowPeriod(t *testing.T) {
	l := Limiter{Period: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	l.Allow("k", t0)
	if ok, _ := l.Allow("k", t0.Add(29*time.Second)); ok {
		t.Error("allowed within the period")
	}
	if ok, held := l.Allow("k", t0.Add(30*time.Second)); !ok || held != 1 {
		t.Errorf("Allow after the period = %v, %d; want true, 1", ok, held)
	}
}

// TestAllowBounded checks that a Limiter fed ever new keys stays bounded, and keeps
// counting the keys that have lines held back.
func TestAllowBounded(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	l.Allow("held", t0)
	l.Allow("held", t0) // held back: its count must survive
	for i := range 10 * maxKeys {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		if ok, _ := l.Allow(fmt.Sprint("key", i), now); !ok {
			t.Fatalf("new key %d not allowed", i)
		}
		if n := len(l.keys); n > maxKeys {
			t.Fatalf("%d keys remembered, want at most %d", n, maxKeys)
		}
	}
	if ok, held := l.Allow("held", t0.Add(time.Hour)); !ok || held != 1 {
		t.Errorf("Allow of the key with a line held back = %v, %d; want true, 1", ok, held)
	}
}

// records is a slog.Handler that keeps what it is given.
type records struct {
	mu sync.Mutex
	rs []slog.Record
}

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rs = append(h.rs, r)
	return nil
}
func (h *records) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *records) WithGroup(string) slog.Handler      { return h }

func held(r slog.Record) (n int64, found bool) {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == HeldFailures {
			n, found = a.Value.Int64(), true
			return false
		}
		return true
	})
	return n, found
}

func TestLog(t *testing.T) {
	h := new(records)
	logger := slog.New(h)
	l := Limiter{Period: 50 * time.Millisecond}
	ctx := context.Background()
	for i := range 5 {
		l.Log(ctx, logger, slog.LevelWarn, "carrot/test: ack failed", slog.Int("i", i))
	}
	l.Log(ctx, logger, slog.LevelWarn, "carrot/test: janitor failed")
	time.Sleep(60 * time.Millisecond)
	l.Log(ctx, logger, slog.LevelWarn, "carrot/test: ack failed", slog.Int("i", 5))

	var got []string
	for _, r := range h.rs {
		n, found := held(r)
		got = append(got, fmt.Sprintf("%s held=%d,%v", r.Message, n, found))
	}
	want := []string{
		"carrot/test: ack failed held=0,false",
		"carrot/test: janitor failed held=0,false",
		"carrot/test: ack failed held=4,true",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("logged:\n%q\nwant:\n%q", got, want)
	}
}
