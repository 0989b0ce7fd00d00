package amqp091

import (
	"context"
	"errors"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/carrot-go/carrot/backend"
)

// publisher is a channel in confirm mode that every publish of the Conn goes through.
// Publishes write to it from their own goroutines, one at a time, and join a window of
// written messages in publishing order; one goroutine, run, answers them as their
// confirms come.
//
// A mandatory message that matches no queue comes back as a basic.return, which RabbitMQ
// sends before the message's confirm; amqp091-go puts it in the returns channel (buffered)
// as it reads it, before it reads the confirm. So when run sees a confirmation done, the
// message's return, if any, is in that channel or already among those run took from it.
type publisher struct {
	c          *Conn
	ch         *amqp.Channel
	confirming bool
	returns    chan amqp.Return
	closes     chan *amqp.Error
	kick       chan struct{} // wakes run when the window was empty
	dead       chan struct{} // closed when run has stopped

	mu     sync.Mutex // serializes writes, so that the window is in publishing order
	window []*request // written, waiting for their confirms
	closed bool       // run stopped: write no more

	// run's alone:
	returned []amqp.Return // returns not yet matched to a confirm
	closeErr *amqp.Error
}

// request is a written publish waiting for its confirm.
type request struct {
	fp       fingerprint // of the message, to recognize its return
	size     int         // of its body, to recognize it in a refusal
	userID   string      // its user-id, to recognize it in a refusal
	dc       *amqp.DeferredConfirmation
	done     func(error)
	answered atomic.Bool
}

// answer calls done, once.
func (r *request) answer(err error) {
	if r.answered.CompareAndSwap(false, true) {
		r.done(err)
	}
}

// fingerprint identifies a message among its return candidates without keeping its body,
// which the caller may reuse once its publish is answered.
type fingerprint struct {
	exchange, key, messageID, correlationID, contentType string
	size                                                 int
	sum                                                  uint32
}

func fingerprintOf(exchange, key string, p *amqp.Publishing) fingerprint {
	return fingerprint{exchange, key, p.MessageId, p.CorrelationId, p.ContentType, len(p.Body), crc32.ChecksumIEEE(p.Body)}
}

// Publish publishes and waits for the broker's answer: its confirm, or the return of an
// unroutable message. A message written to a channel that then closes is an Unavailable
// error: it may or may not have reached the broker.
func (c *Conn) Publish(ctx context.Context, p *backend.Publishing) error {
	result := make(chan error, 1)
	c.PublishAsync(ctx, p, func(err error) { result <- err })
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAsync writes the message in the caller's goroutine and answers through done when
// the broker does. ctx bounds the write; once written, a publish waits for the broker's
// answer or the loss of the channel, and the caller who wants to wait less stops waiting.
// A message RabbitMQ would refuse by closing the channel or the connection (too large, a
// header frame over the frame size) is refused before it is sent.
func (c *Conn) PublishAsync(ctx context.Context, p *backend.Publishing, done func(error)) {
	if p.Confirm && c.opts.NoConfirms {
		done(backend.Errorf(backend.Unsupported, "carrot/amqp091: confirms are off (URL option confirms=false)"))
		return
	}
	if err := c.check(p); err != nil {
		done(err)
		return
	}
	if err := c.checkExchange(ctx, p.Exchange); err != nil {
		done(err)
		return
	}
	if p.Delay > 0 {
		d, err := c.delayed(ctx, p)
		if err != nil {
			done(err)
			return
		}
		p = d
	}
	msg := publishing(&p.Message)
	r := &request{done: done, size: len(p.Body), userID: p.UserID}
	r.fp.exchange = p.Exchange
	if p.Mandatory {
		r.fp = fingerprintOf(p.Exchange, p.RoutingKey, &msg)
	}
	for {
		pc, err := c.publisher(ctx)
		if err != nil {
			done(err)
			return
		}
		if err := pc.write(p, msg, r); err == nil || !channelGone(err) || ctx.Err() != nil || c.conn.IsClosed() {
			if err != nil {
				if c.conn.IsClosed() {
					err = c.gone()
				}
				r.answer(err)
			}
			return
		}
		// Nothing was written: the next channel takes it.
	}
}

// check refuses, before sending, a message that RabbitMQ would refuse by closing the
// publishing channel (a body over its max_message_size) or the whole connection (a
// content header frame over the negotiated frame size), and one whose headers
// amqp091-go could not read back.
func (c *Conn) check(p *backend.Publishing) error {
	if max := c.maxBody.Load(); int64(len(p.Body)) > max {
		return backend.Errorf(backend.TooLarge, "carrot/amqp091: body is %d bytes, RabbitMQ takes at most %d (its max_message_size; set max_body_size if it is configured otherwise)", len(p.Body), max)
	}
	if n := headerSize(&p.Message); n > c.maxHead {
		return backend.Errorf(backend.TooLarge, "carrot/amqp091: the message's properties and headers take %d bytes; an AMQP 0-9-1 content header must fit in one frame, at most %d bytes here (frame_size)", n, c.maxHead)
	}
	if len(p.Headers) > maxTableEntries {
		return backend.Errorf(backend.Invalid, "carrot/amqp091: %d headers: amqp091-go cannot read a table of more than %d", len(p.Headers), maxTableEntries)
	}
	for k, v := range p.Headers {
		if n := largest(v); n > maxTableEntries {
			return backend.Errorf(backend.Invalid, "carrot/amqp091: header %q holds a table or list of %d entries: amqp091-go cannot read one of more than %d", k, n, maxTableEntries)
		}
	}
	return nil
}

// maxTableEntries is the most entries amqp091-go reads in a table or an array.
const maxTableEntries = 8192

// largest returns the number of entries of the largest table or list in v, v included.
func largest(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		n = len(v)
		for _, e := range v {
			n = max(n, largest(e))
		}
	case []any:
		n = len(v)
		for _, e := range v {
			n = max(n, largest(e))
		}
	}
	return n
}

