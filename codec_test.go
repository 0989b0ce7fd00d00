package carrot_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/carrot-go/carrot"
)

// roundTrip sends v with a publisher of contentType and fetches it back.
func roundTrip(t *testing.T, contentType string, v any) *carrot.Message {
	t.Helper()
	ctx := t.Context()
	conn := open(t)
	q, err := conn.DeclareQueue(ctx, carrot.Queue{Name: "q"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q, ContentType: contentType})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Send(ctx, v); err != nil {
		t.Fatalf("send %T as %s: %v", v, contentType, err)
	}
	c, err := conn.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type point struct{ X, Y int }

func TestCodecs(t *testing.T) {
	t.Run("json", func(t *testing.T) {
		m := roundTrip(t, "", point{1, 2}) // JSON is the default
		var got point
		if err := m.Decode(&got); err != nil || got != (point{1, 2}) || m.ContentType != carrot.JSON || string(m.Body) != `{"X":1,"Y":2}` {
			t.Errorf("got %+v, %v, content type %q, body %s", got, err, m.ContentType, m.Body)
		}
	})
	t.Run("gob", func(t *testing.T) {
		m := roundTrip(t, carrot.Gob, point{3, 4})
		var got point
		if err := m.Decode(&got); err != nil || got != (point{3, 4}) {
			t.Errorf("got %+v, %v", got, err)
		}
	})
	t.Run("text", func(t *testing.T) {
		m := roundTrip(t, carrot.Text, net.IPv4(10, 0, 0, 1)) // an encoding.TextMarshaler
		var ip net.IP
		if err := m.Decode(&ip); err != nil || !ip.Equal(net.IPv4(10, 0, 0, 1)) || string(m.Body) != "10.0.0.1" {
			t.Errorf("got %v, %v, body %q", ip, err, m.Body)
		}
		var s string
		if err := m.Decode(&s); err != nil || s != "10.0.0.1" {
			t.Errorf("decode into a string: %q, %v", s, err)
		}
	})
	t.Run("binary", func(t *testing.T) {
		body := []byte{0, 0xff, 1}
		m := roundTrip(t, carrot.Binary, body)
		var got []byte
		if err := m.Decode(&got); err != nil || !bytes.Equal(got, body) {
			t.Errorf("got %v, %v", got, err)
		}
	})
}

func TestEncodeErrors(t *testing.T) {
	conn := open(t)
	for _, tc := range []struct {
		contentType string
		v           any
	}{
		{carrot.JSON, make(chan int)},
		{carrot.Text, []byte{0xff, 0xfe}}, // not UTF-8
		{carrot.Text, 42},
		{carrot.Binary, point{}},
	} {
		p, err := conn.NewPublisher(carrot.PublisherOptions{ContentType: tc.contentType})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Encode(tc.v); !errors.Is(err, carrot.ErrInvalid) {
			t.Errorf("encode %T as %s = %v, want ErrInvalid", tc.v, tc.contentType, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		m          carrot.Message
		into       any
		unaccepted bool
	}{
		{"bad json", carrot.Message{ContentType: carrot.JSON, Body: []byte("{")}, new(point), false},
		{"json parameters", carrot.Message{ContentType: "application/json; charset=utf-8", Body: []byte("{")}, new(point), false},
		{"wrong target", carrot.Message{ContentType: carrot.Binary, Body: []byte("x")}, new(point), false},
		{"invalid utf-8", carrot.Message{ContentType: carrot.Text, Body: []byte{0xff}}, new(string), false},
		{"unknown content type", carrot.Message{ContentType: "application/x-unknown", Body: []byte("x")}, new(string), true},
		{"unparsable content type", carrot.Message{ContentType: "/", Body: []byte("x")}, new(string), true},
		{"compressed", carrot.Message{ContentType: carrot.JSON, ContentEncoding: "gzip", Body: []byte("x")}, new(string), true},
	} {
		err := tc.m.Decode(tc.into)
		var de *carrot.DecodeError
		if !errors.As(err, &de) || errors.Is(err, carrot.ErrUnacceptable) != tc.unaccepted {
			t.Errorf("%s: Decode = %v; want a *DecodeError (unacceptable: %v)", tc.name, err, tc.unaccepted)
		}
	}
	var s string
	if err := (&carrot.Message{Body: []byte("raw")}).Decode(&s); err != nil || s != "raw" {
		t.Errorf("a message without a content type decodes as raw bytes: got %q, %v", s, err)
	}
}

// upperCodec is a user codec: text in upper case.
type upperCodec struct{}

func (upperCodec) ContentType() string { return "application/x-upper" }
func (upperCodec) Encode(v any) ([]byte, error) {
	return []byte(strings.ToUpper(v.(string))), nil
}
func (upperCodec) Decode(body []byte, v any) error {
	*v.(*string) = strings.ToLower(string(body))
	return nil
}

func TestRegisterCodec(t *testing.T) {
	carrot.RegisterCodec(upperCodec{})
	if !slices.Contains(carrot.Codecs(), "application/x-upper") {
		t.Errorf("Codecs() = %v, want it to list application/x-upper", carrot.Codecs())
	}
	m := roundTrip(t, "application/x-upper", "Hello")
	var s string
	if err := m.Decode(&s); string(m.Body) != "HELLO" || s != "hello" || err != nil {
		t.Errorf("body %q decoded to %q, %v", m.Body, s, err)
	}
	ctx := context.Background()
	if err := m.Ack(ctx); err != nil {
		t.Error(err)
	}
}
