package memory

// deque is a double-ended queue of entries on a ring buffer: FIFO order with pushBack and
// popFront, and pushFront for messages that go back to the head of their queue.
type deque struct {
	buf  []*entry
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) grow() {
	if d.n < len(d.buf) {
		return
	}
	buf := make([]*entry, max(8, 2*len(d.buf)))
	for i := range d.n {
		buf[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = buf, 0
}

func (d *deque) pushBack(e *entry) {
	d.grow()
	d.buf[(d.head+d.n)%len(d.buf)] = e
	d.n++
}

func (d *deque) pushFront(e *entry) {
	d.grow()
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = e
	d.n++
}

// front returns the entry at the head, or nil.
func (d *deque) front() *entry {
	if d.n == 0 {
		return nil
	}
	return d.buf[d.head]
}

// popFront removes and returns the entry at the head, or nil.
func (d *deque) popFront() *entry {
	if d.n == 0 {
		return nil
	}
	e := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	if d.n == 0 {
		d.head = 0
	}
	return e
}

// clear removes every entry and returns how many there were.
func (d *deque) clear() int {
	n := d.n
	*d = deque{}
	return n
}
