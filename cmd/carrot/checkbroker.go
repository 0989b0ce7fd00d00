package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/carrot-go/carrot"
	"github.com/carrot-go/carrot/conformance"
	"github.com/carrot-go/carrot/internal/brokerurl"
	amqp091 "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
)

// checkDialer opens connections that log nothing: check breaks them on purpose.
func checkDialer() *carrot.Dialer {
	return &carrot.Dialer{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// serverProduct returns the broker's product and version, as its connection says, where
// the backend's client tells.
func serverProduct(ctx context.Context, conn *carrot.Conn) string {
	var ac *amqp091.Connection
	if conn.As(&ac) && ac != nil {
		product, _ := ac.Properties["product"].(string)
		version, _ := ac.Properties["version"].(string)
		if product != "" {
			return strings.TrimSpace(product + " " + version)
		}
	}
	var rc goredis.UniversalClient
	if conn.As(&rc) && rc != nil {
		info, err := rc.Info(ctx, "server").Result()
		if err == nil {
			for line := range strings.SplitSeq(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
					return "Redis " + v
				}
			}
		}
	}
	if strings.HasPrefix(conn.String(), "memory://") {
		return "carrot's in-process broker (memory://)"
	}
	return "not reported by the backend's client"
}

// brokerNotes is what RabbitMQ's management API says that changes what applications see:
// the policies that apply to the check's queues and exchanges, and resource alarms.
type brokerNotes struct {
	Source   string       `json:"source"`          // the management API read, without credentials
	Error    string       `json:"error,omitempty"` // why it could not be read
	Policies []policyNote `json:"policies,omitempty"`
	Alarms   []string     `json:"alarms,omitempty"`
}

// policyNote is one policy that applies to names like the check's.
type policyNote struct {
	Name       string         `json:"name"`
	Operator   bool           `json:"operator"` // an operator policy, which users cannot override
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply_to"`
	Definition map[string]any `json:"definition"`
	Semantics  []string       `json:"semantics"` // the keys of Definition that change what applications see
	Breaks     []string       `json:"failed_while_applied,omitempty"`
}

// apiPolicy is a policy as the management API lists it.
type apiPolicy struct {
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Definition map[string]any `json:"definition"`
}

// semanticKeys are the policy keys that change what a queue or exchange does with
// messages, as applications see it.
var semanticKeys = []string{"max-length", "max-length-bytes", "overflow", "message-ttl", "expires",
	"delivery-limit", "dead-letter-exchange", "dead-letter-routing-key", "dead-letter-strategy",
	"alternate-exchange", "max-age", "single-active-consumer", "queue-mode", "consumer-timeout"}

// readBrokerNotes reads the policies and alarms from RabbitMQ's management API, for an
// amqp:// URL (or any, with mgmt given). It returns nil when there is nothing to read.
// Without mgmt, the API is that of the URL's host, or of the first of its hosts whose API
// answers: policies and alarms are the cluster's, which every node tells alike.
func readBrokerNotes(ctx context.Context, rawURL, mgmt string) *brokerNotes {
	u, _, err := brokerurl.Parse(rawURL)
	if err != nil {
		return nil
	}
	scheme := strings.ToLower(u.Scheme)
	if mgmt == "" && scheme != "amqp" && scheme != "amqps" {
		return nil
	}
	bases := []string{mgmt}
	if mgmt == "" {
		proto, port := "http", "15672"
		if scheme == "amqps" {
			proto, port = "https", "15671"
		}
		hosts := brokerurl.Hosts(u)
		if len(hosts) == 0 {
			hosts = []brokerurl.Host{{Name: "localhost"}}
		}
		bases = bases[:0]
		for _, h := range hosts {
			bases = append(bases, proto+"://"+net.JoinHostPort(h.Name, port)+"/")
		}
	}
	var n *brokerNotes
	for i, base := range bases {
		var reached bool
		n, reached = readNotes(ctx, u, base)
		if reached || i == len(bases)-1 {
			break
		}
	}
	return n
}

// readNotes reads the policies and alarms from the management API at base, for the broker
// of the URL u, and reports whether the API answered.
func readNotes(ctx context.Context, u *url.URL, base string) (*brokerNotes, bool) {
	mu, err := url.Parse(base)
	if err != nil {
		return &brokerNotes{Source: "--management", Error: "not a URL"}, true
	}
	user, pass := "guest", "guest"
	if mu.User != nil {
		user = mu.User.Username()
		pass, _ = mu.User.Password()
	} else if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	mu.User = nil
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/"
	} else if v, err := url.PathUnescape(vhost); err == nil {
		vhost = v
	}
	n := &brokerNotes{Source: mu.String()}
	reached := true // false when the API does not answer (for the policies, the first read)
	get := func(path string, v any) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(mu.String(), "/")+path, nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			reached = false
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // the URL is said once, in Source
			}
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v)
	}
	var policies, operator []apiPolicy
	esc := url.PathEscape(vhost)
	if err := get("/api/policies/"+esc, &policies); err != nil {
		n.Error = "policies not read: " + err.Error()
		return n, reached
	}
	get("/api/operator-policies/"+esc, &operator) // absent before 3.7: left empty
	sample := "carrot-test.0123456789ab.1.q"
	for i, list := range [][]apiPolicy{policies, operator} {
		for _, p := range list {
			re, err := regexp.Compile(p.Pattern)
			if err != nil || !re.MatchString(sample) {
				continue
			}
			note := policyNote{Name: p.Name, Operator: i == 1, Pattern: p.Pattern, ApplyTo: p.ApplyTo, Definition: p.Definition}
			for _, k := range semanticKeys {
				if _, ok := p.Definition[k]; ok {
					note.Semantics = append(note.Semantics, k)
				}
			}
			n.Policies = append(n.Policies, note)
		}
	}
	var nodes []struct {
		Name          string `json:"name"`
		MemAlarm      bool   `json:"mem_alarm"`
		DiskFreeAlarm bool   `json:"disk_free_alarm"`
	}
	if err := get("/api/nodes", &nodes); err == nil {
		for _, nd := range nodes {
			if nd.MemAlarm {
				n.Alarms = append(n.Alarms, "memory alarm on "+nd.Name+": publishers are blocked")
			}
			if nd.DiskFreeAlarm {
				n.Alarms = append(n.Alarms, "disk alarm on "+nd.Name+": publishers are blocked")
			}
		}
	}
	return n, true
}

