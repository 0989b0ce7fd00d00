package amqp10

import (
	"context"
	"errors"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
)

// publisher is the connection's sending side, on a session of its own. Its first link
// has a null target: each message carries its address in the to property, so that one
// link serves every exchange, and a message to a missing exchange is rejected alone
// instead of failing the attach (which ends the session). Once the broker has accepted a
// message for an address, a link with that address as its target is attached on the
// same session and carries the later messages to it, which saves the broker resolving
// the address of each one. Both links share the session, so the messages of one
// goroutine keep their order. One goroutine waits for the outcomes, in the order the
// messages went out.
type publisher struct {
	session *amqp.Session
	sender  *amqp.Sender // null target
	waits   chan wait
	dead    chan struct{} // closed when the link failed, under mu
	mu      sync.RWMutex  // read-held while queueing to waits, so that nothing is queued once dead

	linkMu sync.Mutex
	links  atomic.Pointer[map[string]*amqp.Sender] // address → link; copied on write
	tried  map[string]bool                         // addresses attached or being attached, under linkMu
}

// attachTimeout bounds the wait for the broker to attach or detach a link in the
// background.
const attachTimeout = 10 * time.Second

// maxLinks bounds the links with a fixed target of a connection; messages to other
// addresses go through the null-target link.
const maxLinks = 64

// wait is a sent message waiting for its outcome.
type wait struct {
	receipt amqp.SendReceipt
	p       *backend.Publishing // valid until done is called
	to      string              // the message's address
	fixed   bool                // sent through a link with a fixed target
	done    func(error)
}

// WarmPublish opens the publishing link ahead of the first publish.
func (c *Conn) WarmPublish(ctx context.Context) error {
	_, err := c.publisher(ctx)
	return err
}

// publisher returns the live sending link, attaching one if needed.
func (c *Conn) publisher(ctx context.Context) (*publisher, error) {
	if p := c.pub.Load(); p != nil && !p.isDead() {
		return p, nil
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if p := c.pub.Load(); p != nil && !p.isDead() {
		return p, nil
	}
	s, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	snd, err := s.NewSender(ctx, "", &amqp.SenderOptions{
		SettlementMode:              amqp.SenderSettleModeUnsettled.Ptr(),
		RequestedReceiverSettleMode: amqp.ReceiverSettleModeFirst.Ptr(),
	})
	if err != nil {
		c.closeSession(s)
		return nil, err
	}
	p := &publisher{session: s, sender: snd, waits: make(chan wait, 4096), dead: make(chan struct{}), tried: make(map[string]bool)}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.answer(c)
	}()
	if old := c.pub.Swap(p); old != nil {
		old.kill(c)
	}
	return p, nil
}

func (p *publisher) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// kill marks the link failed and closes its session.
func (p *publisher) kill(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.dead:
	default:
		close(p.dead)
		c.closeSession(p.session)
	}
}

// answer turns outcomes into the publishes' results, in order, until the publisher
// link fails or the Conn closes.
func (p *publisher) answer(c *Conn) {
	for {
		var w wait
		select {
		case w = <-p.waits: // the common case, without the cost of a select on three channels
		default:
			select {
			case w = <-p.waits:
			case <-p.dead:
				// Nothing is queued after the link failed: answer what is left (the
				// receipts end with the link) and stop.
				for {
					select {
					case w := <-p.waits:
						p.answerOne(c, w)
					default:
						return
					}
				}
			case <-c.Done():
				for { // what is left fails: the connection ended
					select {
					case w := <-p.waits:
						w.done(c.gone())
					default:
						return
					}
				}
			}
		}
		p.answerOne(c, w)
	}
}

// enqueue hands a sent message to the answering goroutine. If the link failed since, it
// answers in a goroutine of its own: the receipt ends with the link.
func (p *publisher) enqueue(c *Conn, w wait) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.isDead() {
		select {
		case p.waits <- w: // the common case, without the cost of a select on two channels
			return
		default:
		}
		select {
		case p.waits <- w:
			return
		case <-c.Done():
			w.done(c.gone())
			return
		}
	}
	go p.answerOne(c, w)
}

