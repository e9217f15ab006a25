package ebpf

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"
)

var record_ = flag.Bool("record", false, "write the kernel's records seen by TestEvents to testdata/records")

// helperEnv makes the test binary run a helper (see TestMain) instead of the
// tests: a child process that listens in a cgroup, or that opens the probe
// with fewer capabilities.
const helperEnv = "PORTWATCHD_EBPF_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "listen":
		os.Exit(helperListen())
	case "open":
		os.Exit(helperOpen())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperListen listens on a TCP port (of the address in $helperEnv_ADDR,
// default loopback), prints it, and keeps it open until its standard input
// closes.
func helperListen() int {
	addr := os.Getenv(helperEnv + "_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// helperOpen opens the probe and prints "ok", or the reason it could not;
// with an argument "hold" it then keeps the probe until stdin closes.
func helperOpen() int {
	p, err := Open(Options{})
	if err != nil {
		var ue *UnavailableError
		if errors.As(err, &ue) {
			fmt.Println(ue.Reason)
			fmt.Fprintln(os.Stderr, err)
			return 0
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer p.Close()
	fmt.Println("ok")
	if os.Getenv(helperEnv+"_HOLD") != "" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	return 0
}

// openProbe loads the programs, or skips the test where they cannot load:
// without root or BTF. Everywhere else (CI runs as root with BTF) a failure
// to load fails the test.
func openProbe(t testing.TB) *Probe {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("the kernel has no BTF: %v", err)
	}
	p, err := Open(Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := p.ListenExit(); err != nil {
		t.Logf("listen events come from the tracepoint: %v", err)
	}
	return p
}

// waitFor reads events until one matches, and returns it with its raw
// record. The deadline only keeps a broken probe from hanging the test.
func waitFor(t testing.TB, p *Probe, match func(Event) bool) (Event, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		b, err := p.readRecord(ctx)
		if err != nil {
			t.Fatalf("no matching event: %v", err)
		}
		e, err := ParseEvent(b)
		if err != nil {
			t.Fatalf("ParseEvent(%x): %v", b, err)
		}
		if match(e) {
			return e, append([]byte(nil), b...)
		}
	}
}

// like matches the events of want's process, namespace, port, protocol and
// kind: other processes on the host (other tests) may use the same port
// number in other namespaces, or after this test closed it.
func like(want Event) func(Event) bool {
	return func(e Event) bool {
		return e.Pid == want.Pid && e.NetnsInode == want.NetnsInode && e.Port == want.Port &&
			e.Proto == want.Proto && e.Kind == want.Kind
	}
}

// self is what every event of the test process carries.
func self(t testing.TB) Event {
	t.Helper()
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	return Event{
		NetnsInode: inode(t, "/proc/self/ns/net"),
		CgroupID:   selfCgroupID(t),
		Pid:        int32(os.Getpid()),
		UID:        uint32(os.Getuid()),
		Comm:       strings.TrimSuffix(string(comm), "\n"),
	}
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// selfCgroupID is the id of the test's cgroup v2: the inode of its directory.
func selfCgroupID(t testing.TB) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return inode(t, filepath.Join(cgroup2(t), path))
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return 0
}

func cgroup2(t testing.TB) string {
	t.Helper()
	mnt, err := cgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return mnt
}

// compareEvent checks the event's time against the clock, then the rest.
func compareEvent(t testing.TB, want, got Event) {
	t.Helper()
	if got.Time <= 0 || got.Time > MonotonicNow() {
		t.Errorf("event time %v is not a past CLOCK_MONOTONIC time (now %v)", got.Time, MonotonicNow())
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Event{}, "Time"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	panic(a)
}

func TestEvents(t *testing.T) {
	p := openProbe(t)
	me := self(t)
	tests := []struct {
		name, network, address string
		family, proto          string
		addr                   netip.Addr
		kind                   Kind
	}{
		{"tcp4", "tcp4", "127.0.0.1:0", IPv4, TCP, netip.MustParseAddr("127.0.0.1"), KindListen},
		{"tcp6", "tcp6", "[::1]:0", IPv6, TCP, netip.IPv6Loopback(), KindListen},
		// Go leaves IPV6_V6ONLY off on "tcp" with the IPv6 wildcard.
		{"tcp dual-stack", "tcp", "[::]:0", IPv6, TCP, netip.IPv6Unspecified(), KindListen},
		{"udp4", "udp4", "127.0.0.1:0", IPv4, UDP, netip.MustParseAddr("127.0.0.1"), KindBind},
		{"udp6", "udp6", "[::1]:0", IPv6, UDP, netip.IPv6Loopback(), KindBind},
		{"udp dual-stack", "udp", "[::]:0", IPv6, UDP, netip.IPv6Unspecified(), KindBind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				local net.Addr
				close func() error
			)
			if tt.proto == TCP {
				l, err := net.Listen(tt.network, tt.address)
				if err != nil {
					t.Fatal(err)
				}
				local, close = l.Addr(), l.Close
			} else {
				c, err := net.ListenPacket(tt.network, tt.address)
				if err != nil {
					t.Fatal(err)
				}
				local, close = c.LocalAddr(), c.Close
			}
			port := addrPort(local).Port()
			want := me
			want.Family, want.Proto, want.Addr, want.Port, want.Kind = tt.family, tt.proto, tt.addr, port, tt.kind
			got, raw := waitFor(t, p, like(want))
			compareEvent(t, want, got)
			writeRecord(t, tt.name+" "+tt.kind.String(), raw)

			if err := close(); err != nil {
				t.Fatal(err)
			}
			// A UDP socket's release is reported too (cgroup/sock_release),
			// with the port it was bound to.
			want.Kind = KindClose
			got, raw = waitFor(t, p, like(want))
			compareEvent(t, want, got)
			writeRecord(t, tt.name+" close", raw)
		})
	}
}

// writeRecord keeps a raw record as a seed for FuzzParseEvent with -record.
func writeRecord(t testing.TB, name string, raw []byte) {
	t.Helper()
	if !*record_ {
		return
	}
	name = strings.NewReplacer(" ", "-", "/", "-").Replace(name)
	if err := os.WriteFile(filepath.Join("testdata/records", name+".bin"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFailedListen makes listen() fail: two sockets bound to one port with
// SO_REUSEADDR may both bind, but only one may listen.
func TestFailedListen(t *testing.T) {
	p := openProbe(t)
	var fds [2]int
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			t.Fatal(err)
		}
		fds[i] = fd
	}
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(fds[0], sa); err != nil {
		t.Fatal(err)
	}
	name, err := unix.Getsockname(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	sa.Port = name.(*unix.SockaddrInet4).Port
	if err := unix.Bind(fds[1], sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fds[0], 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fds[1], 1); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second listen: %v, want EADDRINUSE", err)
	}

	port := uint16(sa.Port)
	pid := int32(os.Getpid())
	ofPort := func(e Event) bool { return e.Port == port && e.Proto == TCP && e.Pid == pid }
	var got []string
	// The first listener's listen, then the failed listen's two events.
	for range 3 {
		e, _ := waitFor(t, p, ofPort)
		got = append(got, fmt.Sprintf("%s %d", e.Kind, e.Ret))
	}
	want := []string{"listen 0", "close 0", "listen -98"} // the tracepoint's close comes before the exit
	if p.ListenExit() != nil {
		want = []string{"listen 0", "listen 0", "close 0"}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events of port %d (-want +got):\n%s", port, diff)
	}
}

// TestNetns runs a listener in a network namespace of its own.
func TestNetns(t *testing.T) {
	p := openProbe(t)
	child, port := startListener(t, "0.0.0.0:0", &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET})
	netns := inode(t, fmt.Sprintf("/proc/%d/ns/net", child))
	if netns == inode(t, "/proc/self/ns/net") {
		t.Fatal("the listener's namespace is the host's")
	}
	want := self(t)
	want.NetnsInode, want.Pid = netns, int32(child)
	want.Family, want.Proto, want.Addr, want.Port, want.Kind = IPv4, TCP, netip.IPv4Unspecified(), port, KindListen
	got, raw := waitFor(t, p, like(want))
	compareEvent(t, want, got)
	writeRecord(t, "netns listen", raw)
}

// TestCgroup runs a listener in a child cgroup, as a container runtime or
// systemd would.
func TestCgroup(t *testing.T) {
	p := openProbe(t)
	dir := filepath.Join(cgroup2(t), fmt.Sprintf("portwatchd-ebpf-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Error(err)
		}
	})
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	child, port := startListener(t, "", &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())})

	want := self(t)
	want.CgroupID = inode(t, dir)
	want.Pid = int32(child)
	want.Family, want.Proto, want.Addr, want.Port, want.Kind = IPv4, TCP, netip.MustParseAddr("127.0.0.1"), port, KindListen
	got, raw := waitFor(t, p, like(want))
	compareEvent(t, want, got)
	writeRecord(t, "cgroup listen", raw)
}

