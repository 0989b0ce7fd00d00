package brokerurl

import (
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

func TestScrub(t *testing.T) {
	const raw = "amqp://guest:a@h/?x_password=S3CRet"
	msg := "carrot: open: dial amqp://guest:a@h/?x_password=S3CRet failed; login guest:a@ refused"
	want := "carrot: open: dial amqp://h/?x_password=xxxxx failed; login  refused"
	if got := Scrub(msg, raw); got != want {
		t.Errorf("Scrub = %q, want %q", got, want)
	}
}
