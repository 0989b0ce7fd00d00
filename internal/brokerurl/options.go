package brokerurl

import (
	"crypto/tls"
	"errors"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/tlsfiles"
)

// URL is a URL parsed for one backend, by [ParseFor]. Its errors are backend errors of
// code Invalid that start with the backend's name and never show the password.
type URL struct {
	*url.URL
	Query url.Values // the options, each with its values in order
	name  string     // the backend's, to start errors with
}

// ParseFor parses rawURL as [Parse] does, for the backend name ("carrot/redis"), whose
// URLs have one of schemes.
func ParseFor(name, rawURL string, schemes ...string) (*URL, error) {
	u, q, err := Parse(rawURL)
	if err != nil {
		return nil, backend.Errorf(backend.Invalid, "%s: %w", name, err)
	}
	if !slices.Contains(schemes, u.Scheme) {
		want := strings.Join(schemes, ", ")
		if n := len(schemes); n > 1 {
			want = strings.Join(schemes[:n-1], ", ") + " or " + schemes[n-1]
		}
		return nil, backend.Errorf(backend.Invalid, "%s: URL scheme is %q, want %s", name, u.Scheme, want)
	}
	return &URL{URL: u, Query: q, name: name}, nil
}

// Errorf returns an error of code Invalid whose text starts with the backend's name.
func (u *URL) Errorf(format string, args ...any) error {
	return backend.Errorf(backend.Invalid, "%s: "+format, append([]any{u.name}, args...)...)
}

// An Option is a query option a backend reads.
type Option struct {
	Name string
	// Set parses a value of the option. Its error says what is wanted ("want a positive
	// duration"): the error of Read names the option and quotes the value (unless it is a
	// [Secret]).
	Set func(value string) error
	// Repeat lets the option be given several times: Set is called for each value, in
	// order. Other options may be given once.
	Repeat bool
	// Deprecated, when set, is the option's new name: this one is its old name, still
	// read, left out of the list of known options, and an error with the new one.
	Deprecated string
}

// ErrUnknown is returned by [Query.Other] for an option it does not know.
var ErrUnknown = errors.New("unknown URL option")

// Query is how a backend reads the options of its URLs.
type Query struct {
	Options []Option
	// Other, when not nil, reads an option that Options does not name: those of a client
	// library, passed through to it. It returns ErrUnknown for one it does not know either,
	// and an error saying what is wanted for a bad value. OtherNames names those options
	// in the error for an unknown one ("go-redis's").
	Other      func(key, value string) error
	OtherNames string
}

// Read reads every option of u with q, in the order of their names, until one is
// unknown, given more than once without Repeat, or has a bad value.
func (u *URL) Read(q Query) error {
	byName := make(map[string]*Option, len(q.Options))
	for i := range q.Options {
		byName[q.Options[i].Name] = &q.Options[i]
	}
	for _, key := range slices.Sorted(maps.Keys(u.Query)) {
		vals := u.Query[key]
		o := byName[key]
		if len(vals) != 1 && (o == nil || !o.Repeat) {
			return u.Errorf("URL option %q is given %d times", key, len(vals))
		}
		if o != nil && o.Deprecated != "" && u.Query.Has(o.Deprecated) {
			return u.Errorf("URL options %s and %s are one option: give %s alone (%s is its deprecated name)", key, o.Deprecated, o.Deprecated, key)
		}
		for _, v := range vals {
			var err error
			switch {
			case o != nil:
				err = o.Set(v)
			case q.Other != nil:
				err = q.Other(key, v)
			default:
				err = ErrUnknown
			}
			if errors.Is(err, ErrUnknown) {
				return u.unknown(key, q)
			}
			if err != nil {
				if Secret(key) {
					v = Mask
				}
				return u.Errorf("URL option %s=%q: %w", key, v, err)
			}
		}
	}
	return nil
}

func (u *URL) unknown(key string, q Query) error {
	var known []string
	for _, o := range q.Options {
		if o.Deprecated == "" {
			known = append(known, o.Name)
		}
	}
	slices.Sort(known)
	list := strings.Join(known, ", ")
	switch {
	case q.OtherNames == "":
	case list == "":
		list = q.OtherNames
	default:
		list += "; and " + q.OtherNames
	}
	return u.Errorf("unknown URL option %q (known: %s)", key, list)
}

// want is an error saying what a value should be.
type want string

func (w want) Error() string { return "want " + string(w) }

// Want returns the error of an option's Set for a bad value: "want " and what.
func Want(what string) error { return want(what) }

// String sets *dst to the value.
func String(dst *string) func(string) error {
	return func(v string) error { *dst = v; return nil }
}

// Duration sets *dst to a duration from min to max; what says which ("a positive duration
// such as 10s").
func Duration(dst *time.Duration, min, max time.Duration, what string) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < min || d > max {
			return want(what)
		}
		*dst = d
		return nil
	}
}

// Int sets *dst to a whole number from min to max; what says which.
func Int[T ~int | ~int32 | ~int64 | ~uint16 | ~uint32](dst *T, min, max int64, what string) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < min || n > max {
			return want(what)
		}
		*dst = T(n)
		return nil
	}
}

// Bool sets *dst to true or false (as strconv.ParseBool reads them).
func Bool(dst *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return want("true or false")
		}
		*dst = b
		return nil
	}
}

// OneOf sets *dst to the one of values that the value is, in any case, as values
// spells it.
func OneOf(dst *string, values ...string) func(string) error {
	return func(v string) error {
		for _, s := range values {
			if strings.EqualFold(v, s) {
				*dst = s
				return nil
			}
		}
		lower := make([]string, len(values))
		for i, s := range values {
			lower[i] = strings.ToLower(s)
		}
		return want(strings.Join(lower[:len(lower)-1], ", ") + " or " + lower[len(lower)-1])
	}
}

// TLSOptions are the options of a URL that configure TLS: certfile, keyfile, cacertfile
// and server_name, the client certificate and key, the CAs to trust instead of the
// system's, and the server name to verify instead of the host.
type TLSOptions struct {
	CertFile, KeyFile, CAFile, ServerName string
}

// Options returns the options that set t.
func (t *TLSOptions) Options() []Option {
	return []Option{
		{Name: "certfile", Set: String(&t.CertFile)},
		{Name: "keyfile", Set: String(&t.KeyFile)},
		{Name: "cacertfile", Set: String(&t.CAFile)},
		{Name: "server_name", Set: String(&t.ServerName)},
	}
}

// Apply configures cfg, the TLS configuration of a URL of the scheme secure, with t; nil
// cfg (another scheme) is an error if any TLS option was given.
func (t *TLSOptions) Apply(u *URL, cfg *tls.Config, secure string) error {
	if cfg == nil {
		if *t != (TLSOptions{}) {
			return u.Errorf("URL options certfile, keyfile, cacertfile and server_name need the %s scheme", secure)
		}
		return nil
	}
	if t.ServerName != "" {
		cfg.ServerName = t.ServerName
	}
	if err := tlsfiles.Load(cfg, t.CertFile, t.KeyFile, t.CAFile); err != nil {
		return u.Errorf("%w", err)
	}
	return nil
}