// headerSize returns the size of the content header frame payload amqp091-go writes for
// m: class, weight, body size, property flags, then the properties.
func headerSize(m *backend.Message) int {
	n := 2 + 2 + 8 + 2
	short := func(s string) {
		if s != "" {
			n += 1 + len(s)
		}
	}
	short(m.ContentType)
	short(m.ContentEncoding)
	short(m.CorrelationID)
	short(m.ReplyTo)
	short(m.MessageID)
	short(m.Type)
	short(m.AppID)
	short(m.UserID)
	n += 1 + 1 + 8 + 16 // delivery mode, priority, timestamp, expiration
	if len(m.Headers) > 0 {
		n += tableSize(m.Headers)
	}
	return n
}

// tableSize returns the size of a field table as amqp091-go writes it (see table).
func tableSize(t map[string]any) int {
	n := 4
	for k, v := range t {
		n += 1 + len(k) + fieldSize(v)
	}
	return n
}

// fieldSize returns the size of a field value with its type octet.
func fieldSize(v any) int {
	switch v := v.(type) {
	case string:
		return 1 + 4 + len(v)
	case []byte:
		return 1 + 4 + len(v)
	case bool:
		return 1 + 1
	case nil:
		return 1
	case int64:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return 1 + 4
		}
	case map[string]any:
		return 1 + tableSize(v)
	case []any:
		n := 1 + 4
		for _, e := range v {
			n += fieldSize(e)
		}
		return n
	}
	return 1 + 8 // int64, float64, time.Time
}

