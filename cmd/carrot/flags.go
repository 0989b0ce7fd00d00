package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// errHelp is returned when -h was asked for; the usage is printed already.
var errHelp = flag.ErrHelp

// flags returns a flag set for a command, with --url.
func (c *cli) flags(name, args, about string) (*flag.FlagSet, *string) {
	fs := c.bareFlags(name, args, about)
	rawURL := fs.String("url", "", "broker `URL` (default $CARROT_URL, then memory://)")
	return fs, rawURL
}

// bareFlags returns a flag set for a command that takes no --url.
func (c *cli) bareFlags(name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("carrot "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run reports errors itself; parse prints the usage
	fs.Usage = func() {
		w := c.stdout
		line := "Usage: carrot " + name
		if hasFlags(fs) {
			line += " [flags]"
		}
		if args != "" {
			line += " " + args
		}
		fmt.Fprintf(w, "%s\n\n%s\n", line, about)
		if !hasFlags(fs) {
			return
		}
		if args != "" {
			fmt.Fprint(w, "\nFlags may come before or after the arguments; -- ends them.\n")
		}
		fmt.Fprint(w, "\nFlags:\n")
		printFlags(w, fs)
	}
	return fs
}

// hasFlags reports whether fs defines any flag.
func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// printFlags writes the flags of fs as flag.PrintDefaults does, but with two dashes, as
// the documentation writes them.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		switch f.DefValue {
		case "", "0", "false", "0s":
		default:
			if g, ok := f.Value.(flag.Getter); ok {
				if _, isString := g.Get().(string); isString {
					line += fmt.Sprintf(" (default %q)", f.DefValue)
					break
				}
			}
			line += fmt.Sprintf(" (default %v)", f.DefValue)
		}
		fmt.Fprintln(w, line)
	})
}

// parse sets the flags of fs from args and returns the other arguments, of which there
// may be at most max. Flags may come anywhere on the line, before or after the
// arguments; "--" ends them, so that an argument may start with a dash. A flag is
// written --name or -name, with its value after "=" or as the next argument (a boolean
// flag takes only the former: --lines, --lines=false). Mistakes are usage errors that
// name the flag and say what it wants; -h and --help print the command's usage to
// standard output and return errHelp.
func (c *cli) parse(fs *flag.FlagSet, args []string, max int) ([]string, error) {
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			positional = append(positional, arg) // "-" is an argument too: standard input
			continue
		}
		name := strings.TrimPrefix(arg[1:], "-")
		name, value, hasValue := strings.Cut(name, "=")
		if name == "" || name[0] == '-' || name[0] == '=' {
			return nil, usageError{fmt.Sprintf("bad flag syntax: %s", arg)}
		}
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				fs.Usage()
				return nil, errHelp
			}
			return nil, usageError{fmt.Sprintf("unknown flag --%s", name)}
		}
		if !hasValue {
			if isBool(f) {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				return nil, usageError{fmt.Sprintf("--%s needs a value: %s", name, want(f))}
			}
		}
		if err := fs.Set(name, value); err != nil {
			return nil, usageError{fmt.Sprintf("--%s %q: %s", name, value, want(f))}
		}
		if g, ok := f.Value.(flag.Getter); ok && isNegative(g.Get()) {
			return nil, usageError{fmt.Sprintf("--%s %s: want a duration such as 10s, not a negative one", name, value)}
		}
	}
	if len(positional) > max {
		return nil, usageError{fmt.Sprintf("unexpected argument %q", positional[max])}
	}
	return positional, nil
}

// isNegative reports whether v is a negative duration: no duration flag of carrot's has
// a meaning for one.
func isNegative(v any) bool {
	d, ok := v.(time.Duration)
	return ok && d < 0
}

// isBool reports whether f is a boolean flag, which takes no separate value.
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// want says what kind of value the flag f takes, for an error about its value.
func want(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "want a value"
	}
	switch g.Get().(type) {
	case bool:
		return "want true or false"
	case time.Duration:
		return "want a duration such as 10s (a number and a unit: ms, s, m or h, as in 1m30s or 250ms)"
	case int, int64:
		return "want a whole number"
	case uint, uint64:
		return "want a whole number, 0 or more"
	default:
		return "want a value"
	}
}

// given returns the names of the flags set on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// unless returns a usage error when one of the flags named was given (set) although
// meaningful is false, so that it would be ignored; why says what it needs.
func unless(set map[string]bool, meaningful bool, why string, names ...string) error {
	if meaningful {
		return nil
	}
	for _, n := range names {
		if set[n] {
			return usageError{fmt.Sprintf("--%s would be ignored: %s", n, why)}
		}
	}
	return nil
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
