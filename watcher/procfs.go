package watcher

import (
	"errors"
	"iter"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the hot path of attribution: reading every /proc/PID/fd. It
// avoids allocations and path building: directories are read with getdents64
// into a reused buffer, links are read with readlinkat relative to the open
// directory, using the NUL-terminated names the kernel put in that buffer.

// procDir is an open /proc (or a fixture tree standing in for it).
type procDir struct {
	root string
	fd   int
	// probe is true on a procfs, where /proc/PID/fd may be probed (see
	// scanFDs); tests turn it off to compare with the listing.
	probe bool
}

func openProc(root string) (*procDir, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	// A fixture tree is no procfs: the size of a directory there is no
	// count of descriptors, nor its positions descriptor numbers.
	var fs unix.Statfs_t
	probe := unix.Fstatfs(fd, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC
	return &procDir{root: root, fd: fd, probe: probe}, nil
}

func (p *procDir) Close() error { return unix.Close(p.fd) }

// scratch holds the buffers one scanning goroutine reuses.
type scratch struct {
	dirents [32 << 10]byte
	link    [4096]byte // PATH_MAX
	path    [64]byte

	// What scanFDs did, for tests: counted per goroutine, so that the hot
	// path has no shared counter.
	fdReads int // readlinkat calls on descriptors
	fdLists int // listings of a /proc/PID/fd directory
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// pids appends the numeric entries of /proc: the thread group ids.
func (p *procDir) pids(s *scratch, out []int32) ([]int32, error) {
	fd, err := openat(p.fd, &dot[0], unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return out, &os.PathError{Op: "open", Path: p.root, Err: err}
	}
	defer rawClose(fd)
	for {
		n, err := getdents(fd, s.dirents[:])
		if err != nil {
			return out, &os.PathError{Op: "getdents", Path: p.root, Err: err}
		}
		if n <= 0 {
			return out, nil
		}
		for name := range direntNames(s.dirents[:n]) {
			if pid, ok := atoiBytes(name); ok {
				out = append(out, int32(pid))
			}
		}
	}
}

// direntNames yields each name in a getdents64 buffer. In the buffer a
// name is followed by its NUL, so &name[0] may be passed to the kernel.
func direntNames(b []byte) iter.Seq[[]byte] {
	return func(yield func(name []byte) bool) {
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
			if !yield(name) {
				return
			}
			b = b[reclen:]
		}
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
//
// Since Linux 6.2 the size of /proc/PID/fd is the number of open
// descriptors. Tables are mostly dense from 0, so the links 0, 1, 2... are
// read until that many were found (probeFDs), which skips the directory
// listing: without it the kernel must instantiate an entry for every
// descriptor, about a fifth of the scan. Where the numbers stop being
// descriptors (a gap, one high descriptor inherited from a shell or a
// supervisor), the probe stops after a few misses and the directory is
// listed from there on: the kernel's position in /proc/PID/fd is the
// descriptor number plus 2, so the listing starts past what was read, and no
// link is read twice whatever the layout.
func (p *procDir) scanFDs(s *scratch, pid int32, out []sockRef) ([]sockRef, error) {
	dfd, err := openat(p.fd, s.pidPath(pid, "/fd"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return out, err
	}
	defer rawClose(dfd)
	from, left := 0, -1
	var st unix.Stat_t
	if p.probe && fstatat(dfd, &empty[0], &st, unix.AT_EMPTY_PATH) == nil && st.Size > 0 {
		var found int
		if out, from, found, err = probeFDs(s, dfd, pid, int(st.Size), out); found == int(st.Size) || err != nil {
			return out, err
		}
		left = int(st.Size) - found
	}
	s.fdLists++
	return listFDs(s, dfd, pid, from, left, out)
}

// probeFDs reads the links of descriptors 0, 1, 2... until count were
// found, or until reading on looks dearer than listing the rest, and returns
// the first number not read and how many descriptors it found.
//
// A readlinkat of a number that is not a descriptor costs about as much as
// one that is (2.5 to 4 µs on Linux 6.18). A listing from a position costs
// about two of them, plus a twentieth (entries cached) to a quarter (not) of
// one per descriptor listed. Whether the numbers ahead are descriptors is
// unknown, so the probe stops when the misses paid so far reach what
// listing the rest would cost, 1 + left/32 with left the descriptors still
// to find. As with renting skis until their price is paid, that costs at
// most about twice the better choice made in hindsight, whatever the layout:
// one stray high descriptor costs 2 misses, a table full of holes is listed
// after a few, and a gap below thousands of descriptors is probed through.
// (On bench/scene's large-gaps, 1 + left/32 took 10% less CPU than
// 2 + left/8, and the same on the other layouts.)
func probeFDs(s *scratch, dfd int, pid int32, count int, out []sockRef) (_ []sockRef, next, found int, err error) {
	start, misses := len(out), 0
	fd := 0
	for ; found < count; fd++ {
		b := strconv.AppendInt(s.path[:0], int64(fd), 10)
		b = append(b, 0)
		l, err := readlinkat(dfd, &b[0], s.link[:])
		s.fdReads++
		switch {
		case err == nil:
			found++
			if ino, ok := parseSocketLink(s.link[:l]); ok {
				out = append(out, sockRef{inode: ino, pid: pid, fd: int32(fd)})
			}
		case err == unix.EACCES || err == unix.EPERM || err == unix.ESRCH:
			return out[:start], 0, 0, err
		default: // ENOENT: not a descriptor
			misses++
			if misses > 1+(count-found)/32 {
				return out, fd + 1, found, nil
			}
		}
	}
	return out, fd, found, nil
}

// listFDs reads the links of the descriptors listed in the directory dfd
// from number from on (from > 0 only on procfs: see scanFDs), and stops once
// it read left of them (-1: all there are), sparing the last getdents64 that
// would find the end.
func listFDs(s *scratch, dfd int, pid int32, from, left int, out []sockRef) ([]sockRef, error) {
	if from > 0 {
		if err := seekStart(dfd, int64(from)+2); err != nil {
			return out, err
		}
	}
	for {
		n, err := getdents(dfd, s.dirents[:])
		if err != nil {
			return out, err
		}
		if n <= 0 {
			return out, nil
		}
		for name := range direntNames(s.dirents[:n]) {
			fd, digits := 0, 0
			for _, c := range name {
				if c < '0' || c > '9' {
					break
				}
				fd = fd*10 + int(c-'0')
				digits++
			}
			// Numbers below from were read by the probe; the seek skips
			// them, and this check keeps that true whatever the
			// directory's positions mean.
			if digits > 0 && fd >= from {
				l, err := readlinkat(dfd, &name[0], s.link[:])
				s.fdReads++
				if err == nil {
					if ino, ok := parseSocketLink(s.link[:l]); ok {
						out = append(out, sockRef{inode: ino, pid: pid, fd: int32(fd)})
					}
					if left--; left == 0 {
						return out, nil
					}
				} else if err == unix.EACCES || err == unix.EPERM {
					// Listing the directory is allowed more often than
					// reading its links (a process with capabilities we
					// lack): the caller counts this as partial.
					return out, err
				}
			}
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

// isGone reports whether err means the process went away mid-read, which is
// normal and silent.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
