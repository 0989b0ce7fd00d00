package amqp10

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/carrot-go/carrot/backend"
)

// A connection has room for a number of sessions at once: the broker's channel-max plus
// one (RabbitMQ 4 allows 64 by default, its session_max_per_connection). go-amqp closes
// the whole connection when a session is begun with none left, so the Conn keeps count
// and refuses a session it has no room for instead.
//
// Two things take room. The sessions the Conn opened and has not yet seen end, and the
// channel numbers lost to begins the broker never answered: go-amqp keeps such a number
// until an end for it comes, which for a begin RabbitMQ before 4.1 dropped is never.
// Only a new connection gives lost numbers back, so a Conn that runs out of room with some
// lost ends, and carrot reconnects. Sessions taken through As are the caller's: they need
// room when they begin, and are not counted after (the Conn does not see them end).
type sessions struct {
	limit int // sessions at once; 0 when the broker's channel-max could not be read

	mu      sync.Mutex
	open    map[*amqp.Session]struct{}
	lost    int
	pending int // begins under way
}

// errNoRoom is the error for a session the Conn has no room for.
func (c *Conn) errNoRoom() error {
	return backend.Errorf(backend.Unsupported, "carrot/amqp10: the broker allows %d sessions on a connection, and all are taken (each consumer, each queue fetched from, the publishing link and the management link pair have one); use another connection", c.sess.limit)
}

// How long session waits for the broker to answer a begin, attempt after attempt. RabbitMQ
// before 4.1 can drop a begin on the channel number of a session that has just ended (its
// reader still routes the number to the ended session), and go-amqp reuses the lowest free
// number at once; a begin sent again goes out on another number. A broker that answers
// none of them in all this time has stopped working, and the connection is dropped.
var beginWaits = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second}

// session opens a session on the connection, counted as the Conn's until closeSession.
func (c *Conn) session(ctx context.Context) (*amqp.Session, error) {
	return c.begin(ctx, true)
}

// begin opens a session, if there is room for it; counted says whether the Conn counts
// it as taking room until closeSession.
func (c *Conn) begin(ctx context.Context, counted bool) (*amqp.Session, error) {
	for _, wait := range beginWaits {
		if err := c.gone(); err != nil {
			return nil, err
		}
		if err := c.reserve(); err != nil {
			return nil, err
		}
		bctx, cancel := context.WithTimeout(ctx, wait)
		s, err := c.conn.NewSession(bctx, nil)
		cancel()
		c.sess.mu.Lock()
		c.sess.pending--
		switch {
		case err == nil && counted:
			c.sess.open[s] = struct{}{}
		case err != nil:
			// go-amqp keeps the number of a begin it stopped waiting for until the
			// broker ends that session, which it may never do.
			c.sess.lost++
		}
		c.sess.mu.Unlock()
		if err == nil {
			return s, nil
		}
		if gerr := c.gone(); gerr != nil {
			return nil, gerr
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		// Unanswered: the next begin goes out on another channel number.
	}
	return nil, c.drop(backend.Errorf(backend.Unavailable, "carrot/amqp10: the broker answers no session begin"))
}

// reserve takes room for a session about to begin: an error when there is none, ending
// the Conn when numbers lost to unanswered begins take some of it.
func (c *Conn) reserve() error {
	c.sess.mu.Lock()
	taken, lost := len(c.sess.open)+c.sess.lost+c.sess.pending, c.sess.lost
	if c.sess.limit == 0 || taken < c.sess.limit {
		c.sess.pending++
		c.sess.mu.Unlock()
		return nil
	}
	c.sess.mu.Unlock()
	if lost == 0 {
		return c.errNoRoom()
	}
	return c.drop(backend.Errorf(backend.Unavailable, "carrot/amqp10: %d of the connection's %d sessions are lost to begins the broker never answered; reconnecting gives them back", lost, c.sess.limit))
}

// drop ends the Conn with err, unless it ended before, and cuts its network connection
// without waiting for the broker. It returns the Conn's error.
func (c *Conn) drop(err error) error {
	c.End(err)
	c.net.Close()
	return c.Err()
}

// closeSession closes a session of the Conn in the background, without waiting for the
// broker.
func (c *Conn) closeSession(s *amqp.Session) {
	if s == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.endSession(ctx, s)
	}()
}

