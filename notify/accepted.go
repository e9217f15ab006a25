package notify

import "sync"

// acceptedMin is the least number of event ids a sink remembers as
// accepted. The daemon keeps at most 1,000 unsent events for another Send;
// while Send fails it resends all of them, so every id added since the
// oldest was first sent is among them, and twice that covers them.
const acceptedMin = 2048

// accepted remembers the ids of the events a sink has taken (written to the
// journal, or fsynced into the spool), so that Send is idempotent per sink:
// when one sink fails and the caller sends the same events again, the sinks
// that took them already skip them, and only the failed one gets them. It
// forgets the oldest ids first, keeping at least acceptedMin and at least
// twice the largest Send.
type accepted struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	order []string // ring of the ids in insertion order
	head  int      // index of the oldest id in order, once it is full
	max   int
}

func newAccepted() *accepted {
	return &accepted{ids: map[string]struct{}{}, max: acceptedMin}
}

// reserve makes room for a Send of n events, so that a retry of the same
// events still finds all of them.
func (a *accepted) reserve(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if 2*n <= a.max {
		return
	}
	// Unroll the ring so that it can grow.
	a.order = append(a.order[a.head:], a.order[:a.head]...)
	a.head = 0
	a.max = 2 * n
}

func (a *accepted) has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.ids[id]
	return ok
}

func (a *accepted) add(ids ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		if _, ok := a.ids[id]; ok {
			continue
		}
		a.ids[id] = struct{}{}
		if len(a.order) < a.max {
			a.order = append(a.order, id)
			continue
		}
		delete(a.ids, a.order[a.head])
		a.order[a.head] = id
		a.head = (a.head + 1) % len(a.order)
	}
}
