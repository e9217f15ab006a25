package watcher

import (
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exitWatch tells which holders exited with one system call a tick: a pidfd
// per holder (pidfd_open, Linux 5.3) in an epoll set, which becomes readable
// when the process exits. A tick used to send kill(pid, 0) to every holder,
// which with a few hundred holders was the largest share of a steady look's
// system calls. Holders with no pidfd (an older kernel, a pidfd limit
// reached) are still checked with kill.
//
// It also keeps each holder's /proc/PID directory open (O_PATH): the
// rolling re-checks of a holder's executable and descriptors read
// "exe" and "fd/N" from it, which costs half of a lookup from /proc on
// (holderPath), and can never read another process that took the pid.
type exitWatch struct {
	on  bool // ep is open: pidfds can be used
	ep  int  // epoll descriptor
	fds map[int32]holderFDs
	evs []unix.EpollEvent
	err error // why the last pid was not watched, for the tests
	// synced is the holderDetails.gen syncExits last matched fds to.
	synced uint64
}

// holderFDs are the descriptors held for one holder.
type holderFDs struct {
	pidfd int32
	dir   int32 // its /proc directory, O_PATH; -1 when it could not be opened
}

// maxPidfds bounds the holders exitWatch watches (two descriptors each,
// under the limit Go raises to the hard one at start): past it, holders are
// checked with kill and read from /proc.
const maxPidfds = 4096

func newExitWatch() exitWatch {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	return exitWatch{on: err == nil, ep: ep, fds: map[int32]holderFDs{}, evs: make([]unix.EpollEvent, 64)}
}

// watch watches pid, and reports whether it does: false when no pidfd could
// be had (the caller checks pid with kill). procfd is the /proc the pid is
// read from.
func (x *exitWatch) watch(pid int32, procfd int) bool {
	if _, ok := x.fds[pid]; ok {
		return true
	}
	if !x.on || len(x.fds) >= maxPidfds {
		return false
	}
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		x.err = fmt.Errorf("pidfd_open %d: %w", pid, err)
		if err == unix.ENOSYS {
			x.close() // no pidfds on this kernel: kill from now on
		}
		return false // gone already (ESRCH): kill finds it
	}
	// The event's data carries the pidfd and the pid.
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd), Pad: pid}
	if err := unix.EpollCtl(x.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		x.err = fmt.Errorf("epoll_ctl %d: %w", pid, err)
		unix.Close(fd)
		return false
	}
	h := holderFDs{pidfd: int32(fd), dir: -1}
	var buf [16]byte
	name := append(strconv.AppendInt(buf[:0], int64(pid), 10), 0)
	if dir, err := openat(procfd, &name[0], unix.O_PATH|unix.O_DIRECTORY); err == nil {
		h.dir = int32(dir)
	}
	x.fds[pid] = h
	return true
}

// watched reports whether pid's exit is watched.
func (x *exitWatch) watched(pid int32) bool {
	_, ok := x.fds[pid]
	return ok
}

// forget stops watching pid (closing its pidfd removes it from the set).
func (x *exitWatch) forget(pid int32) {
	if h, ok := x.fds[pid]; ok {
		rawClose(int(h.pidfd))
		if h.dir >= 0 {
			rawClose(int(h.dir))
		}
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
// from the second tick on (a one-shot snapshot, `portwatchd list`, would
// open a pidfd per holder for nothing), when the holders changed.
func (w *Watcher) syncExits() {
	if w.gen < 2 || w.details.gen == w.exits.synced {
		return
	}
	w.exits.synced = w.details.gen
	for pid := range w.exits.fds {
		if w.details.byPid[pid] == nil {
			w.exits.forget(pid)
		}
	}
	for pid := range w.details.byPid {
		w.exits.watch(pid, w.proc.fd)
	}
}

// holderPath writes into s.path the path of pid's /proc entry suffix (then
// num, when num >= 0), relative to the directory it returns: the holder's
// /proc directory when held open (exitWatch), else /proc.
func (w *Watcher) holderPath(s *scratch, pid int32, suffix string, num int32) (int, *byte) {
	dir, b := w.proc.fd, s.path[:0]
	if h, ok := w.exits.fds[pid]; ok && h.dir >= 0 {
		dir = int(h.dir)
	} else {
		b = strconv.AppendInt(b, int64(pid), 10)
		b = append(b, '/')
	}
	b = append(b, suffix...)
	if num >= 0 {
		b = strconv.AppendInt(b, int64(num), 10)
	}
	b = append(b, 0)
	return dir, &b[0]
}

// holderLink reads the link suffix (then num, when num >= 0) of pid's /proc
// entry into s.link.
func (w *Watcher) holderLink(s *scratch, pid int32, suffix string, num int32) ([]byte, error) {
	dir, path := w.holderPath(s, pid, suffix, num)
	n, err := readlinkat(dir, path, s.link[:])
	if err != nil {
		return nil, err
	}
	return s.link[:n], nil
}

// holderExeID returns the id of the file /proc/PID/exe refers to (the file
// the process runs, whatever its path).
func (w *Watcher) holderExeID(s *scratch, pid int32) (fileID, error) {
	var st unix.Stat_t
	dir, path := w.holderPath(s, pid, "exe", -1)
	if err := fstatat(dir, path, &st, unix.AT_NO_AUTOMOUNT); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}
