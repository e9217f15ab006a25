package ebpf

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestEventLayout checks ParseEvent's offsets against the Go type bpf2go
// generated from the object's BTF, so that a change to struct event in the C
// source that the parser does not follow fails here.
func TestEventLayout(t *testing.T) {
	var e portwatchEvent
	got := map[string]uintptr{
		"size":      unsafe.Sizeof(e),
		"ts_ns":     unsafe.Offsetof(e.TsNs),
		"netns_ino": unsafe.Offsetof(e.NetnsIno),
		"cgroup_id": unsafe.Offsetof(e.CgroupId),
		"addr":      unsafe.Offsetof(e.Addr),
		"comm":      unsafe.Offsetof(e.Comm),
		"tgid":      unsafe.Offsetof(e.Tgid),
		"uid":       unsafe.Offsetof(e.Uid),
		"ret":       unsafe.Offsetof(e.Ret),
		"family":    unsafe.Offsetof(e.Family),
		"port":      unsafe.Offsetof(e.Port),
		"protocol":  unsafe.Offsetof(e.Protocol),
		"kind":      unsafe.Offsetof(e.Kind),
	}
	want := map[string]uintptr{
		"size": eventSize, "ts_ns": 0, "netns_ino": 8, "cgroup_id": 16, "addr": 24, "comm": 40,
		"tgid": 56, "uid": 60, "ret": 64, "family": 68, "port": 70, "protocol": 72, "kind": 73,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("struct event layout (-want +got):\n%s", diff)
	}
}

// record builds a ring buffer record as the kernel programs write it.
func record(e portwatchEvent) []byte {
	b := make([]byte, eventSize)
	ne := binary.NativeEndian
	ne.PutUint64(b[0:], e.TsNs)
	ne.PutUint64(b[8:], e.NetnsIno)
	ne.PutUint64(b[16:], e.CgroupId)
	copy(b[24:40], e.Addr[:])
	for i, c := range e.Comm {
		b[40+i] = byte(c)
	}
	ne.PutUint32(b[56:], e.Tgid)
	ne.PutUint32(b[60:], e.Uid)
	ne.PutUint32(b[64:], uint32(e.Ret))
	ne.PutUint16(b[68:], e.Family)
	ne.PutUint16(b[70:], e.Port)
	b[72], b[73] = e.Protocol, e.Kind
	return b
}

func comm(s string) (c [16]int8) {
	for i := 0; i < len(s) && i < 15; i++ {
		c[i] = int8(s[i])
	}
	return c
}

// checkErr fails the test unless err is the wanted one ("" for none), and
// reports whether the test goes on to check the value.
func checkErr(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
	return false
}

