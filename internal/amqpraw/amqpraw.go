// Package amqpraw publishes a message over AMQP 0-9-1 with nothing but the standard
// library, for tests. It writes header values with whatever field type it is told,
// including those amqp091-go cannot write, such as the 'L' that py-amqp (Kombu, Celery)
// sends for integers beyond 32 bits, so that tests can publish what other clients do.
//
// It speaks just enough of the protocol for one confirmed publish, with PLAIN
// authentication and without heartbeats.
package amqpraw

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Field is a header value written with an explicit AMQP field type:
//
//	't'                     bool
//	'b' 's' 'I' 'l'         signed integers of 8, 16, 32 and 64 bits: any Go integer in range
//	'B' 'u' 'i'             unsigned integers of 8, 16 and 32 bits: any Go integer in range
//	'L'                     64 bits, written as py-amqp does (signed): any Go integer that
//	                        fits in an int64 or a uint64, a uint64 being written as its bits
//	'f' 'd'                 float32 and float64 (a float32 for 'f' or a float64 for either)
//	'D'                     [Decimal]
//	'S' 'x'                 long string and byte array: string or []byte
//	'T'                     timestamp, in seconds: time.Time or any Go integer
//	'V'                     no value: nil
//	'F'                     nested table: map[string]Field
//	'A'                     array: []Field
//
// Any type octet with a [Raw] value is written as it is, so that tests can write types
// that nobody reads.
type Field struct {
	Type  byte
	Value any
}

// Decimal is the value of a field of type 'D': Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Raw is a value written after its field type octet as it is, whatever the type.
type Raw []byte

// Error is an error the broker reported: it closed the connection or the channel
// (connection.close or channel.close, with a reply code such as 403 ACCESS_REFUSED or
// 404 NOT_FOUND), returned the message because no queue took it (basic.return, 312
// NO_ROUTE), or refused it (basic.nack, without a code).
type Error struct {
	Method string // "connection.close", "channel.close", "basic.return" or "basic.nack"
	Code   int
	Text   string
}

// Error returns the method, code and text of e.
func (e *Error) Error() string {
	if e.Method == "basic.nack" {
		return "carrot/amqpraw: the broker refused the message (basic.nack)"
	}
	return fmt.Sprintf("carrot/amqpraw: the broker sent %s %d %s", e.Method, e.Code, e.Text)
}

// Publish connects to the AMQP URL (amqp://user:pass@host:port/vhost, or amqps:// for
// TLS; user and password are guest by default, the port 5672 or 5671, the vhost "/"),
// publishes one message with body and headers to exchange with routingKey (persistent,
// delivery mode 2), waits for the broker's publisher confirm (confirm.select), and closes
// cleanly. headers may be nil. The message is mandatory: if no queue takes it, Publish
// returns an [*Error] for basic.return.
//
// It speaks just enough of the protocol: protocol header, connection.start-ok (PLAIN),
// tune-ok, open, channel.open, confirm.select, basic.publish + content header + body
// frames, waits for basic.ack, then connection.close.
//
// ctx's deadline applies to the whole exchange, and canceling ctx closes the connection;
// Publish then returns ctx.Err(). Errors never contain the password.
func Publish(ctx context.Context, url, exchange, routingKey string, headers map[string]Field, body []byte) error {
	u, err := parseURL(url)
	if err != nil {
		return err
	}
	if len(exchange) > 255 || len(routingKey) > 255 {
		return errors.New("carrot/amqpraw: exchange and routing key must be at most 255 octets")
	}
	var table []byte
	if headers != nil {
		if table, err = appendTable(nil, headers, 0); err != nil {
			return err
		}
	}

	var conn net.Conn
	d := &net.Dialer{}
	if u.tls {
		conn, err = (&tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: u.host, MinVersion: tls.VersionTLS12}}).DialContext(ctx, "tcp", u.addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", u.addr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("carrot/amqpraw: %s: %w", u.redacted, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c := &client{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn), maxFrame: 1 << 20}
	err = c.publish(u, exchange, routingKey, table, body)
	if _, ok := ctx.Deadline(); ok && err != nil {
		if netErr, ok := errors.AsType[net.Error](err); ok && netErr.Timeout() {
			<-ctx.Done() // the socket's deadline may come a little before ctx's
		}
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	var brokerErr *Error
	if err != nil && !errors.As(err, &brokerErr) {
		return fmt.Errorf("carrot/amqpraw: %s: %w", u.redacted, err)
	}
	return err
}

// amqpURL is a parsed AMQP URL.
type amqpURL struct {
	addr     string // host:port
	host     string
	user     string
	password string
	vhost    string
	tls      bool
	redacted string // the URL without its password
}

// parseURL parses an AMQP URL the way amqp091-go does, but refuses query parameters.
func parseURL(raw string) (*amqpURL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error shows the URL, and some of its messages part of it: no password.
		return nil, errors.New("carrot/amqpraw: URL does not parse (are reserved characters in the user name or password percent-encoded?)")
	}
	r := &amqpURL{host: u.Hostname(), user: "guest", password: "guest", vhost: "/", redacted: u.Redacted()}
	port := "5672"
	switch u.Scheme {
	case "amqp":
	case "amqps":
		port = "5671"
		r.tls = true
	default:
		return nil, fmt.Errorf("carrot/amqpraw: %s: scheme is %q, want amqp or amqps", r.redacted, u.Scheme)
	}
	if len(u.Query()) > 0 {
		return nil, fmt.Errorf("carrot/amqpraw: %s: URL parameters are not supported", r.redacted)
	}
	if r.host == "" {
		r.host = "localhost"
	}
	if u.Port() != "" {
		port = u.Port()
	}
	r.addr = net.JoinHostPort(r.host, port)
	if u.User != nil {
		r.user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			r.password = p
		}
	}
	if len(u.Path) > 1 {
		r.vhost = u.Path[1:]
	}
	if len(r.vhost) > 255 || len(r.user) > 255 {
		return nil, fmt.Errorf("carrot/amqpraw: %s: vhost and user name must be at most 255 octets", r.redacted)
	}
	return r, nil
}

