package watcher

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// formatEntries renders parsed sockets one per line, sorted, for golden files.
func formatEntries(es []sockEntry) string {
	lines := make([]string, 0, len(es))
	for _, e := range es {
		proto := "udp"
		if e.tcp {
			proto = "tcp"
		}
		lines = append(lines, fmt.Sprintf("%s %s port=%d v6=%v v6only=%d dual=%v if=%d uid=%d inode=%d",
			proto, e.addr, e.port, e.v6, e.v6only, e.dualStack(), e.ifindex, e.uid, e.inode))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func recordedSockDiag(t testing.TB) []sockEntry {
	t.Helper()
	var got []sockEntry
	for _, d := range sockDiagDumps {
		b, err := os.ReadFile(filepath.Join("testdata/sockdiag", d.name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err = parseSockDiag(d.tcp, splitMessages(b), got); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
	}
	return got
}

// recordedListeners are the listeners recordedSockets open, by port, as
// byPort formats them.
var recordedListeners = map[uint16]string{
	8001: "tcp 127.0.0.1 v6=false dual=false if=0",
	8002: "tcp ::1 v6=true dual=false if=0",
	8003: "tcp :: v6=true dual=true if=0",
	8004: "tcp 0.0.0.0 v6=false dual=false if=1",
	8005: "udp 0.0.0.0 v6=false dual=false if=0",
	8006: "udp :: v6=true dual=false if=0",
	8008: "tcp 127.0.0.1 v6=false dual=false if=0", // IPv4-mapped: shown as IPv4
	8009: "udp :: v6=true dual=true if=0",
	8010: "tcp 127.0.0.1 v6=false dual=false if=0", // the listener, not its connections
}

// byPort formats es by port, for recordedListeners, and fails t on a port
// listed twice.
func byPort(t testing.TB, es []sockEntry) map[uint16]string {
	t.Helper()
	got := map[uint16]string{}
	for _, e := range es {
		proto := "udp"
		if e.tcp {
			proto = "tcp"
		}
		if _, dup := got[e.port]; dup {
			t.Errorf("port %d listed twice", e.port)
		}
		got[e.port] = fmt.Sprintf("%s %s v6=%v dual=%v if=%d", proto, e.addr, e.v6, e.dualStack(), e.ifindex)
	}
	return got
}

func TestParseSockDiagRecorded(t *testing.T) {
	got := recordedSockDiag(t)
	golden(t, "testdata/sockdiag/parsed.golden", formatEntries(got))
	// What the recording opened, independently of the golden file.
	if diff := cmp.Diff(recordedListeners, byPort(t, got)); diff != "" {
		t.Errorf("recorded listeners mismatch (-want +got):\n%s", diff)
	}
}

func TestParseProcNetRecorded(t *testing.T) {
	got, err := readProcNet("testdata/proc/100/net", nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/proc/parsed.golden", formatEntries(got))
	// Recorded at the same moment: /proc/net and sock_diag must agree on
	// protocol, address, port and inode.
	key := func(es []sockEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%v %s %d %d", e.tcp, e.addr, e.port, e.inode))
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff(key(recordedSockDiag(t)), key(got)); diff != "" {
		t.Errorf("/proc/net and sock_diag disagree (-sock_diag +proc):\n%s", diff)
	}
}

func TestParseProcNetErrors(t *testing.T) {
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tests := []struct {
		name, data, want string
	}{
		{"short line", header + "   0: 00000000:1F44 00000000:0000 0A\n", "line 2: too few fields"},
		{"bad port", header + "   0: 00000000:XYZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 382834\n", `line 2: local address: "00000000:XYZ": bad port`},
		{"bad address", header + "   0: 0000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 382834\n", `line 2: local address: "0000:1F44": bad address length`},
		{"bad inode", header + "   0: 00000000:1F44 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 x\n", `line 2: inode: strconv.ParseUint: parsing "x": invalid syntax`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseProcNet([]byte(tt.data), true, nil)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSockDiagErrors(t *testing.T) {
	good, err := os.ReadFile("testdata/sockdiag/tcp4.bin")
	if err != nil {
		t.Fatal(err)
	}
	first := splitMessages(good)[0]
	short := first
	short.Data = first.Data[:40]
	badAttr := first
	badAttr.Data = append(slices.Clone(first.Data[:inetDiagMsgLen]), 0xff, 0x00, 0x0b, 0x00)
	badFamily := first
	badFamily.Data = slices.Clone(first.Data)
	badFamily.Data[0] = 99
	tests := []struct {
		name string
		msgs []netlink.Message
		want string
	}{
		{"short", []netlink.Message{short}, "message 0: inet_diag message too short: 40 bytes"},
		{"bad attribute", []netlink.Message{first, badAttr}, "message 1: bad attribute length 255"},
		{"bad family", []netlink.Message{badFamily}, "message 0: unknown address family 99"},
		{"other type skipped", []netlink.Message{{Header: netlink.Header{Type: netlink.Done}, Data: []byte{1}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseSockDiag(true, tt.msgs, nil)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSockDiagRequest(t *testing.T) {
	m := sockDiagRequest(false, unix.AF_INET6)
	want := make([]byte, inetDiagReqLen)
	want[0], want[1] = unix.AF_INET6, unix.IPPROTO_UDP
	want[4] = 1 << tcpClose // little endian on the machines we run on; checked below
	if !bytes.Equal(m.Data[:4], want[:4]) {
		t.Errorf("header bytes = %v, want %v", m.Data[:4], want[:4])
	}
	if got := uint32(m.Data[4]) | uint32(m.Data[5])<<8 | uint32(m.Data[6])<<16 | uint32(m.Data[7])<<24; got != 1<<tcpClose && got != (1<<tcpClose)<<24 {
		t.Errorf("states = %#x, want 1<<TCP_CLOSE", got)
	}
	if m.Header.Flags != netlink.Request|netlink.Dump || m.Header.Type != sockDiagByFamily {
		t.Errorf("header = %+v", m.Header)
	}
}

func TestParseServices(t *testing.T) {
	data := []byte(`# comment
tcpmux		1/tcp				# TCP port service multiplexer
ssh		22/tcp				# SSH Remote Login Protocol
telnet		23/tcp
domain		53/tcp
domain		53/udp
http		80/tcp		www		# WorldWideWeb HTTP
www-alt		80/tcp
broken		x/tcp
nofield
sctp-only	9/sctp
`)
	want := map[serviceKey]string{
		{true, 1}: "tcpmux", {true, 22}: "ssh", {true, 23}: "telnet",
		{true, 53}: "domain", {false, 53}: "domain", {true, 80}: "http",
	}
	if diff := cmp.Diff(want, parseServices(data), cmp.AllowUnexported(serviceKey{})); diff != "" {
		t.Errorf("parseServices mismatch (-want +got):\n%s", diff)
	}
}

func TestParsePasswd(t *testing.T) {
	data := []byte("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\ntoor:x:0:0::/:/bin/sh\nbad:x:notanumber:0::/:\n:x:5:5::/:\n")
	want := map[uint32]string{0: "root", 33: "www-data"}
	if diff := cmp.Diff(want, parsePasswd(data)); diff != "" {
		t.Errorf("parsePasswd mismatch (-want +got):\n%s", diff)
	}
	if got := userName(want, 1234); got != "1234" {
		t.Errorf("userName(unknown) = %q, want 1234", got)
	}
}

func TestParseCgroup(t *testing.T) {
	const id = "4f2c1a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b"
	tests := []struct {
		name, data, unit, container string
	}{
		{"v2 service", "0::/system.slice/ssh.service\n", "ssh.service", ""},
		{"v2 init", "0::/init.scope\n", "init.scope", ""},
		{"user service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n", "user@1000.service/foo.service", ""},
		{"systemd-run --user --unit=nginx", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service\n", "user@1000.service/nginx.service", ""},
		{"user manager itself", "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n", "user@1000.service/init.scope", ""},
		{"user manager, no inner unit", "0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service", ""},
		{"user scope", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-foo-42.scope\n", "user@1000.service/app-gnome-foo-42.scope", ""},
		{"fake user@0 inside a user's subtree", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/user@0.service/ssh.service\n", "user@1000.service/ssh.service", ""},
		{"user@ with a non-numeric uid is not a manager", "0::/system.slice/user@x.service/ssh.service\n", "ssh.service", ""},
		{"rootless podman", "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope/container\n", "user@1000.service/libpod-" + id + ".scope", id},
		{"v1 user service", "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n", "user@1000.service/foo.service", ""},
		{"user session", "0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope", ""},
		{"docker v2", "0::/system.slice/docker-" + id + ".scope\n", "docker-" + id + ".scope", id},
		{"docker cgroupfs", "0::/docker/" + id + "\n", "", id},
		{"containerd cri", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-" + id + ".scope\n", "cri-containerd-" + id + ".scope", id},
		{"crio", "0::/kubepods.slice/crio-" + id + ".scope\n", "crio-" + id + ".scope", id},
		{"podman", "0::/machine.slice/libpod-" + id + ".scope/container\n", "libpod-" + id + ".scope", id},
		{"podman conmon", "0::/machine.slice/libpod-conmon-" + id + ".scope\n", "libpod-conmon-" + id + ".scope", ""},
		{"v1", "12:pids:/system.slice/cron.service\n11:cpu,cpuacct:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n", "cron.service", ""},
		{"hybrid", "5:memory:/docker/" + id + "\n1:name=systemd:/system.slice/nginx.service\n0::/\n", "nginx.service", id},
		{"root", "0::/\n", "", ""},
		{"empty", "", "", ""},
		{"garbage", "no colons here\n::\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unit, container := parseCgroup([]byte(tt.data))
			if diff := cmp.Diff([2]string{tt.unit, tt.container}, [2]string{unit, container}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSmall(t *testing.T) {
	t.Run("port range", func(t *testing.T) {
		for _, tt := range []struct {
			name, in string
			want     portRange
			err      bool
		}{
			{"default", "32768\t60999\n", portRange{32768, 60999}, false},
			{"one", "1024\n", portRange{}, true},
			{"too big", "1 70000\n", portRange{}, true},
		} {
			got, err := parsePortRange([]byte(tt.in))
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("%s: parsePortRange(%q) = %v, %v", tt.name, tt.in, got, err)
			}
		}
	})
	t.Run("status uid", func(t *testing.T) {
		uid, ok := parseStatusUID([]byte("Name:\tsshd\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n"))
		if diff := cmp.Diff([2]any{uint32(1000), true}, [2]any{uid, ok}); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if _, ok := parseStatusUID([]byte("Name:\tx\n")); ok {
			t.Error("no Uid line: ok = true")
		}
	})
	t.Run("cmdline", func(t *testing.T) {
		for _, tt := range []struct {
			name, in string
			want     []string
		}{
			{"args", "/usr/sbin/sshd\x00-D\x00", []string{"/usr/sbin/sshd", "-D"}},
			{"setproctitle", "sshd: root@pts/0\x00\x00\x00\x00", []string{"sshd: root@pts/0"}},
			{"empty arg", "a\x00\x00b\x00", []string{"a", "", "b"}},
			{"kernel thread", "", []string{}},
		} {
			if diff := cmp.Diff(tt.want, parseCmdline([]byte(tt.in))); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.name, diff)
			}
		}
	})
	t.Run("exe", func(t *testing.T) {
		for _, tt := range []struct {
			in      string
			exe     string
			deleted bool
		}{
			{"/usr/sbin/sshd", "/usr/sbin/sshd", false},
			{"/tmp/x (deleted)", "/tmp/x", true},
			{"/memfd:payload (deleted)", "/memfd:payload", true},
			{"/memfd:payload", "/memfd:payload", true},
			{"/opt/a (deleted) b", "/opt/a (deleted) b", false},
		} {
			exe, del := parseExe(tt.in)
			if exe != tt.exe || del != tt.deleted {
				t.Errorf("parseExe(%q) = %q, %v; want %q, %v", tt.in, exe, del, tt.exe, tt.deleted)
			}
		}
	})
	t.Run("links", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want uint64
			ok   bool
		}{
			{"socket:[12345]", 12345, true},
			{"socket:[]", 0, false},
			{"socket:[12x]", 0, false},
			{"pipe:[12]", 0, false},
			{"/dev/null", 0, false},
			{"anon_inode:[eventpoll]", 0, false},
		} {
			got, ok := parseSocketLink([]byte(tt.in))
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseSocketLink(%q) = %d, %v", tt.in, got, ok)
			}
		}
		if got, ok := parseNetnsLink([]byte("net:[4026531840]")); got != 4026531840 || !ok {
			t.Errorf("parseNetnsLink = %d, %v", got, ok)
		}
	})
	t.Run("stat ppid", func(t *testing.T) {
		for _, tt := range []struct {
			in   string
			want int32
			ok   bool
		}{
			{"1234 (sshd) S 1 1234 1234 0 -1", 1, true},
			{"1234 (evil) S 666 (x) R 1) S 77 1 1", 77, true},
			{"1234 (x", 0, false},
			{"1234 (x) S", 0, false},
		} {
			got, ok := parseStatPPid([]byte(tt.in))
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseStatPPid(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		}
	})
	t.Run("capeff", func(t *testing.T) {
		caps, ok := parseCapEff([]byte("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000280000\n"))
		if !ok || caps&(1<<capSysPtrace) == 0 || caps&(1<<capSysAdmin) == 0 || caps&1 != 0 {
			t.Errorf("parseCapEff = %#x, %v", caps, ok)
		}
	})
}

func TestDirents(t *testing.T) {
	p, err := openProc("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := new(scratch)
	pids, err := p.pids(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int32{100}, pids); diff != "" {
		t.Errorf("pids (-want +got):\n%s", diff)
	}
}

func FuzzParseProcNet(f *testing.F) {
	for _, name := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile(filepath.Join("testdata/proc/100/net", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, name[0] == 't')
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		es, err := parseProcNet(data, tcp, nil)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.port == 0 || !e.addr.IsValid() || e.addr.Is4In6() {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzParseSockDiag(f *testing.F) {
	for _, d := range sockDiagDumps {
		b, err := os.ReadFile(filepath.Join("testdata/sockdiag", d.name+".bin"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, d.tcp)
	}
	f.Fuzz(func(t *testing.T, data []byte, tcp bool) {
		es, err := parseSockDiag(tcp, splitMessages(data), nil)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.port == 0 || !e.addr.IsValid() || e.addr.Is4In6() {
				t.Fatalf("bad entry %+v", e)
			}
		}
		// The single-message parser must agree on raw bytes too.
		_, _, _ = parseInetDiagMsg(tcp, data)
	})
}

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/docker-4f2c1a0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b.scope\n"))
	f.Add([]byte("1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n0::/\n"))
	f.Add([]byte("0::/user.slice/user-1000.slice/user@1000.service/app.slice/user@0.service/ssh.service\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, c := parseCgroup(data)
		if c != "" && len(c) != 64 {
			t.Fatalf("container id %q", c)
		}
		// A unit with a "/" is a user manager's: a bare name is never
		// taken from inside a user's delegated subtree.
		if strings.Contains(u, "/") && !UserManagedUnit(u) {
			t.Fatalf("unit %q has a / but is not under user@UID.service", u)
		}
	})
}

// FuzzParseProcFiles feeds the small /proc parsers (stat, status, cmdline,
// loadavg, fd and ns links, the port range) arbitrary bytes: none may panic,
// and what they accept must be well formed.
func FuzzParseProcFiles(f *testing.F) {
	f.Add([]byte("1234 (sshd) S 1 1234 1234 0 -1"))
	f.Add([]byte("Name:\tsshd\nUid:\t1000\t0\t0\t0\nCapEff:\t0000000000280000\n"))
	f.Add([]byte("/usr/sbin/sshd\x00-D\x00"))
	f.Add([]byte("0.00 0.01 0.05 1/123 4567\n"))
	f.Add([]byte("socket:[12345]"))
	f.Add([]byte("32768\t60999\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ppid, ok := parseStatPPid(b); ok && ppid < 0 {
			t.Fatalf("ppid %d", ppid)
		}
		parseStatusUID(b)
		parseCapEff(b)
		if args := parseCmdline(b); args == nil {
			t.Fatal("nil cmdline")
		}
		if pid, ok := parseLoadavgLastPid(b); ok && pid < 0 {
			t.Fatalf("pid %d", pid)
		}
		parseSocketLink(b)
		parseNetnsLink(b)
		if r, err := parsePortRange(b); err == nil && r == (portRange{}) && len(bytes.Fields(b)) != 2 {
			t.Fatalf("accepted %q", b)
		}
		if exe, _ := parseExe(string(b)); len(exe) > len(b) {
			t.Fatalf("exe %q longer than its link", exe)
		}
		if m := parseServices(b); len(m) > len(b) {
			t.Fatal("more services than bytes")
		}
		if m := parsePasswd(b); len(m) > len(b) {
			t.Fatal("more users than bytes")
		}
	})
}
