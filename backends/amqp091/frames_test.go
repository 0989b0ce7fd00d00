package amqp091

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The encoder below writes AMQP 0-9-1 by hand, so that tests can write what amqp091-go
// cannot ('L', unknown types, broken lengths).

func rawCat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
func rawU8(v uint8) []byte          { return []byte{v} }
func rawU16(v uint16) []byte        { return binary.BigEndian.AppendUint16(nil, v) }
func rawU32(v uint32) []byte        { return binary.BigEndian.AppendUint32(nil, v) }
func rawU64(v uint64) []byte        { return binary.BigEndian.AppendUint64(nil, v) }

// rawShortstr encodes a short string.
func rawShortstr(s string) []byte { return rawCat(rawU8(uint8(len(s))), []byte(s)) }

// rawLongstr encodes a long string.
func rawLongstr(b []byte) []byte { return rawCat(rawU32(uint32(len(b))), b) }

// rawTable encodes a field table of the given entries.
func rawTable(entries ...[]byte) []byte { return rawLongstr(rawCat(entries...)) }

// rawEntry encodes a table entry: the key, then value, a field value with its type octet.
func rawEntry(key string, value []byte) []byte { return rawCat(rawShortstr(key), value) }

// rawField encodes a field value of type typ.
func rawField(typ byte, data ...[]byte) []byte { return rawCat(append([][]byte{{typ}}, data...)...) }

// rawFtable encodes a field value of type 'F'.
func rawFtable(entries ...[]byte) []byte { return rawField('F', rawTable(entries...)) }

// rawFarray encodes a field value of type 'A'.
func rawFarray(values ...[]byte) []byte { return rawField('A', rawLongstr(rawCat(values...))) }

// rawHeader encodes a content header payload of class basic for a 100-octet body.
func rawHeader(flags uint16, properties ...[]byte) []byte {
	return rawCat(rawU16(60), rawU16(0), rawU64(100), rawU16(flags), rawCat(properties...))
}

// rawWithHeaders encodes a content header payload whose only property is the headers table.
func rawWithHeaders(entries ...[]byte) []byte { return rawHeader(0x2000, rawTable(entries...)) }

// rawFrame encodes a frame.
func rawFrame(typ byte, channel uint16, payload []byte) []byte {
	return rawCat(rawU8(typ), rawU16(channel), rawU32(uint32(len(payload))), payload, rawU8(amqpFrameEnd))
}

// rawMethod encodes a method frame.
func rawMethod(channel, class, id uint16, args ...[]byte) []byte {
	return rawFrame(amqpFrameMethod, channel, rawCat(rawU16(class), rawU16(id), rawCat(args...)))
}

// rawStart is a connection.start, a server's first frame.
var rawStart = rawMethod(0, 10, 10, rawU8(0), rawU8(9), rawTable(), rawLongstr([]byte("PLAIN")), rawLongstr([]byte("en_US")))

// rawDelivery encodes a basic.deliver on channel, for consumer tag ctag-CHANNEL, with the
// content header payload header and a body of 100 octets.
func rawDelivery(channel uint16, header []byte) []byte {
	return rawCat(
		rawMethod(channel, 60, 60, rawShortstr(fmt.Sprintf("ctag-%d", channel)), rawU64(1), rawU8(0), rawShortstr(""), rawShortstr("queue")),
		rawFrame(amqpFrameHeader, channel, header),
		rawFrame(amqpFrameBody, channel, bytes.Repeat([]byte("b"), 100)),
	)
}

// rawNested wraps value in n containers, from the inside out: tables ('F'), arrays ('A') or
// both in turn ('*').
func rawNested(kind byte, n int, value []byte) []byte {
	for i := range n {
		if kind == 'F' || kind == '*' && i%2 == 0 {
			value = rawFtable(rawEntry("n", value))
		} else {
			value = rawFarray(value)
		}
	}
	return value
}

// rawEntries encodes n entries of type 'I' keyed k0, k1..., with keys[i] for the i-th one
// when given.
func rawEntries(n int, keys map[int]string) []byte {
	var b []byte
	for i := range n {
		key, ok := keys[i]
		if !ok {
			key = fmt.Sprintf("k%d", i)
		}
		b = append(b, rawEntry(key, rawField('I', rawU32(uint32(i))))...)
	}
	return b
}

