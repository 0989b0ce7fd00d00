package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
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
		{[]string{"publish", "--no-such-flag"}, "unknown flag --no-such-flag"},
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

// TestHelpShowsTwoDashes checks that every command's help writes its flags as the
// documentation does, --url and not -url.
func TestHelpShowsTwoDashes(t *testing.T) {
	singleDash := regexp.MustCompile(`(?m)^\s+-[a-z]`)
	for _, cmd := range commands {
		for _, args := range [][]string{{"help", cmd.name}, {cmd.name, "--help"}, {cmd.name, "-h"}} {
			code, out, errOut := runTool(t, "", args...)
			if code != 0 || !strings.HasPrefix(out, "Usage: carrot "+cmd.name) {
				t.Errorf("carrot %s: exit %d, stdout %q, stderr %q; want the usage", strings.Join(args, " "), code, out, errOut)
				continue
			}
			if m := singleDash.FindString(out); m != "" {
				t.Errorf("carrot %s shows a flag with one dash, %q:\n%s", strings.Join(args, " "), m, out)
			}
			wantURL := cmd.name != "backends" && cmd.name != "version"
			if got := strings.Contains(out, "\n  --url URL\n"); got != wantURL {
				t.Errorf("carrot %s: shows --url: %v, want %v:\n%s", strings.Join(args, " "), got, wantURL, out)
			}
		}
	}
}

// TestCommandsDocumented checks that carrot help, the package documentation and the
// README's "The carrot command" section name every command.
func TestCommandsDocumented(t *testing.T) {
	_, help, _ := runTool(t, "", "help")
	doc, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## The carrot command\n")
	section, _, _ = strings.Cut(section, "\n## ")
	for _, cmd := range commands {
		if !strings.Contains(help, "\n  "+cmd.name+" ") {
			t.Errorf("carrot help does not list %s", cmd.name)
		}
		if !strings.Contains(string(doc), "//\t"+cmd.name+" ") {
			t.Errorf("the package documentation in main.go does not list %s", cmd.name)
		}
		if !strings.Contains(section, "carrot "+cmd.name) {
			t.Errorf("README.md's section The carrot command does not show carrot %s", cmd.name)
		}
	}
}

// TestFlagErrors checks that a flag that would be ignored given the others, a value of
// the wrong kind and a missing value are usage errors that say why.
func TestFlagErrors(t *testing.T) {
	const duration = "a duration such as 10s"
	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		// Ignored given the others.
		{[]string{"consume", "--queue", "q", "--kind", "topic"}, []string{"--kind would be ignored", "give --declare too"}},
		{[]string{"fetch", "--queue", "q", "--kind", "topic"}, []string{"--kind would be ignored", "give --declare too"}},
		{[]string{"consume", "--queue", "q", "--key", "k"}, []string{"--key would be ignored", "give --declare too"}},
		{[]string{"fetch", "--queue", "q", "--declare", "--kind", "topic"}, []string{"--kind would be ignored", "give --exchange too"}},
		{[]string{"consume", "--queue", "q", "--declare", "--key", "k"}, []string{"--key would be ignored", "give --exchange too"}},
		{[]string{"consume", "--queue", "q", "--no-ack", "--prefetch", "5"}, []string{"--prefetch would be ignored", "--no-ack"}},
		{[]string{"consume", "--queue", "q", "--no-ack", "--count", "1"}, []string{"--count with --no-ack would lose messages"}},
		{[]string{"consume", "--queue", "q", "--count", "2", "--prefetch", "5"}, []string{"--prefetch 5 would be ignored", "--count 2"}},
		{[]string{"consume", "--queue", "q", "--no-ack", "--requeue"}, []string{"exclude each other"}},
		{[]string{"declare", "--queue", "q", "--kind", "topic"}, []string{"--kind would be ignored", "give --exchange too"}},
		{[]string{"declare", "--exchange", "x", "--ttl", "1h"}, []string{"--ttl would be ignored", "give --queue too"}},
		{[]string{"declare", "--exchange", "x", "--max-length", "5"}, []string{"--max-length would be ignored", "give --queue too"}},
		{[]string{"declare", "--exchange", "x", "--max-priority", "5"}, []string{"--max-priority would be ignored", "give --queue too"}},
		{[]string{"declare", "--exchange", "x", "--dead-letter-exchange", "dlx"}, []string{"--dead-letter-exchange would be ignored", "give --queue too"}},
		{[]string{"declare", "--queue", "q", "--dead-letter-key", "k"}, []string{"--dead-letter-key would be ignored", "give --dead-letter-exchange too"}},
		{[]string{"declare", "--exchange", "x", "--type", "quorum"}, []string{"--type would be ignored", "give --queue too"}},
		{[]string{"declare", "--exchange", "x", "--max-age", "1h"}, []string{"--max-age would be ignored", "give --queue too"}},
		{[]string{"declare", "--exchange", "x", "--single-active-consumer"}, []string{"--single-active-consumer would be ignored", "give --queue too"}},
		{[]string{"declare", "--queue", "q", "--key", "k"}, []string{"--key binds --queue to --exchange"}},
		{[]string{"publish", "--lines", "body"}, []string{"--lines reads standard input"}},
		{[]string{"stats"}, []string{"give --exchange or --queue"}},
		{[]string{"stats", "--exchange", "x", "--queue", "q"}, []string{"--exchange and --queue exclude each other"}},
		{[]string{"stats", "--queue", "q", "--key", "k"}, []string{"--key would be ignored", "--exchange"}},
		{[]string{"stats", "--queue", "q", "--interval", "0"}, []string{"--interval 0s with --queue", "at least 10ms"}},
		{[]string{"stats", "--exchange", "x", "--count", "-1"}, []string{"--count cannot be negative"}},
		{[]string{"stats", "--exchange", "x", "--interval", "5ms"}, []string{"--interval 5ms: too often", "0 (no progress lines)"}},
		{[]string{"consume", "--queue", "q", "--progress", "1ms"}, []string{"--progress 1ms: too often", "0 (no progress lines)"}},
		// Durations, for every duration flag.
		{[]string{"publish", "--expiration", "1", "x"}, []string{`--expiration "1"`, duration}},
		{[]string{"publish", "--expiration=10 s", "x"}, []string{`--expiration "10 s"`, duration}},
		{[]string{"publish", "--expiration", "-1s", "x"}, []string{"--expiration -1s", duration, "not a negative one"}},
		{[]string{"declare", "--queue", "q", "--ttl", "1"}, []string{`--ttl "1"`, duration}},
		{[]string{"declare", "--queue", "q", "--type", "stream", "--max-age", "1d"}, []string{`--max-age "1d"`, duration}},
		{[]string{"declare", "--queue", "q", "--consumer-timeout", "-1m"}, []string{"--consumer-timeout -1m", "not a negative one"}},
		{[]string{"demo", "--timeout", "soon"}, []string{`--timeout "soon"`, duration}},
		{[]string{"stats", "--exchange", "x", "--for", "soon"}, []string{`--for "soon"`, duration}},
		{[]string{"consume", "--queue", "q", "--progress", "-1s"}, []string{"--progress -1s", "not a negative one"}},
		// Other values.
		{[]string{"consume", "--queue", "q", "--count", "x"}, []string{`--count "x"`, "want a whole number"}},
		{[]string{"declare", "--queue", "q", "--type", "stream", "--max-bytes", "1G"}, []string{`--max-bytes "1G"`, "want a whole number"}},
		{[]string{"consume", "--queue", "q", "--offset", "yesterday"}, []string{`--offset "yesterday"`, "want first, last, next, an offset", "RFC 3339"}},
		{[]string{"consume", "--queue", "q", "--offset", "2026-11-30 10:00"}, []string{`--offset "2026-11-30 10:00"`, "such as 2026-11-30T10:00:00Z"}},
		{[]string{"publish", "--priority", "-1", "x"}, []string{`--priority "-1"`, "0 or more"}},
		{[]string{"publish", "--lines=maybe"}, []string{`--lines "maybe"`, "want true or false"}},
		{[]string{"publish", "x", "--key"}, []string{"--key needs a value"}},
		{[]string{"publish", "---key", "k"}, []string{"bad flag syntax: ---key"}},
		{[]string{"publish", "-x"}, []string{"unknown flag --x"}},
		{[]string{"delete"}, []string{"give --exchange, --queue or both"}},
		{[]string{"delete", "--namespace", "--queue", "q"}, []string{"give it without --exchange and --queue"}},
		{[]string{"delete", "--namespace", "--url", "amqp://u:secret@h/"}, []string{"--namespace is for Redis URLs", "amqp://h/"}},
		{[]string{"unbind", "--exchange", "x"}, []string{"--exchange and --queue are required"}},
		{[]string{"version", "--url", "memory://"}, []string{"unknown flag --url"}},
		{[]string{"version", "extra"}, []string{`unexpected argument "extra"`}},
	} {
		code, out, errOut := runTool(t, "", tc.args...)
		if code != exitUsage || out != "" {
			t.Errorf("carrot %q: exit %d, stdout %q; want exit %d and nothing on stdout", tc.args, code, out, exitUsage)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("carrot %q: stderr %q; want %q in it", tc.args, errOut, w)
			}
		}
	}
}

