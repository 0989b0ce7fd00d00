package conformance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/internal/brokerurl"
)

// CheckOptions configures [Check].
type CheckOptions struct {
	// Budget bounds the whole run: behaviours not started when it is spent are reported
	// as not run. DefaultBudget when zero.
	Budget time.Duration

	// Match, when set, runs only the behaviours whose names it matches.
	Match *regexp.Regexp

	// Progress, when set, is called after each behaviour with its result, from the
	// goroutine that called Check.
	Progress func(Result)
}

// DefaultBudget is how long [Check] runs at most by default.
const DefaultBudget = 10 * time.Minute

// A Status is the outcome of one behaviour in a [Report].
type Status string

// The statuses of a behaviour.
const (
	Passed  Status = "passed"
	Failed  Status = "failed"
	Skipped Status = "skipped" // the backend does not report a capability it needs
	NotRun  Status = "not run" // the time budget was spent before it started
)

// A Result is what [Check] found of one behaviour.
type Result struct {
	Name     string        `json:"name"`
	Doc      string        `json:"doc"` // what a user relies on, in one line
	Status   Status        `json:"status"`
	Reasons  []string      `json:"reasons,omitempty"` // why it failed, or was skipped or not run
	Duration time.Duration `json:"duration_ns"`
}

// A Report is what [Check] found of a broker.
type Report struct {
	// RunID is in the name of every exchange and queue the run declared, after
	// "carrot-test.", so that what it may have left can be told from the rest.
	RunID        string              `json:"run_id"`
	Capabilities carrot.Capabilities `json:"capabilities"`
	Results      []Result            `json:"results"`
	Passed       int                 `json:"passed"`
	Failed       int                 `json:"failed"`
	Skipped      int                 `json:"skipped"`
	NotRun       int                 `json:"not_run"`
	Duration     time.Duration       `json:"duration_ns"`
}

// OK reports whether no behaviour failed and every one that was to run ran.
func (r *Report) OK() bool { return r.Failed == 0 && r.NotRun == 0 }

