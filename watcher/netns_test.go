package watcher

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// inNetnsHelper enters the namespace at PW_NETNS many times through inNetns,
// from the main goroutine as the watcher does, then prints the namespace of
// the main thread (/proc/self/ns/net is the thread group leader's) before
// and after.
func inNetnsHelper() int {
	before, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	path := os.Getenv("PW_NETNS")
	for range 50 {
		if err := inNetns(path, 0, func() error { return nil }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	after, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fmt.Println(before, after)
	return 0
}

// TestInNetnsMainThread checks that a namespace entered through inNetns
// does not stick to the main thread: when the runtime runs the goroutine
// there (likely, while the main goroutine waits for it), the thread must
// come back to its own namespace instead of being parked in the foreign one.
// It runs in a child process, so that a failure cannot leave this one's
// main thread in a foreign namespace.
func TestInNetnsMainThread(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{netns: true})
	cmd := exec.Command(testBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=innetns", fmt.Sprintf("PW_NETNS=/proc/%d/ns/net", h.pid()), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != f[1] {
		t.Errorf("main thread's namespace before and after 50 inNetns calls: %q, want the same", out)
	}
}

// TestRunInNetnsRestore checks the way back used on the main thread: enter
// a namespace on a locked thread, run fn there, and setns to the original.
func TestRunInNetnsRestore(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{netns: true})
	want := mustNetns(t, h.pid())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Thrown away if anything below fails.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		var origSt unix.Stat_t
		if err := unix.Fstat(orig, &origSt); err != nil {
			errc <- err
			return
		}
		var inside uint64
		entered, err := runInNetns(fmt.Sprintf("/proc/%d/ns/net", h.pid()), want, func() error {
			var st unix.Stat_t
			err := unix.Stat("/proc/thread-self/ns/net", &st)
			inside = st.Ino
			return err
		})
		if !entered || err != nil {
			errc <- fmt.Errorf("entered %v: %v", entered, err)
			return
		}
		if inside != want {
			errc <- fmt.Errorf("fn ran in namespace %d, want %d", inside, want)
			return
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			errc <- err
			return
		}
		if st.Ino != origSt.Ino {
			errc <- fmt.Errorf("after setns back, namespace %d, want %d", st.Ino, origSt.Ino)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestNetnsName(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	taken := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	tests := []struct {
		name      string
		host      bool
		runName   string
		container string
		lowPid    int32
		taken     []string
		want      string
	}{
		{name: "host", host: true, lowPid: 1, want: "host"},
		{name: "host with a bound name", host: true, runName: "default", want: "host"},
		{name: "bound", runName: "blue", lowPid: 7, container: id, want: "blue"},
		{name: "bound as host", runName: "host", want: "/run/netns/host"},
		{name: "bound as a container", runName: "container:0123456789ab", want: "/run/netns/container:0123456789ab"},
		{name: "bound as a pid", runName: "pid:1", want: "/run/netns/pid:1"},
		{name: "bound as an inode", runName: "netns:4026531840", want: "/run/netns/netns:4026531840"},
		{name: "bound name taken", runName: "blue", taken: []string{"blue"}, want: "blue@4026532000"},
		{name: "container", container: id, lowPid: 7, want: "container:0123456789ab"},
		{name: "short container id", container: "abc", lowPid: 7, want: "container:abc"},
		{name: "second namespace of a container", container: id, lowPid: 9, taken: []string{"host", "container:0123456789ab"}, want: "container:0123456789ab@4026532000"},
		{name: "pid", lowPid: 42, want: "pid:42"},
		{name: "pid taken (moved)", lowPid: 42, taken: []string{"pid:42"}, want: "pid:42@4026532000"},
		{name: "nobody inside", want: "netns:4026532000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := netnsName(tt.host, "/run/netns", tt.runName, tt.container, tt.lowPid, 4026532000, taken(tt.taken...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("netnsName (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSnapshotNetnsNameCollisions checks two namespaces whose lowest pids
// are in one container's cgroup, and a namespace bound under the netns
// directory as "host": each keeps a name of its own, so that their
// listeners are not merged with another namespace's.
func TestSnapshotNetnsNameCollisions(t *testing.T) {
	requireRoot(t)
	const id = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	root, cg := dockerScope(t, id)
	// The same port in each namespace: merged, they would be one listener.
	a := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:7777", netns: true})
	b := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:7777", netns: true})
	for _, h := range []*helper{a, b} {
		moveToCgroup(t, root, cg, h.pid())
	}
	// A third namespace, bound as "host" under a netns directory.
	dir := t.TempDir()
	c := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:7777", netns: true})
	bind := filepath.Join(dir, HostNetns)
	if err := os.WriteFile(bind, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/net", c.pid()), bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })

	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableSetns=%v", disable), func(t *testing.T) {
			w, _ := newWatcher(t, Options{NetnsDir: dir, DisableSetns: disable})
			s := snapshot(t, w)
			keys := map[Key]uint64{}
			var got []string
			for _, h := range []*helper{a, b, c} {
				l := byInode(s, h.socks[0].inode)
				if l == nil {
					t.Fatalf("listener of helper %d not found", h.pid())
				}
				got = append(got, l.Netns)
				if prev, dup := keys[l.Key()]; dup {
					t.Errorf("listeners %d and %d share the key %v", prev, l.Inode, l.Key())
				}
				keys[l.Key()] = l.Inode
			}
			// a and b: one of them, the lower inode, keeps the plain name.
			ia, ib := mustNetns(t, a.pid()), mustNetns(t, b.pid())
			base := "container:" + id[:12]
			want := []string{base, fmt.Sprintf("%s@%d", base, ib), bind}
			if ib < ia {
				want[0], want[1] = fmt.Sprintf("%s@%d", base, ia), base
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("namespace names (-want +got):\n%s", diff)
			}
			names := map[string]int{}
			for _, n := range s.Namespaces {
				names[n.Name]++
				if names[n.Name] > 1 {
					t.Errorf("namespace name %q listed twice: %+v", n.Name, s.Namespaces)
				}
			}
		})
	}
}

// TestWatcherWarnedBounded checks that the warnings remembered as said do
// not grow for ever, and that a namespace's go with it.
func TestWatcherWarnedBounded(t *testing.T) {
	var said []string
	w := &Watcher{warned: map[string]bool{}, opts: Options{Warn: func(m string) { said = append(said, m) }}}
	for i := range 3 * maxWarned {
		w.warn(fmt.Sprintf("cannot read /proc/%d/net", i))
		w.warn(fmt.Sprintf("cannot read /proc/%d/net", i)) // said once
	}
	if len(w.warned) > maxWarned {
		t.Errorf("%d warnings remembered, want at most %d", len(w.warned), maxWarned)
	}
	if len(said) != 3*maxWarned {
		t.Errorf("%d warnings said, want %d (each once)", len(said), 3*maxWarned)
	}
	said = nil
	ns := &nsState{name: "pid:42"}
	for range 3 {
		w.warnNS(ns, "inspect", "network namespace pid:42 not inspected: x")
		w.warnNS(ns, "enter", "network namespace pid:42: cannot enter")
	}
	if diff := cmp.Diff([]string{"network namespace pid:42 not inspected: x", "network namespace pid:42: cannot enter"}, said); diff != "" {
		t.Errorf("warnings about a namespace (-want +got):\n%s", diff)
	}
}

// TestSnapshotInterfaceNamesRefreshed checks that a namespace's interface
// names are read again: a stale name (an interface renamed, an index
// reused) is replaced within ifnamesEvery ticks.
func TestSnapshotInterfaceNamesRefreshed(t *testing.T) {
	requireRoot(t)
	fd, err := openSock(sockSpec{"tcp4dev", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ino, _, err := sockInfo(fd)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := newWatcher(t, Options{})
	l := byInode(snapshot(t, w), ino)
	if l == nil || l.Interface != "lo" {
		t.Fatalf("listener bound to lo: %+v", l)
	}
	idx, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	w.ns.byInode[w.ns.self].ifnames[uint32(idx.Index)] = "stale"
	got := []string{}
	for range ifnamesEvery + 1 {
		got = append(got, byInode(snapshot(t, w), ino).Interface)
	}
	if got[0] != "stale" || got[len(got)-1] != "lo" {
		t.Errorf("interface names over %d ticks after the table went stale: %q, want stale first and lo last", len(got), got)
	}
}