// TestDeclareQueueTypes checks that declare passes the settings of queue types to carrot
// as given, which refuses those that do not fit the queue's type or the broker: on
// memory://, which has one type of queue and none of their settings.
func TestDeclareQueueTypes(t *testing.T) {
	url := "memory://" + t.Name()
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"--type", "quorum"}, "the backend does not support quorum queues"},
		{[]string{"--type", "stream", "--max-age", "1h"}, "the backend does not support stream queues"},
		{[]string{"--type", "classic"}, "the backend has one type of queue"},
		{[]string{"--type", "lazy"}, `unknown queue type "lazy" (want classic, quorum or stream)`},
		{[]string{"--single-active-consumer"}, "the backend does not support single active consumer"},
		{[]string{"--consumer-timeout", "1m"}, "the backend does not support a queue consumer timeout"},
		{[]string{"--replicas", "3"}, "Replicas is for a quorum or stream queue"},
		{[]string{"--delivery-limit", "5"}, "DeliveryLimit is for a quorum queue"},
		{[]string{"--max-bytes", "1000000"}, "MaxBytes is for a stream queue"},
		{[]string{"--dead-letter-strategy", "at-least-once"}, "DeadLetterStrategy is for a quorum queue"},
	} {
		args := append([]string{"declare", "--url", url, "--queue", "q"}, tc.args...)
		code, out, errOut := runTool(t, "", args...)
		if code != exitError || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("carrot %q: exit %d, stdout %q, stderr %q; want exit %d and %q", args, code, out, errOut, exitError, tc.want)
		}
	}
}

// TestConsumeStreamMemory checks that consume and fetch refuse a stream's offset and
// type on memory://, which has no streams.
func TestConsumeStreamMemory(t *testing.T) {
	url := "memory://" + t.Name()
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", "q"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	for _, args := range [][]string{
		{"consume", "--url", url, "--queue", "q", "--offset", "first"},
		{"consume", "--url", url, "--queue", "q", "--type", "stream"},
		{"fetch", "--url", url, "--queue", "q", "--type", "stream"},
	} {
		if code, out, errOut := runTool(t, "", args...); code != exitError || out != "" || !strings.Contains(errOut, "the backend does not support stream queues") {
			t.Errorf("carrot %q: exit %d, stdout %q, stderr %q; want exit %d, saying the backend has no streams", args, code, out, errOut, exitError)
		}
	}
}

// TestStream declares a stream on RabbitMQ, publishes five messages to it and reads them
// with consume --offset from the first, from an offset and from a time, as often as
// asked (a stream keeps what is read), with their offsets in --format json; fetch and
// --no-ack are refused, as is an offset for a queue of another type.
func TestStream(t *testing.T) {
	url := testbroker.URL(t, testbroker.RabbitMQ)
	stream := fmt.Sprintf("carrot-test.stream.%d", time.Now().UnixNano())
	code, out, errOut := runTool(t, "", "declare", "--url", url, "--queue", stream, "--type", "stream", "--max-age", "1h")
	if want := fmt.Sprintf("declared queue %q (stream)\n", stream); code != 0 || out != want {
		t.Fatalf("declare --type stream --max-age 1h: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	t.Cleanup(func() { runTool(t, "", "delete", "--url", url, "--queue", stream) })
	before := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) // the broker is on this machine's clock
	if code, _, errOut := runTool(t, "m0\nm1\nm2\nm3\nm4\n", "publish", "--url", url, "--key", stream, "--lines"); code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}

	for _, tc := range []struct {
		offset string
		count  int
		want   string
	}{
		{"first", 5, "m0\nm1\nm2\nm3\nm4\n"},
		{"first", 5, "m0\nm1\nm2\nm3\nm4\n"}, // again: reading took nothing away
		{"2", 3, "m2\nm3\nm4\n"},
		{before, 5, "m0\nm1\nm2\nm3\nm4\n"},
	} {
		args := []string{"consume", "--url", url, "--queue", stream, "--offset", tc.offset, "--count", strconv.Itoa(tc.count), "--progress", "0"}
		if code, out, errOut := runTool(t, "", args...); code != 0 || out != tc.want {
			t.Errorf("carrot %q: exit %d, stdout %q, stderr %q; want %q", args, code, out, errOut, tc.want)
		}
	}

	code, out, errOut = runTool(t, "", "consume", "--url", url, "--queue", stream, "--offset", "3", "--count", "2", "--progress", "0", "--format", "json")
	if code != 0 {
		t.Fatalf("consume --offset 3 --format json: exit %d, %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("consume --offset 3 --count 2 --format json printed %q; want two lines", out)
	}
	for i, line := range lines {
		var m jsonMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("consume --format json printed %q: %v", line, err)
		}
		want := int64(3 + i)
		if m.StreamOffset == nil || *m.StreamOffset != want || m.Body == nil || *m.Body != fmt.Sprintf("m%d", want) {
			t.Errorf("message %d printed %s; want the body m%d with \"stream_offset\":%d", i, line, want, want)
		}
	}

	for _, tc := range []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"fetch", "--queue", stream, "--type", "stream"}, []string{"unsupported operation", fmt.Sprintf("stream queue %q is read by consuming, not by fetching", stream)}},
		{[]string{"consume", "--queue", stream, "--offset", "first", "--no-ack"}, []string{"invalid argument", "NoAck is refused"}},
		{[]string{"consume", "--queue", stream, "--type", "quorum", "--offset", "first"}, []string{"invalid argument", "StreamOffset is for stream queues", "of type quorum"}},
		{[]string{"consume", "--queue", stream, "--offset", "-1", "--count", "1"}, []string{"invalid argument", "stream offset -1 is negative"}},
	} {
		args := append(tc.args, "--url", url)
		code, out, errOut := runTool(t, "", args...)
		if code != exitError || out != "" {
			t.Errorf("carrot %q: exit %d, stdout %q, stderr %q; want exit %d and nothing on stdout", args, code, out, errOut, exitError)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("carrot %q: stderr %q; want %q in it", args, errOut, w)
			}
		}
	}
}

