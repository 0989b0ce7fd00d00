package brokerurl

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		url, says, hidden string
	}{
		{"memory://x?prefetch=1;max_body_size=5", "';' at byte 22", "max_body_size"},
		{"memory://x?prefetch=%zz", "'%' not followed by two hexadecimal digits in its value", "zz"},
		{"memory://x?pre%zzfetch=1", "in its name", "zz"},
		{"memory://x?=1", "option at byte 12 has no name", ""},
		{"amqp://guest:S3CR#et@h:5672/", "'@' at byte 21", "S3CR"},
		{"amqp://guest:S3/CRet@h/", "'@' at byte 21", "CRet"},
		{"amqp://guest:S3?CRet@h/", "'@' at byte 21", "CRet"},
		{"amqp://h/?connection_name=meX@hostY", "'@' at byte 30", "hostY"},
		{"amqp//guest:S3CRet@h/", "does not start with a scheme", "S3CRet"},
		{"amqp://guest:S3CR%et@h/", "'%' not followed", "S3CR"},
		{"amqp://guest:S3 CRet@h/", "user info holds a character", "S3"},
		{"amqp://guest:S3CRet@h:port/", "port is not a number", "S3CRet"},
		{"amqp://h/#zzq", "fragment ('#' at byte 10)", "zzq"},
		{"amqp://h/\x00", "control character at byte 10", ""},
		{"amqp://h:70000/", "host at byte 8 has a port out of range", ""},
		{"amqp://h:0/", "host at byte 8 has a port out of range", ""},
		// Several hosts: each checked, the wrong one named by its position.
		{"amqp://u:S3CRet@a:5672,,b/", "empty one at byte 24", "S3CRet"},
		{"amqp://u:S3CRet@a,b:x/", "host at byte 19 has a port that is not a number", "S3CRet"},
		{"amqp://u:S3CRet@a,b:70000/", "host at byte 19 has a port out of range", "S3CRet"},
		{"amqp://a,/", "empty one at byte 10", ""},
		{"amqp://,a/", "empty one at byte 8", ""},
		{"amqp://a,:5672/", "host at byte 10 has a port but no name", ""},
		{"amqp://a,b c/", "host at byte 10 holds a character not allowed", ""},
		{"amqp://a,[::1/", "host at byte 10 holds a character not allowed", ""},
		{"amqp://u:S3CRet@a:x,b/", "host at byte 17 has a port that is not a number", "S3CRet"},
	} {
		_, _, err := Parse(tc.url)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Parse(%q) = %q, want it to say %q", tc.url, err, tc.says)
		}
		if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
			t.Errorf("Parse(%q) = %q, which shows %q", tc.url, err, tc.hidden)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		url, key string
		values   []string
	}{
		{"amqp://u:p%40ss%2F%3F%23@h:5672/v?connection_name=me%40host", "connection_name", []string{"me@host"}},
		{"redis://h/0?addr=a:1&addr=b:2", "addr", []string{"a:1", "b:2"}},
		{"memory://x?&prefetch=2&", "prefetch", []string{"2"}},
		{"unix:///run/redis.sock?db=1", "db", []string{"1"}},
		{"amqp://[::1]:5672/?flag", "flag", []string{""}},
	} {
		_, q, err := Parse(tc.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.url, err)
			continue
		}
		if got := q[tc.key]; strings.Join(got, "|") != strings.Join(tc.values, "|") {
			t.Errorf("Parse(%q) option %s = %q, want %q", tc.url, tc.key, got, tc.values)
		}
	}
}

func TestHosts(t *testing.T) {
	for _, tc := range []struct {
		url   string
		hosts []Host
		host  string // u.Host
	}{
		{"amqp://", nil, ""},
		{"amqp://u:p@/v", nil, ""},
		{"amqp://h", []Host{{"h", ""}}, "h"},
		{"amqp://[::1]:5672/", []Host{{"::1", "5672"}}, "[::1]:5672"},
		{"amqp://u:p,q@node1:5672,node2:5673,node3/v,w?x=a,b", []Host{{"node1", "5672"}, {"node2", "5673"}, {"node3", ""}}, "node1:5672,node2:5673,node3"},
		{"amqps://[::1]:5671,[fe80::1%25eth0],10.0.0.1:5671/", []Host{{"::1", "5671"}, {"fe80::1%eth0", ""}, {"10.0.0.1", "5671"}}, "[::1]:5671,[fe80::1%eth0],10.0.0.1:5671"},
	} {
		u, _, err := Parse(tc.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.url, err)
			continue
		}
		got := Hosts(u)
		if !slices.Equal(got, tc.hosts) || u.Host != tc.host {
			t.Errorf("Parse(%q): hosts %q, u.Host %q; want %q, %q", tc.url, got, u.Host, tc.hosts, tc.host)
		}
		for i, h := range got {
			if want := strings.Split(tc.host, ",")[i]; h.String() != want {
				t.Errorf("Parse(%q): host %d is %q, want %q", tc.url, i, h, want)
			}
		}
	}
}

func TestRedactSeveralHosts(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:S3CRet@node1:5672,node2,[::1]:5673/v?x_password=S3CRet": "amqp://node1:5672,node2,[::1]:5673/v?x_password=xxxxx",
		"amqps://u:S3CRet@a,b":   "amqps://a,b",
		"amqp://u:S3CRet@a,,b/":  "amqp://…",
		"amqp://u:S3CRet@a,b:x/": "amqp://…",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	const raw = "amqp://guest:S3CRet@a:1,b:2/"
	msg := "dial amqp://guest:S3CRet@a:1,b:2/: b:2 refused guest:S3CRet@"
	if got, want := Scrub(msg, raw), "dial amqp://a:1,b:2/: b:2 refused "; got != want {
		t.Errorf("Scrub = %q, want %q", got, want)
	}
}

func TestScrub(t *testing.T) {
	const raw = "amqp://guest:a@h/?x_password=S3CRet"
	msg := "carrot: open: dial amqp://guest:a@h/?x_password=S3CRet failed; login guest:a@ refused"
	want := "carrot: open: dial amqp://h/?x_password=xxxxx failed; login  refused"
	if got := Scrub(msg, raw); got != want {
		t.Errorf("Scrub = %q, want %q", got, want)
	}
}
