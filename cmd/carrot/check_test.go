package main

import (
	"encoding/json"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/flowtest"
	"github.com/carrot-go/carrot/internal/testbroker"
)

// checkJSON runs carrot check --json with args and decodes its report.
func checkJSON(t *testing.T, args ...string) (int, checkReport, string) {
	t.Helper()
	code, out, errOut := runTool(t, "", append([]string{"check", "--json"}, args...)...)
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("carrot check %v: exit %d, not a JSON report (%v):\n%s\n%s", args, code, err, out, errOut)
	}
	return code, rep, errOut
}

// allPassed fails t unless every behaviour of rep passed or was skipped for a capability
// the backend does not report.
func allPassed(t *testing.T, code int, rep checkReport) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Status != "passed" && r.Status != "skipped" {
			t.Errorf("%s: %s: %s", r.Name, r.Status, strings.Join(r.Reasons, "; "))
		}
	}
	if code != 0 || rep.Failed != 0 || rep.NotRun != 0 || rep.Passed < 60 {
		t.Errorf("exit %d: %d passed, %d failed, %d skipped, %d not run", code, rep.Passed, rep.Failed, rep.Skipped, rep.NotRun)
	}
}

// TestCheck certifies each broker: every behaviour passes (or is skipped for a capability
// the backend lacks), and nothing named after the run is left on the broker.
func TestCheck(t *testing.T) {
	eachBackend(t, func(t *testing.T, rawURL string) {
		listed := leftovers(t, rawURL)
		code, rep, _ := checkJSON(t, rawURL)
		allPassed(t, code, rep)
		if rep.RunID == "" || rep.Product == "" {
			t.Errorf("report without a run id or product: %+v", rep)
		}
		if listed != nil {
			if left := listed(rep.RunID); len(left) > 0 {
				t.Errorf("left on the broker after the check: %v", left)
			}
		}
	})
}

// leftovers returns a function listing what the broker at rawURL holds whose name has a
// run id in it, where the test can list the broker; nil where it cannot.
func leftovers(t *testing.T, rawURL string) func(runID string) []string {
	u, _ := url.Parse(rawURL)
	switch u.Scheme {
	case "redis":
		return func(runID string) []string {
			conn, err := carrot.Open(t.Context(), rawURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			xs, qs, err := conn.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range xs {
				names = append(names, "exchange "+x.Name)
			}
			for _, q := range qs {
				names = append(names, "queue "+q.Name)
			}
			return slices.DeleteFunc(names, func(n string) bool { return !strings.Contains(n, runID) })
		}
	case "amqp":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" {
			return nil
		}
		if _, err := exec.LookPath("rabbitmqctl"); err != nil {
			return nil
		}
		return func(runID string) []string {
			var names []string
			for _, what := range []string{"list_queues", "list_exchanges"} {
				out, err := exec.Command("rabbitmqctl", "-q", what, "name").CombinedOutput()
				if err != nil {
					t.Fatalf("rabbitmqctl %s: %v\n%s", what, err, out)
				}
				for line := range strings.SplitSeq(string(out), "\n") {
					if strings.Contains(line, runID) {
						names = append(names, strings.TrimSpace(line))
					}
				}
			}
			return names
		}
	}
	return nil
}

// TestCheckRabbitMQ4 certifies a RabbitMQ 4 over both its protocols, with nothing left
// behind, and reports what crosses between them.
func TestCheckRabbitMQ4(t *testing.T) {
	c := testbroker.Start(t, testbroker.RabbitMQ4)
	url10 := c.URL
	url091 := "amqp" + strings.TrimPrefix(url10, "amqp10")
	list := func(runID string) []string {
		var names []string
		for _, what := range []string{"list_queues", "list_exchanges"} {
			out, err := c.Exec(t.Context(), "rabbitmqctl", "-q", what, "name")
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.SplitSeq(out, "\n") {
				if runID != "" && strings.Contains(line, runID) {
					names = append(names, strings.TrimSpace(line))
				}
			}
		}
		return names
	}
	for _, u := range []string{url10, url091} {
		code, rep, _ := checkJSON(t, u)
		allPassed(t, code, rep)
		if left := list(rep.RunID); len(left) > 0 {
			t.Errorf("%s: left on the broker: %v", carrot.Redact(u), left)
		}
	}
	code, rep, _ := checkJSON(t, "--run", "^RoundTrip$", "--interop", url091, url10)
	allPassedSome(t, code, rep)
	crossed := map[string]bool{}
	for _, r := range rep.Interop {
		crossed[r.From+">"+r.To+" "+r.Field] = r.OK
	}
	for _, f := range []string{"amqp>amqp10 body", "amqp10>amqp body", "amqp>amqp10 message id", "amqp10>amqp header string",
		"amqp>amqp10 header int64", "amqp>amqp10 type", "amqp10>amqp app id", "amqp>amqp10 user id", "amqp10>amqp user id"} {
		if ok, found := crossed[f]; !found || !ok {
			t.Errorf("interop %s: found %v, intact %v; want intact", f, found, ok)
		}
	}
	if len(rep.Interop) < 2*(13+11) {
		t.Errorf("interop reported %d fields, want every property and header type both ways", len(rep.Interop))
	}
}

