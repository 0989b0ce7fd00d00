package amqp091

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

// TestTable converts headers for amqp091-go: integers that fit in 32 bits become int32,
// which it writes as 'I' (signed), the others stay int64 ('l'); nested tables become
// amqp.Table and lists stay []any, converted inside too.
func TestTable(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	got := table(map[string]any{
		"zero": int64(0), "minus1": int64(-1), "max32": int64(math.MaxInt32), "min32": int64(math.MinInt32),
		"over": int64(math.MaxInt32) + 1, "under": int64(math.MinInt32) - 1, "max64": int64(math.MaxInt64),
		"s": "x", "y": []byte{1}, "t": true, "f": 0.5, "d": ts, "n": nil,
		"m": map[string]any{"i": int64(-2), "l": []any{int64(3), int64(1) << 40, map[string]any{}}},
	})
	want := amqp.Table{
		"zero": int32(0), "minus1": int32(-1), "max32": int32(math.MaxInt32), "min32": int32(math.MinInt32),
		"over": int64(math.MaxInt32) + 1, "under": int64(math.MinInt32) - 1, "max64": int64(math.MaxInt64),
		"s": "x", "y": []byte{1}, "t": true, "f": 0.5, "d": ts, "n": nil,
		"m": amqp.Table{"i": int32(-2), "l": []any{int32(3), int64(1) << 40, amqp.Table(nil)}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("amqp091-go does not take the table: %v", err)
	}
}

// TestOptionsUserID checks the user name the Capabilities report as the only UserID RabbitMQ
// takes: the URL's, and none with a certificate login (EXTERNAL), whose name RabbitMQ
// derives itself.
func TestOptionsUserID(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"amqp://localhost/", "guest"},
		{"amqp://alice:pw@localhost/", "alice"},
		{"amqp://alice:pw@localhost/?auth_mechanism=amqplain", "alice"},
	} {
		o, err := ParseURL(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.userID(); got != tc.want {
			t.Errorf("%s: userID() = %q, want %q", tc.url, got, tc.want)
		}
	}
	if got := (Options{Username: "alice", AuthMechanism: "EXTERNAL"}).userID(); got != "" {
		t.Errorf("userID() with EXTERNAL = %q, want none", got)
	}
}

// TestCheckTableEntries: a message with more headers, or a header holding a larger table
// or list, than amqp091-go reads back (8192 entries) is refused before it is sent, as an
// Invalid error, while one at the limit goes.
func TestCheckTableEntries(t *testing.T) {
	c := &Conn{maxHead: math.MaxInt}
	c.maxBody.Store(math.MaxInt64)
	entries := func(n int) map[string]any {
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprint("h", i)] = int64(i)
		}
		return m
	}
	for _, tt := range []struct {
		name    string
		headers map[string]any
		refused bool
	}{
		{"8192 headers", entries(8192), false},
		{"8193 headers", entries(8193), true},
		{"a table of 8193 entries", map[string]any{"t": entries(8193)}, true},
		{"a list of 8193 elements", map[string]any{"l": make([]any, 8193)}, true},
		{"a list of 8192 elements", map[string]any{"l": make([]any, 8192)}, false},
	} {
		err := c.check(&backend.Publishing{Message: backend.Message{Headers: tt.headers}})
		switch {
		case tt.refused && backend.CodeOf(err) != backend.Invalid:
			t.Errorf("%s: check = %v, want an Invalid error", tt.name, err)
		case !tt.refused && err != nil:
			t.Errorf("%s: check = %v, want nil", tt.name, err)
		}
	}
}