// headerCases are content header payloads, and why amqp091-go v1.16.0 refuses each ("" if
// it does not). The comments cite its read.go, and TestWatchAgreesWithAMQP091 checks each
// case with amqp091-go itself.
var headerCases = []struct {
	name    string
	payload []byte
	want    string
}{
	{"no properties", rawHeader(0), ""},
	{"every property", rawHeader(0xfffc,
		rawShortstr("text/plain"), rawShortstr("gzip"), rawTable(rawEntry("k", rawField('S', rawLongstr([]byte("v"))))),
		rawU8(2), rawU8(5), rawShortstr("c"), rawShortstr("r"), rawShortstr("60000"), rawShortstr("m"), rawU64(1700000000),
		rawShortstr("t"), rawShortstr("guest"), rawShortstr("app"), rawShortstr("")), ""},
	{"every field type amqp091-go reads", rawWithHeaders( // readFieldDepth's cases, read.go:223-334
		rawEntry("t", rawField('t', rawU8(1))), rawEntry("B", rawField('B', rawU8(255))), rawEntry("b", rawField('b', rawU8(0x80))),
		rawEntry("s", rawField('s', rawU16(0x8000))), rawEntry("u", rawField('u', rawU16(65535))),
		rawEntry("I", rawField('I', rawU32(1<<31))), rawEntry("i", rawField('i', rawU32(math.MaxUint32))),
		rawEntry("l", rawField('l', rawU64(1<<63))), rawEntry("f", rawField('f', rawU32(math.Float32bits(1.5)))),
		rawEntry("d", rawField('d', rawU64(math.Float64bits(2.5)))), rawEntry("D", rawField('D', rawU8(2), rawU32(12345))),
		rawEntry("S", rawField('S', rawLongstr([]byte("string")))), rawEntry("T", rawField('T', rawU64(1700000000))),
		rawEntry("V", rawField('V')), rawEntry("x", rawField('x', rawLongstr([]byte{0, 1, 2}))),
		rawEntry("A", rawFarray(rawField('I', rawU32(1)), rawField('S', rawLongstr([]byte("a"))), rawFarray(), rawFtable())),
		rawEntry("F", rawFtable(rawEntry("k", rawField('V')))),
		rawEntry("empty", rawField('S', rawLongstr(nil)))), ""},
	{"key seen twice", rawWithHeaders(rawEntry("k", rawField('V')), rawEntry("k", rawField('t', rawU8(0)))), ""},
	// readTableDepth and readArrayDepth fail when depth > maxFieldDepth (read.go:209, 350,
	// 392), the headers table being at depth 0 (readTable, read.go:345).
	{"tables nested 32 deep", rawWithHeaders(rawEntry("deep", rawNested('F', 32, rawField('V')))), ""},
	{"arrays nested 32 deep", rawWithHeaders(rawEntry("deep", rawNested('A', 32, rawField('V')))), ""},
	{"tables and arrays nested 32 deep", rawWithHeaders(rawEntry("deep", rawNested('*', 32, rawField('V')))), ""},
	{"tables nested 33 deep", rawWithHeaders(rawEntry("deep", rawNested('F', 33, rawField('V')))),
		`header "deep"` + strings.Repeat(`["n"]`, 32) + `: tables and arrays nested more than 32 deep`},
	{"arrays nested 33 deep", rawWithHeaders(rawEntry("deep", rawNested('A', 33, rawField('V')))),
		`header "deep"` + strings.Repeat(`[0]`, 32) + `: tables and arrays nested more than 32 deep`},
	// readTableDepth fails when len(table) >= maxContainerElements before an entry is
	// stored (read.go:217, 377); len counts distinct keys. readArrayDepth likewise
	// (read.go:421).
	{"8192 entries", rawWithHeaders(rawEntries(8192, nil)), ""},
	{"8193 entries", rawWithHeaders(rawEntries(8193, nil)), "headers table: table has more than 8192 entries"},
	{"8193 entries, a key twice", rawWithHeaders(rawEntries(8193, map[int]string{100: "k99"})), ""},
	{"8194 entries, a key twice", rawWithHeaders(rawEntries(8194, map[int]string{100: "k99"})),
		"headers table: table has more than 8192 entries"},
	{"8192 distinct keys, then one seen before", rawWithHeaders(rawEntries(8193, map[int]string{8192: "k0"})),
		"headers table: table has more than 8192 entries"},
	{"nested table of 8193 entries", rawWithHeaders(rawEntry("t", rawField('F', rawTable(rawEntries(8193, nil))))),
		`header "t": table has more than 8192 entries`},
	{"8192 array elements", rawWithHeaders(rawEntry("a", rawFarray(bytes.Repeat(rawField('V'), 8192)))), ""},
	{"8193 array elements", rawWithHeaders(rawEntry("a", rawFarray(bytes.Repeat(rawField('V'), 8193)))),
		`header "a": array has more than 8192 elements`},
	// readFieldDepth's default case (read.go:334).
	{"'L'", rawWithHeaders(rawEntry("n", rawField('L', rawU64(1<<40)))), `header "n": field type 'L' is not supported by amqp091-go`},
	{"'U'", rawWithHeaders(rawEntry("u", rawField('U', rawU16(1)))), `header "u": field type 'U' is not supported by amqp091-go`},
	{"type 0", rawWithHeaders(rawEntry("z", rawField(0))), `header "z": field type '\x00' is not supported by amqp091-go`},
	{"type 0xff", rawWithHeaders(rawEntry("z", rawField(0xff))), `header "z": field type '\xff' is not supported by amqp091-go`},
	{"'L' after good entries", rawWithHeaders(rawEntry("a", rawField('I', rawU32(1))), rawEntry("n", rawField('L', rawU64(1)))),
		`header "n": field type 'L' is not supported by amqp091-go`},
	{"'L' deep inside", rawWithHeaders(rawEntry("x-death", rawFarray(rawFtable(rawEntry("count", rawField('L', rawU64(1))))))),
		`header "x-death"[0]["count"]: field type 'L' is not supported by amqp091-go`},
	{"'L' second in an array", rawWithHeaders(rawEntry("a", rawFarray(rawField('V'), rawField('L', rawU64(1))))),
		`header "a"[1]: field type 'L' is not supported by amqp091-go`},
	// Lengths: 'x' is an int32 that must not be negative (read.go:320); readLongstr and
	// readArrayDepth refuse lengths above math.MaxInt32 (read.go:159, 404).
	{"negative byte array length", rawWithHeaders(rawEntry("x", rawField('x', rawU32(math.MaxUint32)))),
		`header "x": byte array length -1 is negative`},
	{"string length above 2^31-1", rawWithHeaders(rawEntry("s", rawField('S', rawU32(1<<31)))),
		`header "s": string length 2147483648 is more than 2^31-1`},
	{"array length above 2^31-1", rawWithHeaders(rawEntry("a", rawField('A', rawU32(1<<31)))),
		`header "a": array length 2147483648 is more than 2^31-1`},
	{"table length above 2^31-1", rawHeader(0x2000, rawU32(math.MaxUint32)),
		"headers table: table length 4294967295 is more than 2^31-1"},
	// Running out of octets: everything fails, except in an array, where
	// readArrayDepth takes io.EOF itself for its end (read.go:415), even in the middle of
	// an element (binary.Read and io.ReadFull return io.EOF when they read nothing) or
	// from an array or table nested in it.
	{"headers table longer than the frame", rawHeader(0x2000, rawU32(10), rawEntry("a", rawField('V'))),
		"headers table: truncated"},
	{"value cut short", rawWithHeaders(rawEntry("a", rawField('I', rawU16(0)))), `header "a": truncated`},
	{"value missing", rawWithHeaders(rawShortstr("a")), `header "a": truncated`},
	{"key cut short", rawWithHeaders(rawU8(5), []byte("ab")), "headers table: key truncated"},
	{"nested key cut short", rawWithHeaders(rawEntry("t", rawField('F', rawLongstr(rawCat(rawU8(5), []byte("ab")))))),
		`header "t": key truncated`},
	{"decimal without its value", rawWithHeaders(rawEntry("d", rawField('D', rawU8(2)))), `header "d": truncated`},
	{"array element cut short", rawWithHeaders(rawEntry("a", rawField('A', rawU32(3), []byte{'I', 0, 0}))),
		`header "a"[0]: truncated`},
	{"array element without a value", rawWithHeaders(rawEntry("a", rawField('A', rawU32(1), []byte{'I'})), rawEntry("b", rawField('V'))), ""},
	{"array string without its octets", rawWithHeaders(rawEntry("a", rawField('A', rawU32(5), []byte{'S'}, rawU32(5))), rawEntry("b", rawField('V'))), ""},
	{"array decimal without its value", rawWithHeaders(rawEntry("a", rawField('A', rawU32(2), []byte{'D', 2})), rawEntry("b", rawField('V'))), ""},
	{"array table with a key missing", rawWithHeaders(rawEntry("a", rawFarray(rawField('F', rawLongstr(rawU8(5)))))), ""},
	{"array table with a key cut short", rawWithHeaders(rawEntry("a", rawFarray(rawField('F', rawLongstr(rawCat(rawU8(5), []byte("ab"))))))),
		`header "a"[0]: key truncated`},
	{"array longer than its table", rawWithHeaders(rawEntry("a", rawField('A', rawU32(1000), rawField('I', rawU32(1))))), ""},
	{"array longer than its table, element cut short", rawWithHeaders(rawEntry("a", rawField('A', rawU32(1000), []byte{'I', 0}))),
		`header "a"[0]: truncated`},
	{"array shorter than its elements", rawWithHeaders(rawEntry("a", rawField('A', rawU32(2), []byte{'t', 1})), rawEntry("b", rawField('V'))), ""},
	{"property truncated", rawHeader(0x1000), "property delivery-mode: truncated"},
	{"shortstr property truncated", rawHeader(0x0080, rawU8(3), []byte("m")), "property message-id: truncated"},
	{"timestamp truncated", rawHeader(0x0040, rawU32(1)), "property timestamp: truncated"},
	{"payload shorter than its fixed fields", rawCat(rawU16(60), rawU16(0), rawU8(1)), "content header body-size: truncated"},
	{"empty payload", nil, "content header class-id: truncated"},
	// parseHeaderFrame reads one flags word, whatever bit 0 says (read.go:457), drains
	// the rest (read.go:534), and reads basic's properties whatever the class.
	{"flags continued", rawCat(rawHeader(0x2001, rawTable(rawEntry("a", rawField('V')))), rawU16(0x8000)), ""},
	{"octets after the properties", rawHeader(0x1000, rawU8(2), []byte("padding")), ""},
	{"class other than basic", rawCat(rawU16(50), rawU16(0), rawU64(0), rawU16(0x2000), rawTable(rawEntry("a", rawField('L', rawU64(1))))),
		`header "a": field type 'L' is not supported by amqp091-go`},
}

