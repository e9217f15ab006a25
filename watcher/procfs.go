package watcher

import (
	"errors"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the hot path of attribution: reading every /proc/PID/fd. It
// avoids allocations and path building: directories are read with getdents64
// into a reused buffer, links are read with readlinkat relative to the open
// directory, using the NUL-terminated names the kernel put in that buffer.

// procDir is an open /proc (or a fixture tree standing in for it).
type procDir struct {
	root    string
	fd      int
	noProbe bool         // always list /proc/PID/fd (tests compare both ways)
	listed  atomic.Int64 // scans that listed the directory (for tests)
}

func openProc(root string) (*procDir, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	return &procDir{root: root, fd: fd}, nil
}

func (p *procDir) Close() error { return unix.Close(p.fd) }

// scratch holds the buffers one scanning goroutine reuses.
type scratch struct {
	dirents [32 << 10]byte
	link    [4096]byte // PATH_MAX
	path    [64]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// pids appends the numeric entries of /proc: the thread group ids.
func (p *procDir) pids(s *scratch, out []int32) ([]int32, error) {
	fd, err := unix.Openat(p.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return out, &os.PathError{Op: "open", Path: p.root, Err: err}
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Getdents(fd, s.dirents[:])
		if err != nil {
			return out, &os.PathError{Op: "getdents", Path: p.root, Err: err}
		}
		if n <= 0 {
			return out, nil
		}
		forEachDirent(s.dirents[:n], func(name []byte) {
			if pid, ok := atoiBytes(name); ok {
				out = append(out, int32(pid))
			}
		})
	}
}

// forEachDirent calls fn with each name in a getdents64 buffer.
func forEachDirent(b []byte, fn func(name []byte)) {
	for len(b) >= 19 {
		reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
		if reclen < 19 || reclen > len(b) {
			return
		}
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		fn(name)
		b = b[reclen:]
	}
}

func atoiBytes(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// pidPath writes "PID/suffix\x00" into s.path and returns a pointer to it.
func (s *scratch) pidPath(pid int32, suffix string) *byte {
	b := strconv.AppendInt(s.path[:0], int64(pid), 10)
	b = append(b, suffix...)
	b = append(b, 0)
	return &b[0]
}

func openat(dirfd int, path *byte, flags int) (int, error) {
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func readlinkat(dirfd int, path *byte, buf []byte) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// netnsOf returns the inode of the network namespace of pid.
func (p *procDir) netnsOf(s *scratch, pid int32) (uint64, error) {
	n, err := readlinkat(p.fd, s.pidPath(pid, "/ns/net"), s.link[:])
	if err != nil {
		return 0, err
	}
	ino, ok := parseNetnsLink(s.link[:n])
	if !ok {
		return 0, errors.New("bad ns/net link")
	}
	return ino, nil
}

// sockRef is one descriptor of pid that refers to socket inode.
type sockRef struct {
	inode uint64
	pid   int32
	fd    int32
}

// scanFDs appends a sockRef for every socket descriptor of pid. ESRCH and
// ENOENT (the process exited) are returned as is; the caller ignores them.
func (p *procDir) scanFDs(s *scratch, pid int32, out []sockRef) ([]sockRef, error) {
	dfd, err := openat(p.fd, s.pidPath(pid, "/fd"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return out, err
	}
	defer unix.Close(dfd)
	// Since Linux 6.2 the size of /proc/PID/fd is the number of open
	// descriptors. Descriptors are mostly dense from 0, so reading the links
	// 0, 1, 2... until that many were found skips the directory listing,
	// which costs the kernel about a fifth of the scan.
	var st unix.Stat_t
	if !p.noProbe && unix.Fstat(dfd, &st) == nil && st.Size > 0 {
		var ok bool
		if out, ok, err = p.probeFDs(s, dfd, pid, int(st.Size), out); ok || err != nil {
			return out, err
		}
	}
	p.listed.Add(1)
	return p.listFDs(s, dfd, pid, out)
}

// probeFDs reads the links of descriptors 0, 1, 2... until count were found.
// ok is false, and out as it was, when they were not all found among the
// first 2*count+64 numbers (a sparse table, or descriptors opened meanwhile).
func (p *procDir) probeFDs(s *scratch, dfd int, pid int32, count int, out []sockRef) ([]sockRef, bool, error) {
	start, found := len(out), 0
	for fd := 0; found < count; fd++ {
		if fd >= 2*count+64 {
			return out[:start], false, nil
		}
		b := strconv.AppendInt(s.path[:0], int64(fd), 10)
		b = append(b, 0)
		l, err := readlinkat(dfd, &b[0], s.link[:])
		switch {
		case err == nil:
			found++
			if ino, ok := parseSocketLink(s.link[:l]); ok {
				out = append(out, sockRef{inode: ino, pid: pid, fd: int32(fd)})
			}
		case err == unix.EACCES || err == unix.EPERM:
			return out[:start], false, err
		case err == unix.ESRCH:
			return out[:start], false, err
		}
	}
	return out, true, nil
}

// listFDs reads the links of every descriptor listed in the directory dfd.
func (p *procDir) listFDs(s *scratch, dfd int, pid int32, out []sockRef) ([]sockRef, error) {
	for {
		n, err := unix.Getdents(dfd, s.dirents[:])
		if err != nil {
			return out, err
		}
		if n <= 0 {
			return out, nil
		}
		b := s.dirents[:n]
		for len(b) >= 19 {
			reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
			if reclen < 20 || reclen > len(b) {
				break
			}
			if c := b[19]; c >= '0' && c <= '9' {
				l, err := readlinkat(dfd, &b[19], s.link[:])
				if err == nil {
					if ino, ok := parseSocketLink(s.link[:l]); ok {
						fd := 0
						for _, c := range b[19:reclen] {
							if c < '0' || c > '9' {
								break
							}
							fd = fd*10 + int(c-'0')
						}
						out = append(out, sockRef{inode: ino, pid: pid, fd: int32(fd)})
					}
				} else if err == unix.EACCES || err == unix.EPERM {
					// Listing the directory is allowed more often than
					// reading its links (a process with capabilities we
					// lack): the caller counts this as partial.
					return out, err
				}
			}
			b = b[reclen:]
		}
	}
}

// ownerUID returns the owner of /proc/PID: the process's effective uid
// (root for a non-dumpable process).
func (p *procDir) ownerUID(s *scratch, pid int32) (uint32, error) {
	var st unix.Stat_t
	b := strconv.AppendInt(s.path[:0], int64(pid), 10)
	if err := unix.Fstatat(p.fd, string(b), &st, 0); err != nil {
		return 0, err
	}
	return st.Uid, nil
}

// exeID returns the id of the file /proc/PID/exe refers to (the file the
// process runs, whatever its path).
func (p *procDir) exeID(s *scratch, pid int32) (fileID, error) {
	var st unix.Stat_t
	b := strconv.AppendInt(s.path[:0], int64(pid), 10)
	b = append(b, "/exe"...)
	if err := unix.Fstatat(p.fd, string(b), &st, unix.AT_NO_AUTOMOUNT); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// isGone reports whether err means the process went away mid-read, which is
// normal and silent.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// fdLink reads the link /proc/PID/fd/FD into s.link.
func (p *procDir) fdLink(s *scratch, pid, fd int32) ([]byte, error) {
	b := strconv.AppendInt(s.path[:0], int64(pid), 10)
	b = append(b, "/fd/"...)
	b = strconv.AppendInt(b, int64(fd), 10)
	b = append(b, 0)
	n, err := readlinkat(p.fd, &b[0], s.link[:])
	if err != nil {
		return nil, err
	}
	return s.link[:n], nil
}
