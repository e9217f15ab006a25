package watcher

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The exit of a watched process is told by the next exited, once; a live
// one is not, and nor is one no longer watched.
func TestExitWatch(t *testing.T) {
	x := newExitWatch()
	defer x.close()
	proc, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(proc)
	if !x.on {
		t.Skip("no epoll: exits are checked with kill")
	}
	start := func() *exec.Cmd {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	a, b, c := start(), start(), start()
	for _, p := range []*exec.Cmd{a, b, c} {
		if !x.watch(int32(p.Process.Pid), proc) {
			t.Fatalf("pid %d not watched (pidfd_open refused?)", p.Process.Pid)
		}
		if x.fds[int32(p.Process.Pid)].dir < 0 {
			t.Errorf("pid %d: its /proc directory not held", p.Process.Pid)
		}
	}
	if got := x.exited(nil); len(got) != 0 {
		t.Fatalf("exited %v while all live", got)
	}
	x.forget(int32(c.Process.Pid))
	for _, p := range []*exec.Cmd{a, c} {
		p.Process.Kill()
		p.Wait()
	}
	// The pidfd is readable once the process has exited: at once after
	// Wait, but give a loaded machine a moment.
	var got []int32
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = x.exited(got)
	}
	if want := []int32{int32(a.Process.Pid)}; !slices.Equal(got, want) {
		t.Errorf("exited %v, want %v (the one forgotten is not told)", got, want)
	}
	if x.watched(int32(a.Process.Pid)) || !x.watched(int32(b.Process.Pid)) {
		t.Errorf("watched after the exit: a %v (want false), b %v (want true)", x.watched(int32(a.Process.Pid)), x.watched(int32(b.Process.Pid)))
	}
	if got := x.exited(nil); len(got) != 0 {
		t.Errorf("exited %v told again", got)
	}
}

// A holder exits and a new process takes its pid before the next look: the
// new process must be read as new (its name, its exe), not pass for the
// holder that had the pid. The pid is handed to the new process through
// ns_last_pid (what CRIU uses), retried while other forks on the host take
// it first.
func TestSnapshotPidTakenOver(t *testing.T) {
	requireRoot(t)
	w, _ := newWatcher(t, Options{})
	snapshot(t, w)
	for attempt := range 20 {
		a := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", rename: "pw-before"})
		if l := byInode(snapshot(t, w), a.socks[0].inode); l == nil || len(l.Processes) != 1 || l.Processes[0].Comm != "pw-before" {
			t.Fatalf("before: %+v", l)
		}
		if !w.exits.watched(int32(a.pid())) {
			t.Skip("holders are not watched by pidfds here: kill cannot tell a pid taken over")
		}
		pid := a.pid()
		a.Stop()
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		b := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", rename: "pw-after"})
		if b.pid() != pid {
			t.Logf("attempt %d: pid %d went to another process", attempt, pid)
			b.Stop()
			continue
		}
		l := byInode(snapshot(t, w), b.socks[0].inode)
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("after: %+v", l)
		}
		if got := l.Processes[0].Comm; got != "pw-after" {
			t.Errorf("pid %d taken over: comm %q, want %q (the holder that had the pid)", pid, got, "pw-after")
		}
		return
	}
	t.Skip("another process took the pid at every attempt")
}

// lastPid reads /proc/loadavg again through the descriptor it keeps open:
// a process made since must move it (a read that did not start over at
// offset 0 would give nothing, or the old value).
func TestLastPidFollows(t *testing.T) {
	w, _ := newWatcher(t, Options{})
	before, ok := w.lastPid()
	if !ok {
		t.Fatal("no last pid in /proc/loadavg")
	}
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	after, ok := w.lastPid()
	if !ok || after == before {
		t.Errorf("last pid %d, then %d (ok %v) after starting pid %d", before, after, ok, c.Process.Pid)
	}
	if !w.pids.loadavgOpen {
		t.Error("/proc/loadavg not held open")
	}
}
