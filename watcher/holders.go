package watcher

import (
	"cmp"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// scan reads the descriptors (and, when nsOf is not nil, the network
// namespace) of pids on up to four goroutines. nsOf[i] is set to 1 for a
// process that has gone.
func (w *Watcher) scan(pids []int32, nsOf []uint64, out []sockRef) []sockRef {
	workers := min(runtime.GOMAXPROCS(0), 4, (len(pids)+31)/32)
	if workers <= 1 {
		s := scratchPool.Get().(*scratch)
		defer scratchPool.Put(s)
		for i, pid := range pids {
			out = w.scanOne(s, pid, nsOf, i, out)
		}
		return out
	}
	const chunk = 16
	var (
		next    atomic.Int64
		mu      sync.Mutex
		wg      sync.WaitGroup
		results = make([][]sockRef, workers)
	)
	for k := range workers {
		wg.Go(func() {
			s := scratchPool.Get().(*scratch)
			defer scratchPool.Put(s)
			var mine []sockRef
			if k == 0 {
				mine = out
			}
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(pids) {
					break
				}
				for i := lo; i < min(lo+chunk, len(pids)); i++ {
					mine = w.scanOne(s, pids[i], nsOf, i, mine)
				}
			}
			mu.Lock()
			results[k] = mine
			mu.Unlock()
		})
	}
	wg.Wait()
	out = results[0]
	for _, r := range results[1:] {
		out = append(out, r...)
	}
	return out
}

func (w *Watcher) scanOne(s *scratch, pid int32, nsOf []uint64, i int, out []sockRef) []sockRef {
	if nsOf != nil && pid == w.selfPid {
		// Our main thread may be parked in another namespace (see New).
		nsOf[i] = w.ns.self
	} else if nsOf != nil {
		ino, err := w.proc.netnsOf(s, pid)
		if err != nil && isGone(err) {
			nsOf[i] = 1
			return out
		}
		nsOf[i] = ino
	}
	out, err := w.proc.scanFDs(s, pid, out)
	if err != nil && !isGone(err) {
		w.pids.deniedMu.Lock()
		w.pids.denied[pid] = true
		w.pids.deniedMu.Unlock()
	}
	return out
}

// addRefs records the holders of listening sockets found in refs.
// It returns the pids that were found holding a socket nobody was known to
// hold before.
func (w *Watcher) addRefs(refs []sockRef) (fresh []int32) {
	for _, r := range refs {
		if w.holders.listening[r.inode] == nil {
			continue
		}
		h := w.holders.byInode[r.inode]
		if len(h) == 0 && !slices.Contains(fresh, r.pid) {
			fresh = append(fresh, r.pid)
		}
		i, found := slices.BinarySearch(h, r.pid)
		if !found {
			w.holders.byInode[r.inode] = slices.Insert(h, i, r.pid)
			w.holders.touch()
		}
		w.holders.fd[holderKey{r.inode, r.pid}] = r.fd
		delete(w.holders.lost, r.inode)
	}
	return fresh
}

// searchParents scans the parents of new processes that hold new sockets,
// when the parent is not new itself. The usual way a new process comes to
// hold a socket is to inherit it from the process that made it, and that
// process (a launcher, a master) is still a holder. Only new pids have been
// scanned at this point, so without this the parent would be missed: the
// socket is no longer unknown.
func (w *Watcher) searchParents(fresh []int32, refs []sockRef) []sockRef {
	var parents []int32
	for _, pid := range fresh {
		b, err := os.ReadFile(filepath.Join(w.opts.ProcRoot, strconv.Itoa(int(pid)), "stat"))
		if err != nil {
			continue
		}
		ppid, ok := parseStatPPid(b)
		if !ok {
			continue
		}
		if st, ok := w.pids.byPid[ppid]; ok && st.scanned != w.gen && !slices.Contains(parents, ppid) {
			parents = append(parents, ppid)
		}
	}
	if len(parents) == 0 {
		return refs
	}
	refs = w.scan(parents, nil, refs)
	w.addRefs(refs)
	return refs
}

