package topic

import (
	"strings"
	"testing"
)

// cases are checked against RabbitMQ 3.10's topic exchange; the conformance suite runs the
// same edge cases on every backend.
var cases = []struct {
	pattern, key string
	want         bool
}{
	{"*.stock.#", "usd.stock", true},
	{"*.stock.#", "eur.stock.db", true},
	{"*.stock.#", "stock.nasdaq", false},
	{"a.#", "a", true},
	{"a.#", "a.b.c", true},
	{"a.#", "b.a", false},
	{"#", "", true},
	{"#", "a.b", true},
	{"#.#", "", true},
	{"a.#.b", "a.b", true},
	{"a.#.b", "a.x.y.b", true},
	{"a.#.b", "a.b.c", false},
	{"#.a", "a", true},
	{"#.a", "x.y.a", true},
	{"#.a", "a.x", false},
	{"*", "a", true},
	{"*", "", false},
	{"*", "a.b", false},
	{"a.*", "a", false},
	{"a.*", "a.", true}, // the empty word after the dot is a word
	{"a.*.#", "a", false},
	{"a.*.#", "a.b", true},
	{"#.*", "", false},
	{"#.*", "a", true},
	{"a.b", "a.b", true},
	{"a.b", "a.bc", false},
	{"", "", true},
	{"", "a", false},
	{"a.#.#.b", "a.b", true},
	{"#.b.#", "a.b.c", true},
	{"#.b.#.d", "b.c.b.d", true},
	{"#.b.#.d", "b.c.b.e", false},
	{"a", "#", false},
	{"*.#.*", "a", false},
	{"*.#.*", "a.b", true},
}

func TestMatch(t *testing.T) {
	for _, c := range cases {
		if got := Match(c.pattern, c.key); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
		if got := reference(split(c.pattern), split(c.key)); got != c.want {
			t.Errorf("reference(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// reference is the matcher written from the definition, without regard to speed.
func reference(p, k []string) bool {
	if len(p) == 0 {
		return len(k) == 0
	}
	switch p[0] {
	case "#":
		return reference(p[1:], k) || len(k) > 0 && reference(p, k[1:])
	case "*":
		return len(k) > 0 && reference(p[1:], k[1:])
	default:
		return len(k) > 0 && k[0] == p[0] && reference(p[1:], k[1:])
	}
}

func FuzzMatch(f *testing.F) {
	for _, c := range cases {
		f.Add(c.pattern, c.key)
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		// The reference is exponential in the number of "#"s; keep inputs small.
		if len(pattern) > 64 || len(key) > 64 || strings.Count(pattern, "#") > 6 {
			t.Skip()
		}
		got := Match(pattern, key)
		want := reference(split(pattern), split(key))
		if got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v", pattern, key, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	p := Compile("*.stock.#")
	for b.Loop() {
		p.Match("eur.stock.db.x")
	}
}