// chunkConn is a net.Conn whose Reads return stream chunk octets at a time.
type chunkConn struct {
	net.Conn // nil: only Read is used
	stream   []byte
	chunk    int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.stream) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.stream)
	c.stream = c.stream[n:]
	return n, nil
}

// readThrough reads stream through watch in chunks of chunk octets, checks that every
// octet comes through, and returns the watchedConn.
func readThrough(t *testing.T, stream []byte, chunk int) *watchedConn {
	t.Helper()
	w := watch(&chunkConn{stream: stream, chunk: chunk})
	got, err := io.ReadAll(w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stream) {
		t.Fatalf("read %d octets that differ from the %d written", len(got), len(stream))
	}
	return w
}

func TestWatchHeaderFrames(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			w := readThrough(t, rawCat(rawStart, rawDelivery(1, tc.payload), rawDelivery(2, rawHeader(0))), 4096)
			p, ok := w.poison()
			if got, want := ok, tc.want != ""; got != want {
				t.Fatalf("poison: got found %v (%q), want %v", got, p.reason, want)
			}
			if p.reason != tc.want {
				t.Errorf("got reason %q, want %q", p.reason, tc.want)
			}
			if want := (poisonFrame{channel: 1, reason: tc.want, consumerTag: "ctag-1"}); ok && p != want {
				t.Errorf("got %+v, want %+v", p, want)
			}
			if w.foreign() {
				t.Errorf("got foreign %q, want not foreign", w.foreignProtocol())
			}
		})
	}
}

