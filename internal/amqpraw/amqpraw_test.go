package amqpraw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// brokerURL returns the URL of the RabbitMQ to test with, or skips the test.
func brokerURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("CARROT_TEST_AMQP091_URL")
	if u == "" {
		t.Skip("CARROT_TEST_AMQP091_URL is not set (for example amqp://guest:guest@127.0.0.1:5672/): no RabbitMQ to publish to")
	}
	return u
}

// tempQueue declares a queue of a unique name with amqp091-go, deletes it when the test
// ends, and returns its name and the channel.
func tempQueue(t *testing.T, url string) (string, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("carrot-amqpraw-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	durable, autoDelete, exclusive, noWait := false, false, false, false
	if _, err := ch.QueueDeclare(name, durable, autoDelete, exclusive, noWait, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ifUnused, ifEmpty := false, false
		if _, err := ch.QueueDelete(name, ifUnused, ifEmpty, noWait); err != nil {
			t.Errorf("delete queue %s: %v", name, err)
		}
	})
	return name, ch
}

func TestPublish(t *testing.T) {
	url := brokerURL(t)
	queue, ch := tempQueue(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	headers := map[string]Field{
		"big":  {'L', uint64(1 << 40)},
		"task": {'S', "tasks.add"},
	}
	if err := Publish(ctx, url, "", queue, headers, []byte(`{"args": [1, 2]}`)); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Errorf("got %d messages in the queue, want 1", q.Messages)
	}
}

func TestPublishEveryFieldType(t *testing.T) {
	url := brokerURL(t)
	queue, ch := tempQueue(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	headers := map[string]Field{
		"t": {'t', true}, "b": {'b', -1}, "B": {'B', 255}, "s": {'s', -2}, "u": {'u', 65535},
		"I": {'I', math.MinInt32}, "i": {'i', uint32(math.MaxUint32)}, "l": {'l', int64(-1)},
		"L": {'L', int64(-1 << 40)}, "f": {'f', float32(1.5)}, "d": {'d', 2.5},
		"D": {'D', Decimal{Scale: 2, Value: 12345}}, "S": {'S', "x"}, "x": {'x', []byte{0, 1}},
		"T": {'T', time.Unix(1700000000, 0)}, "V": {'V', nil},
		"A": {'A', []Field{{'I', 1}, {'S', "a"}}},
		"F": {'F', map[string]Field{"n": {'L', 1 << 40}}},
	}
	body := bytes.Repeat([]byte("0123456789"), 30000) // more than one body frame
	if err := Publish(ctx, url, "", queue, headers, body); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Errorf("got %d messages in the queue, want 1", q.Messages)
	}
}

func TestPublishBrokerErrors(t *testing.T) {
	url := brokerURL(t)
	const password = "not-the-Password-42"
	wrongPassword := strings.Replace(url, "guest:guest@", "guest:"+password+"@", 1)
	if wrongPassword == url {
		t.Skip("CARROT_TEST_AMQP091_URL has no guest:guest@ to replace the password of")
	}
	tests := []struct {
		name     string
		url      string
		exchange string
		key      string
		method   string
		code     int
	}{
		{"unroutable", url, "", "carrot-amqpraw-no-such-queue", "basic.return", 312},
		{"no such exchange", url, "carrot-amqpraw-no-such-exchange", "", "channel.close", 404},
		{"wrong password", wrongPassword, "", "", "connection.close", 403},
		{"no such vhost", strings.TrimSuffix(url, "/") + "/carrot-amqpraw-no-such-vhost", "", "", "connection.close", 530},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Publish(ctx, tc.url, tc.exchange, tc.key, nil, []byte("x"))
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("got %v, want an *Error", err)
			}
			if e.Method != tc.method || e.Code != tc.code {
				t.Errorf("got %s %d, want %s %d", e.Method, e.Code, tc.method, tc.code)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("got %q, which shows the password", err)
			}
		})
	}
}