// The frame types and frame-end octet of AMQP 0-9-1.
const (
	frameMethod    = 1
	frameHeader    = 2
	frameBody      = 3
	frameHeartbeat = 8
	frameEnd       = 0xCE
)

// Methods, as class-id<<16 | method-id.
const (
	connectionStart   = 10<<16 | 10
	connectionStartOk = 10<<16 | 11
	connectionTune    = 10<<16 | 30
	connectionTuneOk  = 10<<16 | 31
	connectionOpen    = 10<<16 | 40
	connectionOpenOk  = 10<<16 | 41
	connectionClose   = 10<<16 | 50
	connectionCloseOk = 10<<16 | 51
	channelOpen       = 20<<16 | 10
	channelOpenOk     = 20<<16 | 11
	channelClose      = 20<<16 | 40
	channelCloseOk    = 20<<16 | 41
	basicPublish      = 60<<16 | 40
	basicReturn       = 60<<16 | 50
	basicAck          = 60<<16 | 80
	basicNack         = 60<<16 | 120
	confirmSelect     = 85<<16 | 10
	confirmSelectOk   = 85<<16 | 11
)

// client is a connection being used for one publish.
type client struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	maxFrame uint32 // the largest frame, frame header and end included
}

// publish does the whole exchange.
func (c *client) publish(u *amqpURL, exchange, routingKey string, table, body []byte) error {
	if _, err := c.w.WriteString("AMQP\x00\x00\x09\x01"); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	start, err := c.expect(0, connectionStart)
	if err != nil {
		return err
	}
	// version-major, version-minor, server-properties, mechanisms, locales
	args := reader{b: start}
	args.skip(2)
	args.longstr()
	if mechanisms := args.longstr(); args.err != nil || !slices.Contains(strings.Fields(string(mechanisms)), "PLAIN") {
		return fmt.Errorf("the broker does not offer PLAIN authentication (it offers %q)", mechanisms)
	}

	properties, _ := appendTable(nil, map[string]Field{
		"product":      {'S', "carrot/amqpraw"},
		"capabilities": {'F', map[string]Field{"authentication_failure_close": {'t', true}}},
	}, 0)
	response := "\x00" + u.user + "\x00" + u.password
	err = c.method(0, connectionStartOk, properties, shortstr("PLAIN"), longstr(response), shortstr("en_US"))
	if err != nil {
		return err
	}
	tune, err := c.expect(0, connectionTune)
	if errors.Is(err, io.EOF) {
		return errors.New("the broker closed the connection during authentication (wrong user name or password?)")
	}
	if err != nil {
		return err
	}
	args = reader{b: tune}
	args.skip(2) // channel-max
	frameMax := args.uint32()
	if frameMax == 0 || frameMax > 1<<20 {
		frameMax = 1 << 20
	}
	c.maxFrame = max(frameMax, 4096)
	// channel-max 1, frame-max, heartbeat 0: none
	if err := c.method(0, connectionTuneOk, u16(1), u32(c.maxFrame), u16(0)); err != nil {
		return err
	}
	if err := c.call(0, connectionOpenOk, connectionOpen, shortstr(u.vhost), shortstr(""), []byte{0}); err != nil {
		return err
	}

	err = c.publishOnChannel(exchange, routingKey, table, body)
	var brokerErr *Error
	if err != nil && (!errors.As(err, &brokerErr) || brokerErr.Method == "connection.close") {
		return err
	}
	// reply-code 200, reply-text, class-id and method-id 0
	if closeErr := c.call(0, connectionCloseOk, connectionClose, u16(200), shortstr("bye"), u16(0), u16(0)); closeErr != nil && err == nil {
		return closeErr
	}
	return err
}

