package watcher

import (
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// pidTable is what the watcher knows of the pids in /proc.
type pidTable struct {
	byPid  map[int32]pidState
	list   []int32 // the pids of the last full read, ascending
	fresh  []int32 // buffer: the pids new this tick
	exited []int32 // buffer: the holders exitWatch found exited

	lastSeen  int // last allocated pid at the last full read of /proc
	sinceFull int // ticks since then
	// loadavg is /proc/loadavg held open (when loadavgOpen), read again
	// from offset 0 at each tick: a seq file starts over there, and the
	// open and close were two of the three system calls of the read.
	loadavg     int
	loadavgOpen bool
	netnsNext   int32 // the pid whose network namespace recheckNetns reads next
	// hinted are the pids whose namespace the next tick reads again (Recheck),
	// and eventDriven says the caller hints every listener's process
	// (SetEventDriven).
	hinted      []int32
	eventDriven bool

	// denied holds the pids whose descriptors we may not read; while one
	// lives, snapshots are partial. Scans write it from several goroutines.
	denied   map[int32]bool
	deniedMu sync.Mutex
}

type pidState struct {
	gen     uint32 // last tick the pid was in /proc
	scanned uint32 // last tick its descriptors were read
	netns   uint64 // 0 when unknown (not allowed to read)
}

// fullReadEvery bounds how many ticks may pass without reading /proc in
// full; such a read is what notices idle processes and namespaces gone.
const fullReadEvery = 30

// needFullRead decides whether this tick reads the pid list from /proc. That
// read costs about a microsecond per process in the kernel, so a tick skips
// it when no process was created since the last one: the kernel's last
// allocated pid (the last field of /proc/loadavg) has not moved, no pid we
// rely on (a holder, a process we read a namespace through) has exited, and
// the last full read is recent. Exited holders are then dropped here.
func (w *Watcher) needFullRead() bool {
	w.pids.sinceFull++
	// The exits the pidfds told are taken first, on every tick, and one
	// sets off a full read: a holder whose pid a new process took since is
	// then new to it (and scanned), where it would pass for the old holder.
	w.pids.exited = w.exits.exited(w.pids.exited[:0])
	for _, pid := range w.pids.exited {
		w.forgetPid(pid)
	}
	last, ok := w.lastPid()
	if w.gen == 1 || !ok || last != w.pids.lastSeen || len(w.pids.exited) > 0 || w.pids.sinceFull >= fullReadEvery || w.opts.ProcRoot != "/proc" {
		w.pids.lastSeen = last
		return true
	}
	for _, ns := range w.ns.byInode {
		if ns.conn == nil && ns.lowPid != 0 && ns.inode != w.ns.self && !alive(ns.lowPid) {
			return true
		}
	}
	for pid := range w.details.byPid {
		if !w.exits.watched(pid) && !alive(pid) {
			w.forgetPid(pid)
		}
	}
	return false
}

// forgetPid forgets pid, which has exited: what the process table knows of
// it and, for a holder, what it held.
func (w *Watcher) forgetPid(pid int32) {
	delete(w.pids.byPid, pid)
	delete(w.pids.denied, pid)
	if w.details.byPid[pid] != nil {
		w.dropHolder(pid)
	}
}

// netnsRecheckEvery is within how many ticks the network namespace of every
// known process is read again. A process may enter another namespace
// without a new pid (unshare -n, or setns, then exec): only this notices the
// namespace when nothing else lives in it. A readlink of /proc/PID/ns/net
// costs 1 to 3 µs, so the reads are spread evenly over the ticks: with
// 1,000 processes, about 34 a tick (under 0.1 ms), the cost of reading them
// all on the full read every fullReadEvery ticks without its spike.
const netnsRecheckEvery = fullReadEvery

// netnsRecheckEventDriven is netnsRecheckEvery when the caller is told of
// every listener as it opens (eBPF) and hints its process (Recheck): a
// namespace entered without a new pid is then read at the first listener
// opened in it, and the round only backs the hints up (a listener whose
// event was lost, one made before the programs loaded). At one tick per
// reconcile_interval (10s) a round is half an hour, a sixth of the readlinks
// of a tick.
const netnsRecheckEventDriven = 6 * netnsRecheckEvery

// Recheck has the next Snapshot read again the network namespace of pids
// (those the kernel said opened a listener): a known process that entered
// a namespace without a new pid is then found at once, not at the end of a
// round of recheckNetns.
func (w *Watcher) Recheck(pids []int32) {
	w.pids.hinted = append(w.pids.hinted, pids...)
}

// SetEventDriven tells the watcher whether its caller hints, with Recheck,
// the process of every listener as it opens. The rolling re-check of every
// process's namespace then runs six times slower.
func (w *Watcher) SetEventDriven(on bool) {
	w.pids.eventDriven = on
}

// recheckNetns reads again the network namespace of the hinted pids, and
// of the next known pids, in ascending order from where the last tick
// stopped, wrapping around, so that every one is read within
// netnsRecheckEvery ticks (netnsRecheckEventDriven when event-driven).
func (w *Watcher) recheckNetns() {
	pids := w.pids.list // ascending: the order of /proc
	if len(pids) == 0 && len(w.pids.hinted) == 0 {
		return
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	slices.Sort(w.pids.hinted) // a storm of listeners hints one pid many times
	for _, pid := range slices.Compact(w.pids.hinted) {
		w.recheckOne(s, pid)
	}
	w.pids.hinted = w.pids.hinted[:0]
	if len(pids) == 0 {
		return
	}
	every := netnsRecheckEvery
	if w.pids.eventDriven {
		every = netnsRecheckEventDriven
	}
	n := (len(pids) + every - 1) / every
	i, _ := slices.BinarySearch(pids, w.pids.netnsNext)
	for range n {
		if i >= len(pids) {
			i = 0
		}
		w.recheckOne(s, pids[i])
		i++
	}
	if i < len(pids) {
		w.pids.netnsNext = pids[i]
	} else {
		w.pids.netnsNext = 0
	}
}

// recheckOne reads pid's network namespace again.
func (w *Watcher) recheckOne(s *scratch, pid int32) {
	st, ok := w.pids.byPid[pid]
	if !ok || st.netns == 0 || pid == w.selfPid || st.scanned == w.gen {
		// Gone, unreadable, ourselves (see scanOne), or read this tick.
		return
	}
	if ino, err := w.proc.netnsOf(s, pid); err == nil && ino != st.netns {
		st.netns = ino
		w.pids.byPid[pid] = st
	}
}

// lastPid returns the last pid the kernel allocated in our pid namespace.
func (w *Watcher) lastPid() (int, bool) {
	if !w.pids.loadavgOpen {
		fd, err := openat(w.proc.fd, &loadavgPath[0], unix.O_RDONLY)
		if err != nil {
			return 0, false
		}
		w.pids.loadavg, w.pids.loadavgOpen = fd, true
	}
	var buf [128]byte
	n, err := rawPread(w.pids.loadavg, buf[:], 0)
	if err != nil {
		return 0, false
	}
	return parseLoadavgLastPid(buf[:max(n, 0)])
}

// closeLoadavg closes /proc/loadavg if lastPid opened it.
func (w *Watcher) closeLoadavg() {
	if w.pids.loadavgOpen {
		rawClose(w.pids.loadavg)
		w.pids.loadavgOpen = false
	}
}

var loadavgPath = []byte("loadavg\x00")

// readPids reads the pid list from /proc, appends the pids not seen before
// to newPids, and forgets the pids that have gone.
func (w *Watcher) readPids(newPids []int32) ([]int32, error) {
	w.pids.sinceFull = 0
	s := scratchPool.Get().(*scratch)
	pids, err := w.proc.pids(s, w.pids.list[:0])
	scratchPool.Put(s)
	if err != nil {
		return newPids, fmt.Errorf("watcher: %w", err)
	}
	w.pids.list = pids
	for _, pid := range pids {
		if st, ok := w.pids.byPid[pid]; ok {
			st.gen = w.gen
			w.pids.byPid[pid] = st
		} else {
			newPids = append(newPids, pid)
		}
	}
	for pid, st := range w.pids.byPid {
		if st.gen != w.gen {
			w.forgetPid(pid)
		}
	}
	return newPids, nil
}
