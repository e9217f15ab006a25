package watcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/internal/listenertest"
)

// The test binary doubles as the helper process that opens sockets, so the
// tests need nothing but Go. helperEnv selects the helper mode.
const helperEnv = "PORTWATCH_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// helperMain opens the sockets in PW_SOCKS, optionally after renaming itself
// (PW_RENAME) or bringing up loopback in the fresh namespace it was started
// in (PW_LO), reports "inode port" for each and for an inherited fd 3
// (PW_HOLD), moves them to the descriptor numbers in PW_FDNUMS, then
// "ready". It then serves commands on stdin until EOF:
// "open SPEC" opens one more socket, "cloexec" has the next exec close the
// first, "sendfd" passes the first socket (fd 3
// when held) over the unix socket at fd 4 and closes its own copy.
func helperMain() int {
	switch os.Getenv(helperEnv) {
	case "snapshot":
		return snapshotHelper()
	case "spoof":
		return spoofHelper()
	case "innetns":
		return inNetnsHelper()
	case "memfdexec":
		return memfdExecHelper()
	}
	out := bufio.NewWriter(os.Stdout)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 3
	}
	if name := os.Getenv("PW_RENAME"); name != "" {
		b := append([]byte(name), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0); err != nil {
			return fail(err)
		}
		// os.Args[0] points into the argv area the kernel shows as
		// /proc/PID/cmdline: overwrite it in place, as setproctitle does.
		argv0 := unsafe.Slice(unsafe.StringData(os.Args[0]), len(os.Args[0]))
		n := copy(argv0, name)
		clear(argv0[n:])
	}
	if os.Getenv("PW_LO") != "" {
		if err := loopbackUp(); err != nil {
			return fail(err)
		}
		// A port range of its own, to tell whether the watcher reads the
		// range of the right namespace.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40100"), 0); err != nil {
			return fail(err)
		}
	}
	var fds []int // what "sendfd" sends: the first of these
	if os.Getenv("PW_HOLD") != "" {
		fds = append(fds, 3)
		ino, port, err := sockInfo(3)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(out, ino, port)
	}
	specs, err := parseSpecs(os.Getenv("PW_SOCKS"))
	if err != nil {
		return fail(err)
	}
	lastPort := 0
	open := func(s sockSpec) error {
		// ":same" is the port of the socket opened before.
		if a, ok := strings.CutSuffix(s.addr, ":same"); ok {
			s.addr = a + ":" + strconv.Itoa(lastPort)
		}
		fd, err := openSock(s)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
		ino, port, err := sockInfo(fd)
		if err != nil {
			return err
		}
		lastPort = port
		fmt.Fprintln(out, ino, port)
		return nil
	}
	for _, s := range specs {
		if err := open(s); err != nil {
			return fail(err)
		}
	}
	if err := moveFDs(fds, os.Getenv("PW_FDNUMS")); err != nil {
		return fail(err)
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "open":
			specs, err := parseSpecs(arg)
			if err != nil || len(specs) != 1 {
				return fail(fmt.Errorf("bad open %q", arg))
			}
			if err := open(specs[0]); err != nil {
				return fail(err)
			}
		case "close":
			unix.Close(fds[0])
			fmt.Fprintln(out, "closed")
		case "cloexec":
			// The next exec closes the first socket.
			if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
				return fail(err)
			}
			fmt.Fprintln(out, "cloexec")
		case "exec":
			// Become another program, keeping the descriptors.
			out.Flush()
			argv := strings.Fields(arg)
			return fail(syscall.Exec(argv[0], argv, os.Environ()))
		case "spoofexec":
			// "spoofexec EVIL PATH": enter a private mount namespace, bind
			// EVIL over PATH there, and exec PATH, keeping the pid and the
			// descriptors (and the path /proc/PID/exe shows).
			out.Flush()
			evil, path, _ := strings.Cut(arg, " ")
			runtime.LockOSThread() // the namespace is the thread's; execve keeps it
			if err := bindPrivately(evil, path); err != nil {
				return fail(err)
			}
			argv := []string{path, "-test.run=^$"}
			return fail(syscall.Exec(path, argv, os.Environ()))
		case "sendfd":
			if err := unix.Sendmsg(4, []byte{0}, unix.UnixRights(fds[0]), nil, 0); err != nil {
				return fail(err)
			}
			unix.Close(fds[0])
			fmt.Fprintln(out, "sent")
		}
		out.Flush()
	}
	return 0
}

// helper is a running helper process (see internal/listenertest for the
// starting, talking and stopping; the protocol is helperMain's).
type helper struct {
	*listenertest.Child
	socks []helperSock // in the order of PW_SOCKS, after the held one
}

type helperSock struct {
	inode uint64
	port  uint16
}

