package conformance

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// proxyPatience bounds every wait for something that must happen, so that a broken proxy
// fails the test instead of hanging it.
const proxyPatience = 5 * time.Second

// proxyEcho is a TCP server on 127.0.0.1 that writes back every byte it reads.
type proxyEcho struct {
	ln       net.Listener
	wg       sync.WaitGroup
	accepted atomic.Int64
	ended    chan struct{} // receives once for each connection that ended, up to its capacity

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// startProxyEcho starts a proxyEcho that is closed when t ends.
func startProxyEcho(t *testing.T) *proxyEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &proxyEcho{ln: ln, ended: make(chan struct{}, 1024), conns: make(map[net.Conn]struct{})}
	e.wg.Add(1)
	go e.serve()
	t.Cleanup(e.close)
	return e
}

func (e *proxyEcho) addr() string { return e.ln.Addr().String() }

func (e *proxyEcho) serve() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.accepted.Add(1)
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			c.Close()
			continue
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go func() {
			defer e.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if _, werr := c.Write(buf[:n]); werr != nil || err != nil {
					break
				}
			}
			c.Close()
			e.mu.Lock()
			delete(e.conns, c)
			e.mu.Unlock()
			select {
			case e.ended <- struct{}{}:
			default:
			}
		}()
	}
}

func (e *proxyEcho) close() {
	e.ln.Close()
	e.mu.Lock()
	e.closed = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// newProxyTest returns a Proxy and the address it forwards to an echo server. When t ends,
// both are closed and no goroutine started since newProxyTest may remain.
func newProxyTest(t *testing.T) (*Proxy, *proxyEcho, string) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	echo := startProxyEcho(t)
	p := NewProxy()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: got %v, want nil", err)
		}
	})
	addr, err := p.Forward(echo.addr())
	if err != nil {
		t.Fatalf("Forward: got %v, want nil", err)
	}
	return p, echo, addr
}

// dialProxy connects to addr; the connection is closed when t ends.
func dialProxy(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("Dial: got %v, want nil", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// proxyRoundTrip writes data to c and checks that all of it comes back.
func proxyRoundTrip(t *testing.T, c net.Conn, data []byte) {
	t.Helper()
	written := proxyWrite(c, data)
	proxyReadBack(t, c, data)
	if err := <-written; err != nil {
		t.Fatalf("Write: got %v, want nil", err)
	}
}

// proxyWrite writes data to c in a goroutine, in pieces, and sends the result on the
// channel it returns: the echo can only send back as much as the reader takes.
func proxyWrite(c net.Conn, data []byte) <-chan error {
	written := make(chan error, 1)
	go func() {
		for len(data) > 0 {
			n := min(len(data), 1000)
			if _, err := c.Write(data[:n]); err != nil {
				written <- err
				return
			}
			data = data[n:]
		}
		written <- nil
	}()
	return written
}

// proxyReadBack reads len(want) bytes from c and checks that they are want.
func proxyReadBack(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(proxyPatience))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back: got %d bytes and %v, want %d bytes", n, err, len(want))
	}
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("read back: byte %d: got %d, want %d", i, got[i], want[i])
	}
}

// proxyExpectBroken checks that reading c fails promptly, with an end of stream or a reset.
func proxyExpectBroken(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(proxyPatience))
	n, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: got %d bytes and %v, want an end of stream or a reset", n, err)
	}
}

// proxyExpectRefused checks that a new connection to addr fails promptly: the dial itself
// may see the reset, or else the first read.
func proxyExpectRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, proxyPatience)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Dial: got %v, want a reset", err)
		}
		return
	}
	defer c.Close()
	proxyExpectBroken(t, c)
}

// proxyExpectSilent checks that nothing arrives on c for a short while.
func proxyExpectSilent(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while stalled: got %d bytes and %v, want %v", n, err, os.ErrDeadlineExceeded)
	}
}

// proxyPattern returns n bytes that are unlikely to survive a loss or a reordering unseen.
func proxyPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestProxyRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"one byte", []byte{0}},
		{"text", []byte("hello, broker")},
		{"more than the buffers hold", proxyPattern(4 << 20)},
	}
	p, echo, addr := newProxyTest(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxyRoundTrip(t, dialProxy(t, addr), tt.data)
		})
	}
	if again, err := p.Forward(echo.addr()); err != nil || again != addr {
		t.Errorf("Forward again: got %q, %v, want %q, nil", again, err, addr)
	}
	other := startProxyEcho(t)
	otherAddr, err := p.Forward(other.addr())
	if err != nil || otherAddr == addr {
		t.Errorf("Forward other target: got %q, %v, want an address other than %q", otherAddr, err, addr)
	}
	if got, want := p.Accepted(echo.addr()), len(tests); got != want {
		t.Errorf("Accepted: got %d, want %d", got, want)
	}
	if got := p.Accepted(other.addr()); got != 0 {
		t.Errorf("Accepted other target: got %d, want 0", got)
	}
}

