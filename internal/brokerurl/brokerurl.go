// Package brokerurl parses broker URLs strictly and shows them without their secrets,
// for carrot's core and every backend.
//
// Parse refuses what net/url would let through or drop without a word: query pairs
// separated by ';', bad percent escapes, an option without a name, a fragment, and an
// '@' after the host (the sign of a password whose '/', '?' or '#' was not escaped, and
// whose tail would otherwise become the host, path or options). Its errors never quote the
// URL: they say which part is wrong and where, not what it holds.
//
// A URL may name several hosts, separated by commas, as libpq's and MongoDB's do
// (amqp://u:p@node1:5672,node2:5672,[::1]/vhost): Parse checks each (no empty host, a port
// from 1 to 65535), and [Hosts] lists them. Which backends take several is theirs to say.
//
// Redact shows a URL without its user info and with the values of secret options (see
// [Secret]) masked; it shows nothing of a URL that does not parse but its scheme.
//
// ParseFor and [URL.Read] are the part every backend's ParseURL shares: the scheme
// check, each option read once and in the order of their names, unknown options and bad
// values refused with an error that names the option and lists the known ones, deprecated
// names, and the TLS options ([TLSOptions]).
package brokerurl

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Mask replaces a secret option's value in [Redact]'s output.
const Mask = "xxxxx"

// Parse parses rawURL, SCHEME://[USER[:PASSWORD]@]HOSTS[/PATH][?OPTIONS], and its options.
// HOSTS is one host, HOST[:PORT] (an IPv6 address in brackets), or several separated by
// commas, which u.Host holds separated by commas and [Hosts] splits. An option given
// several times has several values, in order.
func Parse(rawURL string) (*url.URL, url.Values, error) {
	for i := 0; i < len(rawURL); i++ {
		if b := rawURL[i]; b < 0x20 || b == 0x7f {
			return nil, nil, fmt.Errorf("the URL holds a control character at byte %d", i+1)
		}
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || !validScheme(scheme) {
		return nil, nil, errors.New("the URL does not start with a scheme and :// (want SCHEME://HOST...)")
	}
	hostEnd := strings.IndexAny(rest, "/?#")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	if i := strings.IndexByte(rest[hostEnd:], '@'); i >= 0 {
		return nil, nil, fmt.Errorf("the URL holds an '@' at byte %d, after its host: percent-encode '@' there as %%40, and '/', '?', '#' and '@' in a user name or password as %%2F, %%3F, %%23 and %%40",
			len(scheme)+3+hostEnd+i+1)
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return nil, nil, fmt.Errorf("the URL has a fragment ('#' at byte %d): percent-encode '#' as %%23", len(scheme)+3+i+1)
	}
	// The hosts follow the user info, which ends at the authority's last '@'.
	hostsAt := len(scheme) + 3 + strings.LastIndexByte(rest[:hostEnd], '@') + 1
	hosts := rawURL[hostsAt : len(scheme)+3+hostEnd]
	parsed, several := rawURL, ""
	if strings.Contains(hosts, ",") {
		var err error
		if several, err = checkHosts(hosts, hostsAt); err != nil {
			return nil, nil, err
		}
		// url.Parse takes one host: give it the first, and the list after.
		first, _, _ := strings.Cut(hosts, ",")
		parsed = rawURL[:hostsAt] + first + rawURL[hostsAt+len(hosts):]
	}
	u, err := url.Parse(parsed)
	if err != nil {
		return nil, nil, why(err)
	}
	if err := checkPort(u.Port(), hostsAt); err != nil {
		return nil, nil, err
	}
	if several != "" {
		u.Host = several
	}
	q, err := query(u.RawQuery, len(rawURL)-len(u.RawQuery))
	if err != nil {
		return nil, nil, err
	}
	return u, q, nil
}

// checkHosts checks each host of a list of several, HOST[:PORT],HOST[:PORT]..., found at
// byte offset at of the URL, and returns the list as url.Parse reads each host.
func checkHosts(list string, at int) (string, error) {
	var hosts []string
	for h := range strings.SplitSeq(list, ",") {
		pos := at + 1
		at += len(h) + 1
		if h == "" {
			return "", fmt.Errorf("the URL's hosts have an empty one at byte %d: separate hosts with one comma", pos)
		}
		hu, err := url.Parse("x://" + h)
		switch {
		case err != nil && strings.Contains(err.Error(), "invalid port"):
			return "", fmt.Errorf("the URL's host at byte %d has a port that is not a number", pos)
		case err != nil:
			return "", fmt.Errorf("the URL's host at byte %d holds a character not allowed in a host", pos)
		case hu.Hostname() == "":
			return "", fmt.Errorf("the URL's host at byte %d has a port but no name", pos)
		}
		if err := checkPort(hu.Port(), pos-1); err != nil {
			return "", err
		}
		hosts = append(hosts, hu.Host)
	}
	return strings.Join(hosts, ","), nil
}

// checkPort checks the port of the host found at byte offset at of the URL: none, or a
// number from 1 to 65535.
func checkPort(port string, at int) error {
	if port == "" {
		return nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("the URL's host at byte %d has a port out of range: want 1 to 65535", at+1)
	}
	return nil
}

// A Host is one host of a URL.
type Host struct {
	Name string // the host name or address; an IPv6 address without its brackets
	Port string // "" when the URL gives none
}

// String returns h as the URL wrote it: NAME or NAME:PORT, an IPv6 address in brackets.
func (h Host) String() string {
	if h.Port == "" {
		if strings.Contains(h.Name, ":") {
			return "[" + h.Name + "]"
		}
		return h.Name
	}
	return net.JoinHostPort(h.Name, h.Port)
}

// Hosts returns the hosts of u, a URL that [Parse] returned, in the URL's order: none when
// the URL names no host.
func Hosts(u *url.URL) []Host {
	if u.Host == "" {
		return nil
	}
	var hosts []Host
	for h := range strings.SplitSeq(u.Host, ",") {
		hu := url.URL{Host: h}
		hosts = append(hosts, Host{Name: hu.Hostname(), Port: hu.Port()})
	}
	return hosts
}

// validScheme reports whether s is a URL scheme: a letter, then letters, digits, '+',
// '-' or '.'.
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// why says what url.Parse found wrong, without the text it quotes.
func why(err error) error {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
	}
	switch {
	case strings.Contains(msg, "invalid port"):
		return errors.New("the URL's port is not a number (a '/', '?' or '#' in a password must be percent-encoded)")
	case strings.Contains(msg, "invalid userinfo"):
		return errors.New("the URL's user info holds a character that must be percent-encoded")
	case strings.Contains(msg, "invalid URL escape"):
		return errors.New("the URL holds a '%' not followed by two hexadecimal digits (write a '%' as %25)")
	case strings.Contains(msg, "host name"), strings.Contains(msg, "IPv6"), strings.Contains(msg, "host"):
		return errors.New("the URL's host holds a character not allowed in a host")
	}
	return errors.New("the URL does not parse")
}