// TestDeclareQuorumQueue declares a quorum queue with a delivery limit on RabbitMQ, and
// checks that both reached the broker: declaring it again with another limit, or as a
// classic queue, is refused by the broker, naming the argument.
func TestDeclareQuorumQueue(t *testing.T) {
	url := testbroker.URL(t, testbroker.RabbitMQ)
	queue := fmt.Sprintf("carrot-test.quorum.%d", time.Now().UnixNano())
	code, out, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue, "--type", "quorum", "--delivery-limit", "3")
	if want := fmt.Sprintf("declared queue %q (quorum)\n", queue); code != 0 || out != want {
		t.Fatalf("declare --type quorum --delivery-limit 3: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	t.Cleanup(func() { runTool(t, "", "delete", "--url", url, "--queue", queue) })
	if code, out, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue, "--type", "quorum", "--delivery-limit", "3"); code != 0 {
		t.Errorf("declare it again, the same: exit %d, stdout %q, stderr %q; want exit 0", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string // the argument the broker names
	}{
		{[]string{"--type", "quorum", "--delivery-limit", "4"}, "x-delivery-limit"},
		{[]string{"--type", "classic"}, "x-queue-type"},
	} {
		args := append([]string{"declare", "--url", url, "--queue", queue}, tc.args...)
		if code, _, errOut := runTool(t, "", args...); code != exitError || !strings.Contains(errOut, "does not match the existing one") || !strings.Contains(errOut, tc.want) {
			t.Errorf("carrot %q: exit %d, stderr %q; want exit %d, a mismatch naming %s", args, code, errOut, exitError, tc.want)
		}
	}
}

// TestFlagsAnywhere checks that flags may follow the body, and that -- ends them, so that
// a body may start with a dash.
func TestFlagsAnywhere(t *testing.T) {
	url := "memory://" + t.Name()
	if code, _, errOut := runTool(t, "", "declare", "--queue", "q", "--url", url); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string // the body fetched after it
	}{
		{"", []string{"publish", "--url", url, `{"a":1}`, "--key", "q"}, `{"a":1}`},
		{"", []string{"publish", `{"a":2}`, "--url", url, "--key=q"}, `{"a":2}`},
		{"", []string{"publish", "--url", url, "--key", "q", "--", "--key"}, "--key"},
		{"", []string{"publish", "--url", url, "--", "-1", "--key", "q"}, ""}, // two arguments: refused below
		{"from stdin", []string{"publish", "-", "--url", url, "--key", "q"}, "from stdin"},
		{"piped", []string{"publish", "--url", url, "--key", "q", "--", "-"}, "piped"}, // "-" is standard input still
	} {
		code, _, errOut := runTool(t, tc.stdin, tc.args...)
		if tc.want == "" {
			if code != exitUsage || !strings.Contains(errOut, `unexpected argument "--key"`) {
				t.Errorf("carrot %q: exit %d, stderr %q; want a usage error: after --, --key is an argument", tc.args, code, errOut)
			}
			continue
		}
		if code != 0 {
			t.Errorf("carrot %q: exit %d, stderr %q", tc.args, code, errOut)
			continue
		}
		if code, out, errOut := runTool(t, "", "fetch", "--queue", "q", "--url", url); code != 0 || out != tc.want+"\n" {
			t.Errorf("after carrot %q, fetch: exit %d, stdout %q, stderr %q; want %q", tc.args, code, out, errOut, tc.want+"\n")
		}
	}
}

// TestDeleteUnbind declares an exchange, queues and bindings, then unbinds and deletes
// them, checking each step by what publish can still route.
func TestDeleteUnbind(t *testing.T) {
	url := "memory://" + t.Name()
	mustRun := func(wantOut string, args ...string) {
		t.Helper()
		code, out, errOut := runTool(t, "", append(args, "--url", url)...)
		if code != 0 || out != wantOut {
			t.Fatalf("carrot %q: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", args, code, out, errOut, wantOut)
		}
	}
	routes := func(key string) bool {
		t.Helper()
		code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", key, "m")
		if code != 0 && !strings.Contains(errOut, "unroutable") {
			t.Fatalf("publish with key %q: exit %d, %s", key, code, errOut)
		}
		return code == 0
	}
	mustRun("declared exchange \"logs\" (topic)\ndeclared queue \"errors\"\n"+
		"bound queue \"errors\" to exchange \"logs\" with key \"a.*\"\nbound queue \"errors\" to exchange \"logs\" with key \"b.*\"\n",
		"declare", "--exchange", "logs", "--kind", "topic", "--queue", "errors", "--key", "a.*", "--key", "b.*")
	mustRun("declared exchange \"logs\" (topic)\ndeclared queue \"all\"\nbound queue \"all\" to exchange \"logs\" with key \"\"\n",
		"declare", "--exchange", "logs", "--kind", "topic", "--queue", "all")
	if !routes("a.x") || !routes("b.x") || !routes("") {
		t.Fatal("the bindings declared do not route")
	}

	mustRun("unbound queue \"errors\" from exchange \"logs\" with key \"a.*\"\n", "unbind", "--exchange", "logs", "--queue", "errors", "--key", "a.*")
	if routes("a.x") || !routes("b.x") {
		t.Error("after unbind --key a.*, a.x should not route and b.x should")
	}
	mustRun("unbound queue \"all\" from exchange \"logs\" with key \"\"\n", "unbind", "--exchange", "logs", "--queue", "all")
	if routes("") {
		t.Error("after unbind without --key, the binding with the empty key should be gone")
	}
	mustRun("unbound queue \"errors\" from exchange \"logs\" with key \"a.*\"\nunbound queue \"errors\" from exchange \"logs\" with key \"nothing\"\n",
		"unbind", "--exchange", "logs", "--queue", "errors", "--key", "a.*", "--key", "nothing") // what does not exist is no error

	mustRun("deleted queue \"errors\"\ndeleted exchange \"logs\"\n", "delete", "--exchange", "logs", "--queue", "errors")
	if code, _, errOut := runTool(t, "", "fetch", "--url", url, "--queue", "errors"); code != exitError || !strings.Contains(errOut, "errors") {
		t.Errorf("fetch from the deleted queue: exit %d, stderr %q; want exit %d, naming it", code, errOut, exitError)
	}
	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "b.x", "m"); code != exitError {
		t.Errorf("publish to the deleted exchange: exit %d, stderr %q; want exit %d", code, errOut, exitError)
	}
	mustRun("deleted queue \"all\"\n", "delete", "--queue", "all")
	mustRun("deleted queue \"all\"\n", "delete", "--queue", "all") // what does not exist is no error
	mustRun("deleted exchange \"logs\"\n", "delete", "--exchange", "logs")
}

