package conformance

import (
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot"
)

// Secrets describes the URLs [FuzzSecrets] fills with passwords.
type Secrets struct {
	// Templates are URLs of the backend, of brokers that refuse connections (such as
	// 127.0.0.1:1), with "{password}" where a password goes as typed, not escaped (in the
	// user info), and "{password:query}" where it goes query-escaped (as the value of a
	// secret option).
	Templates []string

	// Parse, when set, is the backend's own URL parser, such as its ParseURL, whose
	// errors must not show the password either.
	Parse func(rawURL string) error
}

// Seeds are passwords that broke carrot's redaction once: characters that end the user
// info when not escaped, bad escapes, and passwords short enough to be found anywhere.
var Seeds = []string{"S3CR#et", "S3CR/et", "S3CR?et", "12/S3CRet", "p%zz", "p@ss@word", "a", "amqp", "S3CR;et&x=1", "\xff\xfe", " spa ce", "%41%2F"}

// FuzzSecrets fuzzes the URL parsing of a backend: every password of 1 to 40 bytes, of
// any value, put in each template, must not show in the error of [carrot.Open] (or
// [carrot.Dialer.Open]), the Conn's String, the backend's Parse error, [carrot.Redact], or
// any log line written meanwhile. A backend's test calls it from its own fuzz target:
//
//	func FuzzSecrets(f *testing.F) {
//		conformance.FuzzSecrets(f, conformance.Secrets{
//			Templates: []string{"amqp://guest:{password}@127.0.0.1:1/"},
//		})
//	}
//
// Whether a password shows is told two ways: its letters and digits changed for others
// must not change any of that text, and a password of 6 bytes or more must not be in it.
func FuzzSecrets(f *testing.F, s Secrets) {
	var logs lockedBuffer
	prev := slog.Default()
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: noTime})))
	f.Cleanup(func() { slog.SetDefault(prev) })
	for _, seed := range Seeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, password string) {
		if len(password) == 0 || len(password) > 40 {
			return
		}
		got := s.text(password, &logs)
		if other := rotate(password); other != password {
			if want := s.text(other, &logs); got != want {
				t.Errorf("what carrot shows depends on the password's letters and digits:\n%q gives:\n%s\n%q gives:\n%s", password, got, other, want)
			}
		}
		if len(password) >= 6 && strings.Contains(got, password) {
			t.Errorf("the password %q shows:\n%s", password, got)
		}
	})
}

// text returns everything carrot shows of the templates filled with password.
func (s Secrets) text(password string, logs *lockedBuffer) string {
	var b strings.Builder
	for _, tmpl := range s.Templates {
		raw := strings.NewReplacer("{password}", password, "{password:query}", url.QueryEscape(password)).Replace(tmpl)
		logs.Reset()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d := carrot.Dialer{Logger: slog.Default()}
		conn, err := d.Open(ctx, raw)
		cancel()
		if err != nil {
			b.WriteString(err.Error())
		} else {
			b.WriteString(conn.String())
			conn.Close()
		}
		if s.Parse != nil {
			if err := s.Parse(raw); err != nil {
				b.WriteString("\n" + err.Error())
			}
		}
		b.WriteString("\n" + carrot.Redact(raw) + "\n" + logs.String() + "\n")
	}
	return b.String()
}

// rotate changes each letter and digit of a password for another of its kind (digits,
// hexadecimal letters, other letters), keeping the two after a '%' as they are, so that the
// URL keeps its shape.
func rotate(p string) string {
	b := []byte(p)
	for i := range b {
		if i >= 1 && b[i-1] == '%' || i >= 2 && b[i-2] == '%' {
			continue
		}
		for _, r := range []struct{ lo, hi byte }{{'0', '9'}, {'a', 'f'}, {'g', 'z'}, {'A', 'F'}, {'G', 'Z'}} {
			if r.lo <= b[i] && b[i] <= r.hi {
				b[i] = r.lo + (b[i]-r.lo+1)%(r.hi-r.lo+1)
				break
			}
		}
	}
	return string(b)
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