// TestWatchAgreesWithAMQP091 sends each content header to amqp091-go itself, through
// watch, and checks that both agree on it.
func TestWatchAgreesWithAMQP091(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			refused, why, w := amqp091Verdict(t, rawFrame(amqpFrameHeader, 1, tc.payload), 0)
			p, ok := w.poison()
			if ok != refused {
				t.Errorf("got poison %v (%q), want %v as amqp091-go (%s)", ok, p.reason, refused, why)
			}
			if refused != (tc.want != "") {
				t.Errorf("amqp091-go refuses: got %v (%s), want %v", refused, why, tc.want != "")
			}
		})
	}
}

// amqp091Verdict opens an amqp091-go connection to a fake server that sends frames, then
// connection.close, and reports whether amqp091-go failed on the frames instead
// (with what error), and the watchedConn it read through, whose Reads return at most
// chunk octets if chunk is not 0.
func amqp091Verdict(t *testing.T, frames []byte, chunk int) (refused bool, why string, w *watchedConn) {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	send := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- serveFrames(server, send, frames) }()

	cfg := amqp.Config{
		FrameSize: 1 << 20,
		Dial: func(network, addr string) (net.Conn, error) {
			if chunk > 0 {
				w = watch(smallReads{client, chunk})
			} else {
				w = watch(client)
			}
			return w, nil
		},
	}
	c, err := amqp.DialConfig("amqp://guest:guest@fake/?heartbeat=0", cfg)
	if err != nil {
		t.Fatalf("dial: %v (server: %v)", err, <-served)
	}
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	close(send)
	var e *amqp.Error
	select {
	case e = <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("amqp091-go did not close the connection")
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	switch {
	case e == nil:
		t.Fatal("connection closed without an error")
	case e.Code == amqp.FrameError:
		return true, e.Error(), w
	case e.Code != amqp.ConnectionForced:
		t.Fatalf("got close %v, want code %d or %d", e, amqp.FrameError, amqp.ConnectionForced)
	}
	return false, e.Error(), w
}

// smallReads is a net.Conn whose Reads return at most n octets.
type smallReads struct {
	net.Conn
	n int
}