// TestDeleteNamespace deletes a Redis namespace, refused while a connection is open on
// it: then its queues and exchanges are gone, and the built-in exchanges made again.
func TestDeleteNamespace(t *testing.T) {
	base := testbroker.URL(t, testbroker.Redis)
	ns := fmt.Sprintf("carrot-test-cli-delete-%d", time.Now().UnixNano())
	url := base + "?namespace=" + ns
	if strings.Contains(base, "?") {
		url = base + "&namespace=" + ns
	}
	t.Cleanup(func() { runTool(t, "", "delete", "--namespace", "--url", url) })
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--exchange", "logs", "--kind", "topic", "--queue", "errors", "--key", "*.error"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "db.error", "m"); code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}
	conn, err := carrot.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runTool(t, "", "delete", "--namespace", "--url", url); code != exitError || out != "" || !strings.Contains(errOut, "a connection is open on it") {
		t.Errorf("delete --namespace with a connection open: exit %d, stdout %q, stderr %q; want exit %d, saying why", code, out, errOut, exitError)
	}
	conn.Close()
	code, out, errOut := runTool(t, "", "delete", "--url", url, "--namespace")
	if code != 0 || !regexp.MustCompile(`^deleted namespace "`+ns+`": [1-9][0-9]* keys\n$`).MatchString(out) {
		t.Fatalf("delete --namespace: exit %d, stdout %q, stderr %q; want it deleted", code, out, errOut)
	}
	conn, err = carrot.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	xs, qs, err := conn.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 0 || len(xs) != 3 {
		t.Errorf("after delete --namespace: exchanges %v, queues %v; want only the built-in exchanges", xs, qs)
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := runTool(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "carrot ") || !strings.HasSuffix(out, ", built with "+runtime.Version()+"\n") {
		t.Errorf("carrot version: exit %d, stdout %q, stderr %q; want carrot VERSION, built with %s", code, out, errOut, runtime.Version())
	}
	for _, tc := range []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: modulePath, Version: "(devel)"}}, true, "carrot (devel), built with go1.26.0"},
		{&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: modulePath, Version: "v1.2.3"}}, true, "carrot v1.2.3, built with go1.26.0"},
		{&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: modulePath}}, true, "carrot (devel), built with go1.26.0"},
		{&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "example.com/app", Version: "v0.1.0"},
			Deps: []*debug.Module{{Path: modulePath, Version: "v1.4.0"}}}, true, "carrot v1.4.0, built with go1.26.0"},
		{nil, false, "carrot (unknown), built with " + runtime.Version()},
	} {
		if got := versionLine(tc.info, tc.ok); got != tc.want {
			t.Errorf("versionLine(%+v) = %q, want %q", tc.info, got, tc.want)
		}
	}
}

// lineRecorder records each write, as it comes, with its time; consume writes each
// waiting line in one write. It is safe for concurrent use.
type lineRecorder struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (r *lineRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, string(p))
	r.at = append(r.at, time.Now())
	return len(p), nil
}

// waiting returns the waiting lines written so far, and when.
func (r *lineRecorder) waiting() (lines []string, at []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range r.lines {
		if strings.Contains(l, "waiting for messages") {
			lines = append(lines, l)
			at = append(at, r.at[i])
		}
	}
	return lines, at
}

