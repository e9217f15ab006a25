package watcher

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestSortSocksKeepsOrder checks that the order kept from the last tick is
// used only while it is still sorted: sockets that moved in the dump, or
// were replaced by others, are sorted again.
func TestSortSocksKeepsOrder(t *testing.T) {
	a := &nsState{name: "a"}
	b := &nsState{name: "b"}
	entry := func(ns *nsState, tcp bool, addr string, port uint16, inode uint64) sockEntry {
		return sockEntry{ns: ns, tcp: tcp, addr: netip.MustParseAddr(addr), port: port, inode: inode}
	}
	base := []sockEntry{
		entry(b, true, "127.0.0.1", 22, 1),
		entry(a, false, "::1", 53, 2),
		entry(a, true, "0.0.0.0", 80, 3),
		entry(a, true, "0.0.0.0", 22, 4),
		entry(b, false, "0.0.0.0", 123, 5),
		entry(a, true, "::", 22, 6),
		entry(a, true, "0.0.0.0", 22, 7), // SO_REUSEPORT with 4
	}
	inodes := func(w *Watcher) []uint64 {
		var out []uint64
		for _, i := range w.snap.order {
			out = append(out, w.snap.socks[i].inode)
		}
		return out
	}
	want := func(socks []sockEntry) []uint64 {
		s := slices.Clone(socks)
		slices.SortFunc(s, func(x, y sockEntry) int { return compareEntries(&x, &y) })
		var out []uint64
		for _, e := range s {
			out = append(out, e.inode)
		}
		return out
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct {
		name   string
		change func(s []sockEntry)
	}{
		{name: "unchanged", change: func([]sockEntry) {}},
		{name: "shuffled", change: func(s []sockEntry) { rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] }) }},
		{name: "swapped", change: func(s []sockEntry) { s[0], s[1] = s[1], s[0] }},
		{name: "one replaced", change: func(s []sockEntry) { s[2] = entry(a, true, "10.0.0.1", 1, 8) }},
		{name: "port moved", change: func(s []sockEntry) { s[3].port = 9999 }},
		{name: "renamed namespace", change: func(s []sockEntry) {
			c := &nsState{name: "0"}
			for i := range s {
				if s[i].ns == b {
					s[i].ns = c
				}
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &Watcher{snap: snapshotCache{socks: slices.Clone(base)}}
			w.snap.sortSocks()
			if diff := cmp.Diff(want(w.snap.socks), inodes(w)); diff != "" {
				t.Fatalf("first order (-want +got):\n%s", diff)
			}
			tt.change(w.snap.socks)
			w.snap.sortSocks()
			if diff := cmp.Diff(want(w.snap.socks), inodes(w)); diff != "" {
				t.Errorf("order after the change (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSnapshotReuse checks that a snapshot where nothing changed shares the
// last one's Listeners, and that every kind of change the reuse could hide
// shows in the next snapshot: a listener opened and closed, a holder's user
// renamed in /etc/passwd, a new holder, a holder gone.
func TestSnapshotReuse(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads the descriptors of every process")
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	writePasswd := func(name string) {
		t.Helper()
		b := []byte(name + ":x:0:0:root:/root:/bin/sh\n")
		if err := os.WriteFile(passwd+".new", b, 0o644); err != nil {
			t.Fatal(err)
		}
		// A new inode, as useradd makes: the stat tells the change.
		if err := os.Rename(passwd+".new", passwd); err != nil {
			t.Fatal(err)
		}
	}
	writePasswd("root")
	w, err := New(Options{PasswdFile: passwd})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	listen := func() (int, uint64) {
		t.Helper()
		fd, err := openSock(sockSpec{"tcp4", "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		ino, _, err := sockInfo(fd)
		if err != nil {
			t.Fatal(err)
		}
		return fd, ino
	}
	shared := func(x, y *Snapshot) bool {
		return len(x.Listeners) > 0 && len(x.Listeners) == len(y.Listeners) && &x.Listeners[0] == &y.Listeners[0]
	}
	pids := func(l *Listener) []int {
		out := []int{}
		for _, p := range l.Processes {
			out = append(out, p.PID)
		}
		return out
	}
	me := os.Getpid()

	fd1, ino1 := listen()
	defer unix.Close(fd1)
	// The steady state may take a few ticks: other processes on the machine
	// come and go.
	var prev, cur *Snapshot
	for range 20 {
		prev, cur = cur, snapshot(t, w)
		if prev != nil && shared(prev, cur) {
			break
		}
	}
	if !shared(prev, cur) {
		t.Fatal("no two snapshots in 20 shared their listeners: the reuse never happens")
	}
	if l := byInode(cur, ino1); l == nil || l.Processes[0].User != "root" {
		t.Fatalf("own listener %d: %+v, want it held by root", ino1, l)
	}

	t.Run("opened and closed", func(t *testing.T) {
		fd2, ino2 := listen()
		if l := byInode(snapshot(t, w), ino2); l == nil || !slices.Contains(pids(l), me) {
			t.Errorf("new listener %d: %+v, want it held by pid %d", ino2, l, me)
		}
		unix.Close(fd2)
		if l := byInode(snapshot(t, w), ino2); l != nil {
			t.Errorf("closed listener %d still listed: %+v", ino2, l)
		}
	})
	t.Run("user renamed", func(t *testing.T) {
		writePasswd("toor")
		if l := byInode(snapshot(t, w), ino1); l == nil || len(l.Processes) == 0 || l.Processes[0].User != "toor" {
			t.Errorf("after renaming uid 0 to toor, listener %d: %+v", ino1, l)
		}
		if l := byInode(cur, ino1); l.Processes[0].User != "root" {
			t.Errorf("an earlier snapshot changed: user %q, want root", l.Processes[0].User)
		}
	})
	t.Run("holder gone", func(t *testing.T) {
		// A second holder: a child that inherits the socket and exits.
		d, err := unix.Dup(fd1)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(d), "listener")
		p, err := os.StartProcess("/bin/sleep", []string{"sleep", "30"}, &os.ProcAttr{Files: []*os.File{nil, nil, nil, f}})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Kill()
		var got []int
		for range 5 {
			if got = pids(byInode(snapshot(t, w), ino1)); slices.Contains(got, p.Pid) {
				break
			}
		}
		if !slices.Contains(got, p.Pid) {
			t.Fatalf("holders %v of listener %d: child %d not found", got, ino1, p.Pid)
		}
		p.Kill()
		p.Wait()
		if diff := cmp.Diff([]int{me}, pids(byInode(snapshot(t, w), ino1))); diff != "" {
			t.Errorf("holders after the child exited (-want +got):\n%s", diff)
		}
	})
}