type helperOpts struct {
	socks  string
	rename string
	hold   *os.File   // passed as fd 3
	extra  []*os.File // fd 4...
	netns  bool       // new network namespace with loopback up
	path   string     // executable to run instead of the test binary
	fdnums string     // descriptor numbers for the sockets (see moveFDs)
}

func startHelper(t *testing.T, o helperOpts) *helper {
	t.Helper()
	lo := listenertest.Options{Path: o.path, Env: []string{helperEnv + "=listen", "PW_SOCKS=" + o.socks, "PW_RENAME=" + o.rename, "PW_FDNUMS=" + o.fdnums}}
	if o.hold != nil {
		lo.Env = append(lo.Env, "PW_HOLD=1")
		lo.ExtraFiles = append(lo.ExtraFiles, o.hold)
	}
	lo.ExtraFiles = append(lo.ExtraFiles, o.extra...)
	if o.netns {
		lo.Env = append(lo.Env, "PW_LO=1")
		lo.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET}
	}
	return runHelper(t, lo)
}

// runHelper starts a helper and reads its sockets until "ready".
func runHelper(t *testing.T, o listenertest.Options) *helper {
	t.Helper()
	h := &helper{Child: listenertest.Start(t, o)}
	h.readSocks(t)
	return h
}

// readSocks reads the helper's sockets until "ready".
func (h *helper) readSocks(t *testing.T) {
	t.Helper()
	for line := h.Line(t); line != "ready"; line = h.Line(t) {
		h.socks = append(h.socks, parseHelperSock(t, line))
	}
}

func parseHelperSock(t *testing.T, line string) helperSock {
	t.Helper()
	var s helperSock
	if _, err := fmt.Sscan(line, &s.inode, &s.port); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	return s
}

func (h *helper) pid() int { return h.PID() }

var (
	testBinOnce sync.Once
	testBinPath string
)

func testBinary(t *testing.T) string {
	testBinOnce.Do(func() {
		p, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		testBinPath = p
	})
	return testBinPath
}

func newWatcher(t *testing.T, o Options) (*Watcher, *[]string) {
	t.Helper()
	var (
		mu    sync.Mutex
		warns []string
	)
	o.Warn = func(m string) {
		mu.Lock()
		warns = append(warns, m)
		mu.Unlock()
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, &warns
}

func snapshot(t *testing.T, w *Watcher) *Snapshot {
	t.Helper()
	s, err := w.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(s.Listeners, compareListeners) {
		t.Error("listeners not sorted")
	}
	for _, l := range s.Listeners {
		if l.Processes == nil {
			t.Errorf("%v: Processes is nil", l.Key())
		}
	}
	return s
}

func byInode(s *Snapshot, inode uint64) *Listener {
	for i := range s.Listeners {
		if s.Listeners[i].Inode == inode {
			return &s.Listeners[i]
		}
	}
	return nil
}

func pidsOf(l *Listener) []int {
	if l == nil {
		return nil
	}
	var out []int
	for _, p := range l.Processes {
		out = append(out, p.PID)
	}
	return out
}

// listenerSummary is what the socket tests check of a listener.
type listenerSummary struct {
	Protocol, Family, Address string
	Port                      uint16
	DualStack                 bool
	Interface                 string
	Netns                     string
	PIDs                      []int
	Ephemeral                 bool
	Service                   string
}

func summarize(l *Listener) *listenerSummary {
	if l == nil {
		return nil
	}
	return &listenerSummary{l.Protocol, l.Family, l.Address.String(), l.Port, l.DualStack, l.Interface, l.Netns, pidsOf(l), l.Ephemeral, l.Service}
}

func TestSnapshotSockets(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0 tcp6only=[::1]:0 tcp6dual=[::]:0 udp4=127.0.0.1:0 udp6only=[::1]:0 udpconn=127.0.0.1:0 tcp4dev=127.0.0.1:0 tcp6dual=[::ffff:127.0.0.1]:0 tcp4=0.0.0.0:0 tcp6only=[::]:same"})
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableSockDiag=%v", disable), func(t *testing.T) {
			// The port of the first socket gets a name, as /etc/services
			// would give it.
			services := filepath.Join(t.TempDir(), "services")
			if err := os.WriteFile(services, fmt.Appendf(nil, "pwtest %d/tcp\nother %d/udp\n", h.socks[0].port, h.socks[0].port), 0o644); err != nil {
				t.Fatal(err)
			}
			w, _ := newWatcher(t, Options{DisableSockDiag: disable, ServicesFile: services})
			s := snapshot(t, w)
			pid := []int{h.pid()}
			// A UDP socket bound to port 0 gets a port from
			// ip_local_port_range: ephemeral.
			r := readPortRange("/proc")
			eph := func(i int) bool { return r.contains(h.socks[i].port) }
			dev := "lo"
			if disable {
				dev = "" // /proc/net does not show the bound device
			}
			want := []*listenerSummary{
				{TCP, IPv4, "127.0.0.1", h.socks[0].port, false, "", HostNetns, pid, false, "pwtest"},
				{TCP, IPv6, "::1", h.socks[1].port, false, "", HostNetns, pid, false, ""},
				{TCP, IPv6, "::", h.socks[2].port, true, "", HostNetns, pid, false, ""},
				{UDP, IPv4, "127.0.0.1", h.socks[3].port, false, "", HostNetns, pid, eph(3), ""},
				{UDP, IPv6, "::1", h.socks[4].port, false, "", HostNetns, pid, eph(4), ""},
				nil, // connected UDP: not a listener
				{TCP, IPv4, "127.0.0.1", h.socks[6].port, false, dev, HostNetns, pid, false, ""},
				{TCP, IPv4, "127.0.0.1", h.socks[7].port, false, "", HostNetns, pid, false, ""}, // IPv4-mapped
				{TCP, IPv4, "0.0.0.0", h.socks[8].port, false, "", HostNetns, pid, false, ""},
				// IPV6_V6ONLY on the port of an IPv4 wildcard: /proc/net does
				// not show the flag, but the IPv4 socket on the port rules
				// out dual stack.
				{TCP, IPv6, "::", h.socks[8].port, false, "", HostNetns, pid, false, ""},
			}
			if !eph(3) {
				t.Errorf("udp port %d from bind(0) not in ip_local_port_range %v: the ephemeral check tests nothing", h.socks[3].port, r)
			}
			var got []*listenerSummary
			for _, hs := range h.socks {
				got = append(got, summarize(byInode(s, hs.inode)))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("listeners mismatch (-want +got):\n%s", diff)
			}
			l := byInode(s, h.socks[0].inode)
			if l == nil || len(l.Processes) != 1 {
				t.Fatalf("no holder for the tcp4 socket")
			}
			p := l.Processes[0]
			if p.Exe != testBinary(t) || p.ExeDeleted || p.User != "root" || p.UID != 0 || len(p.Cmdline) == 0 || p.Cmdline[0] != testBinary(t) {
				t.Errorf("holder = %+v, want exe %s run by root", p, testBinary(t))
			}
			if l.NetnsInode != mustNetns(t, h.pid()) || l.Inode != h.socks[0].inode || l.UID != 0 {
				t.Errorf("listener = %+v", l)
			}
		})
	}
}

