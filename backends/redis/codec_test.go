package redis

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHeadersCodec encodes headers of every type, tables and lists nested in each other,
// and decodes them back; the stored form of a nested value is pinned, as other processes
// read it.
func TestHeadersCodec(t *testing.T) {
	ts := time.Unix(1700000000, 0).UTC()
	h := map[string]any{
		"s": "välue", "y": []byte{0, 255}, "t": true, "i": int64(-1), "f": 0.5, "d": ts, "n": nil,
		"m": map[string]any{"l": []any{int64(1), nil, map[string]any{}, []any{"deep"}}},
		"a": []any{},
	}
	enc, err := encodeHeaders(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHeaders(enc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h, got); diff != "" {
		t.Errorf("decoded headers differ (-encoded +decoded):\n%s", diff)
	}
	nested, err := encodeHeaders(map[string]any{"m": map[string]any{"l": []any{int64(1), nil}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"m":["m","{\"l\":[\"a\",\"[[\\\"i\\\",\\\"1\\\"],[\\\"n\\\"]]\"]}"]}`; nested != want {
		t.Errorf("stored form %s, want %s", nested, want)
	}
	for _, bad := range []string{`{"m":["m","{"]}`, `{"a":["a","[[\"x\",\"1\"]]"]}`, `{"a":["a","[[]]"]}`} {
		if _, err := decodeHeaders(bad); err == nil {
			t.Errorf("decodeHeaders(%s) = nil error, want one", bad)
		}
	}
}
