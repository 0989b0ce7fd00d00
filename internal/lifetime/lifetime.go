// Package lifetime records how a backend's connection ends, for the Done and Err methods
// of backend.Conn: once, with the error that says why.
package lifetime

import (
	"sync"
	"sync/atomic"
)

// Ending is the end of a connection. Its zero value is a connection that has not ended;
// it is safe for concurrent use, and Err costs an atomic load, for the calls that check
// it every time. Embedded in a backend's Conn, it gives it Done and Err.
type Ending struct {
	once sync.Once // makes done
	done chan struct{}
	mu   sync.Mutex // serializes End
	err  atomic.Pointer[error]
}

func (e *Ending) init() { e.done = make(chan struct{}) }

// End ends the connection because of err, unless it ended before, and reports whether it
// did. err must not be nil.
func (e *Ending) End(err error) bool {
	e.once.Do(e.init)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err.Load() != nil {
		return false
	}
	e.err.Store(&err)
	close(e.done)
	return true
}

// Done returns a channel that is closed when the connection ends.
func (e *Ending) Done() <-chan struct{} {
	e.once.Do(e.init)
	return e.done
}

// Err returns why the connection ended, or nil if it has not.
func (e *Ending) Err() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}