// TestConsumeWaiting checks that consume, while nothing arrives, says so on standard
// error, first after waitingAfter and then at most every waitingEvery, and never on
// standard output.
func TestConsumeWaiting(t *testing.T) {
	after, every := waitingAfter, waitingEvery
	waitingAfter, waitingEvery = 20*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { waitingAfter, waitingEvery = after, every })

	url := "memory://" + t.Name()
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", "q"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer // written by the consume alone, read once it returned
	errOut := &lineRecorder{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"consume", "--url", url, "--queue", "q", "--count", "1"}, strings.NewReader(""), &out, errOut)
	}()
	for {
		if lines, _ := errOut.waiting(); len(lines) >= 3 {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("consume returned %d before any message: stderr %q", code, errOut.lines)
		case <-ctx.Done():
			t.Fatalf("consume printed %q on standard error in 30 s; want 3 waiting lines", errOut.lines)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if code, _, errOut := runTool(t, "", "publish", "--url", url, "--key", "q", "hello"); code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}
	if code := <-done; code != 0 || out.String() != "hello\n" {
		t.Errorf("consume --count 1: exit %d, stdout %q; want exit 0, stdout %q", code, out.String(), "hello\n")
	}
	lines, at := errOut.waiting()
	if want := "carrot consume: waiting for messages on queue \"q\" (0 of 1 so far; Ctrl-C to stop)\n"; lines[0] != want {
		t.Errorf("waiting line %q, want %q", lines[0], want)
	}
	for i := 1; i < len(at); i++ {
		// The recorder stamps each line a little after consume decided to write it.
		if gap := at[i].Sub(at[i-1]); gap < waitingEvery*3/4 {
			t.Errorf("waiting lines %v apart; want at least %v between them", gap, waitingEvery)
		}
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
	code, _, errOut := runTool(t, "", "publish", "--url", url, "--exchange", "logs", "--key", "db.error", "--header", "host=db1",
		"--type", "disk.full", "--app-id", "monitor", "--user-id", "ops", `{"disk":"full"}`)
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
		got.Exchange != "logs" || got.Headers["host"] != "db1" || !got.Persistent ||
		got.Type != "disk.full" || got.AppID != "monitor" || got.UserID != "ops" || got.StreamOffset != nil {
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

// eachBackend runs test in a subtest per backend, named after it, with its URL: a memory
// broker of the test's own, and the test brokers. A broker that is not to be had skips
// its own subtest only, not the others.
func eachBackend(t *testing.T, test func(t *testing.T, url string)) {
	memory := "memory://" + t.Name()
	for _, b := range []struct {
		name string
		kind testbroker.Kind
	}{{name: "memory"}, {"amqp091", testbroker.RabbitMQ}, {"amqp10", testbroker.RabbitMQ4}, {"redis", testbroker.Redis}} {
		t.Run(b.name, func(t *testing.T) {
			url := memory
			if b.name != "memory" {
				url = testbroker.URL(t, b.kind)
			}
			test(t, url)
		})
	}
}

// TestConsumeCount checks on every backend that consume --count 1, with two messages
// waiting, handles exactly one and leaves the other, several times over: the broker may
// have delivered both before the first was handled.
func TestConsumeCount(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
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

// TestBench runs carrot bench on every backend: every message published is consumed and
// acked once, and the run says so with both rates.
func TestBench(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		code, out, errOut := runTool(t, "", "bench", "--url", url, "--count", "3000", "--window", "64", "--prefetch", "32")
		if code != 0 {
			t.Fatalf("bench: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[1], "publish  3000 in ") || !strings.HasPrefix(lines[2], "consume  3000 in ") || !strings.Contains(lines[2], " msg/s ") {
			t.Errorf("bench printed %q; want a header, then the publish and consume rates of 3000 messages", out)
		}
	})
	if code, _, errOut := runTool(t, "", "bench", "--size", "4"); code != exitUsage || !strings.Contains(errOut, "--size") {
		t.Errorf("bench --size 4: exit %d, stderr %q; want a usage error naming --size", code, errOut)
	}
}

// TestList lists what declare made, with the queues' counts, on the backends that can
// list (memory://, redis://), and says plainly when the backend cannot list.
func TestList(t *testing.T) {
	url := fmt.Sprintf("memory://%s-%d", t.Name(), time.Now().UnixNano()) // a broker of this run's own, with -count too
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--exchange", "logs", "--kind", "topic", "--queue", "errors", "--key", "*.error"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runTool(t, "a\nb\n", "publish", "--url", url, "--exchange", "logs", "--key", "db.error", "--lines"); code != 0 {
		t.Fatalf("publish: exit %d, %s", code, errOut)
	}
	code, out, errOut := runTool(t, "", "list", "--url", url)
	if code != 0 || !strings.Contains(out, "exchange\tlogs\ttopic\n") || !strings.Contains(out, "queue\terrors\t2\t0\t0\n") {
		t.Errorf("list: exit %d, stdout %q, stderr %q; want the exchange logs (topic) and the queue errors with 2 messages ready", code, out, errOut)
	}
	if strings.Index(out, "queue\t") < strings.LastIndex(out, "exchange\t") {
		t.Errorf("list printed queues before exchanges: %q", out)
	}

	t.Run("redis", func(t *testing.T) {
		url := testbroker.URL(t, testbroker.Redis)
		queue := fmt.Sprintf("carrot-test.list.%d", time.Now().UnixNano())
		if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue, "--transient"); code != 0 {
			t.Fatalf("declare: exit %d, %s", code, errOut)
		}
		t.Cleanup(func() { runTool(t, "", "delete", "--url", url, "--queue", queue) })
		if code, _, errOut := runTool(t, "a\nb\nc\n", "publish", "--url", url, "--key", queue, "--lines"); code != 0 {
			t.Fatalf("publish: exit %d, %s", code, errOut)
		}
		code, out, errOut := runTool(t, "", "list", "--url", url)
		if want := "queue\t" + queue + "\t3\t0\t0\n"; code != 0 || !strings.Contains(out, want) { // Redis keeps every queue: none is transient
			t.Errorf("list: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
		}
	})

	t.Run("amqp091", func(t *testing.T) {
		url := testbroker.URL(t, testbroker.RabbitMQ)
		code, out, errOut := runTool(t, "", "list", "--url", url)
		if code != exitError || out != "" || !strings.Contains(errOut, "cannot list") {
			t.Errorf("list on RabbitMQ: exit %d, stdout %q, stderr %q; want exit 1 saying the backend cannot list", code, out, errOut)
		}
	})
}

// TestStatsQueue checks on every backend that carrot stats --queue prints a queue's
// counts, as a table or JSON rows, without taking its messages, and refuses a queue that
// does not exist.
func TestStatsQueue(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		queue := fmt.Sprintf("carrot-test.stats-queue.%d", time.Now().UnixNano())
		if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue, "--transient"); code != 0 {
			t.Fatalf("declare: exit %d, %s", code, errOut)
		}
		t.Cleanup(func() { runTool(t, "", "delete", "--url", url, "--queue", queue) })
		if code, _, errOut := runTool(t, "a\nb\nc\n", "publish", "--url", url, "--key", queue, "--lines"); code != 0 {
			t.Fatalf("publish: exit %d, %s", code, errOut)
		}
		var caps carrot.Capabilities
		if conn, err := carrot.Open(t.Context(), url); err == nil {
			caps = conn.Capabilities()
			conn.Close()
		}
		unacked := "0"
		if !caps.InspectQueue.Has(carrot.UnackedCount) {
			unacked = "-" // RabbitMQ
		}

		code, out, errOut := runTool(t, "", "stats", "--url", url, "--queue", queue, "--count", "2", "--interval", "20ms")
		rows := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d +3 +`+regexp.QuoteMeta(unacked)+` +0 +(\S+)$`).FindAllStringSubmatch(out, -1)
		if code != 0 || !strings.HasPrefix(out, "TIME ") || len(rows) != 2 || rows[0][1] != "-" || rows[1][1] != "0" {
			t.Errorf("stats --queue --count 2: exit %d, stdout %q, stderr %q; want a header and two rows of 3 ready, %s unacked, 0 consumers, the second with a rate of 0", code, out, errOut, unacked)
		}
		if !strings.Contains(errOut, fmt.Sprintf("carrot stats: watching queue %q every 20ms", queue)) {
			t.Errorf("stats --queue: stderr %q; want a line saying what it watches", errOut)
		}

		code, out, errOut = runTool(t, "", "stats", "--url", url, "--queue", queue, "--count", "1", "--json")
		var row struct {
			Queue     string   `json:"queue"`
			Ready     *int64   `json:"ready"`
			Unacked   *int64   `json:"unacked"`
			Consumers *int64   `json:"consumers"`
			Rate      *float64 `json:"ready_per_second"`
		}
		if err := json.Unmarshal([]byte(out), &row); code != 0 || err != nil {
			t.Fatalf("stats --queue --json: exit %d, stdout %q (%v), stderr %q", code, out, err, errOut)
		}
		if row.Queue != queue || row.Ready == nil || *row.Ready != 3 || row.Consumers == nil || *row.Consumers != 0 || row.Rate != nil ||
			(unacked == "0") != (row.Unacked != nil && *row.Unacked == 0) {
			t.Errorf("stats --queue --json printed %q; want queue %q, 3 ready, %s unacked, 0 consumers, no rate", out, queue, unacked)
		}

		// Nothing was taken.
		if code, out, errOut := runTool(t, "", "consume", "--url", url, "--queue", queue, "--count", "3"); code != 0 || out != "a\nb\nc\n" {
			t.Errorf("consume after stats --queue: exit %d, stdout %q, stderr %q; want the 3 messages", code, out, errOut)
		}

		missing := queue + ".missing"
		code, out, errOut = runTool(t, "", "stats", "--url", url, "--queue", missing, "--count", "1")
		if want := fmt.Sprintf("carrot stats: queue %q does not exist", missing); code != exitError || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("stats --queue of a missing queue: exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, exitError, want)
		}
	})
}

// matching returns the lines written so far that re matches, and when.
func (r *lineRecorder) matching(re *regexp.Regexp) (lines []string, at []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range r.lines {
		if re.MatchString(l) {
			lines = append(lines, l)
			at = append(at, r.at[i])
		}
	}
	return lines, at
}

// all returns everything written so far.
func (r *lineRecorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "")
}

// background runs the tool in process until it returns or ctx ends, with its standard
// error recorded line by line as it comes; wait returns its exit status and standard
// output once it has returned.
func background(ctx context.Context, args ...string) (errOut *lineRecorder, wait func() (int, string)) {
	errOut = &lineRecorder{}
	var out bytes.Buffer // written by the tool alone, read once it returned
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), &out, errOut) }()
	return errOut, func() (int, string) { return <-done, out.String() }
}

// awaitLine waits until the tool of background has written a line that re matches on
// standard error, and returns it; it fails t if the tool returns first, or after 30 s.
func awaitLine(t *testing.T, errOut *lineRecorder, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if lines, _ := errOut.matching(re); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %q on standard error in 30 s; it has %q", re, errOut.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// memoryNote matches the note that memory:// lives in one process.
var memoryNote = regexp.MustCompile(`(?m)^carrot \w+: note: memory://\S* lives in this process only.*\n`)

// summaryLine matches the summary consume prints when it ends.
var summaryLine = regexp.MustCompile(`^carrot consume: (\d+) received in \S+ \([\d.]+/s on average\)(.*)\n$`)

// TestConsumeSummary checks on every backend that consume ends with a summary on
// standard error that counts the messages received and how they were settled, from the
// consumer's middleware and settle hook, and that --progress 0 leaves it out.
func TestConsumeSummary(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		queue := fmt.Sprintf("carrot-test.consume-summary.%d", time.Now().UnixNano())
		if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", queue, "--transient"); code != 0 {
			t.Fatalf("declare: exit %d, %s", code, errOut)
		}
		t.Cleanup(func() {
			if conn, err := carrot.Open(context.Background(), url); err == nil {
				conn.DeleteQueue(context.Background(), queue)
				conn.Close()
			}
		})
		publish := func(n int) string {
			t.Helper()
			var lines strings.Builder
			for i := range n {
				fmt.Fprintf(&lines, "m%d\n", i)
			}
			if code, _, errOut := runTool(t, lines.String(), "publish", "--url", url, "--key", queue, "--lines"); code != 0 {
				t.Fatalf("publish: exit %d, %s", code, errOut)
			}
			return lines.String()
		}
		for _, tc := range []struct {
			n    int
			args []string
			want string // after the count received, or nothing but the messages with --progress 0
		}{
			{20, nil, ", 20 acked, 0 requeued, 0 rejected"},
			{3, []string{"--requeue"}, ", 0 acked, 3 requeued, 0 rejected"},
			{3, []string{"--progress", "0"}, ""}, // the three requeued
		} {
			sent := "m0\nm1\nm2\n" // the three requeued before
			if len(tc.args) == 0 || tc.args[0] != "--progress" {
				sent = publish(tc.n)
			}
			args := append([]string{"consume", "--url", url, "--queue", queue, "--count", fmt.Sprint(tc.n)}, tc.args...)
			code, out, errOut := runTool(t, "", args...)
			if code != 0 || !sameLines(out, sent) {
				t.Fatalf("carrot %q: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", args, code, out, errOut, sent)
			}
			errOut = memoryNote.ReplaceAllString(errOut, "")
			if tc.want == "" {
				if errOut != "" {
					t.Errorf("carrot %q: stderr %q; want nothing", args, errOut)
				}
				continue
			}
			m := summaryLine.FindStringSubmatch(errOut)
			if m == nil || m[1] != fmt.Sprint(tc.n) || m[2] != tc.want {
				t.Errorf("carrot %q: stderr %q; want only the summary, %d received in so long%s", args, errOut, tc.n, tc.want)
			}
		}
		if code, _, _ := runTool(t, "", "fetch", "--url", url, "--queue", queue); code != exitEmpty {
			t.Errorf("the queue holds messages after consume took them all")
		}
	})
}