// attribute lists, for each policy that changes semantics, the behaviours that failed
// while it applied.
func (n *brokerNotes) attribute(results []conformance.Result) {
	var failed []string
	for _, r := range results {
		if r.Status == conformance.Failed {
			failed = append(failed, r.Name)
		}
	}
	for i := range n.Policies {
		if len(n.Policies[i].Semantics) > 0 {
			n.Policies[i].Breaks = failed
		}
	}
}

func (n *brokerNotes) print(w io.Writer) {
	fmt.Fprintf(w, "\nmanagement API: %s\n", n.Source)
	if n.Error != "" {
		fmt.Fprintf(w, "  %s\n", n.Error)
		return
	}
	if len(n.Policies) == 0 {
		fmt.Fprintln(w, "  no policy applies to queues or exchanges named like carrot's")
	}
	for _, p := range n.Policies {
		kind := "policy"
		if p.Operator {
			kind = "operator policy"
		}
		def, _ := json.Marshal(p.Definition)
		fmt.Fprintf(w, "  %s %q (pattern %q, apply to %s): %s\n", kind, p.Name, p.Pattern, p.ApplyTo, def)
		switch {
		case len(p.Semantics) == 0:
			fmt.Fprintln(w, "    changes nothing applications see")
		case len(p.Breaks) == 0:
			fmt.Fprintf(w, "    changes what applications see (%s); no behaviour failed under it\n", strings.Join(p.Semantics, ", "))
		default:
			fmt.Fprintf(w, "    changes what applications see (%s); behaviours that failed under it: %s\n", strings.Join(p.Semantics, ", "), strings.Join(p.Breaks, ", "))
		}
	}
	for _, a := range n.Alarms {
		fmt.Fprintf(w, "  %s\n", a)
	}
}

// An interopResult says what became of one property or header sent from one URL to the
// other.
type interopResult struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Field string `json:"field"`
	Sent  string `json:"sent"`
	Got   string `json:"got"`
	OK    bool   `json:"ok"`
}

