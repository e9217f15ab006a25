package watcher

import (
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw system calls for the steady look.
//
// A system call made through syscall.Syscall (x/sys/unix's wrappers, the os
// package) tells the Go scheduler that the goroutine enters the kernel.
// When the runtime's sysmon thread is in its deep sleep, as it is in a
// daemon idle between two looks, that wakes it, and it then polls every
// 20 µs for a millisecond and longer (runtime/proc.go, sysmon): some fifty
// wake-ups for each look, which on a VM where each one traps to the
// hypervisor cost more than the look's own system calls (bench/idle, perf).
// The calls a steady look makes cannot block for long (links and stats
// under /proc, listing /proc and a new process's descriptors, kill with
// signal 0, reading /proc/loadavg, a sock_diag dump), so they are made
// raw: the scheduler is not told, and sysmon sleeps on. A raw call keeps
// its P while in the kernel, which for these is what the scheduler would
// do anyway (it hands a P off only after 20 µs in a call).

func openat(dirfd int, path *byte, flags int) (int, error) {
	fd, _, errno := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(flags|unix.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func readlinkat(dirfd int, path *byte, buf []byte) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// fstatat stats path (NUL-terminated) under dirfd.
func fstatat(dirfd int, path *byte, st *unix.Stat_t, flags int) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(st)), uintptr(flags), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func rawPread(fd int, b []byte, off int64) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(off), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// getdents reads directory entries (struct linux_dirent64) into b.
func getdents(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_GETDENTS64, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// seekStart sets fd's offset to off.
func seekStart(fd int, off int64) error {
	_, _, errno := unix.RawSyscall(unix.SYS_LSEEK, uintptr(fd), uintptr(off), io.SeekStart)
	if errno != 0 {
		return errno
	}
	return nil
}

// dot and empty are the paths "." and "" (for AT_EMPTY_PATH), NUL-terminated.
var (
	dot   = [2]byte{'.', 0}
	empty = [1]byte{0}
)

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

// alive reports whether pid exists (kill with signal 0 sends nothing).
func alive(pid int32) bool {
	_, _, errno := unix.RawSyscall(unix.SYS_KILL, uintptr(pid), 0, 0)
	return errno != unix.ESRCH
}

// statPath stats path, following links.
func statPath(path string, st *unix.Stat_t) error {
	var buf [256]byte // on the stack for the paths a tick stats
	b := append(append(buf[:0], path...), 0)
	return fstatat(unix.AT_FDCWD, &b[0], st, 0)
}