func mustNetns(t *testing.T, pid int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// listenFile opens a TCP listener on loopback in the test process and
// returns it as a file to pass to children.
func listenFile(t *testing.T) (*os.File, helperSock) {
	t.Helper()
	fd, err := openSock(sockSpec{"tcp4", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	ino, port, err := sockInfo(fd)
	if err != nil {
		t.Fatal(err)
	}
	return f, helperSock{ino, uint16(port)}
}

// startSharer starts a helper that holds a copy of a listening socket this
// process holds too, and checks that a snapshot of w lists both.
func startSharer(t *testing.T, w *Watcher) (*helper, helperSock) {
	t.Helper()
	f, sock := listenFile(t)
	h := startHelper(t, helperOpts{hold: f})
	want := []int{os.Getpid(), h.pid()}
	slices.Sort(want)
	if diff := cmp.Diff(want, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
		t.Fatalf("shared socket, holders (-want +got):\n%s", diff)
	}
	return h, sock
}

func TestSnapshotSharedSocket(t *testing.T) {
	requireRoot(t)
	f, sock := listenFile(t)
	a := startHelper(t, helperOpts{hold: f})
	b := startHelper(t, helperOpts{hold: f})
	w, _ := newWatcher(t, Options{})
	s := snapshot(t, w)
	want := []int{os.Getpid(), a.pid(), b.pid()}
	slices.Sort(want)
	if diff := cmp.Diff(want, pidsOf(byInode(s, sock.inode))); diff != "" {
		t.Errorf("holders mismatch (-want +got):\n%s", diff)
	}
}

func TestSnapshotRenamedProcess(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", rename: "sshd"})
	w, _ := newWatcher(t, Options{})
	l := byInode(snapshot(t, w), h.socks[0].inode)
	if l == nil || len(l.Processes) != 1 {
		t.Fatalf("listener %+v", l)
	}
	p := l.Processes[0]
	if p.Comm != "sshd" || p.Cmdline[0] != "sshd" {
		t.Errorf("comm %q cmdline %q: the rename did not take, the test is broken", p.Comm, p.Cmdline)
	}
	if p.Exe != testBinary(t) {
		t.Errorf("exe = %q, want the real binary %q", p.Exe, testBinary(t))
	}
}

// copyTestBinary writes an executable copy of the test binary at each path,
// for helpers that must run from a file of their own.
func copyTestBinary(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		copyFile(t, f, testBinary(t))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, dst io.Writer, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := io.Copy(dst, in); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotDeletedExe(t *testing.T) {
	requireRoot(t)
	t.Run("deleted file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "payload")
		copyTestBinary(t, path)
		h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", path: path})
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		w, _ := newWatcher(t, Options{})
		l := byInode(snapshot(t, w), h.socks[0].inode)
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("listener %+v", l)
		}
		if p := l.Processes[0]; p.Exe != path || !p.ExeDeleted {
			t.Errorf("exe = %q deleted = %v, want %q deleted", p.Exe, p.ExeDeleted, path)
		}
	})
	t.Run("memfd", func(t *testing.T) {
		fd, err := unix.MemfdCreate("payload", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "memfd")
		defer f.Close()
		copyFile(t, f, testBinary(t))
		h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), fd)})
		w, _ := newWatcher(t, Options{})
		l := byInode(snapshot(t, w), h.socks[0].inode)
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("listener %+v", l)
		}
		if p := l.Processes[0]; !strings.HasPrefix(p.Exe, "/memfd:payload") || !p.ExeDeleted {
			t.Errorf("exe = %q deleted = %v, want /memfd:payload deleted", p.Exe, p.ExeDeleted)
		}
	})
}

