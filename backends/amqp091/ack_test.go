package amqp091

import (
	"math/rand/v2"
	"testing"
)

// TestAckerFloor settles delivery tags in random orders and checks, after each, that the
// floor is the highest tag below which every tag is settled, and that the spans above it
// hold exactly the other settled tags: a multiple ack names a tag up to the floor, and
// acks nothing unsettled.
func TestAckerFloor(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		n := 1 + r.IntN(60)
		tags := make([]uint64, n)
		for i := range tags {
			tags[i] = uint64(i + 1)
		}
		// Workers finish out of order, but not by much: shuffle within a window.
		w := 1 + r.IntN(8)
		for i := range tags {
			j := min(i+r.IntN(w), n-1)
			tags[i], tags[j] = tags[j], tags[i]
		}
		a := &acker{}
		settled := make(map[uint64]bool)
		for _, tag := range tags {
			a.settled(tag)
			settled[tag] = true
			var floor uint64
			for settled[floor+1] {
				floor++
			}
			if a.floor != floor {
				t.Fatalf("seed %d: after settling %v the floor is %d, want %d", seed, tags, a.floor, floor)
			}
			count := 0
			for i, s := range a.above {
				if s.lo <= a.floor+1 || s.hi < s.lo || (i > 0 && s.lo <= a.above[i-1].hi+1) {
					t.Fatalf("seed %d: spans %v above floor %d overlap, touch or are out of order", seed, a.above, a.floor)
				}
				for tag := s.lo; tag <= s.hi; tag++ {
					if !settled[tag] {
						t.Fatalf("seed %d: span %v holds unsettled tag %d", seed, s, tag)
					}
					count++
				}
			}
			if want := len(settled) - int(floor); count != want {
				t.Fatalf("seed %d: spans %v hold %d tags, want %d", seed, a.above, count, want)
			}
		}
		if a.floor != uint64(n) || len(a.above) != 0 {
			t.Fatalf("seed %d: everything settled, floor %d spans %v; want floor %d and no spans", seed, a.floor, a.above, n)
		}
	}
}
