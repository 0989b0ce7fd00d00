// Package loglimit holds back log lines that repeat, for carrot and its backends: a line
// of one key (such as one failure, or one format string of a client library) at most once
// a period, about a second, and the next line logged says how many were held back. A
// broker that is down makes the same failure happen many times a second; its log should
// say so once a second, with the count, not flood.
package loglimit

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"
)

// HeldFailures is the attribute of a failure line logged by [Limiter.Log] that counts the
// lines of the same failure held back since the previous one.
const HeldFailures = "failures_not_logged"

// maxKeys bounds the keys a Limiter remembers. Keys are fixed texts (messages, format
// strings), so this is never reached in practice; past it, lines of new keys are logged
// without being counted.
const maxKeys = 256

// A Limiter limits lines by key. Its zero value allows a line of each key once a second.
// It is safe for concurrent use.
type Limiter struct {
	// Period is the least time between two lines of a key logged; a second when zero.
	Period time.Duration

	mu   sync.Mutex
	keys map[string]*window
}

// window is what a Limiter knows of one key.
type window struct {
	next time.Time // when the next line of the key may be logged
	held int       // lines held back since the last one logged
}

// Allow reports whether a line of key may be logged at now and, when it may, how many
// lines of key were held back since the last one logged. A line that may not be logged
// is counted as held back.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	if w == nil {
		if l.keys == nil {
			l.keys = make(map[string]*window)
		}
		if len(l.keys) >= maxKeys {
			l.forget(now)
		}
		if len(l.keys) >= maxKeys {
			return true, 0
		}
		w = new(window)
		l.keys[key] = w
	}
	if now.Before(w.next) {
		w.held++
		return false, 0
	}
	held = w.held
	w.next, w.held = now.Add(cmp.Or(l.Period, time.Second)), 0
	return true, held
}

// forget drops the keys whose period is over and that held nothing back: the next line
// of such a key is logged anyway, and it has nothing to count. The caller holds l.mu.
func (l *Limiter) forget(now time.Time) {
	for k, w := range l.keys {
		if !now.Before(w.next) && w.held == 0 {
			delete(l.keys, k)
		}
	}
}

// Log logs a failure to logger, at level, with msg and attrs, unless a line with the same
// msg was logged less than a period ago. The first line after some were held back has
// the attribute [HeldFailures] with their count. msg is the key: a failure is the same
// failure when its message is, whatever its attributes (the error's text, a queue).
func (l *Limiter) Log(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	if !logger.Enabled(ctx, level) {
		return
	}
	ok, held := l.Allow(msg, time.Now())
	if !ok {
		return
	}
	if held > 0 {
		attrs = append(attrs, slog.Int(HeldFailures, held))
	}
	logger.LogAttrs(ctx, level, msg, attrs...)
}