func (c smallReads) Read(p []byte) (int, error) { return c.Conn.Read(p[:min(len(p), c.n)]) }

// serveFrames plays a server on conn: it opens the connection, and once send is closed writes
// frames and a connection.close (320 CONNECTION_FORCED), then reads until the client is
// gone.
func serveFrames(conn net.Conn, send <-chan struct{}, frames []byte) error {
	r := bufio.NewReader(conn)
	var proto [8]byte
	if _, err := io.ReadFull(r, proto[:]); err != nil {
		return err
	}
	steps := []struct {
		write []byte
		reads int
	}{
		{rawStart, 1}, // start-ok
		{rawMethod(0, 10, 30, rawU16(0), rawU32(1<<20), rawU16(0)), 2}, // tune; tune-ok, open
		{rawMethod(0, 10, 41, rawShortstr("")), 0},                     // open-ok
	}
	for _, s := range steps {
		if _, err := conn.Write(s.write); err != nil {
			return err
		}
		for range s.reads {
			if err := skipRawFrame(r); err != nil {
				return err
			}
		}
	}
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, r)
		close(drained)
	}()
	<-send
	_, err := conn.Write(rawCat(frames, rawMethod(0, 10, 50, rawU16(320), rawShortstr("done"), rawU16(0), rawU16(0))))
	if err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	<-drained
	return nil
}

// skipRawFrame reads a frame from r.
func skipRawFrame(r *bufio.Reader) error {
	var h [7]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return err
	}
	_, err := r.Discard(int(binary.BigEndian.Uint32(h[3:])) + 1)
	return err
}

// TestWatchAgreesWithAMQP091OnMutations sends content headers changed at random to
// amqp091-go through watch, in Reads of random sizes, and checks that both agree on
// each.
func TestWatchAgreesWithAMQP091OnMutations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	types := []byte("tBbsIluifdDSTVxAFL\x00")
	n := 2000
	if testing.Short() {
		n = 200
	}
	for range n {
		tc := headerCases[rng.IntN(len(headerCases))]
		if len(tc.payload) > 2000 && rng.IntN(20) != 0 {
			continue
		}
		p := bytes.Clone(tc.payload)
		for k := rng.IntN(3) + 1; k > 0 && len(p) > 0; k-- {
			i := rng.IntN(len(p))
			switch rng.IntN(5) {
			case 0:
				p[i] = byte(rng.IntN(256))
			case 1:
				p[i] = types[rng.IntN(len(types))]
			case 2:
				p[i] = byte(rng.IntN(8))
			case 3:
				p = p[:i]
			case 4:
				p = slices.Insert(p, i, byte(rng.IntN(256)))
			}
		}
		chunk := rng.IntN(64) + 1
		refused, why, w := amqp091Verdict(t, rawFrame(amqpFrameHeader, 1, p), chunk)
		if got, ok := w.poison(); ok != refused {
			t.Errorf("%s changed to %x, in Reads of %d: got poison %v (%q), want %v as amqp091-go (%s)",
				tc.name, p, chunk, ok, got.reason, refused, why)
		}
	}
}

func TestWatchSplitReads(t *testing.T) {
	bad := rawWithHeaders(rawEntry("a", rawField('S', rawLongstr([]byte("abc")))), rawEntry("n", rawField('L', rawU64(1<<40))))
	stream := rawCat(rawStart, rawDelivery(3, rawHeader(0x2000, rawTable(rawEntries(50, nil)))), rawDelivery(4, bad), rawDelivery(5, bad))
	for _, chunk := range []int{1, 2, 3, 7, 8, 11, 13, 100, 4096} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			w := readThrough(t, stream, chunk)
			p, ok := w.poison()
			want := poisonFrame{channel: 4, reason: `header "n": field type 'L' is not supported by amqp091-go`, consumerTag: "ctag-4"}
			if !ok || p != want {
				t.Errorf("got %+v %v, want %+v true", p, ok, want)
			}
		})
	}
}