// allPassedSome is allPassed for a run of a few behaviours.
func allPassedSome(t *testing.T, code int, rep checkReport) {
	t.Helper()
	if code != 0 || rep.Failed != 0 || rep.Passed == 0 {
		t.Errorf("exit %d: %d passed, %d failed: %+v", code, rep.Passed, rep.Failed, rep.Results)
	}
}

// TestCheckPolicy: on a RabbitMQ whose policy caps the length of every queue, check names
// the policy and the behaviours that failed under it, and fails.
func TestCheckPolicy(t *testing.T) {
	c := testbroker.Start(t, testbroker.RabbitMQ)
	mgmt, ok := c.Addr("15672/tcp")
	if !ok {
		t.Fatal("the RabbitMQ container publishes no management port")
	}
	if out, err := c.Exec(t.Context(), "rabbitmqctl", "set_policy", "--apply-to", "queues", "cap-length", "^carrot-test\\.", `{"max-length":1}`); err != nil {
		t.Fatalf("set_policy: %v\n%s", err, out)
	}
	code, rep, _ := checkJSON(t, "--run", "^(RoundTrip|FIFO|Prefetch|CompetingConsumers)$", "--management", "http://"+mgmt+"/", c.URL)
	if code == 0 || rep.Failed == 0 {
		t.Errorf("exit %d, %d failed: a one-message queue cap broke nothing?", code, rep.Failed)
	}
	if rep.Semantics == nil || len(rep.Semantics.Policies) != 1 {
		t.Fatalf("semantics: %+v, want the one policy", rep.Semantics)
	}
	p := rep.Semantics.Policies[0]
	if p.Name != "cap-length" || !slices.Contains(p.Semantics, "max-length") || len(p.Breaks) != rep.Failed {
		t.Errorf("policy %+v: want cap-length, max-length, and the %d failed behaviours", p, rep.Failed)
	}
	_, text, _ := runTool(t, "", "check", "--run", "^RoundTrip$", "--management", "http://"+mgmt+"/", c.URL)
	if !strings.Contains(text, `policy "cap-length"`) {
		t.Errorf("the text report does not name the policy:\n%s", text)
	}
}

// TestCheckSeveralHosts certifies RabbitMQ through a URL of two hosts, the first refusing
// connections: check connects through the second, and its faulty connections go through a
// proxy of each host.
func TestCheckSeveralHosts(t *testing.T) {
	u, err := url.Parse(testbroker.URL(t, testbroker.RabbitMQ))
	if err != nil {
		t.Fatal(err)
	}
	closed := flowtest.ClosedPort(t)
	u.Host = closed + "," + u.Host
	code, rep, _ := checkJSON(t, "--run", "^(RoundTrip|RecoverConsume|RecoverTopology)$", u.String())
	allPassedSome(t, code, rep)
	if rep.Passed != 3 || !strings.Contains(rep.Broker, closed+",") || strings.Contains(rep.Broker, "guest") {
		t.Errorf("report of %d passed for broker %q, want 3, for both hosts without the user info", rep.Passed, rep.Broker)
	}
}

// TestCheckQueueType checks with --queue-type: on RabbitMQ the behaviours pass on quorum
// queues, and on memory://, which has no quorum queues, the behaviours that declare one fail.
func TestCheckQueueType(t *testing.T) {
	const run = "^(AckRemoves|RequeueRedelivers|RejectDeadLetters)$"
	code, rep, _ := checkJSON(t, "--queue-type", "quorum", "--run", run, "memory://"+t.Name())
	if code != 1 || rep.Failed != 3 {
		t.Errorf("check --queue-type quorum on memory://: exit %d, %d failed; want 1, 3 (no quorum queues there)", code, rep.Failed)
	}
	for _, r := range rep.Results {
		if r.Status == "failed" && !strings.Contains(strings.Join(r.Reasons, " "), "quorum") {
			t.Errorf("%s failed for another reason than quorum queues: %v", r.Name, r.Reasons)
		}
	}
	url := testbroker.URL(t, testbroker.RabbitMQ)
	code, rep, _ = checkJSON(t, "--queue-type", "quorum", "--run", run, url)
	if code != 0 || rep.Passed != 3 {
		t.Errorf("check --queue-type quorum on RabbitMQ: exit %d, %d passed; want 0, 3: %+v", code, rep.Passed, rep.Results)
	}
}
