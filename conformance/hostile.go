package conformance

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/url"
	"strings"

	"github.com/carrot-go/carrot"
)

// A hostileCase is one input a careless or hostile caller gives: do returns the error the
// public API gave, which must wrap want. The connection must work afterwards.
type hostileCase struct {
	name string
	want error
	do   func(e *env) error
}

// secret is the password and secret option value of the hostile URLs: no error or log
// line may show it, nor its halves.
const secret = "S3CRet-h0stile"

func hostileCases() []hostileCase {
	return []hostileCase{
		{"PublishNil", carrot.ErrInvalid, func(e *env) error {
			return e.publisher(carrot.PublisherOptions{}).Publish(e.ctx, nil)
		}},
		{"ExchangeNotUTF8", carrot.ErrInvalid, func(e *env) error {
			return e.conn.DeclareExchange(e.ctx, carrot.Exchange{Name: e.name("x\xff")})
		}},
		{"PublishToExchangeNotUTF8", carrot.ErrInvalid, func(e *env) error {
			p, err := e.conn.NewPublisher(carrot.PublisherOptions{Exchange: e.name("x\xff")})
			if err == nil {
				defer p.Close()
				err = p.Send(e.ctx, "x")
			}
			return err
		}},
		{"QueueNotUTF8", carrot.ErrInvalid, func(e *env) error {
			_, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: e.name("q\xc3")})
			return err
		}},
		{"RoutingKeyNotUTF8", carrot.ErrInvalid, func(e *env) error {
			q := e.queue(carrot.Queue{Name: "q"})
			defer e.expectEmpty(q)
			return e.publisher(carrot.PublisherOptions{}).Publish(e.ctx, &carrot.Message{RoutingKey: q + "\xff", Body: []byte("x")})
		}},
		{"HeaderKeyNotUTF8", carrot.ErrInvalid, func(e *env) error {
			return e.hostilePublish(carrot.Table{"k\xff": "v"})
		}},
		{"HeaderValueNotUTF8", carrot.ErrInvalid, func(e *env) error {
			return e.hostilePublish(carrot.Table{"k": "v\xff"})
		}},
		{"NestedHeaderNotUTF8", carrot.ErrInvalid, func(e *env) error {
			return e.hostilePublish(carrot.Table{"k": map[string]any{"inner": []any{"\xfe"}}})
		}},
		{"HeaderNaN", carrot.ErrInvalid, func(e *env) error {
			return e.hostilePublish(carrot.Table{"n": math.NaN()})
		}},
		{"HeaderInfinite", carrot.ErrInvalid, func(e *env) error {
			return e.hostilePublish(carrot.Table{"n": float32(math.Inf(-1))})
		}},
		{"PropertyNotUTF8", carrot.ErrInvalid, func(e *env) error {
			q := e.queue(carrot.Queue{Name: "q"})
			defer e.expectEmpty(q)
			return e.publisher(carrot.PublisherOptions{RoutingKey: q}).Publish(e.ctx, &carrot.Message{Body: []byte("x"), CorrelationID: "\xff"})
		}},
		{"TypeTooLong", carrot.ErrInvalid, func(e *env) error {
			q := e.queue(carrot.Queue{Name: "q"})
			defer e.expectEmpty(q)
			return e.publisher(carrot.PublisherOptions{RoutingKey: q}).Publish(e.ctx, &carrot.Message{Body: []byte("x"), Type: strings.Repeat("t", 256)})
		}},
		{"OtherUserID", nil, func(e *env) error {
			// Refused before it is sent where the broker takes only the connection's user
			// (RabbitMQ would close the channel), carried where any is.
			q := e.queue(carrot.Queue{Name: "q"})
			other := "not-" + e.userID()
			err := e.publisher(carrot.PublisherOptions{RoutingKey: q}).Publish(e.ctx, &carrot.Message{Body: []byte("x"), UserID: other})
			switch {
			case e.caps.UserID != "" && !errors.Is(err, carrot.ErrInvalid):
				e.t.Errorf("UserID %q on a backend that takes only %q = %v, want ErrInvalid", other, e.caps.UserID, err)
			case e.caps.UserID != "":
				e.expectEmpty(q)
			case err != nil:
				e.t.Errorf("UserID %q on a backend that takes any: %v", other, err)
			default:
				if m := e.fetch(q); m.UserID != other {
					e.t.Errorf("UserID = %q, want %q", m.UserID, other)
				} else {
					e.ack(m)
				}
			}
			return err
		}},
		{"NameTooLong", carrot.ErrInvalid, func(e *env) error {
			_, err := e.conn.DeclareQueue(e.ctx, carrot.Queue{Name: strings.Repeat("q", 256)})
			return err
		}},
		{"PrefetchBeyondProtocol", nil, func(e *env) error {
			// Refused when the protocol cannot carry it, never cut to what it can.
			q := e.queue(carrot.Queue{Name: "q"})
			prefetch := max(e.caps.MaxPrefetch+1, 70000)
			c, err := e.conn.NewConsumer(e.ctx, carrot.ConsumerOptions{Queues: []carrot.Queue{{Name: q, Passive: true}}, Prefetch: prefetch})
			switch {
			case e.caps.MaxPrefetch > 0 && !errors.Is(err, carrot.ErrInvalid):
				e.t.Errorf("prefetch %d beyond MaxPrefetch %d = %v, want ErrInvalid", prefetch, e.caps.MaxPrefetch, err)
			case e.caps.MaxPrefetch == 0 && err != nil:
				e.t.Errorf("prefetch %d on a backend without a limit: %v", prefetch, err)
			}
			if c != nil {
				c.Close()
			}
			return err
		}},
		{"RunOnDeletedQueue", carrot.ErrNotFound, func(e *env) error {
			q := e.queue(carrot.Queue{Name: "q"})
			received := make(chan struct{}, 1)
			c := e.consumerOn(e.conn, carrot.ConsumerOptions{Handler: carrot.HandlerFunc(func(ctx context.Context, m *carrot.Message) error {
				received <- struct{}{}
				return m.Ack(ctx)
			})}, q)
			done := make(chan error, 1)
			go func() { done <- c.Run(e.ctx) }()
			e.publish("", q, "before the delete")
			select {
			case <-received:
			case err := <-done:
				e.t.Fatalf("Run ended before the queue was deleted: %v", err)
			case <-e.ctx.Done():
				e.t.Fatal("the message before the delete did not arrive")
			}
			if err := e.r.admin.DeleteQueue(e.ctx, q); err != nil {
				e.t.Fatalf("delete the queue: %v", err)
			}
			return e.wait(done)
		}},
		{"SettleAfterConsumerClose", carrot.ErrClosed, func(e *env) error {
			q := e.queue(carrot.Queue{Name: "q"})
			e.publish("", q, "fetched")
			c := e.consumer(q)
			m := e.fetchFrom(c)
			c.Close()
			err := m.Ack(e.ctx)
			if got := e.fetchBody(q); got != "fetched" {
				e.t.Errorf("after its consumer closed the message is %q, want it back", got)
			}
			return err
		}},
		{"URLOptionsWithSemicolon", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(withQuery(e.r.h.URL, "prefetch=1;max_body_size=5"))
			e.mustSay(err, "';'")
			return err
		}},
		{"URLOptionBadEscape", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(withQuery(e.r.h.URL, "prefetch=%zz"))
			e.mustSay(err, "'%'")
			return err
		}},
		{"URLPasswordUnescaped", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(withUser(e.r.h.URL, "carrot:"+secret[:7]+"#"+secret[7:]+"@"))
			return err
		}},
		{"URLPasswordWithSlash", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(withUser(e.r.h.URL, "carrot:1/"+secret+"@"))
			return err
		}},
		{"URLSchemeTypo", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(strings.Replace(withUser(e.r.h.URL, "carrot:"+secret+"@"), "://", "//", 1))
			return err
		}},
		{"URLSecretOption", carrot.ErrInvalid, func(e *env) error {
			_, err := e.openURL(withQuery(e.r.h.URL, "sentinel_password="+secret))
			return err
		}},
		{"URLWrongPassword", nil, func(e *env) error {
			// Refused, or taken by a broker without authentication: either way, no secret shows.
			conn, err := e.openURL(withUser(e.r.h.URL, "carrot:"+url.QueryEscape(secret)+"@"))
			if err == nil {
				if strings.Contains(conn.String(), secret[:7]) {
					e.t.Errorf("Conn.String() = %q shows the password", conn)
				}
				conn.Close()
			}
			return err
		}},
	}
}

