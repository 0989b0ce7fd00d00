package amqpurl

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// Hosts are the addresses a Connector connects to, with which one the next connection
// tries first. All its methods may be called concurrently.
type Hosts struct {
	prefix string   // starts the errors of Connect
	addrs  []string // HOST:PORT each

	mu   sync.Mutex
	next int // the index in addrs of the host the next connection tries first
}

// NewHosts returns the Hosts of addrs (at least one), whose connection errors start with
// prefix ("carrot/amqp091: connect to amqp://node1:5672,node2:5672/").
func NewHosts(prefix string, addrs []string) *Hosts {
	return &Hosts{prefix: prefix, addrs: addrs}
}

// Connect opens a connection with dial, which connects to one address within ctx. It
// tries each address once, in the URL's order but starting with the one after the address
// of the previous connection that opened (the first address the first time), so that a
// host that has just failed is tried last, and returns the first connection that opens.
//
// When ctx has a deadline, each address gets its share of the time left: an equal part
// for each address still to try, but at least [MinHostShare] (and never past the
// deadline). So a host that swallows packets, or accepts and never answers, costs its
// share and not the whole attempt. If ctx ends before every address was tried, the next
// Connect starts with the first address not tried.
//
// The errors of dial should be backend errors (see [backend.Errorf]) that do not name the
// address. When every address fails, the error starts with the prefix given to
// [NewHosts], names each address and its failure (with several), and is of code Invalid
// when every failure was Invalid (the URL's settings are refused: retrying is
// pointless), Unavailable otherwise.
func Connect[C any](ctx context.Context, h *Hosts, dial func(ctx context.Context, addr string) (C, error)) (C, error) {
	h.mu.Lock()
	start := h.next
	h.mu.Unlock()
	n := len(h.addrs)
	failed := &hostErrors{}
	for i := range n {
		j := (start + i) % n
		c, err := dialShare(ctx, n-i, h.addrs[j], dial)
		if err == nil {
			h.startAt(j + 1)
			return c, nil
		}
		failed.addrs = append(failed.addrs, h.addrs[j])
		failed.errs = append(failed.errs, err)
		if ctx.Err() != nil {
			for k := i + 1; k < n; k++ {
				failed.untried = append(failed.untried, h.addrs[(start+k)%n])
			}
			h.startAt(j + 1) // the first host not tried
			break
		}
	}
	code := backend.Invalid
	for _, err := range failed.errs {
		if backend.CodeOf(err) != backend.Invalid {
			code = backend.Unavailable
		}
	}
	var zero C
	if n == 1 {
		return zero, backend.Errorf(code, "%s: %w", h.prefix, failed.errs[0])
	}
	return zero, backend.Errorf(code, "%s: %w", h.prefix, failed)
}

// startAt makes the next Connect start with the address at index i (modulo their number).
func (h *Hosts) startAt(i int) {
	h.mu.Lock()
	h.next = i % len(h.addrs)
	h.mu.Unlock()
}

// MinHostShare is the least time [Connect] gives an address, when the deadline allows.
const MinHostShare = 2 * time.Second

// dialShare dials addr, one of left addresses still to try, within its share of the time
// left before ctx's deadline.
func dialShare[C any](ctx context.Context, left int, addr string, dial func(ctx context.Context, addr string) (C, error)) (C, error) {
	deadline, ok := ctx.Deadline()
	if !ok || left == 1 {
		return dial(ctx, addr)
	}
	share := max(time.Until(deadline)/time.Duration(left), MinHostShare)
	ctx, cancel := context.WithTimeout(ctx, share) // never past the deadline of ctx
	defer cancel()
	return dial(ctx, addr)
}

// hostErrors are the failures of a connection to several hosts.
type hostErrors struct {
	addrs   []string // the hosts tried, in order
	errs    []error  // the failure of each
	untried []string // the hosts not tried, as the context ended
}

func (e *hostErrors) Error() string {
	var b strings.Builder
	for i, addr := range e.addrs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(addr + ": " + e.errs[i].Error())
	}
	if len(e.untried) > 0 {
		b.WriteString("; not tried: " + strings.Join(e.untried, ", "))
	}
	return b.String()
}

func (e *hostErrors) Unwrap() []error { return e.errs }
