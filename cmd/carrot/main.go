// Command carrot publishes, consumes, fetches and purges messages on any broker carrot
// has a backend for, watches the traffic through an exchange and the depth of a queue,
// declares, lists and deletes topology, and runs carrot 0.4's feed-import demo.
//
// Usage:
//
//	carrot <command> [flags] [arguments]
//
// Commands:
//
//	demo      run carrot 0.4's feed-import example (on memory:// unless --url says otherwise)
//	publish   publish a message, or one per line of standard input
//	consume   receive messages and print them, until interrupted or --count
//	fetch     fetch one message and print it
//	purge     remove the messages waiting in a queue and print how many
//	declare   declare an exchange, a queue, and bindings between them
//	unbind    remove bindings between an exchange and a queue
//	delete    delete a queue, an exchange, or both; or a whole Redis namespace
//	list      list exchanges, and queues with their counts, where the broker can say
//	stats     watch the traffic through an exchange, or the depth of a queue
//	bench     measure publish and consume rates on a queue of its own
//	check     certify a live broker: run the conformance suite on it, and report
//	backends  list the URL schemes carrot knows
//	version   print carrot's version and the Go version that built it
//
// Every command but backends and version takes --url, which defaults to the CARROT_URL
// environment variable, and then to memory://. A memory:// broker lives inside one
// process: what one carrot command publishes there is gone when it exits. Flags may come
// before or after a command's arguments; -- ends them. A flag that would be ignored, given
// the others, is an error that says why. Run "carrot help COMMAND" for a command's flags.
//
// Exit status: 0 on success, 1 when the broker or a message fails, 2 for a usage error,
// 3 when fetch finds the queue empty.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	_ "github.com/carrot-go/carrot/backends/all"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	exitEmpty = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand of the tool.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, cli *cli, args []string) error
}

var commands = []command{
	{"demo", "run carrot 0.4's feed-import example", runDemo},
	{"publish", "publish a message, or one per line of standard input", runPublish},
	{"consume", "receive messages and print them, until interrupted or --count", runConsume},
	{"fetch", "fetch one message and print it", runFetch},
	{"purge", "remove the messages waiting in a queue and print how many", runPurge},
	{"declare", "declare an exchange, a queue, and bindings between them", runDeclare},
	{"unbind", "remove bindings between an exchange and a queue", runUnbind},
	{"delete", "delete a queue, an exchange, or both; or a whole Redis namespace", runDelete},
	{"list", "list exchanges, and queues with their counts, where the broker can say", runList},
	{"stats", "watch the traffic through an exchange, or the depth of a queue", runStats},
	{"bench", "measure publish and consume rates on a queue of its own", runBench},
	{"check", "certify a live broker: run the conformance suite on it, and report", runCheck},
	{"backends", "list the URL schemes carrot knows", runBackends},
	{"version", "print carrot's version and the Go version that built it", runVersion},
}

// cli holds the tool's streams, so tests can run it in process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errEmpty reports that fetch found nothing: exit status 3.
var errEmpty = errors.New("queue is empty")

// run runs the tool with args (without the program name) and returns its exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		c.usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run(ctx, []string{args[1], "-h"}, stdin, stdout, stderr)
		}
		c.usage(stdout)
		return exitOK
	}
	for _, cmd := range commands {
		if cmd.name != name {
			continue
		}
		err := cmd.run(ctx, c, args[1:])
		var ue usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, errHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "carrot %s: %v\nRun 'carrot help %s' for usage.\n", name, err, name)
			return exitUsage
		case errors.Is(err, errEmpty):
			fmt.Fprintf(stderr, "carrot %s: %v\n", name, err)
			return exitEmpty
		default:
			fmt.Fprintf(stderr, "carrot %s: %s\n", name, strings.TrimPrefix(err.Error(), "carrot: "))
			return exitError
		}
	}
	fmt.Fprintf(stderr, "carrot: unknown command %q\n", name)
	c.usage(stderr)
	return exitUsage
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `carrot publishes and consumes messages on any broker carrot has a backend for.

Usage:
  carrot <command> [flags] [arguments]

Commands:
`)
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Every command but backends and version takes --url, which defaults to $CARROT_URL, then
memory://. A memory:// broker lives inside one process: what one carrot command publishes
there is gone when it exits. Flags may come before or after a command's arguments; --
ends them.

Exit status: 0 on success, 1 when the broker or a message fails, 2 for a usage error,
3 when fetch finds the queue empty.

Run 'carrot help <command>' for a command's flags.
`)
}