// publishOnChannel opens channel 1, publishes and waits for the confirm.
func (c *client) publishOnChannel(exchange, routingKey string, table, body []byte) error {
	const channel = 1
	if err := c.call(channel, channelOpenOk, channelOpen, shortstr("")); err != nil {
		return err
	}
	if err := c.call(channel, confirmSelectOk, confirmSelect, []byte{0}); err != nil { // no-wait false
		return err
	}
	// reserved-1, exchange, routing-key, mandatory true and immediate false
	mandatory := byte(1)
	if err := c.frame(frameMethod, channel, u32(basicPublish), u16(0), shortstr(exchange), shortstr(routingKey), []byte{mandatory}); err != nil {
		return err
	}
	// class-id, weight, body-size, property-flags, then headers and delivery-mode
	flags := uint16(0x1000)
	if table != nil {
		flags |= 0x2000
	}
	if err := c.frame(frameHeader, channel, u16(60), u16(0), u64(uint64(len(body))), u16(flags), table, []byte{2}); err != nil {
		return err
	}
	for chunk := int(c.maxFrame) - 8; len(body) > 0; {
		n := min(len(body), chunk)
		if err := c.frame(frameBody, channel, body[:n]); err != nil {
			return err
		}
		body = body[n:]
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	var returned *Error
	for {
		m, args, err := c.next(channel)
		if err != nil {
			return err
		}
		switch m {
		case basicReturn:
			a := reader{b: args}
			returned = &Error{Method: "basic.return", Code: int(a.uint16())}
			returned.Text = string(a.shortstr())
		case basicAck:
			// A confirm comes after the return of the same message.
			if returned != nil {
				return returned
			}
			return nil
		case basicNack:
			return &Error{Method: "basic.nack"}
		}
	}
}

// call sends a method and waits for its reply, want.
func (c *client) call(channel uint16, want, method uint32, args ...[]byte) error {
	if err := c.method(channel, method, args...); err != nil {
		return err
	}
	_, err := c.expect(channel, want)
	return err
}

// method sends a method frame.
func (c *client) method(channel uint16, method uint32, args ...[]byte) error {
	if err := c.frame(frameMethod, channel, append([][]byte{u32(method)}, args...)...); err != nil {
		return err
	}
	return c.w.Flush()
}

// frame buffers a frame whose payload is parts.
func (c *client) frame(typ byte, channel uint16, parts ...[]byte) error {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if size > int(c.maxFrame)-8 {
		return fmt.Errorf("a frame of %d octets is more than the broker takes (%d)", size+8, c.maxFrame)
	}
	var h [7]byte
	h[0] = typ
	binary.BigEndian.PutUint16(h[1:], channel)
	binary.BigEndian.PutUint32(h[3:], uint32(size))
	c.w.Write(h[:])
	for _, p := range parts {
		c.w.Write(p)
	}
	return c.w.WriteByte(frameEnd)
}

// expect reads frames until the method want on channel, and returns its arguments.
func (c *client) expect(channel uint16, want uint32) ([]byte, error) {
	for {
		m, args, err := c.next(channel)
		if err != nil {
			return nil, err
		}
		if m == want {
			return args, nil
		}
	}
}

// next reads frames until a method on channel, and returns it. It answers
// connection.close and channel.close, and returns them as errors.
func (c *client) next(channel uint16) (uint32, []byte, error) {
	for {
		typ, ch, payload, err := c.read()
		if err != nil {
			return 0, nil, err
		}
		if typ != frameMethod || len(payload) < 4 {
			continue // heartbeats, and the content of returned messages
		}
		m, args := binary.BigEndian.Uint32(payload), payload[4:]
		switch {
		case ch == 0 && m == connectionClose:
			c.method(0, connectionCloseOk)
			return 0, nil, closeError("connection.close", args)
		case ch != 0 && m == channelClose:
			if err := c.method(ch, channelCloseOk); err != nil {
				return 0, nil, err
			}
			return 0, nil, closeError("channel.close", args)
		case ch == channel:
			return m, args, nil
		}
	}
}

// closeError returns the error that a connection.close or channel.close with args
// reports.
func closeError(method string, args []byte) *Error {
	a := reader{b: args}
	e := &Error{Method: method, Code: int(a.uint16())}
	e.Text = string(a.shortstr())
	return e
}

// read reads a frame.
func (c *client) read() (typ byte, channel uint16, payload []byte, err error) {
	var h [7]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, 0, nil, err
	}
	if string(h[:4]) == "AMQP" {
		return 0, 0, nil, fmt.Errorf("the broker refused the protocol, answering with protocol header %q", h[:])
	}
	size := binary.BigEndian.Uint32(h[3:])
	if size > c.maxFrame-8 {
		return 0, 0, nil, fmt.Errorf("the broker sent a frame of %d octets, more than the %d agreed (is it an AMQP 0-9-1 broker?)", size+8, c.maxFrame)
	}
	payload = make([]byte, size+1)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, 0, nil, err
	}
	if payload[size] != frameEnd {
		return 0, 0, nil, errors.New("the broker sent a frame without its frame-end octet (is it an AMQP 0-9-1 broker?)")
	}
	return h[0], binary.BigEndian.Uint16(h[1:]), payload[:size], nil
}

