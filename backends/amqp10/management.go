package amqp10

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/delayq"
	"github.com/carrot-go/carrot/internal/rabbitargs"
)

// RabbitMQ 4 declares topology over AMQP 1.0 itself: "HTTP over AMQP" requests on a pair
// of links at "/management", which must share one name and set the property paired. A
// request's properties carry the path (to), the method (subject), a message id and
// reply-to "$me"; its body is an AMQP value, a map or null. The response's subject is the
// HTTP status, its correlation id the request's message id, its body a map (success) or
// a string (the error).

// management is the link pair of one connection, on a session of its own.
type management struct {
	session  *amqp.Session
	sender   *amqp.Sender
	receiver *amqp.Receiver
}

// management returns the link pair of the live connection, attaching it if needed. The
// caller holds mgmtMu.
func (c *Conn) management(ctx context.Context) (*management, error) {
	if m := c.mgmt; m != nil {
		return m, nil
	}
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	const name = "management-link-pair"
	props := map[string]any{"paired": true}
	// The receiver first, with credit, so that the broker can answer the first request.
	r, err := s.NewReceiver(ctx, "/management", &amqp.ReceiverOptions{
		Name:                      name,
		Properties:                props,
		TargetAddress:             "/management",
		RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr(),
		SettlementMode:            amqp.ReceiverSettleModeFirst.Ptr(),
		Credit:                    100,
	})
	if err != nil {
		c.closeSession(s)
		return nil, err
	}
	snd, err := s.NewSender(ctx, "/management", &amqp.SenderOptions{
		Name:                        name,
		Properties:                  props,
		SourceAddress:               "/management",
		SettlementMode:              amqp.SenderSettleModeSettled.Ptr(),
		RequestedReceiverSettleMode: amqp.ReceiverSettleModeFirst.Ptr(),
	})
	if err != nil {
		c.closeSession(s)
		return nil, err
	}
	c.mgmt = &management{session: s, sender: snd, receiver: r}
	return c.mgmt, nil
}

// response is the answer to a management request.
type response struct {
	status int
	body   any
}

