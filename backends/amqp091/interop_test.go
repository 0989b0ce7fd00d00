package amqp091_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/amqp091"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// The interop tests run real clients of the broker beside carrot: Kombu with py-amqp
// (Debian's python3-kombu, the Kombu 5.2 and py-amqp 5.1 of Celery users) and librabbitmq's
// command line tools (Debian's amqp-tools). Without them the tests skip, or fail with
// CARROT_TEST_REQUIRE_BROKERS=1, saying what to install.

// installHint says how to install the other clients.
const installHint = "install them with: apt-get install python3-kombu amqp-tools"

// kombuPython returns a Python interpreter that imports Kombu and py-amqp:
// $CARROT_TEST_PYTHON, else python3 on PATH, else Debian's /usr/bin/python3 (which a
// python3 of pyenv or a virtualenv on PATH may hide).
func kombuPython(t *testing.T) string {
	t.Helper()
	candidates := []string{"python3", "/usr/bin/python3"}
	if p := os.Getenv("CARROT_TEST_PYTHON"); p != "" {
		candidates = []string{p}
	}
	var tried []string
	for _, c := range candidates {
		out, err := exec.Command(c, "-c", "import kombu, amqp; print(kombu.__version__, amqp.__version__)").CombinedOutput()
		if err == nil {
			t.Logf("Kombu and py-amqp %s, with %s", strings.TrimSpace(string(out)), c)
			return c
		}
		tried = append(tried, c+": "+strings.TrimSpace(lastLine(string(out), err)))
	}
	testbroker.Missing(t, "no Python with Kombu and py-amqp ("+strings.Join(tried, "; ")+"): "+installHint)
	return ""
}

// lastLine returns the last line of a command's output, or its error.
func lastLine(out string, err error) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return err.Error()
	}
	return out[strings.LastIndexByte(out, '\n')+1:]
}

// amqpTool returns the path of one of amqp-tools' commands.
func amqpTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testbroker.Missing(t, name+" is not on PATH: "+installHint)
	}
	return p
}

// broker returns the test broker's URL and its parsed options.
func broker(t *testing.T) (string, *amqp091.Options) {
	t.Helper()
	url := testbroker.URL(t, testbroker.RabbitMQ)
	o, err := amqp091.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return url, o
}

