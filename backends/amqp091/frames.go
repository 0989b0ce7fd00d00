package amqp091

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// watchedConn is a net.Conn whose incoming bytes are checked frame by frame, as they are
// read, for content header frames that amqp091-go cannot parse. amqp091-go answers such
// a frame by shutting the whole connection down with a 501 FRAME_ERROR that does not say
// which channel the frame came on; [watchedConn.poison] says it, and which method the
// message came with (the consumer tag of its basic.deliver, or basic.get-ok), so that
// only that consumer need be stopped. [watchedConn.foreign] tells a peer that does not
// speak AMQP 0-9-1 at all.
//
// Read hands on every byte unchanged. It follows the framing as the bytes pass, whatever
// pieces they come in, and passes over body and heartbeat payloads without copying
// them, and over method payloads but for their first octets (up to the consumer tag of a
// basic.deliver); it copies only the payloads of content header frames on channels
// other than 0 (a few hundred bytes usually) and checks them with the rules of
// amqp091-go v1.16.0's parseHeaderFrame. amqp091-go may refuse a content header before it has read
// all of it, and then closes the connection: so when a Read ends inside a content
// header, its beginning is checked as far as amqp091-go could have parsed it, and poison
// is known before amqp091-go can fail. Read stops checking, and then costs an atomic
// load, after the first poison frame, once the peer is known to be foreign, and when the
// stream stops looking like AMQP 0-9-1 frames (an unknown frame type, a missing
// frame-end octet, or a content header of more than 16 MiB), which amqp091-go rejects on
// its own. It does not know the frame size the client negotiated, so it does not flag a
// header frame that is only too large (RabbitMQ never sends one).
//
// All methods may be called concurrently, but Read only makes sense from one goroutine
// at a time, as amqp091-go does.
type watchedConn struct {
	net.Conn

	done atomic.Bool // nothing more to check: Read skips the scanner
	mu   sync.Mutex
	s    frameScanner // guarded by mu
}

// watch returns c with its incoming bytes checked. It must wrap c before anything was
// read from it, and above TLS: amqp091-go's DialConfig puts TLS on top of what
// Config.Dial returns for an amqps URL, so with TLS, Config.Dial must do the handshake
// itself and amqp091-go be given the amqp URL.
func watch(c net.Conn) *watchedConn {
	return &watchedConn{Conn: c, s: frameScanner{sniffing: true}}
}

// Read reads from the connection and checks what it read.
func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 && !w.done.Load() {
		w.mu.Lock()
		if w.s.scan(p[:n]) {
			w.done.Store(true)
		}
		w.mu.Unlock()
	}
	return n, err
}

// poisonFrame is an incoming content header frame that amqp091-go would refuse to parse.
type poisonFrame struct {
	channel     uint16
	reason      string // why, for example `header "n": field type 'L' is not supported by amqp091-go`
	consumerTag string // of the basic.deliver the frame came with, if it came with one
	get         bool   // the frame came with a basic.get-ok
	returned    bool   // the frame came with a basic.return
}

// poison returns the first incoming content header frame that amqp091-go would refuse to
// parse, or found false if there was none.
func (w *watchedConn) poison() (p poisonFrame, found bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s.poison, w.s.poisoned
}

// foreign reports whether the peer's first bytes were not an AMQP 0-9-1 connection.start
// frame: the server speaks another protocol ([watchedConn.foreignProtocol] names it). An
// AMQP 0-9-1 server that rejects the client's protocol version answers with its own
// protocol header, and is foreign too.
func (w *watchedConn) foreign() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s.foreign
}

// foreignProtocol names the protocol of a foreign peer as far as its first bytes tell,
// for example `AMQP 1.0 (protocol header "AMQP\x00\x01\x00\x00")` or `Redis or another
// RESP server ("-ERR unknown command 'AMQP'")`, or returns "" if the peer is not foreign.
func (w *watchedConn) foreignProtocol() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.s.foreign {
		return ""
	}
	return describeGreeting(w.s.greeting[:w.s.ngreeting])
}

// The frame types and frame-end octet of AMQP 0-9-1 (section 4.2.3).
const (
	amqpFrameMethod    = 1
	amqpFrameHeader    = 2
	amqpFrameBody      = 3
	amqpFrameHeartbeat = 8
	amqpFrameEnd       = 0xCE
)