// reader reads method arguments; once short of octets, it returns zeros and sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		return make([]byte, min(n, 8))
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) skip(n int)       { r.take(n) }
func (r *reader) uint16() uint16   { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) uint32() uint32   { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) shortstr() []byte { return r.take(int(r.take(1)[0])) }
func (r *reader) longstr() []byte  { return r.take(int(r.uint32())) }
func u16(v uint16) []byte          { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte          { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte          { return binary.BigEndian.AppendUint64(nil, v) }
func shortstr(s string) []byte     { return append([]byte{byte(len(s))}, s...) }
func longstr(s string) []byte      { return append(u32(uint32(len(s))), s...) }

// maxDepth limits how deeply tables and arrays may nest.
const maxDepth = 100

// appendTable appends the field table t, its entries sorted by key.
func appendTable(b []byte, t map[string]Field, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("carrot/amqpraw: tables and arrays nested more than %d deep", maxDepth)
	}
	at := len(b)
	b = append(b, 0, 0, 0, 0)
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if len(k) > 255 {
			return nil, fmt.Errorf("carrot/amqpraw: header key %.20q... is longer than 255 octets", k)
		}
		b = append(b, byte(len(k)))
		b = append(b, k...)
		var err error
		if b, err = appendField(b, t[k], depth); err != nil {
			return nil, fmt.Errorf("%w in header %q", err, k)
		}
	}
	return putLength(b, at)
}

// putLength writes at b[at:] the length of what follows it.
func putLength(b []byte, at int) ([]byte, error) {
	n := len(b) - at - 4
	if n > math.MaxUint32 {
		return nil, errors.New("carrot/amqpraw: table or array longer than 4 GiB")
	}
	binary.BigEndian.PutUint32(b[at:], uint32(n))
	return b, nil
}