func TestParseEvent(t *testing.T) {
	base := portwatchEvent{
		TsNs: 1_500_000_000, NetnsIno: 4026531840, CgroupId: 7, Tgid: 4242, Uid: 1000,
		Family: unix.AF_INET, Port: 8080, Protocol: unix.IPPROTO_TCP, Kind: uint8(KindListen),
		Addr: [16]byte{127, 0, 0, 1}, Comm: comm("nc"),
	}
	baseWant := Event{
		Time: 1500 * time.Millisecond, NetnsInode: 4026531840, CgroupID: 7, Pid: 4242, UID: 1000,
		Comm: "nc", Family: IPv4, Proto: TCP, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080,
		Kind: KindListen,
	}
	with := func(f func(*portwatchEvent)) []byte {
		e := base
		f(&e)
		return record(e)
	}
	want := func(f func(*Event)) Event {
		e := baseWant
		f(&e)
		return e
	}
	tests := []struct {
		name    string
		in      []byte
		want    Event
		wantErr string
	}{
		{name: "tcp4 listen", in: record(base), want: baseWant},
		{
			name: "tcp6 failed listen",
			in: with(func(e *portwatchEvent) {
				e.Family, e.Addr, e.Ret = unix.AF_INET6, netip.IPv6Loopback().As16(), -int32(unix.EADDRINUSE)
			}),
			want: want(func(e *Event) { e.Family, e.Addr, e.Ret = IPv6, netip.IPv6Loopback(), -98 }),
		},
		{
			name: "udp6 bind to the wildcard",
			in: with(func(e *portwatchEvent) {
				e.Family, e.Addr, e.Protocol, e.Kind = unix.AF_INET6, [16]byte{}, unix.IPPROTO_UDP, uint8(KindBind)
			}),
			want: want(func(e *Event) {
				e.Family, e.Addr, e.Proto, e.Kind = IPv6, netip.IPv6Unspecified(), UDP, KindBind
			}),
		},
		{
			name: "ipv4-mapped address stays as the kernel gave it",
			in: with(func(e *portwatchEvent) {
				e.Family, e.Addr = unix.AF_INET6, netip.MustParseAddr("::ffff:10.0.0.1").As16()
			}),
			want: want(func(e *Event) { e.Family, e.Addr = IPv6, netip.MustParseAddr("::ffff:10.0.0.1") }),
		},
		{
			name: "close, comm of 15 bytes, tgid above 2^31 kept as the kernel's bits",
			in: with(func(e *portwatchEvent) {
				e.Kind, e.Comm, e.Tgid = uint8(KindClose), comm("abcdefghijklmnopq"), 1<<31
			}),
			want: want(func(e *Event) { e.Kind, e.Comm, e.Pid = KindClose, "abcdefghijklmno", -1<<31 }),
		},
		{
			name: "exec of a holder: no socket, whatever the socket fields hold",
			in: with(func(e *portwatchEvent) {
				e.Kind, e.Comm, e.Family, e.Protocol, e.Port = uint8(KindExec), comm("sh"), 0, 0, 0
			}),
			want: Event{
				Time: 1500 * time.Millisecond, NetnsInode: 4026531840, CgroupID: 7, Pid: 4242, UID: 1000,
				Comm: "sh", Kind: KindExec,
			},
		},
		{name: "short", in: record(base)[:79], wantErr: "parse event: 79 bytes, want 80"},
		{name: "long", in: append(record(base), 0), wantErr: "parse event: 81 bytes, want 80"},
		{name: "empty", in: nil, wantErr: "parse event: 0 bytes, want 80"},
		{
			name:    "unknown kind",
			in:      with(func(e *portwatchEvent) { e.Kind = 9 }),
			wantErr: "parse event: unknown kind 9",
		},
		{
			name:    "unknown protocol",
			in:      with(func(e *portwatchEvent) { e.Protocol = unix.IPPROTO_SCTP }),
			wantErr: "parse event: unknown protocol 132",
		},
		{
			name:    "unknown family",
			in:      with(func(e *portwatchEvent) { e.Family = unix.AF_UNIX }),
			wantErr: "parse event: unknown family 1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEvent(tt.in)
			if err != nil && !errors.Is(err, ErrParse) {
				t.Errorf("error %v does not match ErrParse", err)
			}
			if !checkErr(t, err, tt.wantErr) {
				return
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParseEvent (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseEvent is seeded with records taken from the kernel programs
// (testdata/records, refreshed by go test -run TestEvents -record).
func FuzzParseEvent(f *testing.F) {
	files, err := filepath.Glob("testdata/records/*.bin")
	if err != nil {
		f.Fatal(err)
	}
	if len(files) == 0 {
		f.Fatal("no seed records in testdata/records")
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEvent(b)
		if err != nil {
			return
		}
		switch {
		case e.Kind == KindExec:
			// No socket: nothing of one is made up from the record.
			if e.Family != "" || e.Proto != "" || e.Addr.IsValid() || e.Port != 0 || e.Ret != 0 {
				t.Errorf("exec event with socket fields: %+v", e)
			}
		case !e.Addr.IsValid() || (e.Family == IPv4) != e.Addr.Is4():
			t.Errorf("family %s with address %v", e.Family, e.Addr)
		}
		if strings.IndexByte(e.Comm, 0) >= 0 || len(e.Comm) > 16 {
			t.Errorf("comm %q", e.Comm)
		}
		if e.Kind.String() == "" || strings.HasPrefix(e.Kind.String(), "kind(") {
			t.Errorf("kind %v", e.Kind)
		}
	})
}

func TestClassify(t *testing.T) {
	verifier := errors.New("load program: invalid argument") // a refusal that is not EPERM
	tests := []struct {
		name string
		err  error
		host host
		want error
		step string
	}{
		{"missing capability", unix.EPERM, host{missingCaps: []string{"CAP_BPF"}}, ErrPermission, "load (missing CAP_BPF)"},
		{"missing perfmon shows as a verifier refusal", unix.EINVAL, host{missingCaps: []string{"CAP_PERFMON"}}, ErrPermission, "load (missing CAP_PERFMON)"},
		{"seccomp EPERM", unix.EPERM, host{seccomp: true}, ErrSeccomp, "load"},
		{"seccomp ENOSYS", unix.ENOSYS, host{seccomp: true}, ErrSeccomp, "load"},
		{"missing capability wins over seccomp", unix.EPERM, host{missingCaps: []string{"CAP_NET_ADMIN"}, seccomp: true}, ErrPermission, "load (missing CAP_NET_ADMIN)"},
		{"lockdown", verifier, host{lockdown: "confidentiality"}, ErrLockdown, "load"},
		{"integrity lockdown does not stop the programs", unix.EPERM, host{lockdown: "integrity"}, ErrRefused, "load"},
		{"refused with every capability", unix.EPERM, host{}, ErrRefused, "load"},
		{"old kernel", errors.Join(errors.New("ring buffer"), unix.EINVAL), host{}, ErrUnsupported, "load"},
		{"no bpf system call", unix.ENOSYS, host{}, ErrUnsupported, "load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify("load", tt.err, tt.host)
			if !errors.Is(got, tt.want) || !errors.Is(got, tt.err) {
				t.Errorf("classify = %v, want reason %v wrapping %v", got, tt.want, tt.err)
			}
			if got.Step != tt.step {
				t.Errorf("step = %q, want %q", got.Step, tt.step)
			}
		})
	}
}

func TestCgroup2Mount(t *testing.T) {
	tests := []struct {
		name, file, want, wantErr string
	}{
		{"unified", "unified", "/sys/fs/cgroup", ""},
		{"hybrid", "hybrid", "/sys/fs/cgroup/unified", ""},
		{"escaped", "escaped", "/run/my cgroup", ""},
		{"v1 only", "v1", "", "testdata/mountinfo/v1: no cgroup2 mount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cgroup2Mount("testdata/mountinfo/" + tt.file)
			if !checkErr(t, err, tt.wantErr) {
				return
			}
			if got != tt.want {
				t.Errorf("cgroup2Mount = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOpenWithoutBTF(t *testing.T) {
	_, err := Open(Options{btfPath: filepath.Join(t.TempDir(), "vmlinux")})
	if !errors.Is(err, ErrNoBTF) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open = %v, want ErrNoBTF", err)
	}
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Reason != ErrNoBTF {
		t.Fatalf("Open = %#v, want an *UnavailableError", err)
	}
}