// answerOne waits for the outcome of one sent message and answers it.
func (p *publisher) answerOne(c *Conn, w wait) {
	state, err := w.receipt.Wait(context.Background())
	w.done(p.outcome(c, &w, state, err))
}

// outcome turns the delivery state of a sent message into the result of its publish,
// and learns from it.
func (p *publisher) outcome(c *Conn, w *wait, state amqp.DeliveryState, err error) error {
	if _, ok := state.(*amqp.StateReleased); ok && w.fixed {
		// A link with a fixed target cannot tell a deleted exchange from one that
		// routes nowhere: ask again through the null target, which can. The message
		// went to no queue, so sending it again duplicates nothing.
		state, err = p.resend(w)
	}
	if _, ok := state.(*amqp.StateAccepted); ok && !w.fixed && err == nil {
		p.learn(c, w.to)
	}
	if err != nil && w.p.UserID != "" && refusedUser(err) == w.p.UserID {
		// The link closed because of this message: it is not to be sent again.
		return backend.Errorf(backend.Invalid, "carrot/amqp10: the broker refused the message's user id: %w", err)
	}
	return outcome(state, err, w.p.Exchange, w.p.Mandatory)
}

// refusedUser reads RabbitMQ's refusal of a message whose user-id is not the connection's
// user, which detaches the link ("user_id property set to 'U' but authenticated user was
// 'V'", amqp:unauthorized-access): U, or "".
func refusedUser(err error) string {
	var remote *amqp.Error
	if le := (*amqp.LinkError)(nil); errors.As(err, &le) {
		remote = le.RemoteErr
	} else {
		errors.As(err, &remote)
	}
	if remote == nil || remote.Condition != amqp.ErrCondUnauthorizedAccess {
		return ""
	}
	_, rest, found := strings.Cut(remote.Description, "user_id property set to '")
	if !found {
		return ""
	}
	user, _, found := strings.Cut(rest, "' but authenticated user was '")
	if !found {
		return ""
	}
	return user
}

// resend sends w's message again through the null-target link and waits for its
// outcome. If the broker rejects it, the link with its address as target is dropped.
func (p *publisher) resend(w *wait) (amqp.DeliveryState, error) {
	x := newOutgoing(w.p, w.to)
	r, err := p.sender.SendWithReceipt(context.Background(), &x.m, nil)
	x.release()
	if err != nil {
		return nil, err
	}
	state, err := r.Wait(context.Background())
	if _, ok := state.(*amqp.StateRejected); ok {
		if l := p.setLink(w.to, nil); l != nil {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
				defer cancel()
				l.Close(ctx)
			}()
		}
	}
	return state, err
}

// learn attaches, in the background, a link with address as its target, unless there
// is one or maxLinks were tried. The broker accepted a message for address a moment ago,
// so the attach is expected to succeed; if it fails, the session ended with it and the
// publishes in flight fail as unavailable, for carrot's Publisher to retry.
func (p *publisher) learn(c *Conn, address string) {
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	if p.tried[address] || len(p.tried) >= maxLinks {
		return
	}
	p.tried[address] = true
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), attachTimeout)
		defer cancel()
		snd, err := p.session.NewSender(ctx, address, &amqp.SenderOptions{
			SettlementMode:              amqp.SenderSettleModeUnsettled.Ptr(),
			RequestedReceiverSettleMode: amqp.ReceiverSettleModeFirst.Ptr(),
		})
		if err != nil {
			p.kill(c)
			return
		}
		p.setLink(address, snd)
	}()
}

// setLink makes s the link for address, or forgets the link for address when s is nil,
// and returns the link it replaced.
func (p *publisher) setLink(address string, s *amqp.Sender) *amqp.Sender {
	p.linkMu.Lock()
	defer p.linkMu.Unlock()
	links := make(map[string]*amqp.Sender)
	if m := p.links.Load(); m != nil {
		maps.Copy(links, *m)
	}
	old := links[address]
	if s != nil {
		links[address] = s
	} else {
		delete(links, address)
	}
	p.links.Store(&links)
	return old
}

// link returns the link to send a message for address through.
func (p *publisher) link(address string) (*amqp.Sender, bool) {
	if links := p.links.Load(); links != nil {
		if s, ok := (*links)[address]; ok {
			return s, true
		}
	}
	return p.sender, false
}