// run runs a command with the broker in its environment, bounded by a minute, and
// returns its standard output; it fails t if the command fails.
func run(t *testing.T, o *amqp091.Options, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	host, port, err := net.SplitHostPort(o.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KOMBU_HOST="+host, "KOMBU_PORT="+port, "KOMBU_VHOST="+cmpOr(o.Vhost, "/"),
		"KOMBU_USER="+o.Username, "KOMBU_PASSWORD="+o.Password)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// toolArgs returns the connection flags of amqp-tools for o.
func toolArgs(t *testing.T, o *amqp091.Options) []string {
	t.Helper()
	host, port, err := net.SplitHostPort(o.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--server=" + host, "--port=" + port, "--vhost=" + cmpOr(o.Vhost, "/"),
		"--username=" + o.Username, "--password=" + o.Password}
}

// typed is a value as testdata/kombu_interop.py prints it: [type] or [type, value].
func typed(kind string, v ...any) []any { return append([]any{kind}, v...) }

// TestKombuInterop publishes with carrot and gets with Kombu, and the other way round,
// a message with every property and a header of every type: each arrives as the package
// documentation says, as it was but for the losses it names.
func TestKombuInterop(t *testing.T) {
	python := kombuPython(t)
	_, o := broker(t)
	conn := open(t, "")
	script := "testdata/kombu_interop.py"
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("carrot-to-kombu", func(t *testing.T) {
		q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		body := []byte("\x00carrot body \xff")
		err = p.Publish(t.Context(), &carrot.Message{
			Body: body, ContentType: "application/x-carrot", ContentEncoding: "identity",
			DeliveryMode: carrot.Persistent, Priority: 5, Expiration: time.Hour,
			MessageID: "carrot-message", CorrelationID: "carrot-correlation", ReplyTo: "carrot-replies",
			Timestamp: ts, Type: "order.created", AppID: "carrot-app", UserID: o.Username,
			Headers: carrot.Table{
				"str": "välue 🥕", "empty": "",
				"zero": 0, "minus1": -1, "int32-min": math.MinInt32, "int32-max": math.MaxInt32,
				"int64": int64(1) << 40, "int64-negative": -int64(1) << 40,
				"int64-max": int64(math.MaxInt64), "int64-min": int64(math.MinInt64),
				"true": true, "false": false, "float": 2.5, "float32": float32(0.25), "float-negative": -1e300,
				"bytes": []byte{0, 1, 255}, "empty-bytes": []byte{},
				"time": ts, "nil": nil,
				"table": carrot.Table{"n": 1, "s": "x", "nested": carrot.Table{"l": []any{1, "two"}}},
				"list":  []any{1, "two", nil, true, carrot.Table{"k": "v"}, []any{}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Body       []byte
			Properties map[string]any
			Headers    map[string]any
			RoutingKey string `json:"routing_key"`
		}
		out := run(t, o, nil, python, script, "get", q)
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Kombu printed %s: %v", out, err)
		}
		if !bytes.Equal(got.Body, body) || got.RoutingKey != q {
			t.Errorf("Kombu got body %q with routing key %q, want %q and %q", got.Body, got.RoutingKey, body, q)
		}
		wantProps := map[string]any{
			"content_type": typed("str", "application/x-carrot"), "content_encoding": typed("str", "identity"),
			"delivery_mode": typed("int", "2"), "priority": typed("int", "5"), "expiration": typed("str", "3600000"),
			"message_id": typed("str", "carrot-message"), "correlation_id": typed("str", "carrot-correlation"),
			"reply_to": typed("str", "carrot-replies"), "timestamp": typed("int", "1735787045"),
			"type": typed("str", "order.created"), "app_id": typed("str", "carrot-app"), "user_id": typed("str", o.Username),
		}
		if diff := cmp.Diff(wantProps, got.Properties); diff != "" {
			t.Errorf("properties Kombu got (-want +got):\n%s", diff)
		}
		b64 := func(b string) string { return base64.StdEncoding.EncodeToString([]byte(b)) }
		wantHeaders := map[string]any{
			"str": typed("str", "välue 🥕"), "empty": typed("str", ""),
			"zero": typed("int", "0"), "minus1": typed("int", "-1"),
			"int32-min": typed("int", "-2147483648"), "int32-max": typed("int", "2147483647"),
			"int64": typed("int", "1099511627776"), "int64-max": typed("int", "9223372036854775807"),
			// py-amqp reads field type 'l' as unsigned: negative integers beyond 32 bits
			// arrive as their unsigned 64-bit values (see the package documentation).
			"int64-negative": typed("int", "18446742974197923840"), "int64-min": typed("int", "9223372036854775808"),
			"true": typed("bool", true), "false": typed("bool", false),
			"float": typed("float", 2.5), "float32": typed("float", 0.25), "float-negative": typed("float", -1e300),
			"bytes": typed("bytes", b64("\x00\x01\xff")), "empty-bytes": typed("bytes", ""),
			"time": typed("time", "2025-01-02T03:04:05"), "nil": typed("none"),
			"table": typed("table", map[string]any{
				"n": typed("int", "1"), "s": typed("str", "x"),
				"nested": typed("table", map[string]any{"l": typed("list", []any{typed("int", "1"), typed("str", "two")})}),
			}),
			"list": typed("list", []any{
				typed("int", "1"), typed("str", "two"), typed("none"), typed("bool", true),
				typed("table", map[string]any{"k": typed("str", "v")}), typed("list", []any{}),
			}),
		}
		if diff := cmp.Diff(wantHeaders, got.Headers); diff != "" {
			t.Errorf("headers Kombu got (-want +got):\n%s", diff)
		}
	})

	t.Run("kombu-to-carrot", func(t *testing.T) {
		q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
		run(t, o, nil, python, script, "publish", q)
		got := flowtest.FetchAck(t, conn, q)
		want := &carrot.Message{
			Body: []byte("\x00kombu body \xff"), RoutingKey: q,
			ContentType: "application/x-kombu", ContentEncoding: "binary",
			DeliveryMode: carrot.Persistent, Priority: 7, Expiration: time.Minute,
			MessageID: "kombu-message", CorrelationID: "kombu-correlation", ReplyTo: "kombu-replies",
			Timestamp: time.Date(2024, 2, 29, 12, 30, 45, 0, time.UTC),
			Type:      "kombu.type", AppID: "kombu-app", UserID: o.Username,
			Headers: carrot.Table{
				"str": "välue 🥕", "empty": "",
				"int": int64(42), "negative": int64(-7), "int32-max": int64(math.MaxInt32), "int32-min+1": int64(-math.MaxInt32),
				"true": true, "false": false, "float": 2.5,
				"bytes":   "\x00\x01\xff", // py-amqp writes bytes as a long string ('S')
				"time":    time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
				"none":    nil,
				"decimal": 12.34,
				"dict":    map[string]any{"n": int64(1), "s": "x", "nested": map[string]any{"l": []any{int64(1), "two"}}},
				"list":    []any{int64(1), "two", nil, true, map[string]any{"k": "v"}, []any{}},
			},
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(carrot.Message{})); diff != "" {
			t.Errorf("message from Kombu (-want +got):\n%s", diff)
		}
	})

	t.Run("kombu-bigint-to-carrot", func(t *testing.T) {
		// py-amqp writes integers beyond 32 bits as field type 'L', which amqp091-go
		// cannot parse: the message is refused as malformed, as the package documentation
		// says, and stays in its queue.
		q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
		run(t, o, nil, python, script, "publish-bigint", q)
		c, err := conn.NewConsumer(t.Context(), carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if m, err := c.Fetch(t.Context()); !errors.Is(err, carrot.ErrMalformed) {
			t.Errorf("Fetch of Kombu's message with an 'L' header = %v, %v; want ErrMalformed", m, err)
		}
	})
}

// TestAmqpToolsInterop publishes with carrot and gets with amqp-get and amqp-consume, and
// publishes with amqp-publish and gets with carrot: the body, binary included, and the
// properties and headers amqp-publish can set arrive as they were. (amqp-get and
// amqp-consume print only the body.)
func TestAmqpToolsInterop(t *testing.T) {
	publish, get, consume := amqpTool(t, "amqp-publish"), amqpTool(t, "amqp-get"), amqpTool(t, "amqp-consume")
	_, o := broker(t)
	conn := open(t, "")
	flags := toolArgs(t, o)
	body := []byte("\x00binary\xff body\nwith a newline")

	t.Run("carrot-to-amqp-tools", func(t *testing.T) {
		q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
		p, err := conn.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := p.Publish(t.Context(), &carrot.Message{Body: body, ContentType: "application/octet-stream", Headers: carrot.Table{"n": -1}}); err != nil {
				t.Fatal(err)
			}
		}
		if got := run(t, o, nil, get, append(flags, "--queue="+q)...); !bytes.Equal(got, body) {
			t.Errorf("amqp-get printed %q, want %q", got, body)
		}
		// amqp-consume runs the command for each message, the body on its standard input.
		if got := run(t, o, nil, consume, append(flags, "--queue="+q, "--count=1", "--no-ack", "--", "cat")...); !bytes.Equal(got, body) {
			t.Errorf("amqp-consume printed %q, want %q", got, body)
		}
	})

	t.Run("amqp-tools-to-carrot", func(t *testing.T) {
		q := declareQueue(t, conn, carrot.Queue{Name: uniqueName(t)})
		run(t, o, nil, publish, append(flags, "--routing-key="+q, "--persistent", "--content-type=text/x-tools",
			"--content-encoding=x-gzip", "--reply-to=tools-replies", "--header=h1: v1", "--header=h2: välue with: colon",
			"--body=from amqp-publish")...)
		run(t, o, body, publish, append(flags, "--routing-key="+q)...) // the body from standard input
		got := flowtest.FetchAck(t, conn, q)
		want := &carrot.Message{
			Body: []byte("from amqp-publish"), RoutingKey: q, ContentType: "text/x-tools", ContentEncoding: "x-gzip",
			ReplyTo: "tools-replies", DeliveryMode: carrot.Persistent,
			Headers: carrot.Table{"h1": "v1", "h2": "välue with: colon"},
		}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(carrot.Message{})); diff != "" {
			t.Errorf("message from amqp-publish (-want +got):\n%s", diff)
		}
		got = flowtest.FetchAck(t, conn, q)
		want = &carrot.Message{Body: body, RoutingKey: q, DeliveryMode: carrot.Transient}
		if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(carrot.Message{})); diff != "" {
			t.Errorf("message from amqp-publish's standard input (-want +got):\n%s", diff)
		}
	})
}
