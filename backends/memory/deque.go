package memory

// deque is a double-ended queue of entries: FIFO order with pushBack and popFront, and
// pushFront for messages that go back to the head of their queue. It holds the entries
// themselves, not pointers to them, in a list of blocks of blockSize entries: it grows and
// shrinks a block at a time, never moves an entry once it is in, and takes its blocks from
// the broker's pool and gives them back, so that a queued message costs no allocation.
type deque struct {
	first, last *block
	n           int
	pool        *blockPool
}

// blockPool keeps emptied blocks for reuse, up to maxPooledBlocks. It is the broker's,
// guarded by its mutex.
type blockPool struct{ free []*block }

// maxPooledBlocks bounds the memory a broker keeps for queues that grow again: about 2 MiB.
const maxPooledBlocks = 256

func (p *blockPool) get() *block {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return b
	}
	return new(block)
}

// put keeps b, whose entries are all zero, for reuse.
func (p *blockPool) put(b *block) {
	if len(p.free) < maxPooledBlocks {
		b.next = nil
		p.free = append(p.free, b)
	}
}

// blockSize is the number of entries in a block.
const blockSize = 32

// block holds entries[lo:hi] of a deque.
type block struct {
	entries [blockSize]entry
	lo, hi  int
	next    *block
}

func (d *deque) len() int { return d.n }

// newBlock returns an empty block whose entries start and end at i.
func (d *deque) newBlock(i int) *block {
	b := d.pool.get()
	b.lo, b.hi, b.next = i, i, nil
	return b
}

func (d *deque) pushBack(e *entry) {
	if d.last == nil || d.last.hi == blockSize {
		b := d.newBlock(0)
		if d.last == nil {
			d.first = b
		} else {
			d.last.next = b
		}
		d.last = b
	}
	d.last.entries[d.last.hi] = *e
	d.last.hi++
	d.n++
}

func (d *deque) pushFront(e *entry) {
	if d.first == nil || d.first.lo == 0 {
		b := d.newBlock(blockSize)
		b.next = d.first
		d.first = b
		if d.last == nil {
			d.last = b
		}
	}
	d.first.lo--
	d.first.entries[d.first.lo] = *e
	d.n++
}

// front returns the entry at the head, or nil; the pointer is good until the next change.
func (d *deque) front() *entry {
	if d.n == 0 {
		return nil
	}
	return &d.first.entries[d.first.lo]
}

// popFront removes the entry at the head into e and reports whether there was one.
func (d *deque) popFront(e *entry) bool {
	if d.n == 0 {
		return false
	}
	b := d.first
	*e = b.entries[b.lo]
	b.entries[b.lo] = entry{} // the broker's copy of the body goes with the message
	b.lo++
	d.n--
	if b.lo == b.hi {
		if b == d.last { // the only block: keep it
			b.lo, b.hi = 0, 0
		} else {
			d.first = b.next
			d.pool.put(b)
		}
	}
	return true
}

// clear removes every entry and returns how many there were. Its blocks go to the
// garbage collector.
func (d *deque) clear() int {
	n := d.n
	d.first, d.last, d.n = nil, nil, 0
	return n
}