// outcome turns a delivery state into the result of a publish.
func outcome(state amqp.DeliveryState, err error, exchange string, mandatory bool) error {
	if err != nil {
		return backend.Errorf(backend.Unavailable, "carrot/amqp10: the link closed before the broker settled the message: %w", err)
	}
	switch s := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateReleased:
		// RabbitMQ releases a message that no queue took.
		if mandatory {
			return backend.Errorf(backend.Unroutable, "carrot/amqp10: the broker released the message: no queue is bound to exchange %q with a matching key", exchange)
		}
		return nil
	case *amqp.StateRejected:
		if s.Error != nil {
			if s.Error.Condition == amqp.ErrCondNotFound {
				return backend.Errorf(backend.NotFound, "carrot/amqp10: exchange %q: %w", exchange, s.Error)
			}
			return backend.Errorf(backend.Refused, "carrot/amqp10: the broker rejected the message: %w", s.Error)
		}
		return backend.Errorf(backend.Refused, "carrot/amqp10: the broker rejected the message")
	case *amqp.StateModified:
		return backend.Errorf(backend.Refused, "carrot/amqp10: the broker did not take the message (modified)")
	}
	return backend.Errorf(backend.Unknown, "carrot/amqp10: unexpected outcome %T", state)
}

// Publish publishes and waits for the broker's outcome, in the caller's goroutine.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	if p.Delay > 0 {
		d, err := c.delayed(ctx, p)
		if err != nil {
			return err
		}
		p = d
	}
	w := wait{p: p, to: cachedAddress(p.Exchange, p.RoutingKey)}
	pub, err := c.send(ctx, &w)
	if err != nil || !p.Confirm {
		return err
	}
	state, err := w.receipt.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // the message may or may not have been taken
	}
	return pub.outcome(c, &w, state, err)
}

// PublishAsync sends the message in the caller's goroutine, waiting for a connection if
// there is none, and answers through done when the broker settles it. A message the
// broker releases is unroutable; one it rejects for a missing exchange is not found.
func (c *Conn) PublishAsync(ctx context.Context, p *backend.Publishing, done func(error)) {
	if p.Delay > 0 {
		d, err := c.delayed(ctx, p)
		if err != nil {
			done(err)
			return
		}
		p = d
	}
	w := wait{p: p, to: cachedAddress(p.Exchange, p.RoutingKey), done: done}
	pub, err := c.send(ctx, &w)
	if err != nil || !p.Confirm {
		done(err)
		return
	}
	pub.enqueue(c, w)
}

