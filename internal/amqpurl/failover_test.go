package amqpurl

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

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
}
