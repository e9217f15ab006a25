package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// readProcess reads what is recorded about a holder. An error means the
// process has gone (or cannot be read at all); fields that cannot be read
// on their own (exe without CAP_SYS_PTRACE, a kernel thread) stay empty.
func readProcess(root string, pid int32, users map[uint32]string) (Process, error) {
	dir := filepath.Join(root, strconv.Itoa(int(pid)))
	p := Process{PID: int(pid), Cmdline: []string{}}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return p, err
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
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = parseCmdline(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.Unit, p.Container = parseCgroup(b)
	}
	return p, nil
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