// holderCache maps each listening socket to the pids that hold it, and
// what finding them needs from tick to tick.
type holderCache struct {
	byInode map[uint64][]int32 // listening socket inode -> holder pids, ascending
	// fd is a descriptor through which each holder was seen holding the
	// socket, rechecked a few at a time so that a holder that closed its
	// copy (a launcher that handed the socket on) is dropped.
	fd          map[holderKey]int32
	verifyQueue roundRobin[holderKey, int32] // fd entries still to check this round
	lost        map[uint64]struct{}          // listening inodes searched for and not found
	// gen counts the changes to byInode: those that use it remember the
	// gen they last saw (readHolders, sameListeners).
	gen uint64

	lastEphemeralSearch uint32 // tick of the last search set off by ephemeral UDP alone

	// Buffers reused across ticks.
	refs      []sockRef
	listening map[uint64]*sockEntry // this tick's listening sockets by inode
	unknown   map[uint64]uint32     // unknown inode -> socket uid
}

func newHolderCache() holderCache {
	return holderCache{
		byInode: make(map[uint64][]int32),
		fd:      make(map[holderKey]int32),
		// A holder's sockets one after the other: the second readlink
		// of /proc/PID/fd/N finds the process, its fd directory and
		// their dentries in the caches the first one filled (at the
		// idle daemon's pace, a look every reconcile_interval, they are
		// cold otherwise).
		verifyQueue: roundRobin[holderKey, int32]{order: func(a, b holderKey) int {
			return cmp.Or(cmp.Compare(a.pid, b.pid), cmp.Compare(a.inode, b.inode))
		}},
		lost:      make(map[uint64]struct{}),
		listening: make(map[uint64]*sockEntry),
		unknown:   make(map[uint64]uint32),
	}
}

// touch records a change to byInode.
func (c *holderCache) touch() { c.gen++ }

type holderKey struct {
	inode uint64
	pid   int32
}

// roundRobin hands out the keys of a map in turn: a round over every key
// present when it began, then the next round. A key deleted from the map
// during a round is still handed out; callers look it up and skip it.
type roundRobin[K comparable, V any] struct {
	queue []K
	// order, when set, is the order of each round.
	order func(a, b K) int
}

// next returns the next key of m, or false when m is empty.
func (q *roundRobin[K, V]) next(m map[K]V) (K, bool) {
	if len(q.queue) == 0 {
		for k := range m {
			q.queue = append(q.queue, k)
		}
		if len(q.queue) == 0 {
			var zero K
			return zero, false
		}
		if q.order != nil {
			// Handed out from the end.
			slices.SortFunc(q.queue, func(a, b K) int { return q.order(b, a) })
		}
	}
	k := q.queue[len(q.queue)-1]
	q.queue = q.queue[:len(q.queue)-1]
	return k, true
}

// verifyPerTick is how many cached (socket, holder) pairs a tick checks
// still hold: a readlink each.
const verifyPerTick = 16

// verifyHolders checks a few cached holders, in turn, against their
// descriptor. A holder that no longer has it is dropped; a socket left with
// none is then searched for again, as a new one would be.
func (w *Watcher) verifyHolders() {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	for range verifyPerTick {
		// A round over every pair, so each is checked within
		// len/verifyPerTick ticks.
		k, ok := w.holders.verifyQueue.next(w.holders.fd)
		if !ok {
			return
		}
		fd, ok := w.holders.fd[k]
		if !ok {
			continue
		}
		h := w.holders.byInode[k.inode]
		i, found := slices.BinarySearch(h, k.pid)
		if !found {
			delete(w.holders.fd, k) // stale: the socket closed, or the holder went
			continue
		}
		link, err := w.holderLink(s, k.pid, "fd/", fd)
		if err != nil && !isGone(err) {
			continue // not allowed to look: keep what we know
		}
		if ino, ok := parseSocketLink(link); ok && ino == k.inode {
			continue
		}
		delete(w.holders.fd, k)
		w.holders.touch()
		if h = slices.Delete(h, i, i+1); len(h) == 0 {
			delete(w.holders.byInode, k.inode)
		} else {
			w.holders.byInode[k.inode] = h
		}
	}
}