// write writes one message and hands it to run, or answers it at once if it needs no
// confirm.
func (pc *publisher) write(p *backend.Publishing, msg amqp.Publishing, r *request) error {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return amqp.ErrClosed
	}
	immediate := false
	dc, err := pc.ch.PublishWithDeferredConfirm(p.Exchange, p.RoutingKey, p.Mandatory, immediate, msg)
	if err != nil {
		pc.mu.Unlock()
		return err
	}
	if dc == nil || !p.Confirm {
		pc.mu.Unlock()
		r.answer(nil)
		return nil
	}
	r.dc = dc
	pc.window = append(pc.window, r)
	wake := len(pc.window) == 1
	pc.mu.Unlock()
	if wake {
		select {
		case pc.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// WarmPublish opens the publishing channel ahead of the first publish.
func (c *Conn) WarmPublish(ctx context.Context) error {
	_, err := c.publisher(ctx)
	return err
}

// publisher returns the live publishing channel, opening one if needed.
func (c *Conn) publisher(ctx context.Context) (*publisher, error) {
	if pc := c.pub.Load(); pc != nil && !pc.isDead() {
		return pc, nil
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if pc := c.pub.Load(); pc != nil && !pc.isDead() { // another publish opened one meanwhile
		return pc, nil
	}
	ch, err := c.openChannel(ctx)
	if err != nil {
		return nil, err
	}
	pc := &publisher{c: c, ch: ch, confirming: !c.opts.NoConfirms, kick: make(chan struct{}, 1), dead: make(chan struct{})}
	if pc.confirming {
		noWait := false
		if err, _ := call(ctx, func() error { return ch.Confirm(noWait) }); err != nil {
			go ch.Close()
			return nil, c.channelError(err)
		}
	}
	pc.returns = ch.NotifyReturn(make(chan amqp.Return, 1024))
	pc.closes = ch.NotifyClose(make(chan *amqp.Error, 1))
	c.wg.Go(func() { pc.run(c.Done()) })
	c.pub.Store(pc)
	return pc, nil
}

func (pc *publisher) isDead() bool {
	select {
	case <-pc.dead:
		return true
	default:
		return pc.ch.IsClosed()
	}
}

// run answers written publishes as their confirms come, until the channel has closed
// and every written publish is answered, or the Conn closes.
func (pc *publisher) run(done <-chan struct{}) {
	defer pc.stop()
	for {
		pc.mu.Lock()
		var head *request
		if len(pc.window) > 0 {
			head = pc.window[0]
		}
		pc.mu.Unlock()
		var confirmed <-chan struct{}
		if head != nil {
			confirmed = head.dc.Done()
		} else if pc.ch.IsClosed() {
			return
		}
		select {
		case <-pc.kick:
		case r, ok := <-pc.returns:
			if !ok {
				pc.returns = nil // closed with the channel; a nil channel is never ready
				continue
			}
			pc.returned = append(pc.returned, r)
		case <-confirmed:
			pc.mu.Lock()
			pc.window[0] = nil
			pc.window = pc.window[1:]
			pc.mu.Unlock()
			pc.confirm(head)
		case err, ok := <-pc.closes:
			// The channel closed: its pending confirmations are done (not acked), and
			// the loop answers them. Keep the error for them.
			pc.setClose(err, ok)
		case <-done:
			return
		}
	}
}

// stop answers whatever is left when run ends, as Unavailable: written, not confirmed.
func (pc *publisher) stop() {
	defer close(pc.dead)
	pc.mu.Lock()
	pc.closed = true
	window := pc.window
	pc.window = nil
	pc.mu.Unlock()
	if !pc.ch.IsClosed() {
		pc.ch.Close()
	}
	for _, r := range window {
		r.answer(backend.Errorf(backend.Unavailable, "carrot/amqp091: the connection ended before the broker confirmed the message: %w", pc.c.gone()))
	}
}

// confirm answers a written publish whose confirmation is done.
func (pc *publisher) confirm(r *request) {
	if ret, ok := pc.claimReturn(r); ok {
		r.answer(backend.Errorf(backend.Unroutable, "carrot/amqp091: message returned by the broker: %d %s (exchange %q, routing key %q)", ret.ReplyCode, ret.ReplyText, ret.Exchange, ret.RoutingKey))
		return
	}
	if r.dc.Acked() {
		r.answer(nil)
		return
	}
	if !pc.ch.IsClosed() {
		r.answer(backend.Errorf(backend.Refused, "carrot/amqp091: the broker nacked the message (exchange %q)", r.fp.exchange))
		return
	}
	// The channel closed before the confirm came. A 404 naming this publish's exchange, or
	// a refusal of a body of this publish's size, was its fault, and it is not to be
	// sent again; anything else was not, and it may be.
	pc.noteClose()
	cause := pc.closeErr
	code := backend.Unavailable
	if culprit, named := missingExchange(cause); named && culprit == r.fp.exchange {
		code = backend.NotFound
		pc.c.known.Delete(culprit)
	}
	if size, max, ok := tooLarge(cause); ok {
		pc.c.learnMaxBody(max)
		if size == r.size {
			code = backend.TooLarge
		}
	}
	if user, ok := otherUser(cause); ok && r.userID != "" && user == r.userID {
		code = backend.Invalid
	}
	if pc.c.conn.IsClosed() && code == backend.Unavailable {
		r.answer(pc.c.gone())
		return
	}
	r.answer(backend.Errorf(code, "carrot/amqp091: the publishing channel closed before the broker confirmed the message: %w", cause))
}

// noteClose keeps why the channel closed, once amqp091-go says.
func (pc *publisher) noteClose() {
	if pc.closeErr != nil {
		return
	}
	select {
	case err, ok := <-pc.closes:
		pc.setClose(err, ok)
	default:
		if pc.ch.IsClosed() {
			pc.closeErr = amqp.ErrClosed
		}
	}
}

func (pc *publisher) setClose(err *amqp.Error, ok bool) {
	pc.closes = nil
	if pc.closeErr != nil {
		return
	}
	pc.closeErr = amqp.ErrClosed
	if ok && err != nil {
		pc.closeErr = err
	}
}

// claimReturn removes and returns the return of r's message, if it came back.
func (pc *publisher) claimReturn(r *request) (amqp.Return, bool) {
	for drained := false; !drained; {
		select {
		case ret, ok := <-pc.returns:
			if !ok {
				pc.returns = nil
				drained = true
				continue
			}
			pc.returned = append(pc.returned, ret)
		default:
			drained = true
		}
	}
	for i := range pc.returned {
		ret := &pc.returned[i]
		back := amqp.Publishing{MessageId: ret.MessageId, CorrelationId: ret.CorrelationId, ContentType: ret.ContentType, Body: ret.Body}
		if fingerprintOf(ret.Exchange, ret.RoutingKey, &back) == r.fp {
			claimed := *ret
			pc.returned = append(pc.returned[:i], pc.returned[i+1:]...)
			return claimed, true
		}
	}
	return amqp.Return{}, false
}

// publishing converts a message for amqp091-go.
func publishing(m *backend.Message) amqp.Publishing {
	p := amqp.Publishing{
		Headers:         table(m.Headers),
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Transient,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationID,
		ReplyTo:         m.ReplyTo,
		MessageId:       m.MessageID,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppId:           m.AppID,
		UserId:          m.UserID,
		Body:            m.Body,
	}
	if m.Persistent {
		p.DeliveryMode = amqp.Persistent
	}
	if m.Expiration > 0 {
		p.Expiration = strconv.FormatInt(int64(m.Expiration/time.Millisecond), 10)
	}
	return p
}

// table converts headers for amqp091-go, which writes each value with the field type of
// its Go type: integers that fit in 32 bits as int32 ('I', signed), which every client
// reads as it was sent, where an int64 ('l') is read as unsigned by some (py-amqp, for
// Kombu and Celery, reads -1 as 2^64-1); nested tables as amqp.Table ('F'), lists as
// []any ('A'), converted inside too.
func table(h map[string]any) amqp.Table {
	if len(h) == 0 {
		return nil
	}
	t := make(amqp.Table, len(h))
	for k, v := range h {
		t[k] = fieldValue(v)
	}
	return t
}

func fieldValue(v any) any {
	switch v := v.(type) {
	case int64:
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			return int32(v)
		}
	case map[string]any:
		return table(v)
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = fieldValue(e)
		}
		return l
	}
	return v
}

// tooLarge reads RabbitMQ's refusal of a body over its max_message_size ("message size N
// is larger than configured max size M"): the body's size and the limit.
func tooLarge(err error) (size, max int, ok bool) {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return 0, 0, false
	}
	_, rest, found := strings.Cut(ae.Reason, "message size ")
	if !found {
		return 0, 0, false
	}
	sizeText, rest, found := strings.Cut(rest, " ")
	if !found {
		return 0, 0, false
	}
	_, maxText, found := strings.Cut(rest, "max size ")
	if !found {
		return 0, 0, false
	}
	maxText, _, _ = strings.Cut(maxText, " ")
	size, err1 := strconv.Atoi(sizeText)
	max, err2 := strconv.Atoi(maxText)
	return size, max, err1 == nil && err2 == nil
}

// otherUser reads RabbitMQ's refusal of a message whose user-id is not the connection's
// user ("user_id property set to 'U' but authenticated user was 'V'"): U.
func otherUser(err error) (string, bool) {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return "", false
	}
	_, rest, found := strings.Cut(ae.Reason, "user_id property set to '")
	if !found {
		return "", false
	}
	user, _, found := strings.Cut(rest, "' but authenticated user was '")
	return user, found
}

// learnMaxBody lowers the known body limit to what RabbitMQ said it is.
func (c *Conn) learnMaxBody(max int) {
	for {
		cur := c.maxBody.Load()
		if int64(max) >= cur || c.maxBody.CompareAndSwap(cur, int64(max)) {
			return
		}
	}
}
