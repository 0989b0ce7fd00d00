package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
)

// go-redis replaces a broken network connection of its pool without a word, so a Conn
// watches its network connections itself: one that fails (reset, closed by the other
// side) ends the Conn, and carrot recovers it as it recovers every backend's. A read or
// write that times out (a call's context ended) does not: the monitor finds out whether
// Redis answers. Nor does a failure while a batch holding a body larger than Redis may take
// is being sent: Redis resets the connection of such a request, and publishBatch tells
// that refusal from a lost connection (it asks Redis for its limit on another one).

// dialer returns the go-redis dialer of c: base, or go-redis's own when nil (with TLS
// when tlsConfig is set), with each connection watched.
func (c *Conn) dialer(base func(ctx context.Context, network, addr string) (net.Conn, error), tlsConfig *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if base == nil {
		base = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, addr)
			if err != nil || tlsConfig == nil {
				return nc, err
			}
			tc := tls.Client(nc, tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, err
			}
			return tc, nil
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := base(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &watchedConn{Conn: nc, c: c}, nil
	}
}

// watchedConn is a network connection of the pool whose failure ends the Conn.
type watchedConn struct {
	net.Conn
	c      *Conn
	closed atomic.Bool // by go-redis
	read   bool        // something was read
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 && !w.read {
		w.read = true
		if !strings.ContainsRune("+-:$*_,#!=(%~>|", rune(p[0])) {
			w.c.foreignReply.Store(string(p[:min(n, 8)]))
		}
	}
	if err != nil {
		w.failed(err)
	}
	return n, err
}

func (w *watchedConn) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	if err != nil {
		w.failed(err)
	}
	return n, err
}

func (w *watchedConn) Close() error {
	w.closed.Store(true)
	return w.Conn.Close()
}

// failed ends the Conn if err says the connection broke.
func (w *watchedConn) failed(err error) {
	if w.closed.Load() || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return
	}
	if w.c.sendingLarge.Load() > 0 {
		return // publishBatch tells a refused large message from a lost connection
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.As(err, new(*net.OpError)) {
		w.c.lose(err)
	}
}
