package ebpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kind says what a socket did.
type Kind uint8

// Kinds of event, as the kernel programs number them.
const (
	KindListen Kind = 1 // a TCP listen() returned (Ret says whether it failed)
	KindClose  Kind = 2 // a TCP socket left LISTEN, or a UDP socket that KindBind reported was released
	KindBind   Kind = 3 // a UDP bind() succeeded
	// KindExec: a process given to Probe.SetHolders exec'd. Only Time,
	// NetnsInode, CgroupID, Pid, UID and Comm (the new program's) are set.
	KindExec Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindListen:
		return "listen"
	case KindClose:
		return "close"
	case KindBind:
		return "bind"
	case KindExec:
		return "exec"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Protocol and family names, the same strings as the watcher's Listener uses.
const (
	TCP  = "tcp"
	UDP  = "udp"
	IPv4 = "ipv4"
	IPv6 = "ipv6"
)

// Event is one record from the kernel programs.
type Event struct {
	// Time is the kernel's CLOCK_MONOTONIC at the event (bpf_ktime_get_ns);
	// compare it with MonotonicNow, not with wall time.
	Time       time.Duration
	NetnsInode uint64 // inode of the socket's network namespace
	// CgroupID is the cgroup v2 id (the inode of its directory) of the task
	// that acted.
	CgroupID uint64
	// Pid is the tgid of the task that acted: for KindClose the closer, which
	// may not be the process that opened the socket (or a kernel worker).
	Pid  int32
	UID  uint32 // real uid of the task that acted
	Comm string // the acting thread's comm: an io_uring worker is "iou-wrk-<tid>"
	// Family is IPv4 or IPv6, the socket's family: an IPv6 socket bound to an
	// IPv4-mapped address is IPv6 here with a mapped Addr.
	Family string
	Proto  string // TCP or UDP
	Addr   netip.Addr
	Port   uint16
	Kind   Kind
	Ret    int32 // KindListen: listen's return code, 0 or -errno; else 0
}

// eventSize is the size of struct event in bpf/portwatch.bpf.c.
const eventSize = 80

// ParseEvent decodes one ring buffer record (struct event in
// bpf/portwatch.bpf.c, in the host's byte order). It rejects a record of the
// wrong size or with an unknown kind, family or protocol.
//
// Its errors match ErrParse (errors.Is): the record is bad, not the reader,
// and reading may go on.
func ParseEvent(b []byte) (Event, error) {
	e, err := parseEvent(b)
	if err != nil {
		return Event{}, parseError{err}
	}
	return e, nil
}

// ErrParse is matched by the errors of ParseEvent, and so by those of
// Probe.Read for a record it could not decode.
var ErrParse = errors.New("parse event")

// parseError is an error of ParseEvent: its message is the error's, and it
// matches ErrParse.
type parseError struct{ err error }

func (e parseError) Error() string        { return e.err.Error() }
func (e parseError) Is(target error) bool { return target == ErrParse }

func parseEvent(b []byte) (Event, error) {
	if len(b) != eventSize {
		return Event{}, fmt.Errorf("parse event: %d bytes, want %d", len(b), eventSize)
	}
	ne := binary.NativeEndian
	kind := Kind(b[73])
	comm := b[40:56]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	e := Event{
		Time:       time.Duration(ne.Uint64(b[0:])),
		NetnsInode: ne.Uint64(b[8:]),
		CgroupID:   ne.Uint64(b[16:]),
		Pid:        int32(ne.Uint32(b[56:])),
		UID:        ne.Uint32(b[60:]),
		Comm:       string(comm),
		Kind:       kind,
	}
	switch kind {
	case KindListen, KindClose, KindBind:
	case KindExec:
		return e, nil // no socket
	default:
		return Event{}, fmt.Errorf("parse event: unknown kind %d", b[73])
	}
	var proto string
	switch b[72] {
	case unix.IPPROTO_TCP:
		proto = TCP
	case unix.IPPROTO_UDP:
		proto = UDP
	default:
		return Event{}, fmt.Errorf("parse event: unknown protocol %d", b[72])
	}
	var (
		family string
		addr   netip.Addr
	)
	switch f := ne.Uint16(b[68:]); f {
	case unix.AF_INET:
		family, addr = IPv4, netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		family, addr = IPv6, netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return Event{}, fmt.Errorf("parse event: unknown family %d", f)
	}
	e.Family, e.Proto, e.Addr = family, proto, addr
	e.Port = ne.Uint16(b[70:])
	e.Ret = int32(ne.Uint32(b[64:]))
	return e, nil
}

// MonotonicNow returns CLOCK_MONOTONIC, the clock of Event.Time, so that the
// caller can tell how old an event is or how long a listener lived. The
// call is raw, as the steady look's are (watcher/rawsys.go): it cannot
// block, and the scheduler need not hear of it.
func MonotonicNow() time.Duration {
	var ts unix.Timespec
	// CLOCK_MONOTONIC cannot fail with a valid pointer.
	unix.RawSyscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}