func TestWatchStreams(t *testing.T) {
	good := rawWithHeaders(rawEntry("id", rawField('S', rawLongstr([]byte("1")))))
	bad := rawWithHeaders(rawEntry("n", rawField('L', rawU64(1))))
	heartbeat := rawFrame(amqpFrameHeartbeat, 0, nil)
	// amqp091-go fails on badMode's table before it reads the delivery mode.
	badMode := rawFrame(amqpFrameHeader, 6, rawHeader(0x3000, rawTable(rawEntry("n", rawField('L', rawU64(1)))), rawU8(2)))
	tests := []struct {
		name    string
		stream  []byte
		channel uint16
		poison  bool
		stopped bool
	}{
		{"good deliveries", rawCat(rawStart, rawDelivery(1, good), heartbeat, rawDelivery(2, good)), 0, false, false},
		{"bad one in the middle", rawCat(rawStart, rawDelivery(3, good), rawDelivery(5, bad), rawDelivery(7, bad)), 5, true, false},
		{"after heartbeats and an empty body", rawCat(rawStart, heartbeat, rawFrame(amqpFrameBody, 9, nil), rawDelivery(9, bad)), 9, true, false},
		{"poison known before its frame ends", rawCat(rawStart, badMode[:len(badMode)-2]), 6, true, false},
		{"a table is judged whole", rawCat(rawStart, badMode[:len(badMode)-4]), 0, false, false},
		{"header frame on channel 0 is not checked", rawCat(rawStart, rawFrame(amqpFrameHeader, 0, bad), rawDelivery(1, good)), 0, false, false},
		{"unknown frame type stops checking", rawCat(rawStart, rawFrame(4, 1, nil), rawDelivery(1, bad)), 0, false, true},
		{"missing frame-end stops checking", rawCat(rawStart, rawFrame(amqpFrameBody, 1, nil)[:7], rawU8(0), rawDelivery(1, bad)), 0, false, true},
		{"bad frame-end after a header frame stops checking",
			rawCat(rawStart, rawFrame(amqpFrameHeader, 1, good)[:7+len(good)], rawU8(0), rawDelivery(1, bad)), 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := readThrough(t, tc.stream, 4096)
			p, ok := w.poison()
			if ok != tc.poison || p.channel != tc.channel {
				t.Errorf("got channel %d found %v (%q), want %d %v", p.channel, ok, p.reason, tc.channel, tc.poison)
			}
			if stopped := w.s.stopped != ""; stopped != tc.stopped {
				t.Errorf("got stopped %v (%q), want %v", stopped, w.s.stopped, tc.stopped)
			}
			if w.done.Load() != (tc.poison || tc.stopped) {
				t.Errorf("got done %v, want %v", w.done.Load(), tc.poison || tc.stopped)
			}
		})
	}
}

// TestWatchPoisonMethod checks that poison names the method that brought the message.
func TestWatchPoisonMethod(t *testing.T) {
	good := rawWithHeaders(rawEntry("id", rawField('I', rawU32(1))))
	bad := rawWithHeaders(rawEntry("n", rawField('L', rawU64(1))))
	reason := `header "n": field type 'L' is not supported by amqp091-go`
	deliver := func(channel uint16, tag string) []byte {
		return rawMethod(channel, 60, 60, rawShortstr(tag), rawU64(1), rawU8(0), rawShortstr(""), rawShortstr("q"))
	}
	content := func(channel uint16, header []byte) []byte {
		return rawCat(rawFrame(amqpFrameHeader, channel, header), rawFrame(amqpFrameBody, channel, []byte("body")))
	}
	longTag := strings.Repeat("t", 255)
	tests := []struct {
		name   string
		stream []byte
		want   poisonFrame
	}{
		{"deliver", rawCat(deliver(3, "a"), content(3, bad)), poisonFrame{channel: 3, reason: reason, consumerTag: "a"}},
		{"longest consumer tag", rawCat(deliver(3, longTag), content(3, bad)), poisonFrame{channel: 3, reason: reason, consumerTag: longTag}},
		{"get-ok", rawCat(rawMethod(2, 60, 71, rawU64(1), rawU8(0), rawShortstr(""), rawShortstr("q"), rawU32(0)), content(2, bad)),
			poisonFrame{channel: 2, reason: reason, get: true}},
		{"return", rawCat(rawMethod(2, 60, 50, rawU16(312), rawShortstr("NO_ROUTE"), rawShortstr(""), rawShortstr("q")), content(2, bad)),
			poisonFrame{channel: 2, reason: reason, returned: true}},
		{"deliveries on other channels between", rawCat(
			deliver(1, "a"), content(1, good), deliver(2, "b"), deliver(1, "c"), content(2, good),
			deliver(2, "d"), content(1, bad)), poisonFrame{channel: 1, reason: reason, consumerTag: "c"}},
		{"other methods between", rawCat(
			deliver(1, "a"), rawMethod(1, 60, 30, rawShortstr("a"), rawU8(0)), content(1, bad)),
			poisonFrame{channel: 1, reason: reason, consumerTag: "a"}},
		{"get-ok after a deliver", rawCat(deliver(1, "a"), content(1, good),
			rawMethod(1, 60, 71, rawU64(1), rawU8(0), rawShortstr(""), rawShortstr("q"), rawU32(0)), content(1, bad)),
			poisonFrame{channel: 1, reason: reason, get: true}},
		{"no method", content(5, bad), poisonFrame{channel: 5, reason: reason}},
	}
	for _, tc := range tests {
		for _, chunk := range []int{1, 5, 4096} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, chunk), func(t *testing.T) {
				w := readThrough(t, rawCat(rawStart, tc.stream), chunk)
				if p, ok := w.poison(); !ok || p != tc.want {
					t.Errorf("got %+v %v, want %+v true", p, ok, tc.want)
				}
			})
		}
	}
}

