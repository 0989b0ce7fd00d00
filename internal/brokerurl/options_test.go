package brokerurl

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/carrot-go/carrot/backend"
)

func TestRead(t *testing.T) {
	var (
		n       int
		d       time.Duration
		name    string
		repeats []string
	)
	q := Query{Options: []Option{
		{Name: "n", Set: Int(&n, 1, 10, "a number from 1 to 10")},
		{Name: "d", Set: Duration(&d, time.Millisecond, time.Hour, "a duration from 1ms to 1h")},
		{Name: "name", Set: OneOf(&name, "PLAIN", "EXTERNAL")},
		{Name: "old_name", Deprecated: "name", Set: OneOf(&name, "PLAIN", "EXTERNAL")},
		{Name: "r", Repeat: true, Set: func(v string) error { repeats = append(repeats, v); return nil }},
		{Name: "x_password", Set: func(string) error { return Want("something else") }},
	}}
	u, err := ParseFor("carrot/test", "test://h/?n=3&d=2s&old_name=external&r=a&r=b", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Read(q); err != nil {
		t.Fatal(err)
	}
	if n != 3 || d != 2*time.Second || name != "EXTERNAL" || strings.Join(repeats, ",") != "a,b" {
		t.Errorf("read n=%d d=%v name=%q r=%q, want 3, 2s, EXTERNAL, a,b", n, d, name, repeats)
	}

	for _, tc := range []struct{ url, says, hidden string }{
		{"test://h/?n=11", `URL option n="11": want a number from 1 to 10`, ""},
		{"test://h/?n=1&n=2", `URL option "n" is given 2 times`, ""},
		{"test://h/?name=kerberos", "want plain or external", ""},
		{"test://h/?name=plain&old_name=plain", "give name alone (old_name is its deprecated name)", ""},
		{"test://h/?bogus=1", `unknown URL option "bogus" (known: d, n, name, r, x_password)`, ""},
		{"test://h/?x_password=S3CRet", `x_password="xxxxx": want something else`, "S3CRet"},
		{"other://h/", `URL scheme is "other", want test`, ""},
	} {
		u, err := ParseFor("carrot/test", tc.url, "test")
		if err == nil {
			err = u.Read(q)
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.HasPrefix(err.Error(), "carrot/test: ") {
			t.Errorf("%s: %v, want an error starting carrot/test: that says %q", tc.url, err, tc.says)
			continue
		}
		if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
			t.Errorf("%s: %v shows %q", tc.url, err, tc.hidden)
		}
		if backend.CodeOf(err) != backend.Invalid {
			t.Errorf("%s: %v is not of code Invalid", tc.url, err)
		}
	}
}

func TestReadOther(t *testing.T) {
	var passed []string
	q := Query{
		Other: func(key, v string) error {
			switch key {
			case "lib_option":
				passed = append(passed, key+"="+v)
				return nil
			case "lib_bad":
				return errors.New("the library refuses it")
			}
			return ErrUnknown
		},
		OtherNames: "the library's",
	}
	u, _ := ParseFor("carrot/test", "test://h/?lib_option=1", "test")
	if err := u.Read(q); err != nil || len(passed) != 1 {
		t.Errorf("Read = %v, passed %q; want lib_option=1 passed", err, passed)
	}
	u, _ = ParseFor("carrot/test", "test://h/?lib_bad=1", "test")
	if err := u.Read(q); err == nil || !strings.Contains(err.Error(), `lib_bad="1": the library refuses it`) {
		t.Errorf("Read of a bad value = %v", err)
	}
	u, _ = ParseFor("carrot/test", "test://h/?bogus=1", "test")
	if err := u.Read(q); err == nil || !strings.Contains(err.Error(), `"bogus" (known: the library's)`) {
		t.Errorf("Read of an unknown option = %v", err)
	}
}