func TestSnapshotOtherNetns(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0 udp4=127.0.0.1:0 udp4=127.0.0.1:50000 tcp4dev=127.0.0.1:0", netns: true})
	ino := mustNetns(t, h.pid())
	if p := h.socks[1].port; p < 40000 || p > 40100 {
		t.Fatalf("udp port %d not from the child's ip_local_port_range 40000-40100", p)
	}
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableSetns=%v", disable), func(t *testing.T) {
			w, _ := newWatcher(t, Options{DisableSetns: disable})
			s := snapshot(t, w)
			name := "pid:" + strconv.Itoa(h.pid())
			for _, hs := range h.socks {
				l := byInode(s, hs.inode)
				if l == nil {
					t.Fatalf("socket %d in the child's namespace not found", hs.inode)
				}
				if l.Netns != name || l.NetnsInode != ino || l.Port != hs.port {
					t.Errorf("listener in %s (%d) port %d, want %s (%d) port %d", l.Netns, l.NetnsInode, l.Port, name, ino, hs.port)
				}
				if diff := cmp.Diff([]int{h.pid()}, pidsOf(l)); diff != "" {
					t.Errorf("holders (-want +got):\n%s", diff)
				}
			}
			if !disable {
				// Entering the namespace reads its own ip_local_port_range
				// (the /proc fallback can only assume the default).
				got := []bool{byInode(s, h.socks[1].inode).Ephemeral, byInode(s, h.socks[2].inode).Ephemeral}
				if diff := cmp.Diff([]bool{true, false}, got); diff != "" {
					t.Errorf("ephemeral in 40000-40100 (-want +got):\n%s", diff)
				}
				// The bound device is named inside the namespace.
				if got := byInode(s, h.socks[3].inode).Interface; got != "lo" {
					t.Errorf("interface = %q, want lo", got)
				}
			}
			if !slices.ContainsFunc(s.Namespaces, func(n Namespace) bool { return n.Name == name && n.Inode == ino && n.Inspected }) {
				t.Errorf("namespace %s not listed as inspected: %+v", name, s.Namespaces)
			}
		})
	}
}

