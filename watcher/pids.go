package watcher

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

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
	w.sinceFull++
	last, ok := w.lastPid()
	if w.gen == 1 || !ok || last != w.lastPidSeen || w.sinceFull >= fullReadEvery || w.opts.ProcRoot != "/proc" {
		w.lastPidSeen = last
		return true
	}
	for _, ns := range w.nss {
		if ns.conn == nil && ns.lowPid != 0 && ns.inode != w.selfNS && !alive(ns.lowPid) {
			return true
		}
	}
	for pid := range w.procs {
		if !alive(pid) {
			delete(w.pids, pid)
			w.dropHolder(pid)
		}
	}
	return false
}

// alive reports whether pid exists (kill with signal 0 sends nothing).
func alive(pid int32) bool {
	return unix.Kill(int(pid), 0) != unix.ESRCH
}

// netnsRecheckEvery is within how many ticks the network namespace of every
// known process is read again. A process may enter another namespace
// without a new pid (unshare -n, or setns, then exec): only this notices the
// namespace when nothing else lives in it. A readlink of /proc/PID/ns/net
// costs 1 to 3 µs, so the reads are spread evenly over the ticks: with
// 1,000 processes, about 34 a tick (under 0.1 ms), the cost of reading them
// all on the full read every fullReadEvery ticks without its spike.
const netnsRecheckEvery = fullReadEvery

// recheckNetns reads again the network namespace of the next known pids, in
// ascending order from where the last tick stopped, wrapping around, so
// that every one is read within netnsRecheckEvery ticks.
func (w *Watcher) recheckNetns() {
	pids := w.pidList // ascending: the order of /proc
	if len(pids) == 0 {
		return
	}
	n := (len(pids) + netnsRecheckEvery - 1) / netnsRecheckEvery
	i, _ := slices.BinarySearch(pids, w.netnsNext)
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	for range n {
		if i >= len(pids) {
			i = 0
		}
		pid := pids[i]
		i++
		st, ok := w.pids[pid]
		if !ok || st.netns == 0 || pid == w.selfPid || st.scanned == w.gen {
			// Gone, unreadable, ourselves (see scanOne), or read
			// this tick.
			continue
		}
		if ino, err := w.proc.netnsOf(s, pid); err == nil && ino != st.netns {
			st.netns = ino
			w.pids[pid] = st
		}
	}
	if i < len(pids) {
		w.netnsNext = pids[i]
	} else {
		w.netnsNext = 0
	}
}

// lastPid returns the last pid the kernel allocated in our pid namespace.
func (w *Watcher) lastPid() (int, bool) {
	fd, err := openat(w.proc.fd, &loadavgPath[0], unix.O_RDONLY)
	if err != nil {
		return 0, false
	}
	var buf [128]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil {
		return 0, false
	}
	return parseLoadavgLastPid(buf[:max(n, 0)])
}

var loadavgPath = []byte("loadavg\x00")

// readPids reads the pid list from /proc, appends the pids not seen before
// to newPids, and forgets the pids that have gone.
func (w *Watcher) readPids(newPids []int32) ([]int32, error) {
	w.sinceFull = 0
	s := scratchPool.Get().(*scratch)
	pids, err := w.proc.pids(s, w.pidList[:0])
	scratchPool.Put(s)
	if err != nil {
		return newPids, fmt.Errorf("watcher: %w", err)
	}
	w.pidList = pids
	for _, pid := range pids {
		if st, ok := w.pids[pid]; ok {
			st.gen = w.gen
			w.pids[pid] = st
		} else {
			newPids = append(newPids, pid)
		}
	}
	for pid, st := range w.pids {
		if st.gen != w.gen {
			delete(w.pids, pid)
			delete(w.denied, pid)
			if w.procs[pid] != nil {
				w.dropHolder(pid)
			}
		}
	}
	return newPids, nil
}
