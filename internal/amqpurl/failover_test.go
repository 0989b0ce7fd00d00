package amqpurl

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// fakeDial returns a dial that records the addresses it is asked for, and connects to
// those in up, failing with an Unavailable error for the others.
func fakeDial(tried *[]string, up ...string) func(ctx context.Context, addr string) (string, error) {
	return func(ctx context.Context, addr string) (string, error) {
		*tried = append(*tried, addr)
		if slices.Contains(up, addr) {
			return addr, nil
		}
		return "", backend.Errorf(backend.Unavailable, "dial tcp: connection refused")
	}
}

func TestConnectOrder(t *testing.T) {
	h := NewHosts("test: connect to amqp://a,b,c/", []string{"a", "b", "c"})
	for i, step := range []struct {
		up    []string // the hosts that accept connections
		tried []string // the hosts Connect tries, in order
		got   string   // the host it connects to, "" for none
	}{
		{[]string{"a", "b", "c"}, []string{"a"}, "a"}, // the first connection starts with the first host
		{[]string{"b", "c"}, []string{"b"}, "b"},      // then with the one after the last that opened
		{[]string{"a"}, []string{"c", "a"}, "a"},      // b, the one that just failed, would be tried last
		{nil, []string{"b", "c", "a"}, ""},            // every host once
		{[]string{"a", "b", "c"}, []string{"b"}, "b"}, // a failure moves nothing
		{[]string{"b"}, []string{"c", "a", "b"}, "b"}, // the same host again, when it is the only one up
	} {
		var tried []string
		got, err := Connect(t.Context(), h, fakeDial(&tried, step.up...))
		if got != step.got || (err == nil) != (step.got != "") || !slices.Equal(tried, step.tried) {
			t.Errorf("connection %d with %q up: tried %q and got %q, %v; want tried %q, got %q", i+1, step.up, tried, got, err, step.tried, step.got)
		}
	}
}

func TestConnectErrors(t *testing.T) {
	errRefused := errors.New("connection refused")
	invalid := backend.Errorf(backend.Invalid, "username or password not allowed")
	dial := func(fails map[string]error) func(ctx context.Context, addr string) (int, error) {
		return func(ctx context.Context, addr string) (int, error) {
			return 0, fails[addr]
		}
	}
	h := NewHosts("test: connect to amqp://a:1,b:2/", []string{"a:1", "b:2"})

	_, err := Connect(t.Context(), h, dial(map[string]error{"a:1": backend.Errorf(backend.Unavailable, "dial: %w", errRefused), "b:2": invalid}))
	want := "test: connect to amqp://a:1,b:2/: a:1: dial: connection refused; b:2: username or password not allowed"
	if err == nil || err.Error() != want {
		t.Errorf("Connect = %v, want %q", err, want)
	}
	if backend.CodeOf(err) != backend.Unavailable || !errors.Is(err, errRefused) || !errors.Is(err, invalid) {
		t.Errorf("Connect with a host refused and one refusing the login = %v (code %v), want Unavailable, wrapping both", err, backend.CodeOf(err))
	}

	_, err = Connect(t.Context(), h, dial(map[string]error{"a:1": invalid, "b:2": invalid}))
	if backend.CodeOf(err) != backend.Invalid {
		t.Errorf("Connect with every host refusing the login = %v (code %v), want Invalid", err, backend.CodeOf(err))
	}

	// Without a code, a failure counts as Unavailable.
	_, err = Connect(t.Context(), h, dial(map[string]error{"a:1": invalid, "b:2": errRefused}))
	if backend.CodeOf(err) != backend.Unavailable {
		t.Errorf("Connect with a failure without a code = %v (code %v), want Unavailable", err, backend.CodeOf(err))
	}

	one := NewHosts("test: connect to amqp://a:1/", []string{"a:1"})
	_, err = Connect(t.Context(), one, dial(map[string]error{"a:1": invalid}))
	if want := "test: connect to amqp://a:1/: username or password not allowed"; err == nil || err.Error() != want || backend.CodeOf(err) != backend.Invalid {
		t.Errorf("Connect to one host = %v, want %q of code Invalid", err, want)
	}
}

func TestConnectStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	h := NewHosts("test: connect to amqp://a,b,c/", []string{"a", "b", "c"})
	var tried []string
	_, err := Connect(ctx, h, func(ctx context.Context, addr string) (int, error) {
		tried = append(tried, addr)
		if addr == "b" {
			cancel() // as if the context's deadline passed during this dial
			return 0, backend.Errorf(backend.Unavailable, "%w", context.Canceled)
		}
		return 0, backend.Errorf(backend.Unavailable, "connection refused")
	})
	if !slices.Equal(tried, []string{"a", "b"}) {
		t.Errorf("tried %q after the context ended on b, want a and b only", tried)
	}
	if err == nil || !errors.Is(err, context.Canceled) || !strings.HasSuffix(err.Error(), "b: context canceled; not tried: c") || backend.CodeOf(err) != backend.Unavailable {
		t.Errorf("Connect = %v, want an Unavailable error wrapping context.Canceled that says c was not tried", err)
	}

	// The next connection starts with c, the first host not tried: a host that hangs
	// until the context ends cannot keep the others from ever being tried.
	tried = nil
	if _, err := Connect(t.Context(), h, fakeDial(&tried, "a")); err != nil || !slices.Equal(tried, []string{"c", "a"}) {
		t.Errorf("the connection after one cut short on b tried %q (%v), want c, then a", tried, err)
	}
}

// TestConnectShares checks that each host gets an equal part of the time left before the
// context's deadline for the hosts still to try, at least MinHostShare, and the last one
// all of it. (The hosts here fail at once, so the time left is the whole timeout.)
func TestConnectShares(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		want    []time.Duration // each host's time, within half a second
	}{
		{30 * time.Second, []time.Duration{10 * time.Second, 15 * time.Second, 30 * time.Second}},
		{30 * time.Second, []time.Duration{15 * time.Second, 30 * time.Second}},
		{3 * time.Second, []time.Duration{MinHostShare, MinHostShare, 3 * time.Second}},
		{30 * time.Second, []time.Duration{30 * time.Second}},
	} {
		h := NewHosts("test: connect", []string{"a", "b", "c"}[:len(tc.want)])
		ctx, cancel := context.WithTimeout(t.Context(), tc.timeout)
		deadline, _ := ctx.Deadline()
		var got []time.Duration
		Connect(ctx, h, func(ctx context.Context, addr string) (int, error) {
			d, ok := ctx.Deadline()
			if !ok || d.After(deadline) {
				t.Errorf("%v, %d hosts: %s dialed with deadline %v (%v), want one before the attempt's", tc.timeout, len(tc.want), addr, d, ok)
			}
			got = append(got, time.Until(d))
			return 0, backend.Errorf(backend.Unavailable, "connection refused")
		})
		cancel()
		if len(got) != len(tc.want) {
			t.Errorf("%v, %d hosts: %d dials", tc.timeout, len(tc.want), len(got))
			continue
		}
		for i := range got {
			if d := got[i] - tc.want[i]; d < -time.Second/2 || d > time.Second/2 {
				t.Errorf("%v, %d hosts: host %d had %v, want %v", tc.timeout, len(tc.want), i+1, got[i], tc.want[i])
			}
		}
	}
}
