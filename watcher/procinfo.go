package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fileID identifies a file: the device and inode from stat(2).
type fileID struct {
	dev, ino uint64
}

// statID stats path (following symlinks, and so the /proc/PID/exe magic
// link to the file the process runs) without triggering an automount: the
// path is chosen by whoever runs the process.
func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(unix.AT_FDCWD, path, &st, unix.AT_NO_AUTOMOUNT); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// verifyExe reports whether exe, resolved in our own mount namespace, is
// the file that exeLink (/proc/PID/exe) refers to. It returns the file's id
// too (zero when /proc/PID/exe cannot be stat'ed), so that an exec of
// another file at the same path is noticed later. A deleted or memfd
// executable, or a path that is not absolute, is never verified.
//
// Order matters against a process that execs meanwhile: the id is read
// before the path is compared, so a race gives a mismatch (unverified) or
// an id that the next recheck finds changed, never a wrong "verified".
func verifyExe(exeLink, exe string, deleted bool) (fileID, bool) {
	id, err := statID(exeLink)
	if err != nil {
		return fileID{}, false
	}
	if deleted || !strings.HasPrefix(exe, "/") {
		return id, false
	}
	got, err := statID(exe)
	return id, err == nil && got == id
}

// readProcess reads what is recorded about a holder, and the id of its
// executable file. An error means the process has gone (or cannot be read
// at all); fields that cannot be read on their own (exe without
// CAP_SYS_PTRACE, a kernel thread) stay empty, and the exe is then
// unverified.
func readProcess(root string, pid int32, users map[uint32]string) (Process, fileID, error) {
	dir := filepath.Join(root, strconv.Itoa(int(pid)))
	p := Process{PID: int(pid), Cmdline: []string{}, ExeUnverified: true}
	var id fileID
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return p, id, err
	}
	if uid, ok := parseStatusUID(status); ok {
		p.UID = uid
	}
	p.User = userName(users, p.UID)
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		p.Comm = strings.TrimSuffix(string(b), "\n")
	}
	if link, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.Exe, p.ExeDeleted = parseExe(link)
		var ok bool
		id, ok = verifyExe(filepath.Join(dir, "exe"), p.Exe, p.ExeDeleted)
		p.ExeUnverified = !ok
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = parseCmdline(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.Unit, p.Container = parseCgroup(b)
	}
	return p, id, nil
}

// userName is the name of uid, or the number when it has none.
func userName(users map[uint32]string, uid uint32) string {
	if n, ok := users[uid]; ok {
		return n
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// readCgroupContainer returns the container id of pid, or "".
func readCgroupContainer(root string, pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/cgroup", root, pid))
	if err != nil {
		return ""
	}
	_, c := parseCgroup(b)
	return c
}
