package memory

import (
	"context"
	"sync"

	"github.com/carrot-go/carrot/backend"
)

// Link simulates the network between connections and their in-process broker, so that
// tests can break it the way a real network breaks: set it in [Options.Link], and every
// connection of that Connector goes through it. The zero Link carries everything. Its
// methods may be called concurrently, and it satisfies the conformance suite's Breaker.
type Link struct {
	mu      sync.Mutex
	conns   map[*Conn]struct{}
	blocked bool
	stalled chan struct{} // closed by Unblock; nil when not stalled
}

// Cut loses every connection on the link at once, as a reset does: each one's Done
// channel closes, its calls fail as Unavailable, and the broker takes back what it held.
// New connections go through.
func (l *Link) Cut() {
	l.mu.Lock()
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	clear(l.conns)
	l.mu.Unlock()
	for _, c := range conns {
		c.end(errLost)
	}
}

// Block cuts every connection and makes new ones fail until Unblock.
func (l *Link) Block() {
	l.mu.Lock()
	l.blocked = true
	l.mu.Unlock()
	l.Cut()
}

// Stall stops the link until Unblock: every call of its connections, and every new
// connection, waits for it, or for its context to end. Nothing is lost.
func (l *Link) Stall() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled == nil {
		l.stalled = make(chan struct{})
	}
}

// Unblock ends a Block or a Stall.
func (l *Link) Unblock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.blocked = false
	if l.stalled != nil {
		close(l.stalled)
		l.stalled = nil
	}
}

// attach adds a new connection to the link, unless the link is blocked; through a stalled
// link it waits first.
func (l *Link) attach(ctx context.Context, c *Conn) error {
	if err := l.wait(ctx, nil); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked {
		return backend.Errorf(backend.Unavailable, "carrot/memory: connection refused: the link is blocked")
	}
	if l.conns == nil {
		l.conns = make(map[*Conn]struct{})
	}
	l.conns[c] = struct{}{}
	return nil
}

// detach removes a closed connection from the link.
func (l *Link) detach(c *Conn) {
	if l == nil {
		return
	}
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// wait returns once the link carries, or with ctx's error, or with the error that ended c
// (when not nil). A nil Link always carries.
func (l *Link) wait(ctx context.Context, c *Conn) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	stalled := l.stalled
	l.mu.Unlock()
	if stalled == nil {
		return nil
	}
	var done <-chan struct{}
	if c != nil {
		done = c.done
	}
	select {
	case <-stalled:
		return nil
	case <-done:
		return nil // the caller finds out why
	case <-ctx.Done():
		return ctx.Err()
	}
}
