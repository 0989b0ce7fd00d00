package conformance

import (
	"context"
	"testing"
)

// tb is what a case needs of the test that runs it: the methods of *testing.T it calls,
// and a way to run a subtest. [Run] runs the cases under go test ([goT]); [Check] runs
// them without it ([checkT]). Like testing.T, Fatal and Skip end the calling goroutine,
// which must be the one running the (sub)test.
type tb interface {
	Helper()
	Error(args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Log(args ...any)
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(f func())
	Failed() bool
	Context() context.Context
	Name() string

	// run runs f as a subtest named name, and reports whether it passed (or was skipped).
	run(name string, f func(t tb)) bool
}

// goT runs the cases as subtests of go test.
type goT struct{ *testing.T }

func (g goT) run(name string, f func(t tb)) bool {
	return g.T.Run(name, func(t *testing.T) { f(goT{t}) })
}
