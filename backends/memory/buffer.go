package memory

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// A buffer is the broker's copy of a published message body, held by the entry of the
// queue the message went to, or shared by the entries of the queues it went to. The ack
// of the last of them gives it back for another publish to reuse, so that a message acked
// as it is delivered costs the broker no allocation for its body; entries that leave
// otherwise (dropped, dead-lettered, purged, delayed) leave it to the garbage collector.
type buffer struct {
	b    []byte
	refs atomic.Int32 // the entries that share it
}

// Bodies are pooled in buffers of a power of two bytes, from 1<<minBufferShift to
// 1<<maxBufferShift; larger ones are copied without a buffer.
const (
	minBufferShift = 6
	maxBufferShift = 16
)

var buffers [maxBufferShift - minBufferShift + 1]sync.Pool

// bufferShift returns the shift of the buffers that hold n bytes, or -1 when no pooled
// buffer does.
func bufferShift(n int) int {
	if n == 0 || n > 1<<maxBufferShift {
		return -1
	}
	return max(bits.Len(uint(n-1)), minBufferShift)
}

// copyBody returns a copy of body, never nil, in a buffer when it is of a size that is
// pooled. The buffer has no references yet.
func copyBody(body []byte) ([]byte, *buffer) {
	shift := bufferShift(len(body))
	if shift < 0 {
		c := make([]byte, len(body))
		copy(c, body)
		return c, nil
	}
	buf, _ := buffers[shift-minBufferShift].Get().(*buffer)
	if buf == nil {
		buf = &buffer{b: make([]byte, 1<<shift)}
	}
	n := copy(buf.b, body)
	return buf.b[:n:n], buf
}

// release drops the reference to its body's buffer of an entry that leaves the broker,
// and gives the buffer back to the pool with the last one.
func (e *entry) release() {
	if e.buf != nil && (!e.shared || e.buf.refs.Add(-1) == 0) {
		buffers[bufferShift(len(e.msg.Body))-minBufferShift].Put(e.buf)
	}
}
