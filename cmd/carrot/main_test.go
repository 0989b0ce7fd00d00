package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// runTool runs the tool in process and returns its exit status and output.
func runTool(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDemo(t *testing.T) {
	const want = "Got feed import message for: http://cnn.com/rss/edition.rss\n"
	code, out, errOut := runTool(t, "", "demo")
	if code != 0 || out != want {
		t.Errorf("carrot demo: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", code, out, errOut, want)
	}
	t.Setenv("CARROT_URL", "memory://demo-from-env")
	if code, out, _ := runTool(t, "", "demo"); code != 0 || out != want {
		t.Errorf("carrot demo with CARROT_URL: exit %d, stdout %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"publish", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"fetch"}, "--queue is required"},
		{[]string{"fetch", "--queue", "q", "--exchange", "x"}, "give --declare too"},
		{[]string{"publish", "--priority", "300", "x"}, "more than 255"},
		{[]string{"publish", "a", "b"}, `unexpected argument "b"`},
		{[]string{"declare"}, "give --exchange, --queue or both"},
		{[]string{"consume", "--queue", "q", "--format", "xml"}, `--format "xml"`},
	} {
		code, _, errOut := runTool(t, "", tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("carrot %v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, exitUsage, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := runTool(t, "", "help", "consume")
	if code != 0 || !strings.Contains(out, "Usage: carrot consume") || !strings.Contains(out, "-prefetch") {
		t.Errorf("carrot help consume: exit %d, stdout %q", code, out)
	}
}

func TestUnknownSchemeKeepsPasswordSecret(t *testing.T) {
	code, _, errOut := runTool(t, "", "purge", "--queue", "q", "--url", "nosuch://user:hunter2@localhost/")
	if code != exitError {
		t.Errorf("exit %d, want %d", code, exitError)
	}
	if !strings.Contains(errOut, `unknown URL scheme: "nosuch" is not registered`) || !strings.Contains(errOut, "memory") {
		t.Errorf("stderr %q should name the scheme and the registered ones", errOut)
	}
	if strings.Contains(errOut, "hunter2") {
		t.Errorf("stderr %q shows the password", errOut)
	}
}

func TestPublishFetchConsumePurge(t *testing.T) {
	url := "memory://" + t.Name() // shared by every command run in this process
	if code, out, errOut := runTool(t, "", "declare", "--url", url, "--exchange", "logs", "--kind", "topic", "--queue", "errors", "--key", "*.error", "--key", "audit.#"); code != 0 {
		t.Fatalf("declare: exit %d, %s%s", code, out, errOut)
	}
	code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "db.error", "--header", "host=db1", `{"disk":"full"}`)
	if code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}
	if !strings.Contains(errOut, "lives in this process only") {
		t.Errorf("publish on memory:// should warn that the broker dies with the process; stderr %q", errOut)
	}

	code, out, errOut := runTool(t, "", "fetch", "--url", url, "--queue", "errors", "--format", "json")
	if code != 0 {
		t.Fatalf("fetch: exit %d, %s", code, errOut)
	}
	var got jsonMessage
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("fetch --format json printed %q: %v", out, err)
	}
	if got.Body == nil || *got.Body != `{"disk":"full"}` || got.ContentType != "application/json" || got.RoutingKey != "db.error" ||
		got.Exchange != "logs" || got.Headers["host"] != "db1" || !got.Persistent {
		t.Errorf("fetched %+v", got)
	}
	if code, _, errOut := runTool(t, "", "fetch", "--url", url, "--queue", "errors"); code != exitEmpty {
		t.Errorf("fetch from an empty queue: exit %d (%s), want %d", code, errOut, exitEmpty)
	}

	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "web.info", "lost"); code != exitError || !strings.Contains(errOut, "unroutable") {
		t.Errorf("publish of an unroutable message: exit %d, stderr %q; want exit 1 and an unroutable error", code, errOut)
	}
	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "web.info", "--allow-unroutable", "dropped"); code != 0 {
		t.Errorf("publish --allow-unroutable: exit %d, %s", code, errOut)
	}

	if code, _, errOut := runTool(t, "one\ntwo\nthree\n", "publish", "--url", url, "--exchange", "logs", "--key", "audit.login", "--lines"); code != 0 {
		t.Fatalf("publish --lines: exit %d, %s", code, errOut)
	}
	if code, out, errOut := runTool(t, "", "consume", "--url", url, "--queue", "errors", "--count", "2"); code != 0 || out != "one\ntwo\n" {
		t.Errorf("consume --count 2: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, "one\ntwo\n")
	}
	if code, out, _ := runTool(t, "", "purge", "--url", url, "--queue", "errors"); code != 0 || out != "1\n" {
		t.Errorf("purge: exit %d, stdout %q; want 1 message purged", code, out)
	}
}

func TestBackends(t *testing.T) {
	code, out, _ := runTool(t, "", "backends")
	if code != 0 || !strings.Contains(out, "memory\n") {
		t.Errorf("backends: exit %d, stdout %q", code, out)
	}
}

func TestPrintUnformattable(t *testing.T) {
	var out bytes.Buffer
	p := &printer{w: &out, format: "json"}
	m := &carrot.Message{Body: []byte{0xff, 0x00}, Headers: carrot.Table{
		"nan": math.NaN(), "inf": math.Inf(1), "bytes": []byte("hi"),
		"nested": map[string]any{"list": []any{math.Inf(-1), "ok"}}, "odd": complex(1, 2),
	}}
	if err := p.print(m); err != nil {
		t.Fatal(err)
	}
	var got jsonMessage
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("printed %q: %v", out.String(), err)
	}
	nested, _ := got.Headers["nested"].(map[string]any)
	list, _ := nested["list"].([]any)
	if got.Headers["nan"] != "NaN" || got.Headers["inf"] != "+Inf" || got.Headers["bytes"] != "aGk=" ||
		len(list) != 2 || list[0] != "-Inf" || got.Headers["odd"] != "(1+2i)" || string(got.BodyBase64) != "\xff\x00" {
		t.Errorf("printed %s", out.String())
	}
}