// interopHeaders are the header values sent, one message each, by type.
var interopHeaders = []struct {
	name, key string
	value     any
}{
	{"string", "interop", "välue"},
	{"int32", "interop", int64(-7)},
	{"int64", "interop", int64(-1) << 40},
	{"bool", "interop", true},
	{"float", "interop", 1.5},
	{"bytes", "interop", []byte{0, 1, 0xff}},
	{"time", "interop", time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
	{"nil", "interop", nil},
	{"table", "interop", carrot.Table{"k": "v", "n": int64(1)}},
	{"list", "interop", []any{"a", int64(2)}},
	{"x- string", "x-interop", "välue"}, // RabbitMQ 4 maps x- headers to message annotations
}

// interopMessage is the message whose properties are compared.
func interopMessage() *carrot.Message {
	return &carrot.Message{
		Body:            []byte("interop \x00\xff"),
		ContentType:     "application/x-carrot-interop",
		ContentEncoding: "identity",
		DeliveryMode:    carrot.Persistent,
		Priority:        3,
		Expiration:      time.Hour,
		MessageID:       "m-1",
		CorrelationID:   "c-1",
		ReplyTo:         "replies",
		Timestamp:       time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Type:            "order.created",
		AppID:           "carrot-check",
	}
}

// runInterop sends a message with every property, and one with each header type, from
// each URL to the other, and compares what arrives.
func runInterop(ctx context.Context, url1, url2 string) ([]interopResult, error) {
	quiet := checkDialer()
	c1, err := quiet.Open(ctx, url1)
	if err != nil {
		return nil, err
	}
	defer c1.Close()
	c2, err := quiet.Open(ctx, url2)
	if err != nil {
		return nil, err
	}
	defer c2.Close()
	var out []interopResult
	for _, dir := range []struct {
		from, to *carrot.Conn
	}{{c1, c2}, {c2, c1}} {
		rs, err := interopDirection(ctx, dir.from, dir.to)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// interopDirection sends from one connection to a queue of its own that the other reads.
func interopDirection(ctx context.Context, from, to *carrot.Conn) ([]interopResult, error) {
	var suffix [6]byte
	rand.Read(suffix[:])
	q := "carrot-test.interop." + hex.EncodeToString(suffix[:])
	if _, err := to.DeclareQueue(ctx, carrot.Queue{Name: q, Transient: true}); err != nil {
		return nil, err
	}
	defer to.DeleteQueue(context.WithoutCancel(ctx), q)
	p, err := from.NewPublisher(carrot.PublisherOptions{RoutingKey: q})
	if err != nil {
		return nil, err
	}
	defer p.Close()
	cons, err := to.NewConsumer(ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}})
	if err != nil {
		return nil, err
	}
	defer cons.Close()
	fromName, toName := schemeOf(from), schemeOf(to)
	result := func(field string, sent, got any, ok bool) interopResult {
		return interopResult{From: fromName, To: toName, Field: field, Sent: show(sent), Got: show(got), OK: ok}
	}
	receive := func() (*carrot.Message, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, err := cons.Fetch(ctx)
			if !errors.Is(err, carrot.ErrEmpty) || time.Now().After(deadline) {
				return m, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var out []interopResult
	sent := interopMessage()
	sent.UserID = from.Capabilities().UserID // the only one the broker takes from this connection
	if err := p.Publish(ctx, sent); err != nil {
		out = append(out, result("properties", "a message with every property", "refused at publish: "+err.Error(), false))
	} else if got, err := receive(); err != nil {
		return nil, err
	} else {
		got.Ack(ctx)
		for _, f := range []struct {
			name      string
			sent, got any
			equal     bool
		}{
			{"body", sent.Body, got.Body, bytes.Equal(sent.Body, got.Body)},
			{"content type", sent.ContentType, got.ContentType, sent.ContentType == got.ContentType},
			{"content encoding", sent.ContentEncoding, got.ContentEncoding, sent.ContentEncoding == got.ContentEncoding},
			{"delivery mode", sent.DeliveryMode, got.DeliveryMode, sent.DeliveryMode == got.DeliveryMode},
			{"priority", sent.Priority, got.Priority, sent.Priority == got.Priority},
			{"expiration", sent.Expiration, got.Expiration, sent.Expiration == got.Expiration},
			{"message id", sent.MessageID, got.MessageID, sent.MessageID == got.MessageID},
			{"correlation id", sent.CorrelationID, got.CorrelationID, sent.CorrelationID == got.CorrelationID},
			{"reply to", sent.ReplyTo, got.ReplyTo, sent.ReplyTo == got.ReplyTo},
			{"timestamp", sent.Timestamp, got.Timestamp, sent.Timestamp.Equal(got.Timestamp)},
			{"type", sent.Type, got.Type, sent.Type == got.Type},
			{"app id", sent.AppID, got.AppID, sent.AppID == got.AppID},
			{"user id", sent.UserID, got.UserID, sent.UserID == got.UserID},
		} {
			out = append(out, result(f.name, f.sent, f.got, f.equal))
		}
	}
	for _, h := range interopHeaders {
		field := "header " + h.name
		m := &carrot.Message{Body: []byte(h.name), Headers: carrot.Table{h.key: h.value}}
		if err := p.Publish(ctx, m); err != nil {
			out = append(out, result(field, h.value, "refused at publish: "+err.Error(), false))
			continue
		}
		got, err := receive()
		if err != nil {
			return nil, err
		}
		got.Ack(ctx)
		v, present := got.Headers[h.key]
		switch {
		case !present:
			out = append(out, result(field, h.value, "(dropped)", false))
		default:
			out = append(out, result(field, h.value, v, reflect.DeepEqual(v, h.value) || sameTime(v, h.value)))
		}
	}
	return out, nil
}

func sameTime(a, b any) bool {
	ta, ok1 := a.(time.Time)
	tb, ok2 := b.(time.Time)
	return ok1 && ok2 && ta.Equal(tb)
}

// show formats a value for the interop report, with its type.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []byte:
		return fmt.Sprintf("[]byte(%q)", v)
	case nil:
		return "nil"
	}
	return fmt.Sprintf("%v (%T)", v, v)
}

func schemeOf(c *carrot.Conn) string {
	s, _, _ := strings.Cut(c.String(), "://")
	return s
}

func printInterop(w io.Writer, rs []interopResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintln(w, "\ninterop: what crosses between the two URLs")
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].From < rs[j].From })
	for _, r := range rs {
		mark := "same"
		if !r.OK {
			mark = "CHANGED"
		}
		fmt.Fprintf(w, "  %s -> %s  %-20s %-8s sent %s, got %s\n", r.From, r.To, r.Field, mark, r.Sent, r.Got)
	}
}