// request sends one management request and waits for its answer. A failure of the link
// pair ends its session, and the next request attaches a new pair.
func (c *Conn) request(ctx context.Context, method, path string, body any) (response, error) {
	if err := c.gone(); err != nil {
		return response{}, err
	}
	c.mgmtMu.Lock()
	defer c.mgmtMu.Unlock()
	for attempt := 0; ; attempt++ {
		resp, err := c.requestOnce(ctx, method, path, body)
		if err == nil || ctx.Err() != nil {
			return resp, err
		}
		if gerr := c.gone(); gerr != nil {
			return resp, gerr
		}
		// go-amqp gives a new receiver its credit from a goroutine of its own, which
		// may not have run when the first request reaches the broker; the broker then
		// ends the session. A new pair is ready by the next try. A session the broker
		// ended for another reason is tried again too, a few times.
		if attempt >= 5 || !noCredit(err) && c.ErrorCode(err) != backend.Unavailable {
			return resp, err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	}
}

// noCredit reports whether the broker ended the management session because its
// receiver had no credit yet.
func noCredit(err error) bool {
	var se *amqp.SessionError
	return errors.As(err, &se) && se.RemoteErr != nil && strings.Contains(se.RemoteErr.Description, "insufficient credit")
}

func (c *Conn) requestOnce(ctx context.Context, method, path string, body any) (response, error) {
	m, err := c.management(ctx)
	if err != nil {
		return response{}, err
	}
	fail := func(err error) (response, error) {
		// A request cut short by ctx leaves the pair sound: the answer, if it comes, is
		// skipped by the next request.
		if ctx.Err() == nil {
			c.closeSession(m.session)
			c.mgmt = nil
		}
		return response{}, err
	}
	id := c.msgID.Add(1)
	me := "$me"
	if body == nil {
		body = amqp.Null{}
	}
	msg := &amqp.Message{
		Properties: &amqp.MessageProperties{MessageID: id, To: &path, Subject: &method, ReplyTo: &me},
		Value:      body,
	}
	if err := m.sender.Send(ctx, msg, nil); err != nil {
		return fail(err)
	}
	for {
		r, err := m.receiver.Receive(ctx, nil)
		if err != nil {
			return fail(err)
		}
		if r.Properties == nil || r.Properties.CorrelationID != id {
			continue // the answer to an abandoned request
		}
		status := 0
		if r.Properties.Subject != nil {
			status, _ = strconv.Atoi(*r.Properties.Subject)
		}
		return response{status: status, body: r.Value}, nil
	}
}

// check turns a response that is not a success into an error.
func check(method, path string, r response, ok ...int) error {
	for _, s := range ok {
		if r.status == s {
			return nil
		}
	}
	text, _ := r.body.(string)
	code := backend.Unknown
	switch {
	case r.status == 404 || r.status == 400 && (strings.HasPrefix(text, "no queue") || strings.HasPrefix(text, "no exchange")):
		code = backend.NotFound
	case r.status == 409:
		code = backend.Mismatch
	case r.status == 400 && strings.Contains(text, "exclusive access to locked queue"):
		code = backend.InUse
	case r.status == 400 || r.status == 403:
		code = backend.Invalid
	}
	return backend.Errorf(code, "carrot/amqp10: %s %s: %d %s", method, path, r.status, text)
}

// escape percent-encodes a name for a management path: every byte but the unreserved
// A-Z a-z 0-9 - . _ ~, which RabbitMQ takes as they are.
func escape(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if 'A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

func (c *Conn) declareQueue(ctx context.Context, q backend.Queue) error {
	path := "/queues/" + escape(q.Name)
	if q.Passive {
		r, err := c.request(ctx, "GET", path, nil)
		if err != nil {
			return err
		}
		if err := check("GET", path, r, 200); err != nil {
			return err
		}
		return c.checkOwner(ctx, q.Name, r.body)
	}
	args, err := rabbitargs.Queue("carrot/amqp10", q)
	if err != nil {
		return err
	}
	body := map[string]any{"durable": q.Durable, "exclusive": q.Exclusive, "auto_delete": q.AutoDelete, "arguments": args}
	r, err := c.request(ctx, "PUT", path, body)
	if err != nil {
		return err
	}
	return check("PUT", path, r, 200, 201)
}

// checkOwner makes sure an exclusive queue found by a passive declaration belongs to this
// connection, as AMQP 0-9-1's passive declaration does: a GET succeeds for anyone, but
// declaring the queue again with its own properties succeeds only for its owner.
//
// The queue may go between the GET and that declaration, when its owner's connection
// closes: the declaration then creates it (201, not 200), exclusive to this connection.
// A passive declaration creates nothing, so that queue is deleted again and the answer is
// NotFound. (Were it kept, every later passive declaration would find it this
// connection's, and the queue would outlive the connection that made it.)
func (c *Conn) checkOwner(ctx context.Context, name string, info any) error {
	m, ok := info.(map[string]any)
	if !ok || m["exclusive"] != true {
		return nil
	}
	args := m["arguments"]
	if _, ok := args.(map[string]any); !ok {
		args = map[string]any{} // an empty map arrives as map[any]any
	}
	body := map[string]any{"durable": m["durable"], "exclusive": true, "auto_delete": m["auto_delete"], "arguments": args}
	path := "/queues/" + escape(name)
	r, err := c.request(ctx, "PUT", path, body)
	if err != nil {
		return err
	}
	if err := check("PUT", path, r, 200, 201); err != nil {
		return err
	}
	if r.status == 201 {
		if err := c.DeleteQueue(ctx, name); err != nil {
			// The queue is this connection's and goes with it at the latest.
			return fmt.Errorf("carrot/amqp10: a passive declaration of %s made the queue its owner had just deleted, and could not delete it: %w", path, err)
		}
		return backend.Errorf(backend.NotFound, "carrot/amqp10: GET %s: the exclusive queue was deleted with its connection", path)
	}
	return nil
}

func (c *Conn) declareExchange(ctx context.Context, x backend.Exchange) error {
	path := "/exchanges/" + escape(x.Name)
	if x.Passive {
		return c.exchangeExists(ctx, x.Name)
	}
	args := x.Args
	if args == nil {
		args = map[string]any{}
	}
	body := map[string]any{"type": string(x.Kind), "durable": x.Durable, "auto_delete": x.AutoDelete, "internal": false, "arguments": args}
	r, err := c.request(ctx, "PUT", path, body)
	if err != nil {
		return err
	}
	return check("PUT", path, r, 201, 204)
}

// exchangeExists checks that an exchange exists by attaching a link to it, on a session
// of its own: RabbitMQ 4.0 has no GET of exchanges over management, and refusing the
// attach ends the session.
func (c *Conn) exchangeExists(ctx context.Context, name string) error {
	s, err := c.session(ctx)
	if err != nil {
		return err
	}
	defer c.closeSession(s)
	snd, err := s.NewSender(ctx, "/exchanges/"+escape(name), nil)
	if err != nil {
		if c.ErrorCode(err) == backend.NotFound {
			return backend.Errorf(backend.NotFound, "carrot/amqp10: exchange %q not found", name)
		}
		return err
	}
	snd.Close(ctx)
	return nil
}

func (c *Conn) bind(ctx context.Context, b backend.Binding) error {
	body := map[string]any{"source": b.Exchange, "destination_queue": b.Queue, "binding_key": b.Key, "arguments": map[string]any{}}
	r, err := c.request(ctx, "POST", "/bindings", body)
	if err != nil {
		return err
	}
	return check("POST", "/bindings", r, 204)
}

// The methods of backend.Conn that change topology.

func (c *Conn) DeclareExchange(ctx context.Context, x backend.Exchange) error {
	return c.declareExchange(ctx, x)
}

func (c *Conn) DeleteExchange(ctx context.Context, name string) error {
	if err := c.deleteExchange(ctx, name); err != nil {
		return err
	}
	// The delay exchanges and queues that deliver to it, which this process declared, go
	// with it: they could only drop what they hold.
	for _, d := range delayq.Forget(c.opts.String(), name) {
		if err := c.DeleteQueue(ctx, d); err != nil && c.ErrorCode(err) != backend.NotFound {
			return err
		}
		if err := c.deleteExchange(ctx, d); err != nil && c.ErrorCode(err) != backend.NotFound {
			return err
		}
		c.delays.Delete(d)
	}
	return nil
}

func (c *Conn) deleteExchange(ctx context.Context, name string) error {
	path := "/exchanges/" + escape(name)
	r, err := c.request(ctx, "DELETE", path, nil)
	if err != nil {
		return err
	}
	return check("DELETE", path, r, 200, 204)
}

func (c *Conn) DeclareQueue(ctx context.Context, q backend.Queue) error {
	return c.declareQueue(ctx, q)
}

func (c *Conn) DeleteQueue(ctx context.Context, name string) error {
	path := "/queues/" + escape(name)
	r, err := c.request(ctx, "DELETE", path, nil)
	if err != nil {
		return err
	}
	if err := check("DELETE", path, r, 200); err != nil {
		return err
	}
	c.dropGetter(name)
	return nil
}

func (c *Conn) Bind(ctx context.Context, b backend.Binding) error {
	return c.bind(ctx, b)
}

func (c *Conn) Unbind(ctx context.Context, b backend.Binding) error {
	path := fmt.Sprintf("/bindings/src=%s;dstq=%s;key=%s;args=", escape(b.Exchange), escape(b.Queue), escape(b.Key))
	r, err := c.request(ctx, "DELETE", path, nil)
	if err != nil {
		return err
	}
	if err := check("DELETE", path, r, 204); err != nil && backend.CodeOf(err) != backend.NotFound {
		return err
	}
	return nil
}

func (c *Conn) Purge(ctx context.Context, queue string) (int, error) {
	path := "/queues/" + escape(queue) + "/messages"
	r, err := c.request(ctx, "DELETE", path, nil)
	if err != nil {
		return 0, err
	}
	if err := check("DELETE", path, r, 200); err != nil {
		return 0, err
	}
	return count(r.body), nil
}

// count reads message_count from a management response; 0 if there is none.
func count(body any) int {
	n, _ := field(body, "message_count")
	return int(n)
}

// field reads a number from a management response, and reports whether there was one.
func field(body any, name string) (int64, bool) {
	var v any
	switch m := body.(type) {
	case map[string]any:
		v = m[name]
	case map[any]any:
		v = m[name]
	}
	switch n := v.(type) {
	case uint64:
		return int64(n), true
	case int64:
		return n, true
	case uint32:
		return int64(n), true
	case int32:
		return int64(n), true
	}
	return 0, false
}