// sameLines reports whether a and b hold the same lines, in any order: requeued messages
// need not come again in the order they were published.
func sameLines(a, b string) bool {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	slices.Sort(la)
	slices.Sort(lb)
	return slices.Equal(la, lb)
}

// TestConsumeProgress checks that consume prints progress lines, once messages arrive,
// with the counts so far; leaves out a line that would repeat the one before, but for one
// every waitingEvery; says no more that it is waiting once progress lines took over; and
// ends with the summary.
func TestConsumeProgress(t *testing.T) {
	after, every := waitingAfter, waitingEvery
	waitingAfter, waitingEvery = 20*time.Millisecond, 150*time.Millisecond
	t.Cleanup(func() { waitingAfter, waitingEvery = after, every })

	url := "memory://" + t.Name()
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--queue", "q"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	publish := func(from, to int) {
		t.Helper()
		var lines strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&lines, "%d\n", i)
		}
		if code, _, errOut := runTool(t, lines.String(), "publish", "--url", url, "--key", "q", "--lines"); code != 0 {
			t.Fatalf("publish: exit %d, %s", code, errOut)
		}
	}
	publish(0, 10)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	errOut, wait := background(ctx, "consume", "--url", url, "--queue", "q", "--count", "20", "--progress", "20ms")

	// Ten arrive, then nothing: a line says so, with all ten settled, and then lines as
	// quiet come only every waitingEvery.
	quiet := regexp.MustCompile(`^carrot consume: 10 received \(0/s now, [\d.]+/s on average\), 10 acked, 0 requeued, 0 rejected, 0 in flight\n$`)
	awaitLine(t, errOut, quiet)
	for {
		if lines, _ := errOut.matching(quiet); len(lines) >= 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("consume wrote %q; want three lines of 10 received and none now", errOut.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
	publish(10, 20)
	code, out := wait()
	var want strings.Builder
	for i := range 20 {
		fmt.Fprintf(&want, "%d\n", i)
	}
	if code != 0 || out != want.String() {
		t.Fatalf("consume --count 20: exit %d, stdout %q, stderr %q; want exit 0 and the 20 messages", code, out, errOut.all())
	}

	progress := regexp.MustCompile(`^carrot consume: (\d+) received \([\d.]+/s now, [\d.]+/s on average\), (\d+) acked, 0 requeued, 0 rejected, (\d+) in flight\n$`)
	lines, at := errOut.matching(progress)
	var received int
	for _, l := range lines {
		var n [3]int
		for i, m := range progress.FindStringSubmatch(l)[1:] {
			n[i], _ = strconv.Atoi(m)
		}
		if n[0] < received || n[0] != n[1]+n[2] || n[0] > 20 {
			t.Errorf("progress line %q after one of %d received; want no fewer, and all acked or in flight", l, received)
		}
		received = n[0]
	}
	_, quietAt := errOut.matching(quiet)
	for i := 1; i < len(quietAt); i++ {
		// The recorder stamps each line a little after consume decided to write it.
		if gap := quietAt[i].Sub(quietAt[i-1]); gap < waitingEvery*3/4 {
			t.Errorf("lines that repeat each other %v apart; want at least %v between them", gap, waitingEvery)
		}
	}
	if waiting, waitingAt := errOut.waiting(); len(waiting) > 0 && waitingAt[len(waitingAt)-1].After(at[0]) {
		t.Errorf("consume said it was waiting after the first progress line: %q", errOut.all())
	}
	all := strings.Split(strings.TrimSuffix(errOut.all(), "\n"), "\n")
	last := all[len(all)-1] + "\n"
	if m := summaryLine.FindStringSubmatch(last); m == nil || m[1] != "20" || m[2] != ", 20 acked, 0 requeued, 0 rejected" {
		t.Errorf("last line %q; want the summary: 20 received, 20 acked, 0 requeued, 0 rejected", last)
	}
	if strings.Contains(out, "received") {
		t.Errorf("progress on standard output: %q", out)
	}
}

func TestRecovering(t *testing.T) {
	since := time.Date(2025, 3, 1, 14, 2, 11, 0, time.Local)
	lost := errors.New("connection reset")
	for _, tc := range []struct {
		st   carrot.State
		want string
	}{
		{carrot.State{Connected: true, Since: since}, ""},
		{carrot.State{Closed: true, Since: since, Err: lost}, ""},
		{carrot.State{Since: since, Err: lost}, "; recovering since 14:02:11: connection reset"},
		{carrot.State{Since: since, Attempts: 3, Err: lost}, "; recovering since 14:02:11 (attempt 3): connection reset"},
	} {
		if got := recovering(tc.st); got != tc.want {
			t.Errorf("recovering(%+v) = %q, want %q", tc.st, got, tc.want)
		}
	}
}

// statsTest is an exchange of a test's own, on a backend, for carrot stats to watch.
type statsTest struct {
	t        *testing.T
	url      string
	exchange string
}

func newStatsTest(t *testing.T, url string) *statsTest {
	s := &statsTest{t: t, url: url, exchange: fmt.Sprintf("carrot-test.stats.%d", time.Now().UnixNano())}
	if code, _, errOut := runTool(t, "", "declare", "--url", url, "--exchange", s.exchange, "--kind", "topic", "--transient"); code != 0 {
		t.Fatalf("declare: exit %d, %s", code, errOut)
	}
	t.Cleanup(func() {
		if conn, err := carrot.Open(context.Background(), url); err == nil {
			conn.DeleteExchange(context.Background(), s.exchange)
			conn.Close()
		}
	})
	return s
}

// publish publishes n messages with key and body to the exchange.
func (s *statsTest) publish(key, body string, n int) {
	s.t.Helper()
	code, _, errOut := runTool(s.t, strings.Repeat(body+"\n", n), "publish", "--url", s.url, "--exchange", s.exchange, "--key", key, "--lines", "--allow-unroutable")
	if code != 0 {
		s.t.Fatalf("publish: exit %d, %s", code, errOut)
	}
}

// start starts carrot stats on the exchange, with args, and waits until it watches.
func (s *statsTest) start(ctx context.Context, args ...string) (errOut *lineRecorder, wait func() (int, string)) {
	s.t.Helper()
	errOut, wait = background(ctx, append([]string{"stats", "--url", s.url, "--exchange", s.exchange}, args...)...)
	awaitLine(s.t, errOut, regexp.MustCompile(`^carrot stats: watching exchange `))
	return errOut, wait
}

// report returns what stats --json printed, failing the test unless it exited 0.
func (s *statsTest) report(code int, out string, errOut *lineRecorder) statsReport {
	s.t.Helper()
	var r statsReport
	if code != 0 {
		s.t.Fatalf("stats: exit %d, stdout %q, stderr %q", code, out, errOut.all())
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		s.t.Fatalf("stats --json printed %q: %v", out, err)
	}
	if r.Exchange != s.exchange || !strings.HasPrefix(r.Queue, "carrot-stats.") {
		s.t.Errorf("stats reported exchange %q and queue %q; want %q and carrot-stats.<random>", r.Exchange, r.Queue, s.exchange)
	}
	return r
}

// gone checks that the queue stats made is gone, by declaring it passively and, where
// the backend can list, with carrot list.
func (s *statsTest) gone(queue string) {
	s.t.Helper()
	conn, err := carrot.Open(context.Background(), s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.DeclareQueue(context.Background(), carrot.Queue{Name: queue, Passive: true}); !errors.Is(err, carrot.ErrNotFound) {
		s.t.Errorf("after stats, declaring its queue %q passively: %v; want it not found", queue, err)
	}
	_, qs, err := conn.List(context.Background())
	if errors.Is(err, carrot.ErrUnsupported) {
		return // RabbitMQ
	}
	if err != nil {
		s.t.Fatal(err)
	}
	for _, q := range qs {
		if q.Name == queue {
			s.t.Errorf("after stats, List shows its queue %q", queue)
		}
	}
}

// TestStats checks on every backend that carrot stats counts the messages through an
// exchange by routing key, with the keys it was given, until --count, --for or an
// interrupt, and leaves no queue behind.
func TestStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		t.Run("count", func(t *testing.T) {
			s := newStatsTest(t, url)
			errOut, wait := s.start(ctx, "--count", "10", "--json")
			s.publish("a.x", "aaaa", 5)
			s.publish("b.y", "bb", 3)
			s.publish("", "c", 2) // "#" matches the empty key too
			code, out := wait()
			r := s.report(code, out, errOut)
			want := []keyStats{{"a.x", 5, 20, 0.5}, {"b.y", 3, 6, 0.3}, {"", 2, 2, 0.2}}
			if r.Messages != 10 || r.Bytes != 28 || !slices.Equal(r.RoutingKeys, want) || r.Other != nil || !slices.Equal(r.BindingKeys, []string{"#"}) {
				t.Errorf("stats --count 10 reported %+v; want 10 messages, 28 bytes, by key %+v", r, want)
			}
			s.gone(r.Queue)
		})
		t.Run("keys", func(t *testing.T) {
			s := newStatsTest(t, url)
			errOut, wait := s.start(ctx, "--count", "3", "--json", "--key", "a.*", "--key", "c")
			s.publish("b.y", "b", 4) // not watched, and sent first: counting it would end the count early
			s.publish("a.x", "a", 2)
			s.publish("c", "c", 1)
			code, out := wait()
			r := s.report(code, out, errOut)
			want := []keyStats{{"a.x", 2, 2, 2.0 / 3}, {"c", 1, 1, 1.0 / 3}}
			if r.Messages != 3 || !slices.Equal(r.RoutingKeys, want) || !slices.Equal(r.BindingKeys, []string{"a.*", "c"}) {
				t.Errorf("stats --key a.* --key c reported %+v; want %+v", r, want)
			}
			s.gone(r.Queue)
		})
		t.Run("interrupt", func(t *testing.T) {
			s := newStatsTest(t, url)
			ctx, interrupt := context.WithCancel(ctx)
			defer interrupt()
			errOut, wait := s.start(ctx, "--interval", "20ms", "--json")
			s.publish("a.x", "aaaa", 4)
			awaitLine(t, errOut, regexp.MustCompile(`^carrot stats: 4 messages, 16 B \(`))
			interrupt()
			code, out := wait()
			r := s.report(code, out, errOut)
			if want := []keyStats{{"a.x", 4, 16, 1}}; r.Messages != 4 || !slices.Equal(r.RoutingKeys, want) {
				t.Errorf("stats interrupted reported %+v; want %+v", r, want)
			}
			if !regexp.MustCompile(`(?m)^carrot stats: 4 messages, 16 B in \S+ \([\d.]+/s on average\)$`).MatchString(errOut.all()) {
				t.Errorf("stats interrupted: stderr %q; want a summary of 4 messages, 16 B", errOut.all())
			}
			s.gone(r.Queue)
		})
	})
}