// The limits of amqp091-go v1.16.0's read.go, which rejects what goes past them.
const (
	amqpMaxFieldDepth        = 32        // maxFieldDepth: tables and arrays nested in the headers table
	amqpMaxContainerElements = 8192      // maxContainerElements: entries of a table, elements of an array
	amqpReadAllocChunk       = 64 * 1024 // readAllocChunk: readBytes reads in chunks this big
)

// maxCheckedHeader is the largest content header payload the scanner copies to check.
const maxCheckedHeader = 16 << 20

// The states of a frameScanner.
const (
	scanHead    = iota // collecting the 7-octet frame header
	scanMethod         // copying the beginning of a method payload
	scanSkip           // passing over a payload that needs no check
	scanPayload        // copying a content header payload
	scanEnd            // expecting the frame-end octet
	scanDone           // not checking any more
)

// methodHeadSize is how much of a method payload the scanner copies: the class-id,
// method-id and consumer tag of a basic.deliver.
const methodHeadSize = 4 + 1 + 255

// The methods that bring a message to the client, as class-id<<16 | method-id.
const (
	amqpBasicReturn  = 60<<16 | 50
	amqpBasicDeliver = 60<<16 | 60
	amqpBasicGetOk   = 60<<16 | 71
)

// connectionStartPrefix is how a server's first frame begins: a method frame on channel 0
// (octets 3 to 6 are its size, not compared) for connection.start, class 10 method 10.
var connectionStartPrefix = [11]byte{amqpFrameMethod, 0, 0, 0, 0, 0, 0, 0, 10, 0, 10}

// frameScanner follows the AMQP 0-9-1 framing of a byte stream given to it piece by
// piece, and checks its content header frames.
type frameScanner struct {
	state   int
	head    [7]byte // a frame header split across pieces
	nhead   int
	channel uint16 // of the current frame
	skip    uint64 // payload octets still to pass over, in scanSkip
	size    int    // of the content header payload being copied, in scanPayload
	payload []byte // the content header payload so far, in scanPayload
	need    int    // how much of the payload a check of its beginning needs, in scanPayload

	mhead    [methodHeadSize]byte // the beginning of a method payload split across pieces
	nmhead   int
	wantHead int                  // how much of the method payload to copy, in scanMethod
	low      [32]msgMethod        // the last method that brought a message, by channel, for channels below 32
	methods  map[uint16]msgMethod // and for the others

	sniffing  bool     // the greeting is still being collected
	greeting  [32]byte // the peer's first octets
	ngreeting int

	poisoned bool
	poison   poisonFrame
	foreign  bool
	stopped  string // why the scanner stopped following the stream, when not poisoned or foreign
}

// scan follows p, the next bytes of the stream, and reports whether nothing more needs
// checking.
func (s *frameScanner) scan(p []byte) bool {
	if s.sniffing {
		s.sniff(p)
		if s.foreign {
			return !s.sniffing
		}
	}
	for len(p) > 0 {
		switch s.state {
		case scanHead:
			var h []byte
			if s.nhead == 0 && len(p) >= len(s.head) {
				h, p = p[:len(s.head)], p[len(s.head):]
			} else {
				n := copy(s.head[s.nhead:], p)
				s.nhead += n
				p = p[n:]
				if s.nhead < len(s.head) {
					return false
				}
				s.nhead = 0
				h = s.head[:]
			}
			s.begin(h[0], binary.BigEndian.Uint16(h[1:3]), binary.BigEndian.Uint32(h[3:7]))
		case scanMethod:
			if s.nmhead == 0 && len(p) >= s.wantHead {
				s.noteMethod(p[:s.wantHead])
				p = p[s.wantHead:]
			} else {
				n := copy(s.mhead[s.nmhead:s.wantHead], p)
				s.nmhead += n
				p = p[n:]
				if s.nmhead < s.wantHead {
					return false
				}
				s.noteMethod(s.mhead[:s.wantHead])
			}
			s.skip -= uint64(s.wantHead)
			s.state = scanSkip
		case scanSkip:
			if uint64(len(p)) < s.skip {
				s.skip -= uint64(len(p))
				return false
			}
			p = p[s.skip:]
			s.state = scanEnd
		case scanPayload:
			n := min(len(p), s.size-len(s.payload))
			s.payload = append(s.payload, p[:n]...)
			p = p[n:]
			if len(s.payload) == s.size || len(p) == 0 && len(s.payload) >= s.need {
				s.check()
			}
		case scanEnd:
			if p[0] != amqpFrameEnd {
				s.stop(fmt.Sprintf("frame-end octet is %#x, want %#x", p[0], amqpFrameEnd))
				return true
			}
			p = p[1:]
			s.state = scanHead
		case scanDone:
			return true
		}
	}
	return s.state == scanDone
}

