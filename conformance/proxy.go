package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// errProxyClosed is returned by [Proxy.Forward] after [Proxy.Close].
var errProxyClosed = fmt.Errorf("conformance: proxy closed: %w", net.ErrClosed)

// Proxy carries TCP connections from loopback listeners to brokers, and breaks them on
// request, so that a test can check that a client recovers from a network failure.
//
// A Proxy only copies bytes, so it works for any protocol over TCP. Each target gets a
// listener of its own (see [Proxy.Forward]); [Proxy.Cut], [Proxy.Block] and [Proxy.Stall]
// act on the connections of every target at once. When either side of a connection closes,
// the proxy closes both.
//
// All methods may be called concurrently, with each other and with traffic. The zero value
// is not usable: call [NewProxy], and [Proxy.Close] when done.
type Proxy struct {
	ctx    context.Context // canceled by Close, to end dials in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // counts every goroutine the proxy starts

	mu        sync.Mutex
	closed    bool
	blocked   bool
	gate      chan struct{} // closed, unless the proxy is stalled
	listeners map[string]*proxyListener
	pipes     map[*proxyPipe]struct{}
}

// proxyListener is the listener of one target.
type proxyListener struct {
	ln       net.Listener
	addr     string
	accepted int // guarded by Proxy.mu
}

// proxyPipe is one carried connection: client was accepted, server dialed.
type proxyPipe struct {
	client net.Conn
	server net.Conn      // nil until dialed; guarded by Proxy.mu
	ended  bool          // guarded by Proxy.mu
	done   chan struct{} // closed when the pipe ends
}

// NewProxy returns a Proxy that carries nothing yet.
func NewProxy() *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	gate := make(chan struct{})
	close(gate)
	return &Proxy{
		ctx:       ctx,
		cancel:    cancel,
		gate:      gate,
		listeners: make(map[string]*proxyListener),
		pipes:     make(map[*proxyPipe]struct{}),
	}
}

// Forward returns the address ("127.0.0.1:PORT") of a listener whose connections the proxy
// carries to target (a host:port). Calling it again with the same target returns the same
// address. It listens on 127.0.0.1 only.
func (p *Proxy) Forward(target string) (string, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return "", fmt.Errorf("conformance: proxy target: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return "", errProxyClosed
	}
	if l, ok := p.listeners[target]; ok {
		return l.addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("conformance: proxy for %s: %w", target, err)
	}
	l := &proxyListener{ln: ln, addr: ln.Addr().String()}
	p.listeners[target] = l
	p.wg.Add(1)
	go p.accept(target, l)
	return l.addr, nil
}

// Cut ends every connection the proxy carries at once, on both sides (each side sees its
// connection reset), and goes on carrying new ones.
func (p *Proxy) Cut() { p.endAll(false) }

// Block ends every connection, like [Proxy.Cut], and refuses new ones until
// [Proxy.Unblock]: a new connection is accepted and reset at once, so that a client sees its
// connect or handshake fail promptly.
func (p *Proxy) Block() { p.endAll(true) }

// Stall stops carrying bytes, in both directions, on every connection, existing and new,
// until [Proxy.Unblock]; nothing is closed. A connection accepted during a stall is not
// connected to its target until Unblock. Bytes already read from one side are held and
// delivered after Unblock, in order; nothing is lost or reordered. An end of stream read
// during a stall is held too. Bytes the proxy had read before Stall was called may still
// be delivered.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // already stalled
	}
}

// Unblock ends a Block or a Stall: stalled connections carry their bytes again, and new
// connections are carried.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// Accepted returns how many connections the proxy has accepted for target so far (for
// tests that count connection attempts), including those it refused during a Block.
func (p *Proxy) Accepted(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[target]; ok {
		return l.accepted
	}
	return 0
}

// Close closes every listener and connection, and waits for the proxy's goroutines to end.
// Close is idempotent; after it, Forward returns an error that wraps [net.ErrClosed].
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.cancel()
	var errs []error
	for _, l := range p.listeners {
		if err := l.ln.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	pipes := p.pipesLocked()
	p.mu.Unlock()
	for _, pc := range pipes {
		p.end(pc, false)
	}
	p.wg.Wait()
	return errors.Join(errs...)
}

// accept carries the connections of l to target until l is closed.
func (p *Proxy) accept(target string, l *proxyListener) {
	defer p.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure, such as too many open files: try again shortly.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		p.mu.Lock()
		l.accepted++
		if p.closed || p.blocked {
			p.mu.Unlock()
			shutConn(c, true)
			continue
		}
		pc := &proxyPipe{client: c, done: make(chan struct{})}
		p.pipes[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(target, pc)
	}
}

// serve connects pc to target, once the proxy is not stalled, and carries its bytes.
func (p *Proxy) serve(target string, pc *proxyPipe) {
	defer p.wg.Done()
	if !p.pass(pc) {
		return
	}
	var d net.Dialer
	server, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		p.end(pc, true)
		return
	}
	p.mu.Lock()
	if pc.ended {
		p.mu.Unlock()
		shutConn(server, true)
		return
	}
	pc.server = server
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		p.carry(pc, server, pc.client)
	}()
	p.carry(pc, pc.client, server)
}

// carry copies bytes from src to dst, holding them while the proxy is stalled, until
// either side fails; then it ends pc.
func (p *Proxy) carry(pc *proxyPipe, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.pass(pc) {
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.end(pc, false)
}

// pass waits while the proxy is stalled, without spinning, and reports whether pc may go
// on: false once pc has ended.
func (p *Proxy) pass(pc *proxyPipe) bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		select {
		case <-pc.done:
			return false
		default:
			return true
		}
	case <-pc.done:
		return false
	}
}

// endAll ends every pipe, after refusing new connections if block is set.
func (p *Proxy) endAll(block bool) {
	p.mu.Lock()
	if block {
		p.blocked = true
	}
	pipes := p.pipesLocked()
	p.mu.Unlock()
	for _, pc := range pipes {
		p.end(pc, true)
	}
}

// pipesLocked returns the pipes the proxy carries; p.mu must be held.
func (p *Proxy) pipesLocked() []*proxyPipe {
	pipes := make([]*proxyPipe, 0, len(p.pipes))
	for pc := range p.pipes {
		pipes = append(pipes, pc)
	}
	return pipes
}

// end closes both sides of pc, resetting them if reset is set, and forgets it. Ending a
// pipe twice does nothing.
func (p *Proxy) end(pc *proxyPipe, reset bool) {
	p.mu.Lock()
	if pc.ended {
		p.mu.Unlock()
		return
	}
	pc.ended = true
	close(pc.done)
	delete(p.pipes, pc)
	server := pc.server
	p.mu.Unlock()
	shutConn(pc.client, reset)
	if server != nil {
		shutConn(server, reset)
	}
}

// shutConn closes c; with reset, it discards unsent data and makes the peer see a reset
// instead of an end of stream.
func shutConn(c net.Conn, reset bool) {
	if tc, ok := c.(*net.TCPConn); ok && reset {
		tc.SetLinger(0) // best effort: Close below is what matters
	}
	c.Close()
}
