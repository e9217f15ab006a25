package watcher

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// exitWatch tells which holders exited with one system call a tick: a pidfd
// per holder (pidfd_open, Linux 5.3) in an epoll set, which becomes readable
// when the process exits. A tick used to send kill(pid, 0) to every holder,
// which with a few hundred holders was the largest share of a steady look's
// system calls. Holders with no pidfd (an older kernel, a pidfd limit
// reached) are still checked with kill.
type exitWatch struct {
	on  bool            // ep is open: pidfds can be used
	ep  int             // epoll descriptor
	fds map[int32]int32 // pid -> its pidfd
	evs []unix.EpollEvent
}

// maxPidfds bounds the descriptors held for exitWatch: past it, holders
// are checked with kill.
const maxPidfds = 4096

func newExitWatch() exitWatch {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	return exitWatch{on: err == nil, ep: ep, fds: map[int32]int32{}, evs: make([]unix.EpollEvent, 64)}
}

// watch watches pid, and reports whether it does: false when no pidfd could
// be had (the caller checks pid with kill).
func (x *exitWatch) watch(pid int32) bool {
	if _, ok := x.fds[pid]; ok {
		return true
	}
	if !x.on || len(x.fds) >= maxPidfds {
		return false
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		if err == unix.ENOSYS {
			x.close() // no pidfds on this kernel: kill from now on
		}
		return false // gone already (ESRCH): kill finds it
	}
	// The event's data carries the pidfd and the pid.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd), Pad: pid}
	if err := unix.EpollCtl(x.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		return false
	}
	x.fds[pid] = int32(fd)
	return true
}

// watched reports whether pid's exit is watched.
func (x *exitWatch) watched(pid int32) bool {
	_, ok := x.fds[pid]
	return ok
}

// forget stops watching pid (closing its pidfd removes it from the set).
func (x *exitWatch) forget(pid int32) {
	if fd, ok := x.fds[pid]; ok {
		rawClose(int(fd))
		delete(x.fds, pid)
	}
}

// exited appends the watched pids that exited since the last call, and
// stops watching them. It is a raw call (see rawsys.go), with no wait.
func (x *exitWatch) exited(out []int32) []int32 {
	if !x.on || len(x.fds) == 0 {
		return out
	}
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(x.ep), uintptr(unsafe.Pointer(&x.evs[0])), uintptr(len(x.evs)), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return out
		}
		for _, ev := range x.evs[:n] {
			out = append(out, ev.Pad)
			x.forget(ev.Pad)
		}
		if int(n) < len(x.evs) {
			return out
		}
	}
}

func (x *exitWatch) close() {
	for pid := range x.fds {
		x.forget(pid)
	}
	if x.on {
		unix.Close(x.ep)
		x.on = false
	}
}

// syncExits watches the exit of every holder, and of no other process,
// from the second tick on: a one-shot snapshot (`portwatchd list`) would
// open a pidfd per holder for nothing.
func (w *Watcher) syncExits() {
	if w.gen < 2 {
		return
	}
	for pid := range w.exits.fds {
		if w.details.byPid[pid] == nil {
			w.exits.forget(pid)
		}
	}
	for pid := range w.details.byPid {
		w.exits.watch(pid)
	}
}
