package conformance

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/carrot-go/carrot"
)

// testList checks Conn.List: where the backend can list, what was declared is there, as
// declared, and each list is sorted; where it cannot, the error says so.
func testList(e *env) {
	x := e.exchange(carrot.Topic, "x")
	q := e.queue(carrot.Queue{Name: "q", MessageTTL: time.Minute})
	xs, qs, err := e.conn.List(e.ctx)
	if errors.Is(err, carrot.ErrUnsupported) {
		e.t.Logf("the backend cannot list: %v", err)
		return
	}
	if err != nil {
		e.t.Fatalf("list: %v", err)
	}
	if !slices.IsSortedFunc(xs, func(a, b carrot.Exchange) int { return strings.Compare(a.Name, b.Name) }) ||
		!slices.IsSortedFunc(qs, func(a, b carrot.Queue) int { return strings.Compare(a.Name, b.Name) }) {
		e.t.Errorf("lists not sorted by name: %v, %v", xs, qs)
	}
	i := slices.IndexFunc(xs, func(v carrot.Exchange) bool { return v.Name == x })
	if i < 0 || xs[i].Kind != carrot.Topic {
		e.t.Errorf("exchange %q (topic) not listed as declared: %v", x, xs)
	}
	j := slices.IndexFunc(qs, func(v carrot.Queue) bool { return v.Name == q })
	if j < 0 || qs[j].MessageTTL != time.Minute {
		e.t.Errorf("queue %q (message TTL 1m) not listed as declared: %v", q, qs)
	}
	for _, v := range xs {
		if v.Name == "" {
			e.t.Errorf("the default exchange is listed")
		}
	}
}