// TestStatsFor checks that stats --for stops on its own, after that long, and prints the
// table.
func TestStatsFor(t *testing.T) {
	s := newStatsTest(t, "memory://"+t.Name())
	start := time.Now()
	code, out, errOut := runTool(t, "", "stats", "--url", s.url, "--exchange", s.exchange, "--for", "200ms", "--interval", "0")
	if took := time.Since(start); code != 0 || took < 200*time.Millisecond {
		t.Errorf("stats --for 200ms: exit %d after %v, stderr %q; want exit 0 after 200ms", code, took, errOut)
	}
	const want = "ROUTING KEY  MESSAGES  BYTES  SHARE\n(total)             0      0   0.0%\n"
	if out != want {
		t.Errorf("stats --for 200ms printed %q, want %q", out, want)
	}
	if strings.Contains(errOut, "0 messages") {
		t.Errorf("stats --interval 0 printed a summary on standard error: %q", errOut)
	}
}

// TestStatsMissingExchange checks on every backend that stats refuses an exchange that
// does not exist, saying so, and declares nothing.
func TestStatsMissingExchange(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		missing := fmt.Sprintf("carrot-test.no-such-exchange.%d", time.Now().UnixNano())
		code, out, errOut := runTool(t, "", "stats", "--url", url, "--exchange", missing, "--for", "1s")
		if want := fmt.Sprintf("carrot stats: exchange %q does not exist", missing); code != exitError || out != "" || !strings.Contains(errOut, want) {
			t.Errorf("stats of a missing exchange: exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, exitError, want)
		}
		if code, out, _ := runTool(t, "", "list", "--url", url); code == 0 && strings.Contains(out, missing) {
			t.Errorf("stats of a missing exchange declared it: %q", out)
		}
	})
	url := "memory://" + t.Name()
	if code, out, errOut := runTool(t, "", "list", "--url", url); code != 0 || strings.Contains(out, "carrot-stats.") {
		t.Errorf("after stats of a missing exchange, list: exit %d, stdout %q, stderr %q; want no queue of stats'", code, out, errOut)
	}
}