func testHostile(e *env) {
	for _, hc := range hostileCases() {
		e.sub(hc.name, func(e *env) {
			err := hc.do(e)
			switch {
			case hc.want == nil:
			case !errors.Is(err, hc.want):
				e.t.Errorf("error = %v, want %v", err, hc.want)
			case errors.Is(err, carrot.ErrBackend):
				e.t.Errorf("error = %v, which the backend did not classify", err)
			}
			if err != nil {
				for _, s := range []string{secret, secret[:7], secret[7:]} {
					if strings.Contains(err.Error(), s) {
						e.t.Errorf("error %q shows the secret %q", err, s)
					}
				}
			}
			e.expectWorks()
		})
	}
}

// hostilePublish publishes a message with headers to a queue of its own, which must stay
// empty.
func (e *env) hostilePublish(headers carrot.Table) error {
	e.t.Helper()
	q := e.queue(carrot.Queue{Name: "q"})
	defer e.expectEmpty(q)
	return e.publisher(carrot.PublisherOptions{RoutingKey: q}).Publish(e.ctx, &carrot.Message{Body: []byte("x"), Headers: headers})
}

// openURL opens rawURL with a logger of its own, and fails the subtest if a log line shows
// the secret.
func (e *env) openURL(rawURL string) (*carrot.Conn, error) {
	var logs bytes.Buffer
	d := carrot.Dialer{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	conn, err := d.Open(e.ctx, rawURL)
	if conn != nil {
		e.t.Cleanup(func() { conn.Close() })
	}
	if strings.Contains(logs.String(), secret[:7]) {
		e.t.Errorf("opening a hostile URL logged the secret: %s", logs.String())
	}
	return conn, err
}

// mustSay fails the subtest unless err's text holds s.
func (e *env) mustSay(err error, s string) {
	e.t.Helper()
	if err != nil && !strings.Contains(err.Error(), s) {
		e.t.Errorf("error %q does not say %s", err, s)
	}
}

// expectWorks checks that the subtest's connection still publishes and fetches.
func (e *env) expectWorks() {
	e.t.Helper()
	q := e.queue(carrot.Queue{Name: "after"})
	e.publish("", q, "still works")
	if got := e.fetchBody(q); got != "still works" {
		e.t.Errorf("after the hostile input the connection fetched %q", got)
	}
}

// withQuery adds the raw option pair to rawURL.
func withQuery(rawURL, pair string) string {
	if strings.Contains(rawURL, "?") {
		return rawURL + "&" + pair
	}
	return rawURL + "?" + pair
}

// withUser replaces the user info of rawURL with userinfo (which ends with '@'), as typed:
// not escaped.
func withUser(rawURL, userinfo string) string {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	if at := strings.LastIndexByte(rest[:hostEnd(rest)], '@'); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + userinfo + rest
}

func hostEnd(rest string) int {
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		return i
	}
	return len(rest)
}