// send sends w's message through the link for its address, attaching the publisher
// link first if needed, and sets w's receipt. A link that ended before the message went
// out is replaced and the message sent on the new one.
func (c *Conn) send(ctx context.Context, w *wait) (*publisher, error) {
	for {
		pub, err := c.publisher(ctx)
		if err != nil {
			return nil, err
		}
		var sender *amqp.Sender
		sender, fixed := pub.link(w.to)
		to := w.to
		if fixed {
			to = "" // the link's target says it
		}
		x := newOutgoing(w.p, to)
		w.receipt, err = sender.SendWithReceipt(ctx, &x.m, nil)
		x.release() // go-amqp has encoded it
		w.fixed = fixed
		if err == nil {
			return pub, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if linkGone(err) {
			pub.kill(c)
			if gerr := c.gone(); gerr != nil {
				return nil, gerr
			}
			continue // nothing was sent: send on the next link
		}
		return nil, err
	}
}

// linkGone reports whether err says that a link, its session or its connection ended.
func linkGone(err error) bool {
	var ce *amqp.ConnError
	var se *amqp.SessionError
	var le *amqp.LinkError
	return errors.As(err, &ce) || errors.As(err, &se) || errors.As(err, &le)
}

// address returns the address of a message published to exchange with key.
func address(exchange, key string) string {
	switch {
	case exchange == "":
		return "/queues/" + escape(key)
	case key == "":
		return "/exchanges/" + escape(exchange)
	}
	return "/exchanges/" + escape(exchange) + "/" + escape(key)
}

// addresses remembers the addresses computed so far, up to maxAddresses, so that
// publishing to the same place again costs no escaping.
var addresses struct {
	sync.RWMutex
	m map[[2]string]string // exchange and key → address
}

const maxAddresses = 4096

func cachedAddress(exchange, key string) string {
	k := [2]string{exchange, key}
	addresses.RLock()
	a, ok := addresses.m[k]
	addresses.RUnlock()
	if ok {
		return a
	}
	a = address(exchange, key)
	addresses.Lock()
	if addresses.m == nil {
		addresses.m = make(map[[2]string]string)
	}
	if len(addresses.m) < maxAddresses {
		addresses.m[k] = a
	}
	addresses.Unlock()
	return a
}

// outgoing is a message for go-amqp with its parts, in one allocation, reused once sent.
type outgoing struct {
	m     amqp.Message
	h     amqp.MessageHeader
	pr    amqp.MessageProperties
	to    string
	data  [1][]byte
	uid   []byte           // the user-id property, binary
	ann   amqp.Annotations // message annotations, reused
	props map[string]any   // application properties, reused
}

var outgoings = sync.Pool{New: func() any { return new(outgoing) }}

// annotationType is the message annotation RabbitMQ maps to and from the type property
// of AMQP 0-9-1.
const annotationType = "x-basic-type"

// newOutgoing converts a publishing for go-amqp: header durable, priority and ttl;
// properties message-id, correlation-id, reply-to, content-type, content-encoding,
// creation-time, user-id, group-id (AppID, as RabbitMQ maps app-id) and to (the address,
// unless empty: a link whose target is the address needs none); Type as the message
// annotation x-basic-type; headers as application-properties, integers that fit in 32
// bits as int; the body as one data section.
func newOutgoing(p *backend.Publishing, to string) *outgoing {
	x := outgoings.Get().(*outgoing)
	x.h = amqp.MessageHeader{Durable: p.Persistent, Priority: p.Priority, TTL: p.Expiration}
	x.data[0] = p.Body
	if x.data[0] == nil {
		x.data[0] = []byte{}
	}
	x.m = amqp.Message{Header: &x.h, Properties: &x.pr, Data: x.data[:]}
	pr := &x.pr
	if to != "" {
		x.to = to
		pr.To = &x.to
	}
	if p.MessageID != "" {
		pr.MessageID = p.MessageID
	}
	if p.CorrelationID != "" {
		pr.CorrelationID = p.CorrelationID
	}
	if p.ReplyTo != "" {
		pr.ReplyTo = &p.ReplyTo
	}
	if p.ContentType != "" {
		pr.ContentType = &p.ContentType
	}
	if p.ContentEncoding != "" {
		pr.ContentEncoding = &p.ContentEncoding
	}
	if !p.Timestamp.IsZero() {
		pr.CreationTime = &p.Timestamp
	}
	if p.UserID != "" {
		x.uid = append(x.uid[:0], p.UserID...)
		pr.UserID = x.uid
	}
	if p.AppID != "" {
		pr.GroupID = &p.AppID
	}
	if p.Type != "" {
		if x.ann == nil {
			x.ann = make(amqp.Annotations, 1)
		}
		x.ann[annotationType] = p.Type
		x.m.Annotations = x.ann
	}
	if len(p.Headers) > 0 {
		if x.props == nil {
			x.props = make(map[string]any, len(p.Headers))
		}
		for k, v := range p.Headers {
			x.props[k] = propertyValue(v)
		}
		x.m.ApplicationProperties = x.props
	}
	return x
}

// propertyValue converts a header value for go-amqp: an integer that fits in 32 bits to
// an int, which RabbitMQ hands AMQP 0-9-1 consumers as 'I' (signed), where it hands a
// long as 'l', which py-amqp (Kombu, Celery) reads as unsigned.
func propertyValue(v any) any {
	if n, ok := v.(int64); ok && n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return v
}

// release returns x to the pool, holding nothing of its message.
func (x *outgoing) release() {
	uid, ann, props := x.uid, x.ann, x.props
	clear(ann)
	clear(props)
	*x = outgoing{uid: uid[:0], ann: ann, props: props}
	outgoings.Put(x)
}
