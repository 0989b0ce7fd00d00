// Package topic matches AMQP topic patterns against routing keys.
//
// A routing key is a list of words separated by dots; the empty key has no words. In a
// pattern, "*" matches exactly one word and "#" matches zero or more words; any other word
// matches itself. So "*.stock.#" matches "usd.stock" and "eur.stock.db" but not
// "stock.nasdaq", "a.#" matches "a", "a.#.b" matches "a.b", and "#" matches the empty key.
// These are RabbitMQ's semantics, checked against RabbitMQ 3.10.
package topic

import "strings"

// Pattern is a compiled topic pattern. The zero Pattern matches only the empty key.
type Pattern struct {
	words []string
	exact bool // no wildcard: match by string comparison
	raw   string
}

// Compile splits pattern into words once, for matching many keys.
func Compile(pattern string) Pattern {
	p := Pattern{words: split(pattern), raw: pattern, exact: true}
	for _, w := range p.words {
		if w == "*" || w == "#" {
			p.exact = false
			break
		}
	}
	return p
}

// String returns the pattern as it was compiled.
func (p Pattern) String() string { return p.raw }

// Match reports whether key matches the pattern.
func (p Pattern) Match(key string) bool {
	if p.exact {
		return key == p.raw
	}
	return match(p.words, split(key))
}

// Match reports whether key matches pattern.
func Match(pattern, key string) bool {
	return Compile(pattern).Match(key)
}

// split returns the words of s; the empty string has none.
func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// match is the two-pointer wildcard match, with "#" as the multi-word wildcard and "*" as
// the single-word one. On a mismatch it backtracks to the last "#" seen and lets it take one
// more word; earlier "#"s never need to be revisited, so the match is O(len(p)*len(k)) at
// worst.
func match(p, k []string) bool {
	pi, ki := 0, 0
	hash, mark := -1, 0 // position of the last "#" in p, and of the key word it stands before
	for ki < len(k) {
		switch {
		case pi < len(p) && p[pi] == "#":
			hash, mark = pi, ki
			pi++
		case pi < len(p) && (p[pi] == "*" || p[pi] == k[ki]):
			pi++
			ki++
		case hash >= 0:
			mark++
			pi, ki = hash+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == "#" {
		pi++
	}
	return pi == len(p)
}