func TestStatsTable(t *testing.T) {
	k := &keyCounts{max: 5, m: map[string]*keyCount{}}
	for _, m := range []struct {
		key  string
		n    int
		size int
	}{{"b.y", 2, 10}, {"a.x", 2, 5}, {"", 1, 0}, {"(total)", 3, 1}, {"c d", 1, 1}, {"e", 1, 1}, {"f", 1, 1}} {
		for range m.n {
			k.add(m.key, m.size)
		}
	}
	r := statsReport{Messages: 11, Bytes: 36}
	r.RoutingKeys, r.Other = k.report(r.Messages)
	var out bytes.Buffer
	if err := r.table(&out); err != nil {
		t.Fatal(err)
	}
	const want = `ROUTING KEY     MESSAGES  BYTES   SHARE
"(total)"              3      3   27.3%
a.x                    2     10   18.2%
b.y                    2     20   18.2%
""                     1      0    9.1%
"c d"                  1      1    9.1%
(2 other keys)         2      2   18.2%
(total)               11     36  100.0%
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}

	// Beyond max keys apart, as many again are counted to say how many others there were.
	k = &keyCounts{max: 1, m: map[string]*keyCount{}}
	for _, key := range []string{"a", "b", "b", "c"} {
		k.add(key, 1)
	}
	_, other := k.report(4)
	if want := (otherKeys{Keys: 1, AtLeast: true, Messages: 3, Bytes: 3, Share: 0.75}); other == nil || *other != want {
		t.Errorf("other keys %+v, want %+v", other, want)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatRate(0), "0"},
		{formatRate(1510.4), "1510"},
		{formatRate(12.54), "12.5"},
		{formatRate(0.25), "0.25"},
		{formatBytes(0), "0 B"},
		{formatBytes(1023), "1023 B"},
		{formatBytes(1536), "1.5 KiB"},
		{formatBytes(3 << 20), "3.0 MiB"},
		{formatBytes(5 << 40), "5120.0 GiB"},
		{formatDuration(123456789 * time.Nanosecond), "123ms"},
		{formatDuration(234567 * time.Nanosecond), "235µs"},
		{formatDuration(1234567890 * time.Nanosecond), "1.23s"},
		{formatDuration(83*time.Second + 400*time.Millisecond), "1m23s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
