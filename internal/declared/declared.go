// Package declared records the exchanges, queues and bindings a connection declared, for
// the backends that declare them again after reconnecting to a broker that lost them.
package declared

import (
	"sync"

	"github.com/carrot-go/carrot/backend"
)

// Topology is what a connection declared. Its zero value is empty and ready; it is safe
// for concurrent use.
type Topology struct {
	mu        sync.Mutex
	exchanges map[string]backend.Exchange
	queues    map[string]backend.Queue
	bindings  map[backend.Binding]struct{}
}

// AddExchange records x, unless it is a passive declaration (a check, nothing to
// declare again).
func (t *Topology) AddExchange(x backend.Exchange) {
	if x.Passive {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.exchanges == nil {
		t.exchanges = make(map[string]backend.Exchange)
	}
	t.exchanges[x.Name] = x
}

// AddQueue records q, unless it is a passive declaration.
func (t *Topology) AddQueue(q backend.Queue) {
	if q.Passive {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.queues == nil {
		t.queues = make(map[string]backend.Queue)
	}
	t.queues[q.Name] = q
}

// AddBinding records b.
func (t *Topology) AddBinding(b backend.Binding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bindings == nil {
		t.bindings = make(map[backend.Binding]struct{})
	}
	t.bindings[b] = struct{}{}
}

// Queue returns the recorded queue of that name.
func (t *Topology) Queue(name string) (backend.Queue, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q, ok := t.queues[name]
	return q, ok
}

// DeleteExchange forgets an exchange that is gone, with its bindings.
func (t *Topology) DeleteExchange(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.exchanges, name)
	for b := range t.bindings {
		if b.Exchange == name {
			delete(t.bindings, b)
		}
	}
}

// DeleteQueue forgets a queue that is gone, with its bindings.
func (t *Topology) DeleteQueue(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.queues, name)
	for b := range t.bindings {
		if b.Queue == name {
			delete(t.bindings, b)
		}
	}
}

// DeleteBinding forgets a binding that is gone.
func (t *Topology) DeleteBinding(b backend.Binding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.bindings, b)
}

// Snapshot returns what is recorded, in the order to declare it again: exchanges, then
// queues, then the bindings between them.
func (t *Topology) Snapshot() ([]backend.Exchange, []backend.Queue, []backend.Binding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	exchanges := make([]backend.Exchange, 0, len(t.exchanges))
	for _, x := range t.exchanges {
		exchanges = append(exchanges, x)
	}
	queues := make([]backend.Queue, 0, len(t.queues))
	for _, q := range t.queues {
		queues = append(queues, q)
	}
	bindings := make([]backend.Binding, 0, len(t.bindings))
	for b := range t.bindings {
		bindings = append(bindings, b)
	}
	return exchanges, queues, bindings
}
