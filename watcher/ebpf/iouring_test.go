package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring, enough to submit one request and wait for its
// completion, so that the test issues bind and listen the way a program
// hiding from system call tracing would: without the bind or listen system
// calls.

// io_uring opcodes (include/uapi/linux/io_uring.h, Linux 6.11).
const (
	opBind   = 56
	opListen = 57
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SqEntries, CqEntries, Flags, SqThreadCPU, SqThreadIdle, Features, WqFd uint32
	Resv                                                                   [3]uint32
	SqOff                                                                  sqringOffsets
	CqOff                                                                  cqringOffsets
}

type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // addr2: bind's address length
	Addr        uint64
	Len         uint32 // listen's backlog
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	_           uint64
}

type uring struct {
	fd        int
	p         uringParams
	ring, sqs []byte
}

func newURing() (*uring, error) {
	u := &uring{}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&u.p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	u.fd = int(fd)
	size := max(u.p.SqOff.Array+u.p.SqEntries*4, u.p.CqOff.Cqes+u.p.CqEntries*16)
	var err error
	// IORING_FEAT_SINGLE_MMAP (5.4): the SQ and CQ rings share one mapping.
	if u.ring, err = unix.Mmap(u.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		u.close()
		return nil, fmt.Errorf("mmap rings: %w", err)
	}
	if u.sqs, err = unix.Mmap(u.fd, 0x10000000, int(u.p.SqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		u.close()
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}
	return u, nil
}

func (u *uring) u32(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&u.ring[off])) }

// do submits one request and returns its result: >= 0, or -errno.
func (u *uring) do(e sqe) (int32, error) {
	tail := atomic.LoadUint32(u.u32(u.p.SqOff.Tail))
	idx := tail & *u.u32(u.p.SqOff.RingMask)
	*(*sqe)(unsafe.Pointer(&u.sqs[idx*64])) = e
	*u.u32(u.p.SqOff.Array + idx*4) = idx
	atomic.StoreUint32(u.u32(u.p.SqOff.Tail), tail+1)
	const enterGetEvents = 1
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), 1, 1, enterGetEvents, 0, 0); errno != 0 {
		return 0, fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32(u.u32(u.p.CqOff.Head))
	if head == atomic.LoadUint32(u.u32(u.p.CqOff.Tail)) {
		return 0, errors.New("io_uring: no completion")
	}
	cqe := u.p.CqOff.Cqes + (head&*u.u32(u.p.CqOff.RingMask))*16
	res := *(*int32)(unsafe.Pointer(&u.ring[cqe+8]))
	atomic.StoreUint32(u.u32(u.p.CqOff.Head), head+1)
	return res, nil
}

func (u *uring) close() {
	if u.sqs != nil {
		unix.Munmap(u.sqs)
	}
	if u.ring != nil {
		unix.Munmap(u.ring)
	}
	unix.Close(u.fd)
}

// bindListen binds fd to 127.0.0.1 port 0 through the ring, and if listen
// is set, listens on it through the ring; it returns the port bound.
func (u *uring) bindListen(fd int, listen bool) (uint16, error) {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	res, err := u.do(sqe{Opcode: opBind, Fd: int32(fd), Addr: uint64(uintptr(unsafe.Pointer(&sa))), Off: uint64(unsafe.Sizeof(sa))})
	runtime.KeepAlive(&sa)
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return 0, fmt.Errorf("IORING_OP_BIND: %w", unix.Errno(-res))
	}
	if listen {
		if res, err = u.do(sqe{Opcode: opListen, Fd: int32(fd), Len: 1}); err != nil {
			return 0, err
		}
		if res < 0 {
			return 0, fmt.Errorf("IORING_OP_LISTEN: %w", unix.Errno(-res))
		}
	}
	name, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	return uint16(name.(*unix.SockaddrInet4).Port), nil
}

// TestIOURing binds a UDP socket and binds and listens a TCP one through
// io_uring: the socket-layer hooks see them as they see the system calls.
func TestIOURing(t *testing.T) {
	p := openProbe(t)
	u, err := newURing()
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("io_uring is not available (kernel.io_uring_disabled, or seccomp): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	me := self(t)
	for _, tt := range []struct {
		name  string
		typ   int
		proto string
		kind  Kind
	}{
		{"udp IORING_OP_BIND", unix.SOCK_DGRAM, UDP, KindBind},
		{"tcp IORING_OP_BIND IORING_OP_LISTEN", unix.SOCK_STREAM, TCP, KindListen},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fd, err := unix.Socket(unix.AF_INET, tt.typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			port, err := u.bindListen(fd, tt.proto == TCP)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				t.Skipf("the kernel lacks IORING_OP_BIND/IORING_OP_LISTEN (Linux >= 6.11): %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := me
			want.Family, want.Proto, want.Addr, want.Port, want.Kind = IPv4, tt.proto, netip.MustParseAddr("127.0.0.1"), port, tt.kind
			got, raw := waitFor(t, p, like(want))
			// io_uring may run the request inline or on a worker thread
			// (comm iou-wrk-<tid>) of the same process.
			want.Comm = got.Comm
			compareEvent(t, want, got)
			t.Logf("comm %q", got.Comm)
			writeRecord(t, "io_uring "+tt.proto+" "+tt.kind.String(), raw)
		})
	}
}
