package conformance_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/backends/memory"
	"github.com/carrot-go/carrot/conformance"
)

// memoryHarness opens connections to the memory broker name, the faulty ones through a
// Link.
func memoryHarness(name string) conformance.Harness {
	url := "memory://" + name
	return conformance.Harness{
		URL:  url,
		Open: func(ctx context.Context) (*carrot.Conn, error) { return carrot.Open(ctx, url) },
		OpenFaulty: func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
			link := new(memory.Link)
			conn, err := carrot.Connect(ctx, memory.NewConnector(&memory.Options{Name: name, Link: link}))
			return conn, link, err
		},
	}
}

// TestCheck runs the whole suite without go test's runner, on memory: every behaviour
// passes or is skipped by capability, and nothing is left on the broker.
func TestCheck(t *testing.T) {
	ctx := t.Context()
	h := memoryHarness(t.Name())
	admin, err := h.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	xs0, qs0, err := admin.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var progressed int
	rep, err := conformance.Check(ctx, h, conformance.CheckOptions{Progress: func(conformance.Result) { progressed++ }})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Status != conformance.Passed && r.Status != conformance.Skipped {
			t.Errorf("%s: %s: %s", r.Name, r.Status, strings.Join(r.Reasons, "; "))
		}
	}
	if rep.Passed < 60 || !rep.OK() || progressed != len(rep.Results) || rep.Passed+rep.Skipped != len(rep.Results) {
		t.Errorf("report: %d passed, %d failed, %d skipped, %d not run, %d results, %d progress calls",
			rep.Passed, rep.Failed, rep.Skipped, rep.NotRun, len(rep.Results), progressed)
	}
	xs, qs, err := admin.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != len(xs0) || len(qs) != len(qs0) {
		t.Errorf("left on the broker: exchanges %v, queues %v; before: %v, %v", xs, qs, xs0, qs0)
	}
}

// TestCheckReportsFailures: a behaviour that fails is reported with its reasons, and one
// the budget leaves no time for is reported as not run; the run goes on after a failure.
func TestCheckReportsFailures(t *testing.T) {
	h := memoryHarness(t.Name())
	h.OpenFaulty = func(ctx context.Context) (*carrot.Conn, conformance.Breaker, error) {
		return nil, nil, errors.New("no network to break here")
	}
	rep, err := conformance.Check(t.Context(), h, conformance.CheckOptions{Match: regexp.MustCompile(`^(RecoverConsume|RoundTrip)$`)})
	if err != nil {
		t.Fatal(err)
	}
	var failed, passed int
	for _, r := range rep.Results {
		switch {
		case strings.HasPrefix(r.Name, "Recover") && r.Status == conformance.Failed:
			failed++
			if !strings.Contains(strings.Join(r.Reasons, " "), "no network to break here") {
				t.Errorf("%s failed for %q, want the harness's error", r.Name, r.Reasons)
			}
		case !strings.HasPrefix(r.Name, "Recover") && r.Status == conformance.Passed:
			passed++
		default:
			t.Errorf("%s: %s %v", r.Name, r.Status, r.Reasons)
		}
	}
	if failed == 0 || passed == 0 || rep.OK() {
		t.Errorf("%d failed and %d passed (OK %v), want some of each, not OK", failed, passed, rep.OK())
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep, err = conformance.Check(ctx, memoryHarness(t.Name()+"2"), conformance.CheckOptions{Match: regexp.MustCompile(`^RoundTrip$`)})
	if err == nil {
		for _, r := range rep.Results {
			if r.Status != conformance.NotRun {
				t.Errorf("after its context ended, %s: %s", r.Name, r.Status)
			}
		}
	}
}
