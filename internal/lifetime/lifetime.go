// Package lifetime records how a backend's connection ends, for the Done and Err methods
// of backend.Conn: once, with the error that says why.
package lifetime

import (
	"sync"
	"sync/atomic"
	"time"
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

// CloseTimeout is how long a backend's Close waits for its broker to answer the closing
// of the connection before it drops the socket.
const CloseTimeout = 2 * time.Second

// Close runs close, which closes a connection with the broker's answer, and returns its
// error; if close has not returned after CloseTimeout (the broker does not answer), it
// calls drop, which closes the socket under it, and waits for close to return.
func Close(close func() error, drop func()) error {
	done := make(chan error, 1)
	go func() { done <- close() }()
	t := time.NewTimer(CloseTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		drop()
		return <-done
	}
}