// sniff collects the greeting from p and compares it with connectionStartPrefix.
func (s *frameScanner) sniff(p []byte) {
	from := s.ngreeting
	s.ngreeting += copy(s.greeting[s.ngreeting:], p)
	for i := from; i < s.ngreeting && i < len(connectionStartPrefix); i++ {
		if (i < 3 || i > 6) && s.greeting[i] != connectionStartPrefix[i] {
			s.foreign = true
			s.state = scanDone
		}
	}
	if s.ngreeting == len(s.greeting) || !s.foreign && s.ngreeting >= len(connectionStartPrefix) {
		s.sniffing = false
	}
}

// begin starts a frame of type typ on channel of size octets.
func (s *frameScanner) begin(typ byte, channel uint16, size uint32) {
	s.channel = channel
	s.skip = uint64(size)
	switch typ {
	case amqpFrameMethod:
		if channel != 0 && size >= 4 {
			s.wantHead = int(min(size, methodHeadSize))
			s.nmhead = 0
			s.state = scanMethod
			return
		}
	case amqpFrameBody, amqpFrameHeartbeat:
	case amqpFrameHeader:
		if channel == 0 {
			break
		}
		if size > maxCheckedHeader {
			s.stop(fmt.Sprintf("content header frame on channel %d is %d octets", channel, size))
			return
		}
		s.size = int(size)
		s.payload = s.payload[:0]
		s.need = 0
		s.state = scanPayload
		if size == 0 {
			s.check()
		}
		return
	default:
		s.stop(fmt.Sprintf("frame type %d on channel %d is unknown", typ, channel))
		return
	}
	s.state = scanSkip
}

// msgMethod is a method that brought a message.
type msgMethod struct {
	method      uint32 // class-id<<16 | method-id
	consumerTag string
}

// noteMethod notes the method whose payload begins with m (at least its class-id and
// method-id), on the current channel, if it brings a message.
func (s *frameScanner) noteMethod(m []byte) {
	method := binary.BigEndian.Uint32(m)
	var tag []byte
	switch method {
	case amqpBasicDeliver:
		if len(m) > 4 && len(m) > 4+int(m[4]) {
			tag = m[5 : 5+int(m[4])]
		}
	case amqpBasicGetOk, amqpBasicReturn:
	default:
		return
	}
	if int(s.channel) < len(s.low) {
		if last := &s.low[s.channel]; last.method != method || last.consumerTag != string(tag) {
			*last = msgMethod{method: method, consumerTag: string(tag)}
		}
		return
	}
	if s.methods == nil {
		s.methods = make(map[uint16]msgMethod)
	}
	if last, ok := s.methods[s.channel]; !ok || last.method != method || last.consumerTag != string(tag) {
		s.methods[s.channel] = msgMethod{method: method, consumerTag: string(tag)}
	}
}

// lastMethod returns the last method that brought a message on the current channel.
func (s *frameScanner) lastMethod() msgMethod {
	if int(s.channel) < len(s.low) {
		return s.low[s.channel]
	}
	return s.methods[s.channel]
}

// check checks the content header payload, or its beginning.
func (s *frameScanner) check() {
	err := checkContentHeader(s.payload, s.size)
	switch {
	case err == nil:
		// Whatever else comes is drained unread, as parseHeaderFrame does.
		s.skip = uint64(s.size - len(s.payload))
		s.state = scanSkip
	case err.need > 0:
		s.need = err.need
		return
	default:
		m := s.lastMethod()
		s.poisoned = true
		s.poison = poisonFrame{
			channel:     s.channel,
			reason:      err.Error(),
			consumerTag: m.consumerTag,
			get:         m.method == amqpBasicGetOk,
			returned:    m.method == amqpBasicReturn,
		}
		s.state = scanDone
		s.low, s.methods = [len(s.low)]msgMethod{}, nil
	}
	if cap(s.payload) > 64<<10 {
		s.payload = nil
	}
}

// stop gives up following the stream.
func (s *frameScanner) stop(why string) {
	s.stopped = why
	s.state = scanDone
}

