package carrot

import (
	"bytes"
	"encoding"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// A Codec turns Go values into message bodies and back, for one content type. Codecs are
// carrot 0.4's serializers: a Publisher encodes with the codec of its ContentType, and
// [Message.Decode] picks the codec by the message's content type.
type Codec interface {
	// ContentType is the MIME type the codec handles, such as "application/json".
	ContentType() string
	// Encode returns the body for v.
	Encode(v any) ([]byte, error)
	// Decode stores the value body holds in v, which is a non-nil pointer.
	Decode(body []byte, v any) error
}

// Content types of the codecs carrot registers.
const (
	JSON   = "application/json"         // encoding/json; the default
	Binary = "application/octet-stream" // []byte and string bodies as they are; also messages without a content type
	Text   = "text/plain"               // UTF-8 text: string, []byte, encoding.TextMarshaler
	Gob    = "application/x-gob"        // encoding/gob
)

var (
	codecsMu sync.RWMutex
	codecs   = map[string]Codec{
		JSON:   jsonCodec{},
		Binary: binaryCodec{},
		Text:   textCodec{},
		Gob:    gobCodec{},
	}
)

// RegisterCodec makes a codec available to every Publisher and Consumer, replacing any
// codec registered before for the same content type. It panics if c is nil or its content
// type does not parse.
func RegisterCodec(c Codec) {
	if c == nil {
		panic("carrot: RegisterCodec codec is nil")
	}
	ct, err := mediaType(c.ContentType())
	if err != nil {
		panic("carrot: RegisterCodec: " + err.Error())
	}
	codecsMu.Lock()
	codecs[ct] = c
	codecsMu.Unlock()
}

// Codecs returns the content types of the registered codecs, sorted.
func Codecs() []string {
	codecsMu.RLock()
	defer codecsMu.RUnlock()
	types := make([]string, 0, len(codecs))
	for t := range codecs {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// codecFor returns the codec registered for a content type, ignoring its parameters.
func codecFor(contentType string) (Codec, error) {
	ct, err := mediaType(contentType)
	if err != nil {
		return nil, err
	}
	codecsMu.RLock()
	c := codecs[ct]
	codecsMu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("%w: no codec registered for %q", ErrUnacceptable, ct)
	}
	return c, nil
}

// mediaType returns the lower-cased type of a MIME content type without its parameters;
// no content type at all is Binary.
func mediaType(contentType string) (string, error) {
	if strings.TrimSpace(contentType) == "" {
		return Binary, nil
	}
	t, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", fmt.Errorf("%w: content type %q does not parse: %v", ErrUnacceptable, contentType, err)
	}
	return t, nil
}

// DecodeError is returned by [Message.Decode] for a body that cannot be decoded.
type DecodeError struct {
	ContentType string
	Err         error // why; wraps ErrUnacceptable for content types not accepted
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("carrot: decode %q body: %v", e.ContentType, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// identityEncodings are content encodings that leave the body as it is.
var identityEncodings = map[string]bool{"": true, "identity": true, "utf-8": true, "utf8": true, "binary": true, "7bit": true, "8bit": true}

func decode(contentType, contentEncoding string, accept map[string]bool, body []byte, v any) error {
	fail := func(err error) error { return &DecodeError{ContentType: contentType, Err: err} }
	if !identityEncodings[strings.ToLower(contentEncoding)] {
		return fail(fmt.Errorf("%w: content encoding %q is not supported", ErrUnacceptable, contentEncoding))
	}
	ct, err := mediaType(contentType)
	if err != nil {
		return fail(err)
	}
	if accept != nil && !accept[ct] {
		return fail(fmt.Errorf("%w: the consumer accepts only %s", ErrUnacceptable, strings.Join(sortedKeys(accept), ", ")))
	}
	c, err := codecFor(ct)
	if err != nil {
		return fail(err)
	}
	if err := c.Decode(body, v); err != nil {
		return fail(err)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type jsonCodec struct{}

func (jsonCodec) ContentType() string             { return JSON }
func (jsonCodec) Encode(v any) ([]byte, error)    { return json.Marshal(v) }
func (jsonCodec) Decode(body []byte, v any) error { return json.Unmarshal(body, v) }

type gobCodec struct{}

func (gobCodec) ContentType() string { return Gob }

func (gobCodec) Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func (gobCodec) Decode(body []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(body)).Decode(v)
}

type binaryCodec struct{}

func (binaryCodec) ContentType() string             { return Binary }
func (binaryCodec) Encode(v any) ([]byte, error)    { return encodeBytes(v, "binary") }
func (binaryCodec) Decode(body []byte, v any) error { return decodeBytes(body, v) }

func encodeBytes(v any, what string) ([]byte, error) {
	switch v := v.(type) {
	case []byte:
		return v, nil
	case string:
		return []byte(v), nil
	}
	return nil, fmt.Errorf("cannot encode %T as %s: want []byte or string", v, what)
}

func decodeBytes(body []byte, v any) error {
	switch v := v.(type) {
	case *[]byte:
		*v = append([]byte(nil), body...)
		return nil
	case *string:
		*v = string(body)
		return nil
	}
	return fmt.Errorf("cannot decode into %T: want *[]byte or *string", v)
}

type textCodec struct{}

func (textCodec) ContentType() string { return Text }

func (textCodec) Encode(v any) ([]byte, error) {
	var b []byte
	var err error
	if t, ok := v.(encoding.TextMarshaler); ok {
		b, err = t.MarshalText()
	} else if b, err = encodeBytes(v, "text"); err != nil {
		err = fmt.Errorf("%w, or an encoding.TextMarshaler", err)
	}
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, errors.New("text is not valid UTF-8")
	}
	return b, nil
}

func (textCodec) Decode(body []byte, v any) error {
	if !utf8.Valid(body) {
		return errors.New("text is not valid UTF-8")
	}
	if t, ok := v.(encoding.TextUnmarshaler); ok {
		return t.UnmarshalText(body)
	}
	if err := decodeBytes(body, v); err != nil {
		return fmt.Errorf("%w, or an encoding.TextUnmarshaler", err)
	}
	return nil
}