func TestProxyForwardErrors(t *testing.T) {
	closed := NewProxy()
	closed.Close()
	tests := []struct {
		name   string
		p      *Proxy
		target string
		is     error // if not nil, the error must wrap it
	}{
		{"target without a port", NewProxy(), "localhost", nil},
		{"closed proxy", closed, "127.0.0.1:5672", net.ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.p.Close()
			addr, err := tt.p.Forward(tt.target)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Errorf("Forward(%q): got %q, %v, want an error (wrapping %v)", tt.target, addr, err, tt.is)
			}
		})
	}
}

func TestProxyBreak(t *testing.T) {
	tests := []struct {
		name    string
		brk     func(p *Proxy)
		refuses bool // whether new connections fail until Unblock
	}{
		{"Cut", (*Proxy).Cut, false},
		{"Block", (*Proxy).Block, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, echo, addr := newProxyTest(t)
			msg := []byte("before")
			c := dialProxy(t, addr)
			proxyRoundTrip(t, c, msg)
			tt.brk(p)
			proxyExpectBroken(t, c)
			select {
			case <-echo.ended:
			case <-time.After(proxyPatience):
				t.Fatalf("the broker side of the connection did not end within %v", proxyPatience)
			}
			attempts := 2
			if tt.refuses {
				proxyExpectRefused(t, addr)
				p.Unblock()
				attempts++
			}
			proxyRoundTrip(t, dialProxy(t, addr), []byte("after"))
			if got := p.Accepted(echo.addr()); got != attempts {
				t.Errorf("Accepted: got %d, want %d", got, attempts)
			}
			if got, want := echo.accepted.Load(), int64(2); got != want {
				t.Errorf("connections reaching the broker: got %d, want %d", got, want)
			}
		})
	}
}

func TestProxyStall(t *testing.T) {
	tests := []struct {
		name     string
		existing bool // whether the connection is carried before the stall
		data     []byte
	}{
		{"existing connection", true, []byte("one two three")},
		{"existing connection, more than the buffers hold", true, proxyPattern(4 << 20)},
		{"connection made during the stall", false, []byte("one two three")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, echo, addr := newProxyTest(t)
			var c net.Conn
			if tt.existing {
				c = dialProxy(t, addr)
				proxyRoundTrip(t, c, []byte("before"))
			}
			p.Stall()
			if !tt.existing {
				c = dialProxy(t, addr)
			}
			written := proxyWrite(c, tt.data)
			proxyExpectSilent(t, c)
			if !tt.existing {
				if got := echo.accepted.Load(); got != 0 {
					t.Errorf("connections reaching the broker while stalled: got %d, want 0", got)
				}
			}
			p.Unblock()
			proxyReadBack(t, c, tt.data)
			if err := <-written; err != nil {
				t.Fatalf("Write: got %v, want nil", err)
			}
			proxyRoundTrip(t, c, []byte("after"))
		})
	}
}

func TestProxyClose(t *testing.T) {
	tests := []struct {
		name  string
		state func(p *Proxy)
	}{
		{"carrying", func(*Proxy) {}},
		{"stalled", (*Proxy).Stall},
		{"blocked", (*Proxy).Block},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, addr := newProxyTest(t)
			c := dialProxy(t, addr)
			proxyRoundTrip(t, c, []byte("before"))
			tt.state(p)
			late, lateErr := net.Dial("tcp", addr) // refused at once if blocked
			if err := p.Close(); err != nil {
				t.Fatalf("Close: got %v, want nil", err)
			}
			proxyExpectBroken(t, c)
			if lateErr == nil {
				defer late.Close()
				proxyExpectBroken(t, late)
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close again: got %v, want nil", err)
			}
		})
	}
}

func TestProxyDialFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close() // nothing listens on target any more
	before := goleak.IgnoreCurrent()
	p := NewProxy()
	addr, err := p.Forward(target)
	if err != nil {
		t.Fatalf("Forward: got %v, want nil", err)
	}
	proxyExpectRefused(t, addr)
	if got := p.Accepted(target); got != 1 {
		t.Errorf("Accepted: got %d, want 1", got)
	}
	p.Close()
	goleak.VerifyNone(t, before)
}

func TestProxyConcurrentControl(t *testing.T) {
	p, _, addr := newProxyTest(t)
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for range 3 {
		clients.Add(1)
		go func() { // a client that keeps talking, whatever happens to its connections
			defer clients.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					continue
				}
				c.SetDeadline(time.Now().Add(50 * time.Millisecond))
				c.Write([]byte("ping"))
				io.ReadFull(c, make([]byte, 4))
				c.Close()
			}
		}()
	}
	ops := []func(){p.Cut, p.Block, p.Stall, p.Unblock, p.Stall, p.Cut, p.Unblock}
	var controllers sync.WaitGroup
	for range 2 {
		controllers.Add(1)
		go func() {
			defer controllers.Done()
			for i := range 100 {
				ops[i%len(ops)]()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	controllers.Wait()
	close(stop)
	clients.Wait()
	p.Unblock()
	proxyRoundTrip(t, dialProxy(t, addr), []byte("after"))
}