// describeGreeting names the protocol that begins with the octets b.
func describeGreeting(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("AMQP")) && len(b) >= 8:
		name := "AMQP"
		switch string(b[4:8]) {
		case "\x00\x01\x00\x00":
			name = "AMQP 1.0"
		case "\x03\x01\x00\x00":
			name = "AMQP 1.0 with SASL"
		case "\x02\x01\x00\x00":
			name = "AMQP 1.0 with TLS"
		case "\x00\x00\x09\x01":
			name = "AMQP 0-9-1, refusing the client's protocol header"
		case "\x01\x01\x00\x09":
			name = "AMQP 0-9"
		case "\x01\x01\x08\x00":
			name = "AMQP 0-8"
		}
		return fmt.Sprintf("%s (protocol header %q)", name, b[:8])
	case bytes.HasPrefix(b, []byte("AMQP")):
		return fmt.Sprintf("AMQP (protocol header cut short: %q)", b)
	case len(b) > 0 && (b[0] == '-' || b[0] == '+'):
		if i := bytes.IndexByte(b, '\r'); i >= 0 {
			b = b[:i]
		}
		return fmt.Sprintf("Redis or another RESP server (%q)", b)
	case bytes.HasPrefix(b, []byte("HTTP/")):
		if i := bytes.IndexByte(b, '\r'); i >= 0 {
			b = b[:i]
		}
		return fmt.Sprintf("HTTP (%q)", b)
	case len(b) >= 2 && b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 3:
		return fmt.Sprintf("TLS, the server expects amqps (first octets %q)", b)
	default:
		return fmt.Sprintf("an unknown protocol (first octets %q)", b)
	}
}

// hdrError says why amqp091-go would refuse a content header frame, or, if need is not
// 0, that the check needs the first need octets of the payload to go on.
type hdrError struct {
	where string   // what was being read, when outside the headers table
	path  []string // where in the headers table, innermost first
	why   string
	eof   bool // amqp091-go's error is io.EOF itself, which ends an array without failing
	need  int
}

// in adds seg to the front of e's path, and returns e.
func (e *hdrError) in(seg string) *hdrError {
	if e.need == 0 {
		e.path = append(e.path, seg)
	}
	return e
}

// Error returns the reason, for example `header "a"[2]: field type 'L' is not supported
// by amqp091-go`.
func (e *hdrError) Error() string {
	var b strings.Builder
	switch {
	case len(e.path) > 0:
		b.WriteString("header ")
		for i := len(e.path) - 1; i >= 0; i-- {
			b.WriteString(e.path[i])
		}
	case e.where != "":
		b.WriteString(e.where)
	default:
		b.WriteString("headers table")
	}
	b.WriteString(": ")
	b.WriteString(e.why)
	return b.String()
}

// truncated is the error of a read that found only some (eof false) or none (eof true)
// of the octets it wanted.
func truncated(eof bool) *hdrError {
	return &hdrError{why: "truncated", eof: eof}
}

// hdrReader mirrors the readers amqp091-go parses a content header through: an
// io.LimitedReader over the frame payload, a bytes.Buffer per table, and an
// io.LimitedReader per array on top of what the array is in. b[off:end] is what the
// innermost of them can still give, of which only what is in b arrived yet (only the
// payload's, as tables arrive whole).
type hdrReader struct {
	b   []byte
	off int
	end int
}

// next consumes n octets as io.ReadFull (and so binary.Read) does: when fewer are left
// it consumes those and fails with io.EOF if there were none, else with
// io.ErrUnexpectedEOF.
func (r *hdrReader) next(n int) ([]byte, *hdrError) {
	if left := r.end - r.off; left < n {
		r.off = r.end
		return nil, truncated(left == 0)
	}
	if r.off+n > len(r.b) {
		return nil, &hdrError{need: r.off + n}
	}
	r.off += n
	return r.b[r.off-n : r.off], nil
}

// bytes consumes n octets as amqp091-go's readBytes does: it reads 64 KiB chunks with
// io.ReadFull, so running out at a chunk boundary fails with io.EOF, elsewhere with
// io.ErrUnexpectedEOF. It returns nil if they did not all arrive yet.
func (r *hdrReader) bytes(n int) ([]byte, *hdrError) {
	if left := r.end - r.off; left < n {
		r.off = r.end
		return nil, truncated(left%amqpReadAllocChunk == 0)
	}
	r.off += n
	if r.off > len(r.b) {
		return nil, nil
	}
	return r.b[r.off-n : r.off], nil
}

