package redis

import (
	"encoding/base64"
	"encoding/json"
	"errors"
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
//	ts  timestamp, Unix seconds                 ty  type
//	app app id            uid user id
//	exp when the message expires in this queue, Unix ms (written by the scripts)

// pubFields are the names of the fields of a published message, in the order of their
// bits in pubReq.present (16 of them at most) and of fieldValue's cases.
var pubFields = [...]any{"x", "k", "b", "ct", "ce", "h", "p", "pr", "e", "mid", "cid", "rt", "ts", "ty", "app", "uid"}

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
	case 13:
		return &m.Type
	case 14:
		return &m.AppID
	case 15:
		return &m.UserID
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
		case "ty":
			m.Type = s
		case "app":
			m.AppID = s
		case "uid":
			m.UserID = s
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
// form), "d" time in Unix seconds, "n" nil (no value), "m" a nested table (a JSON object of
// the same form, as a string), "a" a list (a JSON array of [type, value] pairs, as a
// string).
func encodeHeaders(h map[string]any) (string, error) {
	out, err := encodeTable(h)
	if err != nil {
		return "", backend.Errorf(backend.Invalid, "carrot/redis: header %w", err)
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func encodeTable(h map[string]any) (map[string][]string, error) {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		tv, err := encodeValue(v)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", k, err)
		}
		out[k] = tv
	}
	return out, nil
}

// encodeValue encodes a header value as a [type, value] pair, or [type] for nil.
func encodeValue(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return []string{"n"}, nil
	case string:
		return []string{"s", v}, nil
	case []byte:
		return []string{"y", base64.StdEncoding.EncodeToString(v)}, nil
	case bool:
		b := "0"
		if v {
			b = "1"
		}
		return []string{"t", b}, nil
	case int64:
		return []string{"i", strconv.FormatInt(v, 10)}, nil
	case float64:
		return []string{"f", strconv.FormatFloat(v, 'g', -1, 64)}, nil
	case time.Time:
		return []string{"d", strconv.FormatInt(v.Unix(), 10)}, nil
	case map[string]any:
		t, err := encodeTable(v)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(t)
		return []string{"m", string(b)}, err
	case []any:
		l := make([][]string, len(v))
		for i, e := range v {
			tv, err := encodeValue(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			l[i] = tv
		}
		b, err := json.Marshal(l)
		return []string{"a", string(b)}, err
	}
	return nil, fmt.Errorf("type %T", v)
}

func decodeHeaders(s string) (map[string]any, error) {
	var in map[string][]string
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, err
	}
	return decodeTable(in)
}

func decodeTable(in map[string][]string) (map[string]any, error) {
	h := make(map[string]any, len(in))
	for k, tv := range in {
		v, err := decodeValue(tv)
		if err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
		h[k] = v
	}
	return h, nil
}

// decodeValue decodes a [type, value] pair of encodeValue.
func decodeValue(tv []string) (any, error) {
	if len(tv) == 0 || (tv[0] != "n" && len(tv) != 2) {
		return nil, errors.New("malformed")
	}
	switch tv[0] {
	case "n":
		return nil, nil
	case "s":
		return tv[1], nil
	case "y":
		return base64.StdEncoding.DecodeString(tv[1])
	case "t":
		return tv[1] == "1", nil
	case "i":
		return strconv.ParseInt(tv[1], 10, 64)
	case "f":
		return strconv.ParseFloat(tv[1], 64)
	case "d":
		n, err := strconv.ParseInt(tv[1], 10, 64)
		return time.Unix(n, 0).UTC(), err
	case "m":
		var in map[string][]string
		if err := json.Unmarshal([]byte(tv[1]), &in); err != nil {
			return nil, err
		}
		return decodeTable(in)
	case "a":
		var in [][]string
		if err := json.Unmarshal([]byte(tv[1]), &in); err != nil {
			return nil, err
		}
		l := make([]any, len(in))
		for i, e := range in {
			v, err := decodeValue(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			l[i] = v
		}
		return l, nil
	}
	return nil, fmt.Errorf("unknown type %q", tv[0])
}
