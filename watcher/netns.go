package watcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// Capability bits from <linux/capability.h>.
const (
	capSysPtrace = 19
	capSysAdmin  = 21
)

// parseCapEff returns the effective capability set from /proc/self/status.
func parseCapEff(status []byte) (uint64, bool) {
	i := bytes.Index(status, []byte("\nCapEff:"))
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(status[i+8:])
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f[0]), 16, 64)
	return v, err == nil
}

// errNetnsChanged is returned when the namespace file opened is not the
// namespace that was asked for (the process exited and its pid was reused).
var errNetnsChanged = errors.New("network namespace changed")

// inNetns runs fn on an OS thread that has entered the network namespace at
// path, which must have inode wantIno (0: any). Sockets fn creates stay in
// that namespace for their whole life.
//
// The thread is normally never unlocked, so the runtime throws it away when
// fn returns instead of handing a thread in a foreign namespace to other
// goroutines. The main thread is the exception: the runtime cannot end it,
// and parks it instead, for ever in the foreign namespace (pinning it, and
// making /proc/self describe it). So when the goroutine happens to run on
// the main thread, it enters the original namespace again and unlocks.
func inNetns(path string, wantIno uint64, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			// Without a way back, stay locked: the thread is thrown away
			// (or, the main thread, parked where it is).
			errc <- &os.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err}
			return
		}
		defer unix.Close(orig)
		mainThread := unix.Gettid() == unix.Getpid()
		entered, err := runInNetns(path, wantIno, fn)
		if !entered {
			runtime.UnlockOSThread() // still in its own namespace
		} else if mainThread && unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Else no UnlockOSThread: see above.
		errc <- err
	}()
	return <-errc
}

// runInNetns enters the network namespace at path, which must have inode
// wantIno (0: any), on the calling (locked) thread and runs fn there.
// entered tells whether the thread's namespace was changed.
func runInNetns(path string, wantIno uint64, fn func() error) (entered bool, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if wantIno != 0 && st.Ino != wantIno {
		return false, fmt.Errorf("%s: %w", path, errNetnsChanged)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return false, fmt.Errorf("setns %s: %w", path, err)
	}
	return true, fn()
}

// readPortRange reads ip_local_port_range as the calling thread's namespace
// sees it; /proc/sys/net follows the reading thread's network namespace.
func readPortRange(procRoot string) portRange {
	b, err := os.ReadFile(filepath.Join(procRoot, "sys/net/ipv4/ip_local_port_range"))
	if err != nil {
		return defaultPortRange
	}
	r, err := parsePortRange(b)
	if err != nil {
		return defaultPortRange
	}
	return r
}

// namedNetns lists the namespaces bound under dir (/run/netns, as `ip netns
// add` does): inode -> the first name in sorted order.
func namedNetns(dir string) map[uint64]string {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	m := make(map[uint64]string, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, n), &st); err != nil {
			continue
		}
		// An unmounted placeholder file is on the /run tmpfs, not nsfs.
		var fs unix.Statfs_t
		if err := unix.Statfs(filepath.Join(dir, n), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
			continue
		}
		if _, dup := m[st.Ino]; !dup {
			m[st.Ino] = n
		}
	}
	return m
}