// TestWatchPaddingNotWaitedFor checks that a content header is found good as soon as its
// properties arrived, before what follows them.
func TestWatchPaddingNotWaitedFor(t *testing.T) {
	good := rawWithHeaders(rawEntry("id", rawField('S', rawLongstr([]byte("1")))))
	w := readThrough(t, rawCat(rawStart, rawFrame(amqpFrameHeader, 1, rawCat(good, []byte("padding")))[:7+len(good)]), 4096)
	if w.s.state != scanSkip || w.s.skip != uint64(len("padding")) {
		t.Errorf("got state %d skipping %d, want %d skipping %d", w.s.state, w.s.skip, scanSkip, len("padding"))
	}
	if _, ok := w.poison(); ok {
		t.Error("got poison, want none")
	}
}

func TestWatchForeign(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		want   string // "" when not foreign
	}{
		{"AMQP 0-9-1", rawCat(rawStart, rawDelivery(1, rawHeader(0))), ""},
		{"Redis", []byte("-ERR unknown command 'AMQP', with args beginning with: \r\n"),
			`Redis or another RESP server ("-ERR unknown command 'AMQP', wit")`},
		{"AMQP 1.0", []byte("AMQP\x00\x01\x00\x00"), `AMQP 1.0 (protocol header "AMQP\x00\x01\x00\x00")`},
		{"AMQP 1.0 with SASL", []byte("AMQP\x03\x01\x00\x00\x00\x00\x00\x3f\x02\x01\x00\x00"),
			`AMQP 1.0 with SASL (protocol header "AMQP\x03\x01\x00\x00")`},
		{"AMQP 0-9-1 refusing", []byte("AMQP\x00\x00\x09\x01"),
			`AMQP 0-9-1, refusing the client's protocol header (protocol header "AMQP\x00\x00\t\x01")`},
		{"HTTP", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), `HTTP ("HTTP/1.1 400 Bad Request")`},
		{"TLS", []byte("\x15\x03\x01\x00\x02\x02\x46"), `TLS, the server expects amqps (first octets "\x15\x03\x01\x00\x02\x02F")`},
		{"method on another channel", rawMethod(1, 10, 10), `an unknown protocol (first octets "\x01\x00\x01\x00\x00\x00\x04\x00\n\x00\n\xce")`},
		{"other method", rawMethod(0, 10, 50, rawU16(320), rawShortstr("")),
			`an unknown protocol (first octets "\x01\x00\x00\x00\x00\x00\a\x00\n\x002\x01@\x00\xce")`},
	}
	for _, tc := range tests {
		for _, chunk := range []int{1, 4096} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, chunk), func(t *testing.T) {
				w := readThrough(t, tc.stream, chunk)
				if got, want := w.foreign(), tc.want != ""; got != want {
					t.Errorf("got foreign %v, want %v", got, want)
				}
				if got := w.foreignProtocol(); got != tc.want {
					t.Errorf("got protocol %q, want %q", got, tc.want)
				}
				if _, ok := w.poison(); ok {
					t.Error("got poison, want none")
				}
			})
		}
	}
}

// TestWatchConcurrent asks for the results while another goroutine reads (go test -race).
func TestWatchConcurrent(t *testing.T) {
	var stream []byte
	stream = append(stream, rawStart...)
	for i := range 200 {
		stream = append(stream, rawDelivery(uint16(i%7+1), rawWithHeaders(rawEntry("a", rawField('I', rawU32(1)))))...)
	}
	stream = append(stream, rawDelivery(42, rawWithHeaders(rawEntry("n", rawField('L', rawU64(1)))))...)
	w := watch(&chunkConn{stream: stream, chunk: 5})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				w.poison()
				w.foreign()
				w.foreignProtocol()
			}
		}
	})
	_, err := io.Copy(io.Discard, w)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := w.poison(); !ok || p.channel != 42 || p.consumerTag != "ctag-42" {
		t.Errorf("got %+v %v, want channel 42, consumer tag ctag-42", p, ok)
	}
}

// loopConn is a net.Conn that reads prefix, then loop over and over.
type loopConn struct {
	net.Conn // nil: only Read is used
	prefix   []byte
	loop     []byte
	off      int
}

func (c *loopConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	n := 0
	for n < len(p) {
		m := copy(p[n:], c.loop[c.off:])
		n += m
		c.off = (c.off + m) % len(c.loop)
	}
	return n, nil
}