// shortstr reads a short string, as readShortstr does.
func (r *hdrReader) shortstr() ([]byte, *hdrError) {
	if r.off < r.end && r.end <= len(r.b) { // fast path, for the common case
		if n := int(r.b[r.off]); r.end-r.off > n {
			r.off += 1 + n
			return r.b[r.off-n : r.off], nil
		}
	}
	n, err := r.next(1)
	if err != nil {
		return nil, err
	}
	return r.bytes(int(n[0]))
}

// longstrLen reads the length of a long string, as readLongstr does.
func (r *hdrReader) longstrLen(what string) (int, *hdrError) {
	v, err := r.next(4)
	if err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(v)
	if n > math.MaxInt32 {
		return 0, &hdrError{why: fmt.Sprintf("%s length %d is more than 2^31-1", what, n)}
	}
	return int(n), nil
}

// table reads a field table at depth as readTableDepth does.
func (r *hdrReader) table(depth int) *hdrError {
	if depth > amqpMaxFieldDepth {
		return &hdrError{why: fmt.Sprintf("tables and arrays nested more than %d deep", amqpMaxFieldDepth)}
	}
	n, err := r.longstrLen("table")
	if err != nil {
		return err
	}
	if left := r.end - r.off; left >= n && r.off+n > len(r.b) {
		// readTableDepth reads the whole table before its first entry.
		return &hdrError{need: r.off + n}
	}
	body, err := r.bytes(n)
	if err != nil {
		return err
	}
	t := hdrReader{b: body, end: len(body)}
	var keys map[string]struct{} // when the table has many entries: its distinct keys
	for n := 0; t.off < t.end; n++ {
		key, err := t.shortstr()
		if err != nil {
			err.why = "key truncated"
			return err
		}
		if err := t.field(depth); err != nil {
			if depth == 0 {
				return err.in(strconv.Quote(string(key)))
			}
			return err.in("[" + strconv.Quote(string(key)) + "]")
		}
		// readTableDepth counts the entries of its map, so a key seen before does not
		// count again.
		if n >= amqpMaxContainerElements {
			if keys == nil {
				keys = tableKeys(body, n, depth)
			}
			if len(keys) >= amqpMaxContainerElements {
				return &hdrError{why: fmt.Sprintf("table has more than %d entries", amqpMaxContainerElements)}
			}
			keys[string(key)] = struct{}{}
		}
	}
	return nil
}

// tableKeys returns the distinct keys of the first n entries of the table body at depth,
// which were found valid.
func tableKeys(body []byte, n, depth int) map[string]struct{} {
	keys := make(map[string]struct{}, n)
	t := hdrReader{b: body, end: len(body)}
	for range n {
		key, _ := t.shortstr()
		t.field(depth)
		keys[string(key)] = struct{}{}
	}
	return keys
}

// array reads a field array at depth as readArrayDepth does.
func (r *hdrReader) array(depth int) *hdrError {
	if depth > amqpMaxFieldDepth {
		return &hdrError{why: fmt.Sprintf("tables and arrays nested more than %d deep", amqpMaxFieldDepth)}
	}
	v, err := r.next(4)
	if err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(v)
	if size > math.MaxInt32 {
		return &hdrError{why: fmt.Sprintf("array length %d is more than 2^31-1", size)}
	}
	outer := r.end
	if int64(size) < int64(r.end-r.off) {
		r.end = r.off + int(size)
	}
	// readArrayDepth reads elements until one fails with io.EOF itself: when nothing is
	// left, or when an element comes to the end without a single octet of some part of
	// it, which is then dropped without an error.
	for n := 0; r.off < r.end; n++ {
		if err := r.field(depth); err != nil {
			if err.eof {
				break
			}
			r.end = outer
			return err.in("[" + strconv.Itoa(n) + "]")
		}
		if n >= amqpMaxContainerElements {
			r.end = outer
			return &hdrError{why: fmt.Sprintf("array has more than %d elements", amqpMaxContainerElements)}
		}
	}
	r.end = outer
	return nil
}

// fieldSizes are the sizes of the field values of fixed size, by type.
var fieldSizes = [256]int8{
	't': 1, 'B': 1, 'b': 1,
	's': 2, 'u': 2,
	'I': 4, 'i': 4, 'f': 4,
	'l': 8, 'd': 8, 'T': 8,
	'D': 5,
}