// Check runs the suite's behaviours against the broker h opens, without go test, as an
// operator's check of a live broker: each behaviour declares exchanges and queues of its
// own, under names starting with "carrot-test." and a random id, and deletes them when
// it ends, touching nothing else. It returns an error only when it cannot start (Open
// fails); a behaviour that fails is a [Failed] result with its reasons.
//
// A behaviour that hangs past twice the harness's timeout is reported as failed, and its
// goroutine is left behind; the rest go on.
func Check(ctx context.Context, h Harness, opts CheckOptions) (*Report, error) {
	switch {
	case h.Open == nil:
		return nil, errors.New("conformance: Harness.Open is nil")
	case h.OpenFaulty == nil:
		return nil, errors.New("conformance: Harness.OpenFaulty is nil: the Recover behaviours need a way to break the connection (see Proxy)")
	case h.URL == "":
		return nil, errors.New("conformance: Harness.URL is empty: the Hostile behaviours open variants of it")
	}
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	budget := opts.Budget
	if budget == 0 {
		budget = DefaultBudget
	}
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, h.Timeout)
	admin, err := h.Open(octx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("conformance: open: %w", err)
	}
	defer admin.Close()

	rep := &Report{Capabilities: admin.Capabilities()}
	run := &runner{h: h, admin: admin, caps: rep.Capabilities, id: randomID()}
	rep.RunID = run.id
	root := &checkT{name: "", ctx: ctx, hard: 2 * h.Timeout}
	for _, c := range allCases() {
		if opts.Match != nil && !opts.Match.MatchString(c.name) {
			continue
		}
		res := Result{Name: c.name, Doc: c.doc}
		switch {
		case ctx.Err() != nil:
			res.Status, res.Reasons = NotRun, []string{"the check was stopped: " + ctx.Err().Error()}
		case time.Since(start) > budget:
			res.Status, res.Reasons = NotRun, []string{fmt.Sprintf("the time budget of %v was spent", budget)}
		default:
			began := time.Now()
			run.run(root, c)
			t := root.last
			res.Duration = time.Since(began)
			res.Reasons = t.reasons()
			switch {
			case t.failed():
				res.Status = Failed
			case t.wasSkipped():
				res.Status = Skipped
			default:
				res.Status, res.Reasons = Passed, nil
			}
		}
		switch res.Status {
		case Passed:
			rep.Passed++
		case Failed:
			rep.Failed++
		case Skipped:
			rep.Skipped++
		case NotRun:
			rep.NotRun++
		}
		rep.Results = append(rep.Results, res)
		if opts.Progress != nil {
			opts.Progress(res)
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// checkT runs a case, or one of its subtests, for [Check]: what testing.T does, in
// miniature. Fatal and Skip end the goroutine running it with runtime.Goexit; cleanups run
// after, last first, once its context is canceled.
type checkT struct {
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	hard   time.Duration // how long a (sub)test may run before it is given up on
	last   *checkT       // the last subtest run, for Check to read

	mu       sync.Mutex
	fail     bool
	skipped  bool
	msgs     []string // errors, and the skip reason
	cleanups []func()
}

func (c *checkT) Helper() {}

func (c *checkT) Error(args ...any) { c.note(true, fmt.Sprint(args...)) }

func (c *checkT) Errorf(format string, args ...any) { c.note(true, fmt.Sprintf(format, args...)) }

func (c *checkT) Fatal(args ...any) {
	c.note(true, fmt.Sprint(args...))
	runtime.Goexit()
}

func (c *checkT) Fatalf(format string, args ...any) {
	c.note(true, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

func (c *checkT) Log(args ...any) {}

func (c *checkT) Logf(format string, args ...any) {}

func (c *checkT) Skipf(format string, args ...any) {
	c.mu.Lock()
	c.skipped = true
	c.msgs = append(c.msgs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
	runtime.Goexit()
}

func (c *checkT) Cleanup(f func()) {
	c.mu.Lock()
	c.cleanups = append(c.cleanups, f)
	c.mu.Unlock()
}

func (c *checkT) Failed() bool { return c.failed() }

func (c *checkT) Context() context.Context { return c.ctx }

func (c *checkT) Name() string { return c.name }

// note records a message, an error if fail.
func (c *checkT) note(fail bool, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = c.fail || fail
	c.msgs = append(c.msgs, msg)
}

func (c *checkT) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fail
}

func (c *checkT) wasSkipped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skipped
}

func (c *checkT) reasons() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// run runs f as a subtest in a goroutine of its own, and waits for it, at most c.hard.
// The subtest's failures are its parent's too, prefixed with its name below the case.
func (c *checkT) run(name string, f func(t tb)) bool {
	full := name
	if c.name != "" {
		full = c.name + "/" + name
	}
	ctx, cancel := context.WithCancel(c.ctx)
	sub := &checkT{name: full, ctx: ctx, cancel: cancel, hard: c.hard}
	c.last = sub
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sub.cleanup()
		defer func() {
			if p := recover(); p != nil {
				sub.note(true, fmt.Sprintf("panic: %v\n%s", p, debug.Stack()))
			}
		}()
		f(sub)
	}()
	timer := time.NewTimer(c.hard)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		sub.note(true, fmt.Sprintf("did not finish within %v; given up on", c.hard))
		cancel()
	}
	if c.name != "" && sub.failed() { // a subtest of a case: its failures are the case's
		for _, m := range sub.reasons() {
			c.note(true, name+": "+m)
		}
	}
	return !sub.failed()
}

// cleanup cancels the context and runs the cleanups, last first; a cleanup may register
// more, and may fail the test.
func (c *checkT) cleanup() {
	c.cancel()
	for {
		c.mu.Lock()
		n := len(c.cleanups)
		if n == 0 {
			c.mu.Unlock()
			return
		}
		f := c.cleanups[n-1]
		c.cleanups = c.cleanups[:n-1]
		c.mu.Unlock()
		func() {
			defer func() {
				if p := recover(); p != nil {
					c.note(true, fmt.Sprintf("cleanup panicked: %v", p))
				}
			}()
			done := make(chan struct{})
			go func() { // a Fatal in a cleanup ends its own goroutine only
				defer close(done)
				f()
			}()
			<-done
		}()
	}
}

// ProxiedHarness returns a Harness for a broker reached over TCP at rawURL: Open opens
// rawURL with d (the zero Dialer when nil), and OpenFaulty opens it through a [Proxy] of
// its own, the URL's host and port replaced by the proxy's (and, for a TLS scheme, the
// server_name option set to the host). A URL of several hosts (a cluster's nodes) gets a
// listener of the one proxy for each, which breaks them all at once; with a TLS scheme,
// their names must be one, or the URL must give server_name, since the proxy cannot keep
// each host's own. Each host must give its port. A backend whose client dials other
// addresses than the URL's (a Redis Cluster's nodes) needs a harness of its own.
func ProxiedHarness(d *carrot.Dialer, rawURL string) (Harness, error) {
	if d == nil {
		d = new(carrot.Dialer)
	}
	u, q, err := brokerurl.Parse(rawURL)
	if err != nil {
		return Harness{}, fmt.Errorf("conformance: %s: %w", carrot.Redact(rawURL), err)
	}
	hosts := brokerurl.Hosts(u)
	if len(hosts) == 0 {
		return Harness{}, fmt.Errorf("conformance: %s names no host to reach through a proxy", carrot.Redact(rawURL))
	}
	var names []string // the hosts' names, for TLS
	for _, h := range hosts {
		if h.Port == "" {
			return Harness{}, fmt.Errorf("conformance: %s names no port for host %s: give it, for the proxy to forward to", carrot.Redact(rawURL), h)
		}
		if net.ParseIP(h.Name) == nil && !slices.Contains(names, h.Name) {
			names = append(names, h.Name)
		}
	}
	serverName := "" // to set: the certificate names the broker's host, not the proxy's
	if strings.HasSuffix(u.Scheme, "s") && !q.Has("server_name") {
		switch len(names) {
		case 0:
		case 1:
			serverName = names[0]
		default:
			return Harness{}, fmt.Errorf("conformance: %s names hosts of different names on a TLS scheme: through a proxy, the server_name option must name the one their certificates are checked against", carrot.Redact(rawURL))
		}
	}
	return Harness{
		URL:  rawURL,
		Open: func(ctx context.Context) (*carrot.Conn, error) { return d.Open(ctx, rawURL) },
		OpenFaulty: func(ctx context.Context) (*carrot.Conn, Breaker, error) {
			proxy := NewProxy()
			addrs := make([]string, len(hosts))
			for i, h := range hosts {
				addr, err := proxy.Forward(h.String())
				if err != nil {
					proxy.Close()
					return nil, nil, err
				}
				addrs[i] = addr
			}
			v := *u
			v.Host = strings.Join(addrs, ",")
			if serverName != "" {
				vq := v.Query()
				vq.Set("server_name", serverName)
				v.RawQuery = vq.Encode()
			}
			conn, err := d.Open(ctx, v.String())
			if err != nil {
				proxy.Close()
				return nil, nil, err
			}
			return conn, proxy, nil
		},
	}, nil
}
