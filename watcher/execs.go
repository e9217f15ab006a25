package watcher

import "slices"

// Holders that exec'd. An exec keeps the pid and the descriptors that are
// not close-on-exec: the same pid may go on holding a socket as another
// program (a service exploited into a shell that keeps its listener), or
// stop holding it (most listening sockets are close-on-exec). Without
// help the watcher finds an exec by its rolling re-check of each holder's
// executable (readHolders), recheckPerTick holders a tick; with the
// kernel's exec events (package ebpf, KindExec) its caller tells it at
// once (Exec), and the rolling re-check runs slower (SetExecEvents).

// recheckPerTickExecEvents is recheckPerTick while exec events are told:
// the rolling re-check is left what they do not tell (an executable
// deleted or replaced on disk; an event lost, or a holder's exec before
// the kernel was told to report it).
const recheckPerTickExecEvents = 4

// Exec has the next Snapshot read pids again as if they were new, the
// processes the kernel said exec'd: their descriptors (which listening
// sockets they still hold) and their details (executable, comm, command
// line, flags).
func (w *Watcher) Exec(pids []int32) {
	w.details.execed = append(w.details.execed, pids...)
}

// SetExecEvents tells the watcher whether its caller tells it, with Exec,
// of the exec of every holder. The rolling re-check of the holders'
// executables then checks recheckPerTickExecEvents a tick.
func (w *Watcher) SetExecEvents(on bool) {
	w.details.execEvents = on
}

// rescanExeced reads again the descriptors of the known processes that
// exec'd, and forgets what they held and their details, which readHolders
// then reads again. A process not known, or read this tick, is left: its
// read is new already.
func (w *Watcher) rescanExeced(refs []sockRef) []sockRef {
	if len(w.details.execed) == 0 {
		return refs
	}
	slices.Sort(w.details.execed)
	pids := w.details.execed[:0]
	for _, pid := range slices.Compact(w.details.execed) {
		if st, ok := w.pids.byPid[pid]; !ok || st.scanned == w.gen {
			continue
		}
		w.dropHolder(pid)
		pids = append(pids, pid)
	}
	w.details.execed = pids[:0]
	if len(pids) == 0 {
		return refs
	}
	return w.rescan(pids, refs)
}