// endSession closes a session of the Conn, and gives back its room once the broker has
// ended it.
func (c *Conn) endSession(ctx context.Context, s *amqp.Session) error {
	err := s.Close(ctx)
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	if _, ok := c.sess.open[s]; !ok {
		return err // closed before
	}
	delete(c.sess.open, s)
	if errors.Is(err, context.DeadlineExceeded) {
		c.sess.lost++ // its number stays taken until an end the broker has not sent
	}
	return err
}

// openSniffer reads the broker's channel-max off the wire, from the open frame that
// follows the protocol headers and the SASL frames: go-amqp does not tell it. After that
// frame it passes reads through untouched.
type openSniffer struct {
	net.Conn
	done  atomic.Bool
	buf   []byte
	limit atomic.Int64 // sessions at once, 0 when unknown
}

func (s *openSniffer) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	if n > 0 && !s.done.Load() {
		s.buf = append(s.buf, p[:n]...)
		s.scan()
	}
	return n, err
}

// scan looks for the open frame in what has been read so far.
func (s *openSniffer) scan() {
	for {
		switch {
		case len(s.buf) >= 4 && string(s.buf[:4]) == "AMQP":
			if len(s.buf) < 8 {
				return
			}
			s.buf = s.buf[8:] // a protocol header
			continue
		case len(s.buf) < 8:
			return
		}
		size := binary.BigEndian.Uint32(s.buf)
		doff := int(s.buf[4]) * 4
		if size < 8 || size > 1<<20 || doff < 8 || doff > int(size) {
			s.stop(0)
			return
		}
		if len(s.buf) < int(size) {
			return
		}
		if s.buf[5] == 0 { // the first AMQP frame: open
			s.stop(sessionLimit(s.buf[doff:size]))
			return
		}
		s.buf = s.buf[size:] // a SASL frame
	}
}

func (s *openSniffer) stop(limit int) {
	s.limit.Store(int64(limit))
	s.buf = nil
	s.done.Store(true)
}

// sessionLimit reads channel-max, the fourth field of an open performative, and returns
// the sessions it allows at once; 0 if the body cannot be read.
func sessionLimit(b []byte) int {
	// A described list: descriptor 0x10 (open), then the list's constructor.
	switch {
	case len(b) >= 3 && b[0] == 0x00 && b[1] == 0x53 && b[2] == 0x10:
		b = b[3:]
	case len(b) >= 10 && b[0] == 0x00 && b[1] == 0x80 && binary.BigEndian.Uint64(b[2:10]) == 0x10:
		b = b[10:]
	default:
		return 0
	}
	var count int
	switch {
	case len(b) >= 1 && b[0] == 0x45: // list0
		b = nil
	case len(b) >= 3 && b[0] == 0xc0:
		count, b = int(b[2]), b[3:]
	case len(b) >= 9 && b[0] == 0xd0:
		count, b = int(binary.BigEndian.Uint32(b[5:9])), b[9:]
	default:
		return 0
	}
	const channelMax = 3 // container-id, hostname, max-frame-size, channel-max
	for i := 0; i < channelMax && i < count; i++ {
		n := valueSize(b)
		if n <= 0 || n > len(b) {
			return 0
		}
		b = b[n:]
	}
	if count <= channelMax || len(b) >= 1 && b[0] == 0x40 {
		return 65536 // channel-max absent or null: its default, 65535
	}
	if len(b) >= 3 && b[0] == 0x60 {
		return int(binary.BigEndian.Uint16(b[1:3])) + 1
	}
	return 0
}

// valueSize returns the size of the encoded value b starts with, for the types the first
// fields of an open performative have; 0 for any other.
func valueSize(b []byte) int {
	if len(b) == 0 {
		return 0
	}
	switch b[0] {
	case 0x40, 0x43: // null, uint0
		return 1
	case 0x52: // smalluint
		return 2
	case 0x60: // ushort
		return 3
	case 0x70: // uint
		return 5
	case 0xa1, 0xa3: // str8, sym8
		if len(b) < 2 {
			return 0
		}
		return 2 + int(b[1])
	case 0xb1, 0xb3: // str32, sym32
		if len(b) < 5 {
			return 0
		}
		return 5 + int(binary.BigEndian.Uint32(b[1:5]))
	}
	return 0
}