// field reads a field value at depth as readFieldDepth does.
func (r *hdrReader) field(depth int) *hdrError {
	if r.off < r.end && r.end <= len(r.b) { // fast path, for the common cases
		switch typ := r.b[r.off]; typ {
		case 'S':
			if r.end-r.off >= 5 {
				if n := binary.BigEndian.Uint32(r.b[r.off+1:]); n <= math.MaxInt32 && int64(r.end-r.off-5) >= int64(n) {
					r.off += 5 + int(n)
					return nil
				}
			}
		case 'V':
			r.off++
			return nil
		default:
			if n := int(fieldSizes[typ]); n > 0 && r.end-r.off > n {
				r.off += 1 + n
				return nil
			}
		}
	}
	typ, err := r.next(1)
	if err != nil {
		return err
	}
	switch typ[0] {
	case 't', 'B', 'b':
		_, err = r.next(1)
	case 's', 'u':
		_, err = r.next(2)
	case 'I', 'i', 'f':
		_, err = r.next(4)
	case 'l', 'd', 'T':
		_, err = r.next(8)
	case 'D': // readDecimal reads the scale and the value separately
		if _, err = r.next(1); err == nil {
			_, err = r.next(4)
		}
	case 'S':
		var n int
		if n, err = r.longstrLen("string"); err == nil {
			_, err = r.bytes(n)
		}
	case 'x':
		var v []byte
		if v, err = r.next(4); err == nil {
			n := int32(binary.BigEndian.Uint32(v))
			if n < 0 {
				return &hdrError{why: fmt.Sprintf("byte array length %d is negative", n)}
			}
			_, err = r.bytes(int(n))
		}
	case 'V':
	case 'A':
		return r.array(depth + 1)
	case 'F':
		return r.table(depth + 1)
	default:
		return &hdrError{why: fmt.Sprintf("field type %s is not supported by amqp091-go", quoteType(typ[0]))}
	}
	return err
}

// quoteType quotes a field type octet like a Go character literal.
func quoteType(t byte) string {
	if t < 0x80 {
		return strconv.QuoteRune(rune(t))
	}
	return fmt.Sprintf(`'\x%02x'`, t)
}

// basicProperties are the properties of class basic, in the order of the wire, with the
// flag bit of each.
var basicProperties = [...]struct {
	name string
	flag uint16
	kind byte // 's' short string, 'o' octet, 'T' timestamp, 'F' table
}{
	{"content-type", 0x8000, 's'},
	{"content-encoding", 0x4000, 's'},
	{"headers", 0x2000, 'F'},
	{"delivery-mode", 0x1000, 'o'},
	{"priority", 0x0800, 'o'},
	{"correlation-id", 0x0400, 's'},
	{"reply-to", 0x0200, 's'},
	{"expiration", 0x0100, 's'},
	{"message-id", 0x0080, 's'},
	{"timestamp", 0x0040, 'T'},
	{"type", 0x0020, 's'},
	{"user-id", 0x0010, 's'},
	{"app-id", 0x0008, 's'},
	{"reserved", 0x0004, 's'},
}

// The fields before the properties in a content header, and their sizes.
var (
	headerFieldNames = [...]string{"class-id", "weight", "body-size", "property flags"}
	headerFieldSizes = [...]int{2, 2, 8, 2}
)

// checkContentHeader returns why amqp091-go v1.16.0's parseHeaderFrame would fail on a
// content header payload of size octets that begins with p, or nil if it would not. If
// that depends on octets that did not arrive yet, the error's need says how many are
// needed. Like parseHeaderFrame, it reads the properties of class basic whatever the
// class-id, reads a single property flags word (ignoring bit 0, which says that another
// one follows), and ignores what is left after the properties.
func checkContentHeader(p []byte, size int) *hdrError {
	r := hdrReader{b: p, end: size}
	var v []byte
	for i, n := range headerFieldSizes {
		var err *hdrError
		if v, err = r.next(n); err != nil {
			if err.need == 0 {
				err.where = "content header " + headerFieldNames[i]
			}
			return err
		}
	}
	flags := binary.BigEndian.Uint16(v)
	for i := 0; flags&0xfffc != 0; i++ {
		prop := &basicProperties[i]
		if flags&prop.flag == 0 {
			continue
		}
		flags &^= prop.flag
		var err *hdrError
		switch prop.kind {
		case 's':
			_, err = r.shortstr()
		case 'o':
			_, err = r.next(1)
		case 'T':
			_, err = r.next(8)
		case 'F':
			err = r.table(0)
		}
		if err != nil {
			if prop.kind != 'F' && err.need == 0 {
				err.where = "property " + prop.name
			}
			return err
		}
	}
	return nil
}
