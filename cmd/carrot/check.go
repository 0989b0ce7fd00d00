package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
)

// checkReport is what carrot check prints, as text or JSON.
type checkReport struct {
	RunID        string               `json:"run_id"`  // in the names of what the check declared
	Broker       string               `json:"broker"`  // the URL, without its password
	Product      string               `json:"product"` // and version, as the broker says, where it says
	Capabilities []string             `json:"capabilities"`
	Results      []conformance.Result `json:"results"`
	Passed       int                  `json:"passed"`
	Failed       int                  `json:"failed"`
	Skipped      int                  `json:"skipped"`
	NotRun       int                  `json:"not_run"`
	Seconds      float64              `json:"seconds"`
	Semantics    *brokerNotes         `json:"semantics,omitempty"`
	Interop      []interopResult      `json:"interop,omitempty"`
}

func runCheck(ctx context.Context, c *cli, args []string) error {
	fs, rawURL := c.flags("check", "[URL]", `Certifies a live broker: runs carrot's conformance suite against it, without go test,
and prints a report: the broker and its version, the capabilities it reports, every
behaviour passed or failed with the reason (or skipped, for a capability the backend
lacks), and, on RabbitMQ, the policies and alarms that change what applications see (read
from its management API when it answers: --management). Every behaviour works on
exchanges and queues of its own, named carrot-test.<random>..., and deletes them when it
ends; nothing else on the broker is touched. The behaviours that break connections do so
through a TCP proxy of check's own, never to other clients.

With --interop URL2 (the same broker over another protocol, such as amqp:// and
amqp10:// on RabbitMQ 4) it also publishes a message with every property and header type
on each side and reports which arrive intact on the other, in both directions.

The URL is --url or the argument. The exit status is 1 when a behaviour failed or was not
run within --budget.`)
	budget := fs.Duration("budget", conformance.DefaultBudget, "stop starting behaviours after this long")
	timeout := fs.Duration("timeout", 30*time.Second, "the longest a behaviour waits for a message")
	match := fs.String("run", "", "run only the behaviours whose names match this regular `expression`")
	asJSON := fs.Bool("json", false, "print the report as JSON on standard output")
	interop := fs.String("interop", "", "a second `URL` of the same broker: report what crosses between the two")
	queueType := fs.String("queue-type", "", "declare the suite's queues of this `type` where they can be (quorum on a cluster, say): classic, quorum or stream; the backend's default when empty")
	mgmt := fs.String("management", "", "RabbitMQ's management API `URL`, to read policies and alarms (default http://HOST:15672/ with the URL's credentials, for amqp://; of the first of several hosts that answers)")
	args, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if len(args) == 1 {
		if *rawURL != "" {
			return usageError{"give the URL once: as --url or as the argument"}
		}
		*rawURL = args[0]
	}
	if *budget <= 0 || *timeout <= 0 {
		return usageError{"--budget and --timeout must be positive"}
	}
	var re *regexp.Regexp
	if *match != "" {
		if re, err = regexp.Compile(*match); err != nil {
			return usageError{fmt.Sprintf("--run: %v", err)}
		}
	}
	*rawURL = urlOrDefault(*rawURL)
	h, err := checkHarness(*rawURL)
	if err != nil {
		return err
	}
	h.Timeout = *timeout
	h.QueueType = carrot.QueueType(*queueType)

	rep := &checkReport{Broker: carrot.Redact(*rawURL)}
	conn, err := h.Open(ctx)
	if err != nil {
		return err
	}
	rep.Product = serverProduct(ctx, conn)
	rep.Capabilities = capabilityList(conn.Capabilities())
	conn.Close()
	if !*asJSON {
		fmt.Fprintf(c.stdout, "broker:       %s\nproduct:      %s\ncapabilities: %s\n\n", rep.Broker, rep.Product, strings.Join(rep.Capabilities, ", "))
	}
	notes := readBrokerNotes(ctx, *rawURL, *mgmt)

	progress := func(r conformance.Result) {
		if *asJSON {
			return
		}
		switch r.Status {
		case conformance.Passed:
			fmt.Fprintf(c.stdout, "PASS  %s (%v)\n", r.Name, r.Duration.Round(time.Millisecond))
		default:
			tag := map[conformance.Status]string{conformance.Failed: "FAIL", conformance.Skipped: "SKIP", conformance.NotRun: "NORUN"}[r.Status]
			fmt.Fprintf(c.stdout, "%-5s %s: %s\n", tag, r.Name, strings.Join(r.Reasons, "; "))
		}
	}
	res, err := conformance.Check(ctx, h, conformance.CheckOptions{Budget: *budget, Match: re, Progress: progress})
	if err != nil {
		return err
	}
	rep.Results, rep.RunID = res.Results, res.RunID
	rep.Passed, rep.Failed, rep.Skipped, rep.NotRun = res.Passed, res.Failed, res.Skipped, res.NotRun
	rep.Seconds = res.Duration.Seconds()
	if notes != nil {
		notes.attribute(res.Results)
		rep.Semantics = notes
	}
	if *interop != "" {
		if rep.Interop, err = runInterop(ctx, *rawURL, *interop); err != nil {
			return err
		}
	}

	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "\n%d passed, %d failed, %d skipped (capability), %d not run, in %.1fs\n", rep.Passed, rep.Failed, rep.Skipped, rep.NotRun, rep.Seconds)
		if notes != nil {
			notes.print(c.stdout)
		}
		printInterop(c.stdout, rep.Interop)
	}
	if !res.OK() {
		return fmt.Errorf("%d behaviours failed, %d not run", res.Failed, res.NotRun)
	}
	return nil
}

// checkHarness returns the conformance harness for rawURL: on memory://, a broker of the
// check's own, whose connections break through a Link; elsewhere, connections through a
// TCP proxy. The connections log nothing: the check breaks them on purpose.
func checkHarness(rawURL string) (conformance.Harness, error) {
	quiet := checkDialer()
	u, err := url.Parse(rawURL)
	if err == nil && strings.EqualFold(u.Scheme, "memory") {
		name := "carrot-check." + fmt.Sprint(time.Now().UnixNano())
		url := "memory://" + name
		return conformance.Harness{
			URL:  url,
			Open: func(ctx context.Context) (*carrot.Conn, error) { return quiet.Open(ctx, url) },
			OpenFaulty: func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
				link := new(memory.Link)
				conn, err := quiet.Connect(ctx, memory.NewConnector(&memory.Options{Name: name, Link: link}))
				return conn, link, err
			},
		}, nil
	}
	return conformance.ProxiedHarness(quiet, rawURL)
}

// capabilityList names the capabilities caps reports, with their limits.
func capabilityList(caps carrot.Capabilities) []string {
	var out []string
	v := reflect.ValueOf(caps)
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch {
		case f.IsZero():
		case f.Kind() == reflect.Bool:
			out = append(out, name)
		default: // limits and sets: a Duration or QueueCounts by its String, a number as it is
			out = append(out, fmt.Sprintf("%s=%v", name, f.Interface()))
		}
	}
	return out
}