// appendField appends the field value f.
func appendField(b []byte, f Field, depth int) ([]byte, error) {
	bad := func() ([]byte, error) {
		return nil, fmt.Errorf("carrot/amqpraw: a %T cannot be written as field type %q", f.Value, rune(f.Type))
	}
	b = append(b, f.Type)
	if raw, ok := f.Value.(Raw); ok {
		return append(b, raw...), nil
	}
	switch f.Type {
	case 't':
		v, ok := f.Value.(bool)
		if !ok {
			return bad()
		}
		if v {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case 'b', 's', 'I', 'l', 'B', 'u', 'i', 'L':
		v, ok := integer(f.Value, f.Type)
		if !ok {
			return nil, fmt.Errorf("carrot/amqpraw: %T %v cannot be written as field type %q", f.Value, f.Value, rune(f.Type))
		}
		switch f.Type {
		case 'b', 'B':
			return append(b, byte(v)), nil
		case 's', 'u':
			return binary.BigEndian.AppendUint16(b, uint16(v)), nil
		case 'I', 'i':
			return binary.BigEndian.AppendUint32(b, uint32(v)), nil
		default:
			return binary.BigEndian.AppendUint64(b, v), nil
		}
	case 'f':
		v, ok := f.Value.(float32)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(b, math.Float32bits(v)), nil
	case 'd':
		switch v := f.Value.(type) {
		case float64:
			return binary.BigEndian.AppendUint64(b, math.Float64bits(v)), nil
		case float32:
			return binary.BigEndian.AppendUint64(b, math.Float64bits(float64(v))), nil
		}
		return bad()
	case 'D':
		v, ok := f.Value.(Decimal)
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint32(append(b, v.Scale), uint32(v.Value)), nil
	case 'S', 'x':
		var v []byte
		switch s := f.Value.(type) {
		case string:
			v = []byte(s)
		case []byte:
			v = s
		default:
			return bad()
		}
		if len(v) > math.MaxInt32 {
			return nil, errors.New("carrot/amqpraw: string longer than 2 GiB")
		}
		return append(binary.BigEndian.AppendUint32(b, uint32(len(v))), v...), nil
	case 'T':
		if t, ok := f.Value.(time.Time); ok {
			return binary.BigEndian.AppendUint64(b, uint64(t.Unix())), nil
		}
		v, ok := integer(f.Value, 'L')
		if !ok {
			return bad()
		}
		return binary.BigEndian.AppendUint64(b, v), nil
	case 'V':
		if f.Value != nil {
			return bad()
		}
		return b, nil
	case 'F':
		v, ok := f.Value.(map[string]Field)
		if !ok {
			return bad()
		}
		return appendTable(b, v, depth+1)
	case 'A':
		v, ok := f.Value.([]Field)
		if !ok {
			return bad()
		}
		if depth+1 > maxDepth {
			return nil, fmt.Errorf("carrot/amqpraw: tables and arrays nested more than %d deep", maxDepth)
		}
		at := len(b)
		b = append(b, 0, 0, 0, 0)
		for i, e := range v {
			var err error
			if b, err = appendField(b, e, depth+1); err != nil {
				return nil, fmt.Errorf("%w at [%d]", err, i)
			}
		}
		return putLength(b, at)
	}
	return nil, fmt.Errorf("carrot/amqpraw: field type %q needs a Raw value", rune(f.Type))
}

// integer returns v, a Go integer, as the 64 bits of field type typ, and whether it is
// in that type's range.
func integer(v any, typ byte) (uint64, bool) {
	var i int64
	var u uint64
	signed := true
	switch x := v.(type) {
	case int:
		i = int64(x)
	case int8:
		i = int64(x)
	case int16:
		i = int64(x)
	case int32:
		i = int64(x)
	case int64:
		i = x
	case uint:
		u, signed = uint64(x), false
	case uint8:
		u, signed = uint64(x), false
	case uint16:
		u, signed = uint64(x), false
	case uint32:
		u, signed = uint64(x), false
	case uint64:
		u, signed = x, false
	case uintptr:
		u, signed = uint64(x), false
	default:
		return 0, false
	}
	if signed {
		if i >= 0 {
			u, signed = uint64(i), false
		}
	}
	// Now signed means negative, in i; otherwise the value is u.
	var lo int64
	var hi uint64
	switch typ {
	case 'b':
		lo, hi = math.MinInt8, math.MaxInt8
	case 's':
		lo, hi = math.MinInt16, math.MaxInt16
	case 'I':
		lo, hi = math.MinInt32, math.MaxInt32
	case 'l':
		lo, hi = math.MinInt64, math.MaxInt64
	case 'B':
		hi = math.MaxUint8
	case 'u':
		hi = math.MaxUint16
	case 'i':
		hi = math.MaxUint32
	case 'L':
		lo, hi = math.MinInt64, math.MaxUint64
	}
	if signed {
		return uint64(i), i >= lo
	}
	return u, u <= hi
}