// failingWriter fails every write, as a closed pipe does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestConsumeStopsWhenOutputFails(t *testing.T) {
	url := "memory://" + t.Name()
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", "q"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--key", "q", "kept"); code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var errOut bytes.Buffer
	code := run(ctx, []string{"consume", "--url", url, "--queue", "q"}, strings.NewReader(""), failingWriter{}, &errOut)
	if code != exitError || !strings.Contains(errOut.String(), "broken pipe") || ctx.Err() != nil {
		t.Errorf("consume with a failing output: exit %d, stderr %q; want exit %d at once, saying why", code, errOut.String(), exitError)
	}
	if code, out, errOut := runTool(t, "", "fetch", "--url", url, "--queue", "q"); code != 0 || out != "kept\n" {
		t.Errorf("after it, fetch: exit %d, %q %s; want the message back", code, out, errOut)
	}
}

func TestMain(m *testing.M) { testbroker.Main(m) }

// everyBackend returns a URL for each backend, by backend name: a memory broker of the
// test's own, and the test brokers.
func everyBackend(t *testing.T) map[string]string {
	urls := map[string]string{"memory": "memory://" + t.Name()}
	for name, kind := range map[string]testbroker.Kind{"amqp091": testbroker.RabbitMQ, "amqp10": testbroker.RabbitMQ4, "redis": testbroker.Redis} {
		urls[name] = testbroker.URL(t, kind)
	}
	return urls
}

// TestConsumeCount checks on every backend that consume --count 1, with two messages
// waiting, handles exactly one and leaves the other, several times over: the broker may
// have delivered both before the first was handled.
func TestConsumeCount(t *testing.T) {
	for name, url := range everyBackend(t) {
		t.Run(name, func(t *testing.T) {
			queue := fmt.Sprintf("carrot-test.consume-count.%d", time.Now().UnixNano())
			if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue); code != 0 {
				t.Fatalf("declare: exit %d, %s", code, errOut)
			}
			t.Cleanup(func() {
				if conn, err := carrot.Open(context.Background(), url); err == nil {
					conn.DeleteQueue(context.Background(), queue)
					conn.Close()
				}
			})
			for try := range 5 {
				if code, _, errOut := runTool(t, "first\nsecond\n", "publish", "--url", url, "--key", queue, "--lines"); code != 0 {
					t.Fatalf("publish: exit %d, %s", code, errOut)
				}
				if code, out, errOut := runTool(t, "", "consume", "--url", url, "--queue", queue, "--count", "1"); code != 0 || out != "first\n" {
					t.Errorf("try %d: consume --count 1: exit %d, stdout %q, stderr %q; want %q", try, code, out, errOut, "first\n")
				}
				if code, out, errOut := runTool(t, "", "fetch", "--url", url, "--queue", queue); code != 0 || out != "second\n" {
					t.Errorf("try %d: fetch after it: exit %d, stdout %q, stderr %q; want %q", try, code, out, errOut, "second\n")
				}
				if code, _, _ := runTool(t, "", "fetch", "--url", url, "--queue", queue); code != exitEmpty {
					t.Fatalf("try %d: the queue holds more than it should", try)
				}
			}
		})
	}
}

// TestBench runs carrot bench on every backend: every message published is consumed and
// acked once, and the run says so with both rates.
func TestBench(t *testing.T) {
	for name, url := range everyBackend(t) {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runTool(t, "", "bench", "--url", url, "--count", "3000", "--window", "64", "--prefetch", "32")
			if code != 0 {
				t.Fatalf("bench: exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[1], "publish  3000 in ") || !strings.HasPrefix(lines[2], "consume  3000 in ") || !strings.Contains(lines[2], " msg/s ") {
				t.Errorf("bench printed %q; want a header, then the publish and consume rates of 3000 messages", out)
			}
		})
	}
	if code, _, errOut := runTool(t, "", "bench", "--size", "4"); code != exitUsage || !strings.Contains(errOut, "--size") {
		t.Errorf("bench --size 4: exit %d, stderr %q; want a usage error naming --size", code, errOut)
	}
}
