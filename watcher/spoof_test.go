package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/internal/listenertest"
)

// bindPrivately moves the calling thread into a new mount namespace, makes
// every mount in it private (so nothing propagates back to the host), and
// binds the file evil over path there.
func bindPrivately(evil, path string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := unix.Mount(evil, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", evil, path, err)
	}
	return nil
}

// spoofHelper spoofs an executable's path (unshare -Urm; mount --bind
// ~/evil /usr/bin/python3): in a private mount namespace, bind PW_EVIL over
// PW_PATH and exec PW_PATH as the listening helper. readlink of
// /proc/PID/exe then shows PW_PATH, though the process runs PW_EVIL.
func spoofHelper() int {
	runtime.LockOSThread() // the namespace is the thread's; execve keeps it
	if err := bindPrivately(os.Getenv("PW_EVIL"), os.Getenv("PW_PATH")); err != nil {
		fmt.Fprintln(os.Stderr, "spoof helper:", err)
		return 3
	}
	// syscall.Exec passes the environment as is, and Go reads the first of
	// duplicate variables: replace the mode rather than append one.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, helperEnv+"=") })
	env = append(env, helperEnv+"=listen")
	path := os.Getenv("PW_PATH")
	err := syscall.Exec(path, []string{path, "-test.run=^$"}, env)
	fmt.Fprintln(os.Stderr, "spoof helper: exec:", err)
	return 3
}

// SpoofScene is a real exe spoof next to the genuine program, for the
// watcher's tests and the policy's (through an external test package):
//   - Path is a copy of the test binary, the "genuine" program;
//   - Genuine runs Path and listens;
//   - Spoofed runs Evil, another copy, bound over Path in its own private
//     mount namespace, so its exe reads Path as well.
//
// It needs root (mount namespaces).
type SpoofScene struct {
	Path, Evil        string
	Genuine, Spoofed  *Listener
	GenuinePID, SpPID int
	Snapshot          *Snapshot
}

// NewSpoofScene starts both processes and takes a snapshot.
func NewSpoofScene(t *testing.T) *SpoofScene {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	sc := &SpoofScene{Path: filepath.Join(dir, "python3"), Evil: filepath.Join(dir, "evil")}
	copyTestBinary(t, sc.Path, sc.Evil)
	genuine := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", path: sc.Path})
	spoofed := startSpoofHelper(t, sc.Evil, sc.Path, "tcp4=127.0.0.1:0")
	sc.GenuinePID, sc.SpPID = genuine.pid(), spoofed.pid()

	if b, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", spoofed.pid())); err != nil || b != sc.Path {
		t.Fatalf("spoofed helper's exe link = %q, %v; want %q: the spoof did not take, the test is broken", b, err, sc.Path)
	}
	w, _ := newWatcher(t, Options{})
	sc.Snapshot = snapshot(t, w)
	sc.Genuine = byInode(sc.Snapshot, genuine.socks[0].inode)
	sc.Spoofed = byInode(sc.Snapshot, spoofed.socks[0].inode)
	if sc.Genuine == nil || len(sc.Genuine.Processes) != 1 || sc.Spoofed == nil || len(sc.Spoofed.Processes) != 1 {
		t.Fatalf("listeners: genuine %+v, spoofed %+v", sc.Genuine, sc.Spoofed)
	}
	return sc
}

// startSpoofHelper starts spoofHelper in a new mount namespace.
func startSpoofHelper(t *testing.T, evil, path, socks string) *helper {
	t.Helper()
	return runHelper(t, listenertest.Options{Env: []string{helperEnv + "=spoof", "PW_EVIL=" + evil, "PW_PATH=" + path, "PW_SOCKS=" + socks}})
}

func TestSnapshotExeSpoof(t *testing.T) {
	sc := NewSpoofScene(t)
	g, s := sc.Genuine.Processes[0], sc.Spoofed.Processes[0]
	if g.Exe != sc.Path || g.ExeDeleted || g.ExeUnverified {
		t.Errorf("genuine: exe %q deleted %v unverified %v; want %q verified", g.Exe, g.ExeDeleted, g.ExeUnverified, sc.Path)
	}
	if s.Exe != sc.Path || s.ExeDeleted || !s.ExeUnverified {
		t.Errorf("spoofed: exe %q deleted %v unverified %v; want %q (what it shows) unverified", s.Exe, s.ExeDeleted, s.ExeUnverified, sc.Path)
	}
}

// TestSnapshotExeSpoofAfterExec: a holder already verified, which then
// enters a private mount namespace and execs another file bound over its own
// path (same pid, same exe link), must lose the verification.
func TestSnapshotExeSpoofAfterExec(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path, evil := filepath.Join(dir, "server"), filepath.Join(dir, "evil")
	copyTestBinary(t, path, evil)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", path: path})
	w, _ := newWatcher(t, Options{})
	l := byInode(snapshot(t, w), h.socks[0].inode)
	if l == nil || len(l.Processes) != 1 || l.Processes[0].ExeUnverified {
		t.Fatalf("before: listener %+v, want one verified holder", l)
	}
	// The exec'd helper runs again from the top with its environment: its
	// socket was close-on-exec, and it listens on a fresh one. The watcher
	// finds that one held by a pid it knows, whose exe link did not change.
	h.KillOnStop = true
	h.Tell(t, "spoofexec "+evil+" "+path)
	var sock helperSock
	for line := h.Line(t); line != "ready"; line = h.Line(t) {
		sock = parseHelperSock(t, line)
	}
	if b, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.pid())); err != nil || b != path {
		t.Fatalf("exe link after the spoofed exec = %q, %v; want %q", b, err, path)
	}
	// The exec is noticed within a round of rechecks: a few ticks here.
	for i := range 100 {
		l = byInode(snapshot(t, w), sock.inode)
		if l != nil && len(l.Processes) == 1 && l.Processes[0].ExeUnverified {
			return
		}
		if i == 99 {
			t.Fatalf("after the spoofed exec: listener %+v, want its holder unverified", l)
		}
	}
}

func TestSnapshotUserAddedLater(t *testing.T) {
	requireRoot(t)
	passwd := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0"})
	w, _ := newWatcher(t, Options{PasswdFile: passwd})
	user := func() string {
		l := byInode(snapshot(t, w), h.socks[0].inode)
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("listener %+v", l)
		}
		return l.Processes[0].User
	}
	if got := user(); got != "root" {
		t.Fatalf("user = %q, want root", got)
	}
	// Rename uid 0: the same size would hide a rewrite from a size check;
	// the mtime or the inode (a rename over it, as useradd does) tell.
	next := passwd + ".new"
	if err := os.WriteFile(next, []byte("toor:x:0:0:root:/root:/bin/bash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, passwd); err != nil {
		t.Fatal(err)
	}
	if got := user(); got != "toor" {
		t.Errorf("after /etc/passwd changed: user = %q, want toor (the cached holder renamed)", got)
	}
}