// startListener starts the listen helper with attr, and returns its pid and
// port. The helper exits at the end of the test (before the test's other
// cleanups, registered earlier).
func startListener(t *testing.T, addr string, attr *syscall.SysProcAttr) (int, uint16) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=listen", helperEnv+"_ADDR="+addr)
	cmd.SysProcAttr = attr
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("listen helper: %v", err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(line), 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, uint16(port)
}

// TestDropped binds more UDP sockets than the ring buffer holds records, and
// reads none: the rest must be counted as dropped.
func TestDropped(t *testing.T) {
	p := openProbe(t)
	before, err := p.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	const perRecord = eventSize + 8 // the ring buffer's record header
	binds := 256*1024/perRecord + 500
	for range binds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
	}
	after, err := p.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	// Other processes' events fill the buffer too: at least 500 dropped.
	if after-before < 500 {
		t.Errorf("dropped %d events of %d binds into a ring of %d records, want at least 500",
			after-before, binds, 256*1024/perRecord)
	}
}

func TestReadAfterClose(t *testing.T) {
	p := openProbe(t)
	errc := make(chan error, 1)
	go func() {
		// Events from elsewhere on the machine may come before the
		// close: the first error is what Close must give.
		for {
			if _, err := p.Read(context.Background()); err != nil {
				errc <- err
				return
			}
		}
	}()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Read during Close = %v, want ErrClosed", err)
	}
	if _, err := p.Read(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrClosed", err)
	}
}

