package carrot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/carrot-go/carrot/backend"
	"github.com/carrot-go/carrot/internal/brokerurl"
)

// Sentinel errors. Errors returned by carrot wrap one of these where one applies, so test
// for them with [errors.Is]; the broker's own error stays reachable with [errors.As].
var (
	// ErrClosed is returned by every call on a Conn, Publisher or Consumer after it closed.
	ErrClosed = errors.New("carrot: closed")
	// ErrEmpty is returned by Fetch when there is no message waiting.
	ErrEmpty = errors.New("carrot: queue is empty")
	// ErrUnknownScheme is returned by Open for a URL whose scheme no backend registered.
	ErrUnknownScheme = errors.New("carrot: unknown URL scheme")
	// ErrNotFound means the exchange or queue does not exist.
	ErrNotFound = errors.New("carrot: not found")
	// ErrMismatch means a declaration conflicts with an existing exchange or queue of the
	// same name (another kind, other flags or arguments).
	ErrMismatch = errors.New("carrot: declaration does not match the existing one")
	// ErrUnroutable means a message matched no queue, and the publisher did not allow that.
	ErrUnroutable = errors.New("carrot: message is unroutable")
	// ErrRefused means the broker would not take a message: a negative publisher confirm,
	// a rejected outcome, a full queue that refuses publishes.
	ErrRefused = errors.New("carrot: broker refused the message")
	// ErrInUse means another connection holds the resource, such as an exclusive queue.
	ErrInUse = errors.New("carrot: in use by another connection")
	// ErrTooLarge means a message body is larger than the broker accepts.
	ErrTooLarge = errors.New("carrot: message too large")
	// ErrUnavailable means the broker could not be reached; the operation may succeed later.
	ErrUnavailable = errors.New("carrot: broker unavailable")
	// ErrInvalid means an argument was not valid: a name too long, a header of an
	// unsupported type, a URL option the backend does not know.
	ErrInvalid = errors.New("carrot: invalid argument")
	// ErrAlreadySettled is returned when a message is acknowledged, requeued or rejected
	// a second time.
	ErrAlreadySettled = errors.New("carrot: message already settled")
	// ErrUnacceptable means a message's content type is not one the consumer accepts,
	// or no codec is registered for it.
	ErrUnacceptable = errors.New("carrot: content type not accepted")
	// ErrMalformed means the backend's client could not read a message the broker
	// delivered, such as one with a header of a type the client cannot parse, sent by
	// another client. [Consumer.Run] returns it, naming the queue, after the message failed
	// several deliveries in a row; the message stays at the head of its queue, and has to
	// be removed with a client that can read it (or a broker tool, such as a purge).
	ErrMalformed = errors.New("carrot: message cannot be read")
	// ErrUnsupported means the backend does not support the operation or option. It
	// wraps [errors.ErrUnsupported].
	ErrUnsupported = fmt.Errorf("carrot: %w", errors.ErrUnsupported)
	// ErrBackend means the broker or its client library failed in a way carrot has no
	// other sentinel for. The backend's own error is wrapped with it, for [errors.As];
	// a backend that returns it for a failure one of the other sentinels names has a bug.
	ErrBackend = errors.New("carrot: backend error")
)

// Error is an error from a broker operation. It wraps both the category (one of the
// sentinel errors, such as ErrNotFound) and the backend's own error, so [errors.Is] finds
// the first and [errors.As] the second.
type Error struct {
	Op   string // what carrot was doing, such as `publish to exchange "feed"`
	Kind error  // a sentinel error, ErrBackend when the backend could not classify Err
	Err  error  // the backend's error

	url string // the URL opened, whose copies in Err's text are shown redacted
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("carrot: ")
	b.WriteString(e.Op)
	if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Kind.Error(), "carrot: "))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return brokerurl.Scrub(b.String(), e.url)
}

// Unwrap returns the category and the backend's error.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// kinds maps backend error codes to the sentinel errors users test for.
var kinds = map[backend.Code]error{
	backend.Unknown:     ErrBackend,
	backend.NotFound:    ErrNotFound,
	backend.Mismatch:    ErrMismatch,
	backend.Unroutable:  ErrUnroutable,
	backend.Refused:     ErrRefused,
	backend.InUse:       ErrInUse,
	backend.TooLarge:    ErrTooLarge,
	backend.Unavailable: ErrUnavailable,
	backend.Closed:      ErrClosed,
	backend.Unsupported: ErrUnsupported,
	backend.Invalid:     ErrInvalid,
	backend.Malformed:   ErrMalformed,
}

// contextError returns the context error err wraps, unwrapped, or nil.
func contextError(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	return nil
}

// ended returns ctx's error, or context.DeadlineExceeded once its deadline has passed even
// if ctx does not say so yet: a client whose socket deadline was ctx's may fail a call a
// moment before ctx's own timer fires.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// invalidf returns an ErrInvalid error for a bad argument to op.
func invalidf(op, format string, args ...any) error {
	return &Error{Op: op, Kind: ErrInvalid, Err: fmt.Errorf(format, args...)}
}

// unsupportedf returns an ErrUnsupported error for an option the backend lacks.
func unsupportedf(op, format string, args ...any) error {
	return &Error{Op: op, Kind: ErrUnsupported, Err: fmt.Errorf(format, args...)}
}