// query parses a raw query strictly; at is the byte offset of the query in the URL.
func query(raw string, at int) (url.Values, error) {
	q := make(url.Values)
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		pos := at + 1
		at += len(pair) + 1
		if pair == "" {
			continue
		}
		if i := strings.IndexByte(pair, ';'); i >= 0 {
			return nil, fmt.Errorf("the URL's options hold a ';' at byte %d: separate options with '&', and write a ';' in a value as %%3B", pos+i)
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("the URL option at byte %d has a '%%' not followed by two hexadecimal digits in its name", pos)
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("the URL option at byte %d has a '%%' not followed by two hexadecimal digits in its value (write a '%%' as %%25)", pos)
		}
		if key == "" {
			return nil, fmt.Errorf("the URL option at byte %d has no name", pos)
		}
		q[key] = append(q[key], value)
	}
	return q, nil
}

// Secret reports whether the option key holds a secret, whose value is never shown: a
// password, passphrase, secret, token or credential. Paths to key files are not secrets.
func Secret(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"password", "passwd", "passphrase", "secret", "token", "credential", "apikey", "api_key"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// Redact returns rawURL without its user info and with the values of secret options
// masked, for errors and logs. Of a URL that does not parse it shows only the scheme, as
// "SCHEME://…", or "URL" when it has none.
func Redact(rawURL string) string {
	u, _, err := Parse(rawURL)
	return redact(rawURL, u, err)
}

// redact is Redact of rawURL, which Parse made u of, or refused with err.
func redact(rawURL string, u *url.URL, err error) string {
	if err != nil {
		if scheme, _, ok := strings.Cut(rawURL, "://"); ok && validScheme(scheme) && len(scheme) <= 32 {
			return scheme + "://…"
		}
		return "URL"
	}
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	b.WriteString(u.Host)
	b.WriteString(u.EscapedPath())
	if u.RawQuery == "" {
		return b.String()
	}
	b.WriteByte('?')
	for i, pair := range strings.Split(u.RawQuery, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		k, _, hasValue := strings.Cut(pair, "=")
		key, _ := url.QueryUnescape(k) // Parse checked it
		if hasValue && Secret(key) {
			b.WriteString(k)
			b.WriteString("=" + Mask)
			continue
		}
		b.WriteString(pair)
	}
	return b.String()
}

// Scrub returns msg, a backend's or client's error text, with every copy of rawURL in it
// shown as [Redact] shows it, and every copy of its user info (escaped or not, with the
// '@' that ends it) removed: the structure of the URL, not the text of its password,
// says what to hide, so a short password does not mangle the rest of the message.
func Scrub(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	u, _, err := Parse(rawURL)
	if red := redact(rawURL, u, err); red != rawURL {
		// The URL may start the redacted form ("x?password=x" does "x?password=xxxxx"):
		// keep the copies already redacted apart while replacing.
		const hold = "\x00carrot:redacted\x00"
		msg = strings.ReplaceAll(msg, red, hold)
		msg = strings.ReplaceAll(msg, rawURL, red)
		msg = strings.ReplaceAll(msg, hold, red)
	}
	if err != nil || u.User == nil {
		return msg
	}
	forms := []string{u.User.String() + "@"}
	if p, ok := u.User.Password(); ok {
		forms = append(forms, u.User.Username()+":"+p+"@")
	}
	for _, f := range forms {
		if len(f) > 1 {
			msg = strings.ReplaceAll(msg, f, "")
		}
	}
	return msg
}
