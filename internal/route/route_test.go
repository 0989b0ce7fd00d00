package route

import (
	"slices"
	"testing"

	"github.com/carrot-go/carrot/backend"
)

func TestRoute(t *testing.T) {
	type bind struct{ queue, key string }
	for _, tc := range []struct {
		name  string
		kind  backend.ExchangeKind
		binds []bind
		key   string
		want  []string
	}{
		{"direct equal keys", backend.Direct, []bind{{"a", "k"}, {"b", "other"}, {"c", "k"}}, "k", []string{"a", "c"}},
		{"direct no match", backend.Direct, []bind{{"a", "k"}}, "x", nil},
		{"direct empty key", backend.Direct, []bind{{"a", ""}, {"b", "k"}}, "", []string{"a"}},
		{"fanout ignores keys", backend.Fanout, []bind{{"a", "x"}, {"b", ""}}, "k", []string{"a", "b"}},
		{"topic star is one word", backend.Topic, []bind{{"a", "*.b"}, {"b", "*"}}, "a.b", []string{"a"}},
		{"topic a.# matches a", backend.Topic, []bind{{"a", "a.#"}}, "a", []string{"a"}},
		{"topic # matches the empty key", backend.Topic, []bind{{"a", "#"}, {"b", "*"}}, "", []string{"a"}},
		{"topic a.#.b matches a.b", backend.Topic, []bind{{"a", "a.#.b"}}, "a.b", []string{"a"}},
		{"topic exact", backend.Topic, []bind{{"a", "a.b"}, {"b", "a.c"}}, "a.b", []string{"a"}},
		{"a queue once", backend.Topic, []bind{{"a", "#"}, {"b", "x.*"}, {"a", "x.y"}}, "x.y", []string{"a", "b"}},
		{"unknown kind routes as direct", "headers", []bind{{"a", "k"}, {"b", "*"}}, "k", []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := Exchange[string]{Kind: tc.kind}
			for _, b := range tc.binds {
				x.Bind(b.queue, b.key)
			}
			if got := x.Route(nil, tc.key); !slices.Equal(got, tc.want) {
				t.Errorf("Route(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

func TestBindUnbind(t *testing.T) {
	x := Exchange[int]{Kind: backend.Direct}
	x.Bind(1, "k")
	x.Bind(1, "k") // again: nothing changes
	x.Bind(2, "k")
	x.Bind(1, "j")
	if x.Len() != 3 {
		t.Fatalf("Len = %d after binding 1:k twice, 2:k and 1:j, want 3", x.Len())
	}
	if got := x.Route([]int{2}, "k"); !slices.Equal(got, []int{2, 1}) {
		t.Errorf("Route into [2] = %v, want [2 1]: queues already in qs are not added again", got)
	}
	if x.Unbind(3, "k") || !x.Unbind(2, "k") || x.Unbind(2, "k") {
		t.Errorf("Unbind reports removals wrongly")
	}
	if !x.UnbindQueue(1) || x.Len() != 0 || x.UnbindQueue(1) {
		t.Errorf("UnbindQueue(1): %d bindings left, want 0", x.Len())
	}
}

// The publish paths of the memory and redis backends route every message: routing into a
// slice with room allocates nothing.
func TestRouteAllocs(t *testing.T) {
	for _, kind := range []backend.ExchangeKind{backend.Direct, backend.Fanout, backend.Topic} {
		x := Exchange[*int]{Kind: kind}
		queues := make([]int, 8)
		for i := range queues {
			x.Bind(&queues[i], "orders.created")
		}
		qs := make([]*int, 0, len(queues))
		if n := testing.AllocsPerRun(100, func() { qs = x.Route(qs[:0], "orders.created") }); n != 0 || len(qs) != len(queues) {
			t.Errorf("%s: Route made %d queues with %v allocations, want %d with none", kind, len(qs), n, len(queues))
		}
	}
}

func BenchmarkRoute(b *testing.B) {
	for _, kind := range []backend.ExchangeKind{backend.Direct, backend.Fanout, backend.Topic} {
		b.Run(string(kind), func(b *testing.B) {
			x := Exchange[string]{Kind: kind}
			for _, q := range []string{"a", "b", "c", "d"} {
				x.Bind(q, "orders.created")
				x.Bind(q, "orders.*")
			}
			qs := make([]string, 0, 4)
			b.ReportAllocs()
			for b.Loop() {
				qs = x.Route(qs[:0], "orders.created")
			}
		})
	}
}