// dropHolder forgets pid, which has exited, as a holder. A socket left with
// no holder is searched for again: someone else (a process it was passed to)
// still holds it.
func (w *Watcher) dropHolder(pid int32) {
	w.details.drop(pid)
	for ino, h := range w.holders.byInode {
		if i, found := slices.BinarySearch(h, pid); found {
			w.holders.touch()
			h = slices.Delete(h, i, i+1)
			if len(h) == 0 {
				delete(w.holders.byInode, ino)
			} else {
				w.holders.byInode[ino] = h
			}
		}
	}
}

// ephemeralSearchEvery is how often (in ticks) unknown ephemeral UDP
// sockets alone may set off a search.
const ephemeralSearchEvery = 10

// searchUnknown looks for the holders of listening sockets never seen
// before among the processes not scanned this tick: first those whose /proc
// owner is the socket's uid (whoever created a socket usually holds it),
// then all the rest. What is still not found is unattributed.
func (w *Watcher) searchUnknown(refs []sockRef) []sockRef {
	clear(w.holders.unknown)
	// The unknown sockets are the listening ones neither held nor lost.
	// byInode and lost hold only listening inodes (Snapshot drops the
	// others, addRefs adds no other) and never the same one (addRefs
	// takes a found socket out of lost; only unknown ones go in): when
	// their sizes add up to the listening sockets', none is unknown, and
	// the steady tick skips a lookup of every listener in both.
	if len(w.holders.byInode)+len(w.holders.lost) == len(w.holders.listening) {
		return refs
	}
	urgent := false
	for ino, e := range w.holders.listening {
		if _, ok := w.holders.byInode[ino]; ok {
			continue
		}
		if _, ok := w.holders.lost[ino]; ok {
			continue
		}
		w.holders.unknown[ino] = e.uid
		if e.tcp || !e.ns.ports.contains(e.port) {
			urgent = true
		}
	}
	if len(w.holders.unknown) == 0 {
		return refs
	}
	// Ephemeral UDP sockets (clients that sent unbound) can come and go
	// every tick, and each new one would cost a search of every process.
	// Alone they are searched for at most every ephemeralSearchEvery ticks;
	// until then they stay unattributed (and policies usually ignore them).
	// (On the first tick every process was scanned already.)
	if !urgent && w.gen > 1 && w.gen-w.holders.lastEphemeralSearch < ephemeralSearchEvery {
		return refs
	}
	w.holders.lastEphemeralSearch = w.gen
	uids := make(map[uint32]bool)
	for _, uid := range w.holders.unknown {
		uids[uid] = true
	}
	s := scratchPool.Get().(*scratch)
	var narrow, rest []int32
	for pid, st := range w.pids.byPid {
		if st.scanned == w.gen {
			continue
		}
		if uid, err := w.proc.ownerUID(s, pid); err == nil && uids[uid] {
			narrow = append(narrow, pid)
		} else if err == nil {
			rest = append(rest, pid)
		}
	}
	scratchPool.Put(s)
	for _, pass := range [][]int32{narrow, rest} {
		if len(pass) == 0 {
			continue
		}
		refs = w.rescan(pass, refs[:0])
		for ino := range w.holders.unknown {
			if _, ok := w.holders.byInode[ino]; ok {
				delete(w.holders.unknown, ino)
			}
		}
		if len(w.holders.unknown) == 0 {
			return refs
		}
	}
	for ino := range w.holders.unknown {
		w.holders.lost[ino] = struct{}{}
	}
	return refs
}

// rescan reads the descriptors of pids, known processes, again, records
// them as read this tick and what they hold, and returns refs with what
// they hold appended.
func (w *Watcher) rescan(pids []int32, refs []sockRef) []sockRef {
	refs = w.scan(pids, nil, refs)
	for _, pid := range pids {
		st := w.pids.byPid[pid]
		st.scanned = w.gen
		w.pids.byPid[pid] = st
	}
	w.addRefs(refs)
	return refs
}