// BenchmarkWatchRead reads typical deliveries (method, a header with a few properties
// and headers, a 100-octet body) in 4 KiB Reads, as amqp091-go's bufio.Reader does,
// from a plain connection and through watch.
func BenchmarkWatchRead(b *testing.B) {
	header := rawHeader(0xb000|0x0080|0x0040,
		rawShortstr("application/json"),
		rawTable(rawEntry("x-id", rawField('S', rawLongstr([]byte("4f1c2a7e")))), rawEntry("attempt", rawField('I', rawU32(1))),
			rawEntry("x-trace", rawFtable(rawEntry("span", rawField('l', rawU64(7)))))),
		rawU8(2), rawShortstr("msg-0001"), rawU64(1700000000))
	one := rawDelivery(1, header)
	loop := bytes.Repeat(one, 64)
	b.Logf("%d octets per delivery, header payload %d", len(one), len(header))
	for _, bc := range []struct {
		name string
		conn func() net.Conn
	}{
		{"plain", func() net.Conn { return &loopConn{prefix: rawStart, loop: loop} }},
		{"watched", func() net.Conn { return watch(&loopConn{prefix: rawStart, loop: loop}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := bc.conn()
			buf := make([]byte, 4096)
			c.Read(buf)
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				c.Read(buf)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*float64(len(one))/float64(len(buf)), "ns/delivery")
		})
	}
}

// BenchmarkWatchConsume consumes typical deliveries with amqp091-go, from a fake server
// over net.Pipe, through a plain connection and through watch: the cost of watching
// next to that of amqp091-go itself.
func BenchmarkWatchConsume(b *testing.B) {
	header := rawHeader(0xb000|0x0080|0x0040,
		rawShortstr("application/json"),
		rawTable(rawEntry("x-id", rawField('S', rawLongstr([]byte("4f1c2a7e")))), rawEntry("attempt", rawField('I', rawU32(1))),
			rawEntry("x-trace", rawFtable(rawEntry("span", rawField('l', rawU64(7)))))),
		rawU8(2), rawShortstr("msg-0001"), rawU64(1700000000))
	for _, watched := range []bool{false, true} {
		name := "plain"
		if watched {
			name = "watched"
		}
		b.Run(name, func(b *testing.B) {
			client, server := net.Pipe()
			defer client.Close()
			go serveDeliveries(server, rawDelivery(1, header), b.N)
			cfg := amqp.Config{Dial: func(network, addr string) (net.Conn, error) {
				if watched {
					return watch(client), nil
				}
				return client, nil
			}}
			c, err := amqp.DialConfig("amqp://guest:guest@fake/?heartbeat=0", cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ch, err := c.Channel()
			if err != nil {
				b.Fatal(err)
			}
			autoAck, exclusive, noLocal, noWait := true, false, false, false
			deliveries, err := ch.Consume("queue", "ctag-1", autoAck, exclusive, noLocal, noWait, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, ok := <-deliveries; !ok {
					b.Fatal("deliveries closed")
				}
			}
		})
	}
}

// serveDeliveries plays a server on conn that, once a consumer is there, sends it n
// copies of one delivery on channel 1.
func serveDeliveries(conn net.Conn, one []byte, n int) {
	defer conn.Close()
	var mu sync.Mutex
	write := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := conn.Write(b)
		return err
	}
	r := bufio.NewReader(conn)
	if _, err := r.Discard(8); err != nil {
		return
	}
	write(rawStart)
	for {
		var h [7]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		p := make([]byte, binary.BigEndian.Uint32(h[3:])+1)
		if _, err := io.ReadFull(r, p); err != nil || h[0] != amqpFrameMethod {
			continue
		}
		channel := binary.BigEndian.Uint16(h[1:])
		switch binary.BigEndian.Uint32(p) {
		case 10<<16 | 11: // connection.start-ok
			write(rawMethod(0, 10, 30, rawU16(0), rawU32(1<<17), rawU16(0)))
		case 10<<16 | 40: // connection.open
			write(rawMethod(0, 10, 41, rawShortstr("")))
		case 20<<16 | 10: // channel.open
			write(rawMethod(channel, 20, 11, rawLongstr(nil)))
		case 20<<16 | 40: // channel.close
			write(rawMethod(channel, 20, 41))
		case 60<<16 | 20: // basic.consume
			write(rawMethod(channel, 60, 21, rawShortstr("ctag-1")))
			go func() {
				batch := bytes.Repeat(one, 64)
				for left := n; left > 0; left -= 64 {
					if write(batch[:min(left, 64)*len(one)]) != nil {
						return
					}
				}
			}()
		case 10<<16 | 50: // connection.close
			write(rawMethod(0, 10, 51))
			return
		}
	}
}