func TestPublishContext(t *testing.T) {
	// A server that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	url := "amqp://guest:guest@" + l.Addr().String() + "/"

	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"canceled before", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			err := Publish(ctx, url, "", "q", nil, nil)
			if err != tc.want {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("got Publish returning after %v, want soon after ctx was done", d)
			}
		})
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url   string
		want  amqpURL
		error string // a part of the error, "" if none
	}{
		{url: "amqp://", want: amqpURL{addr: "localhost:5672", host: "localhost", user: "guest", password: "guest", vhost: "/"}},
		{url: "amqp://u:p@h:1234/", want: amqpURL{addr: "h:1234", host: "h", user: "u", password: "p", vhost: "/"}},
		{url: "amqp://h/v", want: amqpURL{addr: "h:5672", host: "h", user: "guest", password: "guest", vhost: "v"}},
		{url: "amqp://h/%2f", want: amqpURL{addr: "h:5672", host: "h", user: "guest", password: "guest", vhost: "/"}},
		{url: "amqp://h/%2fv", want: amqpURL{addr: "h:5672", host: "h", user: "guest", password: "guest", vhost: "/v"}},
		{url: "amqps://u:p%40ss@[::1]", want: amqpURL{addr: "[::1]:5671", host: "::1", user: "u", password: "p@ss", vhost: "/", tls: true}},
		{url: "http://u:secret@h/", error: `http://u:xxxxx@h/: scheme is "http"`},
		{url: "amqp://u:secret@h/?heartbeat=0", error: "amqp://u:xxxxx@h/?heartbeat=0: URL parameters are not supported"},
		{url: "amqp://u:sec%zzret@h/", error: "URL does not parse"},
		{url: "amqp://u:secret@h:port/", error: "URL does not parse"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			got, err := parseURL(tc.url)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("got error %v, want one with %q", err, tc.error)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "sec%zz") {
					t.Errorf("got %q, which shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.redacted = ""
			if *got != tc.want {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestAppendField(t *testing.T) {
	tests := []struct {
		field Field
		want  string // the encoding, "" for an error
	}{
		{Field{'t', true}, "t\x01"},
		{Field{'b', -1}, "b\xff"},
		{Field{'b', 128}, ""},
		{Field{'B', 255}, "B\xff"},
		{Field{'B', -1}, ""},
		{Field{'s', int16(-2)}, "s\xff\xfe"},
		{Field{'u', 65536}, ""},
		{Field{'I', math.MaxInt32}, "I\x7f\xff\xff\xff"},
		{Field{'I', math.MaxInt32 + 1}, ""},
		{Field{'i', uint32(math.MaxUint32)}, "i\xff\xff\xff\xff"},
		{Field{'l', int64(-1)}, "l\xff\xff\xff\xff\xff\xff\xff\xff"},
		{Field{'l', uint64(math.MaxUint64)}, ""},
		{Field{'L', uint64(1 << 40)}, "L\x00\x00\x01\x00\x00\x00\x00\x00"},
		{Field{'L', -1}, "L\xff\xff\xff\xff\xff\xff\xff\xff"},
		{Field{'L', "1"}, ""},
		{Field{'f', float32(1)}, "f\x3f\x80\x00\x00"},
		{Field{'f', 1.0}, ""},
		{Field{'d', 1.0}, "d\x3f\xf0\x00\x00\x00\x00\x00\x00"},
		{Field{'D', Decimal{2, -1}}, "D\x02\xff\xff\xff\xff"},
		{Field{'S', "ab"}, "S\x00\x00\x00\x02ab"},
		{Field{'x', []byte{0}}, "x\x00\x00\x00\x01\x00"},
		{Field{'T', time.Unix(1, 0)}, "T\x00\x00\x00\x00\x00\x00\x00\x01"},
		{Field{'V', nil}, "V"},
		{Field{'V', 1}, ""},
		{Field{'A', []Field{{'t', false}, {'V', nil}}}, "A\x00\x00\x00\x03t\x00V"},
		{Field{'F', map[string]Field{"b": {'V', nil}, "a": {'t', true}}}, "F\x00\x00\x00\x07\x01at\x01\x01bV"},
		{Field{'U', Raw{0, 1}}, "U\x00\x01"},
		{Field{'U', 1}, ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%c %T %v", tc.field.Type, tc.field.Value, tc.field.Value), func(t *testing.T) {
			got, err := appendField(nil, tc.field, 0)
			if tc.want == "" {
				if err == nil {
					t.Errorf("got %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