// TestSnapshotRunNetns checks a namespace bound under the netns directory
// with no process inside: its listener (held by the test process, which is
// outside) is found by entering it, and without setns it is reported as not
// inspected, once.
func TestSnapshotRunNetns(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	name := "pwtest"
	bind := filepath.Join(dir, name)
	// A child makes the namespace and a listener in it; the namespace is
	// bound under dir, the listener passed here, and the child exits. (Doing
	// it on a thread of this process could leave the main thread in the
	// namespace: the runtime parks rather than kills a locked main thread.)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(pair[0]), "mine"), os.NewFile(uintptr(pair[1]), "theirs")
	defer mine.Close()
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", netns: true, extra: []*os.File{nil, theirs}})
	theirs.Close()
	if err := os.WriteFile(bind, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/net", h.pid()), bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })
	f := recvFile(t, h, mine)
	defer f.Close()
	h.Stop()
	inode, port, err := sockInfo(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("setns", func(t *testing.T) {
		w, _ := newWatcher(t, Options{NetnsDir: dir})
		l := byInode(snapshot(t, w), inode)
		if l == nil {
			t.Fatal("listener in the bound namespace not found")
		}
		if l.Netns != name || int(l.Port) != port {
			t.Errorf("netns %q port %d, want %q %d", l.Netns, l.Port, name, port)
		}
		if diff := cmp.Diff([]int{os.Getpid()}, pidsOf(l)); diff != "" {
			t.Errorf("holders (-want +got):\n%s", diff)
		}
	})
	t.Run("no setns", func(t *testing.T) {
		w, warns := newWatcher(t, Options{NetnsDir: dir, DisableSetns: true})
		for range 2 {
			s := snapshot(t, w)
			i := slices.IndexFunc(s.Namespaces, func(n Namespace) bool { return n.Name == name })
			if i < 0 || s.Namespaces[i].Inspected || s.Namespaces[i].Err == "" {
				t.Errorf("namespace %s: %+v, want not inspected with a reason", name, s.Namespaces)
			}
		}
		n := 0
		for _, m := range *warns {
			if strings.Contains(m, name) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("warned %d times about %s, want once: %q", n, name, *warns)
		}
	})
	// Bound while the watcher runs, as `ip netns add` does it: the name is
	// created (the directory changes), then the namespace mounted on it
	// (the directory does not). The directory is listed again only when it
	// changed or a name was not mounted yet: both must be seen.
	t.Run("bound later", func(t *testing.T) {
		dir2 := t.TempDir()
		w, _ := newWatcher(t, Options{NetnsDir: dir2})
		if byInode(snapshot(t, w), inode) != nil {
			t.Fatal("listener found before its namespace was bound")
		}
		bind2 := filepath.Join(dir2, "later")
		if err := os.WriteFile(bind2, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if byInode(snapshot(t, w), inode) != nil {
			t.Fatal("listener found before its namespace was mounted")
		}
		if err := unix.Mount(bind, bind2, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(bind2, unix.MNT_DETACH) })
		l := byInode(snapshot(t, w), inode)
		if l == nil || l.Netns != "later" {
			t.Fatalf("listener in the namespace bound later: %+v, want it in netns later", l)
		}
		// Unbound and removed: the namespace, with no process inside,
		// is gone from the next snapshot.
		if err := unix.Unmount(bind2, unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(bind2); err != nil {
			t.Fatal(err)
		}
		s := snapshot(t, w)
		if slices.ContainsFunc(s.Namespaces, func(n Namespace) bool { return n.Name == "later" }) {
			t.Errorf("namespace later still listed after it was unbound: %+v", s.Namespaces)
		}
	})
}

// TestSnapshotGroundTruth compares, for every namespace, the snapshot with
// what the kernel shows in /proc/PID/net of a process inside. The
// namespaces are listed independently of the snapshot (the distinct
// /proc/*/ns/net, and /run/netns/*): each must be in the snapshot, inspected
// or said not to be. Sockets come and go on a busy machine, so a mismatch is
// retried a few times.
func TestSnapshotGroundTruth(t *testing.T) {
	requireRoot(t)
	startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0 udp6only=[::1]:0", netns: true})
	w, _ := newWatcher(t, Options{})
	var lastDiff string
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		s := snapshot(t, w)
		lastDiff = groundTruthDiff(t, s)
		if lastDiff == "" {
			return
		}
	}
	t.Errorf("snapshot and the kernel disagree (-kernel +snapshot):\n%s", lastDiff)
}

// kernelNetns lists the network namespaces from the kernel, not from a
// snapshot: inode -> a pid inside (0 for a /run/netns one with nobody in).
func kernelNetns(t *testing.T) map[uint64]int {
	t.Helper()
	out := map[uint64]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil {
			if _, ok := out[st.Ino]; !ok {
				out[st.Ino] = pid
			}
		}
	}
	bound, _ := os.ReadDir("/run/netns")
	for _, e := range bound {
		var st unix.Stat_t
		var fs unix.Statfs_t
		p := filepath.Join("/run/netns", e.Name())
		if unix.Stat(p, &st) == nil && unix.Statfs(p, &fs) == nil && fs.Type == unix.NSFS_MAGIC {
			if _, ok := out[st.Ino]; !ok {
				out[st.Ino] = 0
			}
		}
	}
	return out
}

func groundTruthDiff(t *testing.T, s *Snapshot) string {
	t.Helper()
	listed := map[uint64]Namespace{}
	for _, ns := range s.Namespaces {
		listed[ns.Inode] = ns
	}
	got := map[uint64][]string{}
	for _, l := range s.Listeners {
		got[l.NetnsInode] = append(got[l.NetnsInode], fmt.Sprintf("%s %s %d %d", l.Protocol, l.Address, l.Port, l.Inode))
	}
	want := map[uint64][]string{}
	var missing []string
	kernel := kernelNetns(t)
	for ino, pid := range kernel {
		ns, ok := listed[ino]
		switch {
		case !ok:
			missing = append(missing, fmt.Sprintf("namespace %d (pid %d) not in the snapshot", ino, pid))
			continue
		case !ns.Inspected:
			t.Logf("namespace %s (%d) not inspected: %s", ns.Name, ino, ns.Err)
			delete(got, ino)
			continue
		case pid == 0:
			continue // bound, nobody inside: nothing to read it through
		}
		es, err := readProcNet(fmt.Sprintf("/proc/%d/net", pid), nil)
		if err != nil {
			return err.Error()
		}
		want[ino] = []string{}
		for _, e := range es {
			proto := UDP
			if e.tcp {
				proto = TCP
			}
			want[ino] = append(want[ino], fmt.Sprintf("%s %s %d %d", proto, e.addr, e.port, e.inode))
		}
		if got[ino] == nil {
			got[ino] = []string{}
		}
	}
	for _, m := range []map[uint64][]string{got, want} {
		for _, v := range m {
			slices.Sort(v)
		}
	}
	// Listeners of a bound namespace with nobody inside (or of one gone
	// since the snapshot) have nothing to be compared with.
	for ino := range got {
		if _, ok := want[ino]; !ok {
			if kernel[ino] == 0 {
				delete(got, ino)
			}
		}
	}
	slices.Sort(missing)
	diff := cmp.Diff(want, got)
	if len(missing) > 0 {
		diff = strings.Join(missing, "\n") + "\n" + diff
	}
	return diff
}

func TestSnapshotIncremental(t *testing.T) {
	requireRoot(t)
	w, _ := newWatcher(t, Options{})

	t.Run("new listener in an existing process", func(t *testing.T) {
		h := startHelper(t, helperOpts{})
		snapshot(t, w)
		sock := parseHelperSock(t, h.Send(t, "open tcp4=127.0.0.1:0"))
		l := byInode(snapshot(t, w), sock.inode)
		if diff := cmp.Diff([]int{h.pid()}, pidsOf(l)); diff != "" {
			t.Errorf("holders (-want +got):\n%s", diff)
		}
	})

	t.Run("new ephemeral UDP socket in an existing process", func(t *testing.T) {
		// Searched for within ephemeralSearchEvery ticks, not at once.
		h := startHelper(t, helperOpts{})
		snapshot(t, w)
		sock := parseHelperSock(t, h.Send(t, "open udp4=127.0.0.1:0"))
		var got []int
		for range ephemeralSearchEvery + 1 {
			l := byInode(snapshot(t, w), sock.inode)
			if l == nil {
				t.Fatalf("socket %d not listed", sock.inode)
			}
			if !l.Ephemeral {
				t.Skipf("port %d is not ephemeral here", l.Port)
			}
			if got = pidsOf(l); len(got) > 0 {
				break
			}
		}
		if diff := cmp.Diff([]int{h.pid()}, got); diff != "" {
			t.Errorf("holders (-want +got):\n%s", diff)
		}
	})

	t.Run("new process holding a cached socket", func(t *testing.T) {
		f, sock := listenFile(t)
		if diff := cmp.Diff([]int{os.Getpid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("first tick holders (-want +got):\n%s", diff)
		}
		h := startHelper(t, helperOpts{hold: f})
		want := []int{os.Getpid(), h.pid()}
		slices.Sort(want)
		if diff := cmp.Diff(want, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("holders (-want +got):\n%s", diff)
		}
		h.Stop()
		if diff := cmp.Diff([]int{os.Getpid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("after the child exited, holders (-want +got):\n%s", diff)
		}
	})

	t.Run("holder closes its copy", func(t *testing.T) {
		// A launcher that hands a socket on and closes its own copy, but
		// lives on, must stop being listed.
		h, sock := startSharer(t, w)
		if got := h.Send(t, "close"); got != "closed" {
			t.Fatalf("helper said %q", got)
		}
		// Holders are verified a few per tick, in turn: with every
		// listener of a busy machine cached, that may take a while.
		var got []int
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			if got = pidsOf(byInode(snapshot(t, w), sock.inode)); slices.Equal(got, []int{os.Getpid()}) {
				// It holds nothing more: its details go with it.
				if w.details.byPid[int32(h.pid())] != nil {
					t.Errorf("details of pid %d kept after it stopped holding anything", h.pid())
				}
				return
			}
		}
		t.Errorf("after the child closed its copy, holders = %v, want only %d", got, os.Getpid())
	})

	t.Run("holder closes its only listener and lives on", func(t *testing.T) {
		h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0"})
		sock := h.socks[0]
		if diff := cmp.Diff([]int{h.pid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Fatalf("holders (-want +got):\n%s", diff)
		}
		if got := h.Send(t, "close"); got != "closed" {
			t.Fatalf("helper said %q", got)
		}
		if l := byInode(snapshot(t, w), sock.inode); l != nil {
			t.Fatalf("closed socket %d still listed", sock.inode)
		}
		if w.details.byPid[int32(h.pid())] != nil {
			t.Errorf("details of pid %d kept after its only listener closed", h.pid())
		}
	})

	t.Run("holder execs another program", func(t *testing.T) {
		f, sock := listenFile(t)
		h := startHelper(t, helperOpts{hold: f})
		f.Close()
		l := byInode(snapshot(t, w), sock.inode)
		if l == nil || len(l.Processes) != 1 || l.Processes[0].Exe != testBinary(t) {
			t.Fatalf("before exec: %+v", l)
		}
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep binary")
		}
		want, err := filepath.EvalSymlinks(sleep)
		if err != nil {
			t.Fatal(err)
		}
		h.KillOnStop = true
		h.Tell(t, "exec "+sleep+" 60")
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.pid()))
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("helper did not exec %s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Holders are rechecked a few per tick, in turn (see above).
		var exe string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			if l := byInode(snapshot(t, w), sock.inode); l != nil && len(l.Processes) == 1 {
				if exe = l.Processes[0].Exe; exe == want {
					return
				}
			}
		}
		t.Errorf("after exec, exe = %q, want %q", exe, want)
	})

	t.Run("holder exits after passing the socket on", func(t *testing.T) {
		// The child holds the only copy; it passes it to this (existing)
		// process over a unix socket and exits. The next tick must find
		// the socket here although no new process appeared.
		f, sock := listenFile(t)
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		mine, theirs := os.NewFile(uintptr(pair[0]), "mine"), os.NewFile(uintptr(pair[1]), "theirs")
		defer mine.Close()
		h := startHelper(t, helperOpts{hold: f, extra: []*os.File{theirs}})
		theirs.Close()
		f.Close()
		if diff := cmp.Diff([]int{h.pid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("first tick holders (-want +got):\n%s", diff)
		}
		got := recvFile(t, h, mine)
		defer got.Close()
		// Its exit is told by its pidfd (exits.go), not found by kill.
		if !w.exits.watched(int32(h.pid())) {
			t.Errorf("holder %d not watched by a pidfd (%d watched; last refusal: %v)", h.pid(), len(w.exits.fds), w.exits.err)
		}
		h.Stop()
		if diff := cmp.Diff([]int{os.Getpid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("holders after the holder exited (-want +got):\n%s", diff)
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	w, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	if _, err := w.Snapshot(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Snapshot(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSnapshotOneShot(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		w, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Snapshot(ctx); err != nil {
			b.Fatal(err)
		}
		w.Close()
	}
}

// recvFile asks h to send its first socket over conn and returns it.
func recvFile(t *testing.T, h *helper, conn *os.File) *os.File {
	t.Helper()
	if got := h.Send(t, "sendfd"); got != "sent" {
		t.Fatalf("helper said %q", got)
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(conn.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		t.Fatalf("control messages %v: %v", cmsgs, err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v: %v", fds, err)
	}
	return os.NewFile(uintptr(fds[0]), "received")
}

// snapshotHelper takes two snapshots and prints, for the unprivileged test,
// whether they were partial, how many warnings there were, and the inodes
// of the listeners with the pids holding them.
func snapshotHelper() int {
	warns := 0
	w, err := New(Options{Warn: func(m string) {
		warns++
		fmt.Fprintln(os.Stderr, "warning:", m)
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	var s *Snapshot
	for range 2 {
		if s, err = w.Snapshot(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	fmt.Println("partial", s.Partial, "warnings", warns)
	for _, l := range s.Listeners {
		fmt.Println(l.Inode, len(l.Processes))
	}
	return 0
}

// TestSnapshotUnprivileged runs a watcher as nobody: it must still list
// every listener (sock_diag needs no privilege), attribute none of root's,
// say once that attribution is partial, and not fail.
func TestSnapshotUnprivileged(t *testing.T) {
	requireRoot(t)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0"})
	dir, err := os.MkdirTemp("", "portwatch-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "watcher.test")
	copyTestBinary(t, bin)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=snapshot")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("cannot run a copy of the test binary from %s as nobody: %v", dir, err)
	}
	if err != nil {
		t.Fatalf("%v, stderr:\n%s", err, stderr.String())
	}
	t.Logf("unprivileged watcher said:\n%s%s", out, stderr.String())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[0] != "partial true warnings 1" {
		t.Errorf("got %q, want partial with one warning; stderr:\n%s", lines[0], stderr.String())
	}
	want := fmt.Sprintf("%d 0", h.socks[0].inode)
	if !slices.Contains(lines[1:], want) {
		t.Errorf("root's listener %d not listed unattributed in:\n%s", h.socks[0].inode, out)
	}
}

// cgroupRoot returns a writable cgroup v2 (or systemd v1) hierarchy.
func cgroupRoot(t *testing.T) string {
	t.Helper()
	for _, d := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(d, "cgroup.controllers")); err == nil {
			return d
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs"); err == nil {
		return "/sys/fs/cgroup/systemd"
	}
	t.Skip("no cgroup v2 or name=systemd hierarchy mounted")
	return ""
}

// dockerScope makes a cgroup named the way docker names a container's scope,
// in a test cgroup of its own, and removes both on cleanup. It returns the
// hierarchy's root and the scope. It skips the test if it cannot.
func dockerScope(t *testing.T, id string) (root, dir string) {
	t.Helper()
	root = cgroupRoot(t)
	dir = filepath.Join(root, fmt.Sprintf("portwatch-test-%d", os.Getpid()), "docker-"+id+".scope")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	t.Cleanup(func() {
		os.Remove(dir)
		os.Remove(filepath.Dir(dir))
	})
	return root, dir
}

// moveToCgroup moves pid into the cgroup dir, and on cleanup back to root,
// so that dir can be removed. It skips the test if it cannot.
func moveToCgroup(t *testing.T, root, dir string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Skipf("cannot move a process into a cgroup: %v", err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	})
}

// TestSnapshotContainerName puts a child with its own network namespace in
// a cgroup named the way docker names a container's scope: the namespace
// must be named after the container, and the holder carry its id and unit.
func TestSnapshotContainerName(t *testing.T) {
	requireRoot(t)
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	root, dir := dockerScope(t, id)
	h := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", netns: true})
	moveToCgroup(t, root, dir, h.pid())
	w, _ := newWatcher(t, Options{})
	l := byInode(snapshot(t, w), h.socks[0].inode)
	if l == nil || len(l.Processes) != 1 {
		t.Fatalf("listener %+v", l)
	}
	got := []string{l.Netns, l.Processes[0].Container, l.Processes[0].Unit}
	want := []string{"container:" + id[:12], id, "docker-" + id + ".scope"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("netns, container, unit (-want +got):\n%s", diff)
	}
}

// TestSnapshotNetnsEnteredLater checks a namespace entered by a process the
// watcher already knows, with no new pid: a shell, seen by a long-lived
// watcher, that later runs `exec unshare -n helper`, which listens. The
// listener must be found, in that namespace, within netnsRecheckEvery
// ticks, plus a couple (pids that came or went meanwhile shift the round);
// event-driven, with the listener's pid hinted as the daemon does from the
// kernel's event, at the next snapshot.
func TestSnapshotNetnsEnteredLater(t *testing.T) {
	requireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare binary (util-linux)")
	}
	for _, c := range []struct {
		name    string
		disable bool // DisableSetns
		fromNew bool // the shell starts in a namespace of its own
		hinted  bool // event-driven, the pid hinted (Recheck)
	}{
		{"setns", false, false, false},
		{"proc", true, false, false},
		{"setns from another namespace", false, true, false},
		{"proc from another namespace", true, true, false},
		{"setns, event-driven and hinted", false, false, true},
		{"proc, event-driven and hinted", true, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, _ := newWatcher(t, Options{DisableSetns: c.disable})
			w.SetEventDriven(c.hinted)
			// read waits for the go-ahead; it reads from the pipe a byte
			// at a time, leaving the rest of stdin to the helper.
			o := listenertest.Options{
				Path: "sh",
				Args: []string{"-c", `read x && exec "$0" -n "$1" -test.run='^$'`, unshare, testBinary(t)},
				Env:  []string{helperEnv + "=listen", "PW_SOCKS=tcp4=127.0.0.1:0", "PW_LO=1"},
			}
			if c.fromNew {
				// The shell is then the only process, and so the one
				// the /proc fallback reads, of its first namespace.
				o.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET}
			}
			h := &helper{Child: listenertest.Start(t, o)}
			firstNS := mustNetns(t, h.pid())
			// Let the watcher know the shell, in our namespace, and settle.
			for range 3 {
				snapshot(t, w)
			}
			h.Tell(t, "go")
			h.readSocks(t)
			ino := mustNetns(t, h.pid())
			if ino == firstNS {
				t.Fatalf("helper %d did not enter a new namespace", h.pid())
			}
			var l *Listener
			ticks := netnsRecheckEvery + 3
			if c.hinted {
				w.Recheck([]int32{int32(h.pid())})
				ticks = 1
			}
			for tick := 0; tick < ticks && l == nil; tick++ {
				l = byInode(snapshot(t, w), h.socks[0].inode)
				if l != nil && l.NetnsInode != ino {
					// Read through a process that has left: the
					// socket must not be listed as the old one's.
					t.Fatalf("tick %d: listener %d listed in namespace %s (%d), want %d", tick, l.Inode, l.Netns, l.NetnsInode, ino)
				}
			}
			if l == nil {
				t.Fatalf("listener %d in the namespace pid %d entered later not found within %d ticks", h.socks[0].inode, h.pid(), ticks)
			}
			want := []any{"pid:" + strconv.Itoa(h.pid()), ino, h.socks[0].port}
			if diff := cmp.Diff(want, []any{l.Netns, l.NetnsInode, l.Port}); diff != "" {
				t.Errorf("netns, inode, port (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]int{h.pid()}, pidsOf(l)); diff != "" {
				t.Errorf("holders (-want +got):\n%s", diff)
			}
		})
	}
}
