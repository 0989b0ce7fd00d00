package redis

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/carrot-go/carrot/backend"
)

// A message is a stream entry with these fields, each present only when it is not empty:
//
//	x   exchange          k   routing key       b   body (always present)
//	ct  content type      ce  content encoding  h   headers, JSON (see encodeHeaders)
//	p   "1" if persistent pr  priority          e   expiration, ms
//	mid message id        cid correlation id    rt  reply-to
//	ts  timestamp, Unix seconds
//	exp when the message expires in this queue, Unix ms (written by the scripts)

// pubFields are the names of the fields of a published message, in the order of their
// bits in pubReq.present and of fieldValue's cases.
var pubFields = [...]any{"x", "k", "b", "ct", "ce", "h", "p", "pr", "e", "mid", "cid", "rt", "ts"}

const fieldBody = 2 // pubFields[fieldBody] is "b"

// encode encodes the properties of r's message that are not strings already, and notes
// which fields it has.
func (r *pubReq) encode() error {
	m := &r.m.Message
	if len(m.Headers) > 0 {
		h, err := encodeHeaders(m.Headers)
		if err != nil {
			return err
		}
		r.headers = h
	}
	if m.Persistent {
		r.persistent = "1"
	}
	if m.Priority != 0 {
		r.priority = strconv.Itoa(int(m.Priority))
	}
	if m.Expiration > 0 {
		r.expiration = strconv.FormatInt(m.Expiration.Milliseconds(), 10)
	}
	if !m.Timestamp.IsZero() {
		r.timestamp = strconv.FormatInt(m.Timestamp.Unix(), 10)
	}
	r.present = 1 << fieldBody
	for i := range pubFields {
		if i != fieldBody && *r.field(i) != "" {
			r.present |= 1 << i
		}
	}
	return nil
}

// field returns the value of r's field i of pubFields, but the body's.
func (r *pubReq) field(i int) *string {
	m := &r.m
	switch i {
	case 0:
		return &m.Exchange
	case 1:
		return &m.RoutingKey
	case 3:
		return &m.ContentType
	case 4:
		return &m.ContentEncoding
	case 5:
		return &r.headers
	case 6:
		return &r.persistent
	case 7:
		return &r.priority
	case 8:
		return &r.expiration
	case 9:
		return &m.MessageID
	case 10:
		return &m.CorrelationID
	case 11:
		return &m.ReplyTo
	case 12:
		return &r.timestamp
	}
	return new(string)
}

// fieldValue returns the value of r's field i of pubFields as an argument of go-redis: a
// pointer into r, which go-redis writes without an allocation.
func (r *pubReq) fieldValue(i int) any {
	if i == fieldBody {
		return (*body)(r)
	}
	return r.field(i)
}

// body is the body of a publish's message as an argument of go-redis, which writes what
// MarshalBinary returns: a pointer, it costs no allocation, where a []byte in an
// interface does.
type body pubReq

func (b *body) MarshalBinary() ([]byte, error) { return b.m.Body, nil }

// entry is a stream entry.
type entry struct {
	id      string
	fields  map[string]any // strings, as go-redis gives them
	count   int            // deliveries, this one included
	expired bool           // its exp has passed
}

// str returns the string value of a field, or "".
func str(f map[string]any, name string) string {
	s, _ := f[name].(string)
	return s
}

// message rebuilds the message of an entry, and the exchange it was published to.
func (e *entry) message() (backend.Message, string, error) {
	var m backend.Message
	var exchange, headers, priority, expiration, timestamp string
	for name, v := range e.fields {
		s, _ := v.(string)
		switch name {
		case "b":
			m.Body = []byte(s)
		case "x":
			exchange = s
		case "k":
			m.RoutingKey = s
		case "ct":
			m.ContentType = s
		case "ce":
			m.ContentEncoding = s
		case "h":
			headers = s
		case "p":
			m.Persistent = s == "1"
		case "pr":
			priority = s
		case "e":
			expiration = s
		case "mid":
			m.MessageID = s
		case "cid":
			m.CorrelationID = s
		case "rt":
			m.ReplyTo = s
		case "ts":
			timestamp = s
		}
	}
	if m.Body == nil {
		m.Body = []byte{}
	}
	if headers != "" {
		h, err := decodeHeaders(headers)
		if err != nil {
			return m, "", fmt.Errorf("carrot/redis: message %s: headers: %w", e.id, err)
		}
		m.Headers = h
	}
	if priority != "" {
		n, _ := strconv.Atoi(priority)
		m.Priority = uint8(n)
	}
	if expiration != "" {
		n, _ := strconv.ParseInt(expiration, 10, 64)
		m.Expiration = time.Duration(n) * time.Millisecond
	}
	if timestamp != "" {
		n, _ := strconv.ParseInt(timestamp, 10, 64)
		m.Timestamp = time.Unix(n, 0).UTC()
	}
	return m, exchange, nil
}

// Headers are a JSON object of name to [type, value], the value a string: "s" string,
// "y" bytes in base64, "t" bool ("1" or "0"), "i" int64, "f" float64 (shortest exact
// form), "d" time in Unix seconds, "n" nil (no value).
func encodeHeaders(h map[string]any) (string, error) {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		switch v := v.(type) {
		case nil:
			out[k] = []string{"n"}
		case string:
			out[k] = []string{"s", v}
		case []byte:
			out[k] = []string{"y", base64.StdEncoding.EncodeToString(v)}
		case bool:
			b := "0"
			if v {
				b = "1"
			}
			out[k] = []string{"t", b}
		case int64:
			out[k] = []string{"i", strconv.FormatInt(v, 10)}
		case float64:
			out[k] = []string{"f", strconv.FormatFloat(v, 'g', -1, 64)}
		case time.Time:
			out[k] = []string{"d", strconv.FormatInt(v.Unix(), 10)}
		default:
			return "", backend.Errorf(backend.Invalid, "carrot/redis: header %q has type %T", k, v)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeHeaders(s string) (map[string]any, error) {
	var in map[string][]string
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, err
	}
	h := make(map[string]any, len(in))
	for k, tv := range in {
		if len(tv) == 0 || (tv[0] != "n" && len(tv) != 2) {
			return nil, fmt.Errorf("header %q: malformed", k)
		}
		var err error
		switch tv[0] {
		case "n":
			h[k] = nil
		case "s":
			h[k] = tv[1]
		case "y":
			h[k], err = base64.StdEncoding.DecodeString(tv[1])
		case "t":
			h[k] = tv[1] == "1"
		case "i":
			h[k], err = strconv.ParseInt(tv[1], 10, 64)
		case "f":
			h[k], err = strconv.ParseFloat(tv[1], 64)
		case "d":
			var n int64
			n, err = strconv.ParseInt(tv[1], 10, 64)
			h[k] = time.Unix(n, 0).UTC()
		default:
			err = fmt.Errorf("unknown type %q", tv[0])
		}
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
	}
	return h, nil
}
