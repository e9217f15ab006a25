package watcher

import (
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
		nsOf[i] = w.selfNS
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
		w.deniedMu.Lock()
		w.denied[pid] = true
		w.deniedMu.Unlock()
	}
	return out
}

// addRefs records the holders of listening sockets found in refs.
// It returns the pids that were found holding a socket nobody was known to
// hold before.
func (w *Watcher) addRefs(refs []sockRef) (fresh []int32) {
	for _, r := range refs {
		if w.listening[r.inode] == nil {
			continue
		}
		h := w.holders[r.inode]
		if len(h) == 0 && !slices.Contains(fresh, r.pid) {
			fresh = append(fresh, r.pid)
		}
		i, found := slices.BinarySearch(h, r.pid)
		if !found {
			w.holders[r.inode] = slices.Insert(h, i, r.pid)
		}
		w.holderFD[holderKey{r.inode, r.pid}] = r.fd
		delete(w.lost, r.inode)
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
		if st, ok := w.pids[ppid]; ok && st.scanned != w.gen && !slices.Contains(parents, ppid) {
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

type holderKey struct {
	inode uint64
	pid   int32
}

// roundRobin hands out the keys of a map in turn: a round over every key
// present when it began, then the next round. A key deleted from the map
// during a round is still handed out; callers look it up and skip it.
type roundRobin[K comparable, V any] struct {
	queue []K
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
		k, ok := w.verifyQueue.next(w.holderFD)
		if !ok {
			return
		}
		fd, ok := w.holderFD[k]
		if !ok {
			continue
		}
		h := w.holders[k.inode]
		i, found := slices.BinarySearch(h, k.pid)
		if !found {
			delete(w.holderFD, k) // stale: the socket closed, or the holder went
			continue
		}
		link, err := w.proc.fdLink(s, k.pid, fd)
		if err != nil && !isGone(err) {
			continue // not allowed to look: keep what we know
		}
		if ino, ok := parseSocketLink(link); ok && ino == k.inode {
			continue
		}
		delete(w.holderFD, k)
		if h = slices.Delete(h, i, i+1); len(h) == 0 {
			delete(w.holders, k.inode)
		} else {
			w.holders[k.inode] = h
		}
	}
}

// dropHolder forgets pid, which has exited, as a holder. A socket left with
// no holder is searched for again: someone else (a process it was passed to)
// still holds it.
func (w *Watcher) dropHolder(pid int32) {
	delete(w.procs, pid)
	for ino, h := range w.holders {
		if i, found := slices.BinarySearch(h, pid); found {
			h = slices.Delete(h, i, i+1)
			if len(h) == 0 {
				delete(w.holders, ino)
			} else {
				w.holders[ino] = h
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
	clear(w.unknown)
	urgent := false
	for ino, e := range w.listening {
		if _, ok := w.holders[ino]; ok {
			continue
		}
		if _, ok := w.lost[ino]; ok {
			continue
		}
		w.unknown[ino] = e.uid
		if e.tcp || !e.ns.ports.contains(e.port) {
			urgent = true
		}
	}
	if len(w.unknown) == 0 {
		return refs
	}
	// Ephemeral UDP sockets (clients that sent unbound) can come and go
	// every tick, and each new one would cost a search of every process.
	// Alone they are searched for at most every ephemeralSearchEvery ticks;
	// until then they stay unattributed (and policies usually ignore them).
	// (On the first tick every process was scanned already.)
	if !urgent && w.gen > 1 && w.gen-w.lastEphemeralSearch < ephemeralSearchEvery {
		return refs
	}
	w.lastEphemeralSearch = w.gen
	uids := make(map[uint32]bool)
	for _, uid := range w.unknown {
		uids[uid] = true
	}
	s := scratchPool.Get().(*scratch)
	var narrow, rest []int32
	for pid, st := range w.pids {
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
		refs = w.scan(pass, nil, refs[:0])
		for _, pid := range pass {
			st := w.pids[pid]
			st.scanned = w.gen
			w.pids[pid] = st
		}
		w.addRefs(refs)
		for ino := range w.unknown {
			if _, ok := w.holders[ino]; ok {
				delete(w.unknown, ino)
			}
		}
		if len(w.unknown) == 0 {
			return refs
		}
	}
	for ino := range w.unknown {
		w.lost[ino] = struct{}{}
	}
	return refs
}