func TestReadCancel(t *testing.T) {
	p := openProbe(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		// Only this test's own events could arrive; it makes none after
		// cancel, so Read must return ctx's error.
		for {
			e, err := p.Read(ctx)
			if err != nil {
				errc <- err
				return
			}
			_ = e
		}
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
	// The flush that woke the cancelled Read does not end the next one.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := addrPort(l.Addr()).Port()
	want := self(t)
	want.Port, want.Proto, want.Kind = port, TCP, KindListen
	waitFor(t, p, like(want))
}

// The exec of a process given to SetHolders is reported with its new comm;
// the exec of any other process is not, nor that of one SetHolders removed.
func TestExec(t *testing.T) {
	p := openProbe(t)
	start := func() proc { return startExecer(t, nil) }
	wait := func(want proc, not ...proc) { waitExec(t, p, want, not...) }

	holder, other := start(), start()
	if err := p.SetHolders([]int32{holder.pid}); err != nil {
		t.Fatal(err)
	}
	other.go_()
	holder.go_()
	wait(holder, other)

	// Removed: not reported any more.
	gone, kept := start(), start()
	if err := p.SetHolders([]int32{gone.pid, kept.pid}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetHolders([]int32{kept.pid}); err != nil {
		t.Fatal(err)
	}
	var n int
	iter := p.objs.Holders.Iterate()
	var k uint32
	var v uint8
	for iter.Next(&k, &v) {
		n++
		if k != uint32(kept.pid) {
			t.Errorf("holders map holds %d, want only %d", k, kept.pid)
		}
	}
	if err := iter.Err(); err != nil || n != 1 {
		t.Errorf("holders map: %d entries (%v), want 1", n, err)
	}
	gone.go_()
	kept.go_()
	wait(kept, gone)
}

// An execer is a shell that execs sleep when told.
type proc struct {
	pid int32
	go_ func() // makes it exec sleep
}

// startExecer starts an execer, with attr.
func startExecer(t *testing.T, attr *syscall.SysProcAttr) proc {
	c := exec.Command("sh", "-c", "read x; exec sleep 60")
	c.SysProcAttr = attr
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return proc{pid: int32(c.Process.Pid), go_: func() { fmt.Fprintln(in); in.Close() }}
}

// waitExec reads until want's exec of sleep, failing at one of a pid in
// not. (A process's exec of sh may be reported too: Start returns once the
// exec closed its descriptors, a little before the tracepoint.)
func waitExec(t *testing.T, p *Probe, want proc, not ...proc) {
	t.Helper()
	e, _ := waitFor(t, p, func(e Event) bool {
		if e.Kind != KindExec || e.Comm != "sleep" {
			return false
		}
		for _, n := range not {
			if e.Pid == n.pid {
				t.Errorf("exec of %d reported, it is not a holder: %+v", n.pid, e)
			}
		}
		return e.Pid == want.pid
	})
	want_ := Event{Pid: want.pid, Comm: "sleep", Kind: KindExec, NetnsInode: inode(t, "/proc/self/ns/net"), UID: uint32(os.Getuid())}
	got := Event{Pid: e.Pid, Comm: e.Comm, Kind: e.Kind, NetnsInode: e.NetnsInode, UID: e.UID}
	if diff := cmp.Diff(want_, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("exec event (-want +got):\n%s", diff)
	}
}

// A daemon in a PID namespace of its own gives and gets the pids it sees:
// here the probe is given a new namespace's, whose first process is pid 1.
func TestExecPidns(t *testing.T) {
	p := openProbe(t)
	inNS := startExecer(t, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
	if err := p.setPidns(fmt.Sprintf("/proc/%d/ns/pid", inNS.pid)); err != nil {
		t.Fatal(err)
	}
	// The host's pid of the same process is nothing in that namespace.
	host := startExecer(t, nil)
	if err := p.SetHolders([]int32{1, host.pid}); err != nil {
		t.Fatal(err)
	}
	host.go_()
	inNS.go_()
	waitExec(t, p, proc{pid: 1}, host)
}
