package watcher

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel constants from <linux/inet_diag.h> and <net/tcp_states.h>.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	tcpDiagGetSock   = 18 // TCPDIAG_GETSOCK, the request before SOCK_DIAG_BY_FAMILY

	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10

	inetDiagReqLen   = 56 // sizeof(struct inet_diag_req_v2)
	inetDiagReqV1Len = 60 // sizeof(struct inet_diag_req), for tcpDiagGetSock
	inetDiagMsgLen   = 72 // sizeof(struct inet_diag_msg)

	inetDiagSKV6Only = 11 // INET_DIAG_SKV6ONLY
)

// sockEntry is one listening socket as the kernel reported it, before it is
// named, attributed and turned into a Listener.
type sockEntry struct {
	tcp     bool
	addr    netip.Addr // unmapped: an IPv4-mapped address is IPv4
	port    uint16
	v6      bool // AF_INET6 socket bound to a real IPv6 address
	v6only  int8 // -1 unknown (/proc/net), 0 no, 1 yes
	ifindex uint32
	uid     uint32
	inode   uint64
	ns      *nsState // set by the watcher after parsing
}

// dualStack reports whether the socket is an IPv6 wildcard that also accepts
// IPv4. An unknown IPV6_V6ONLY (the /proc/net fallback) counts as dual stack,
// the kernel's default (net.ipv6.bindv6only=0); the caller refines that.
func (e *sockEntry) dualStack() bool {
	return e.v6 && e.addr == netip.IPv6Unspecified() && e.v6only != 1
}

// sockDiagRequest builds an inet_diag_req_v2 dump request for the listening
// sockets of one protocol and family: TCP in LISTEN, UDP in CLOSE (bound and
// unconnected; a connected UDP socket is ESTABLISHED). The states filter makes
// the kernel walk only what matches, as `ss -l` does.
func sockDiagRequest(tcp bool, family uint8) netlink.Message {
	b := make([]byte, inetDiagReqLen)
	b[0] = family
	states := uint32(1 << tcpListen)
	b[1] = unix.IPPROTO_TCP
	if !tcp {
		b[1] = unix.IPPROTO_UDP
		states = 1 << tcpClose
	}
	binary.NativeEndian.PutUint32(b[4:8], states)
	return netlink.Message{
		Header: netlink.Header{
			Type:  sockDiagByFamily,
			Flags: netlink.Request | netlink.Dump,
		},
		Data: b,
	}
}

// tcpDiagRequest builds the dump request for the listening TCP sockets of
// both families: the older TCPDIAG_GETSOCK request (struct inet_diag_req),
// which the kernel serves with the family AF_UNSPEC that
// SOCK_DIAG_BY_FAMILY cannot ask for. The kernel then walks its listening
// hash once instead of once per family; that hash is the whole host's, and
// is walked again for every network namespace dumped. The replies have the
// request's type, and each says its family.
func tcpDiagRequest() netlink.Message {
	b := make([]byte, inetDiagReqV1Len)
	binary.NativeEndian.PutUint32(b[52:56], 1<<tcpListen) // idiag_states, after the 4 bytes and the 48 of inet_diag_sockid
	return netlink.Message{
		Header: netlink.Header{
			Type:  tcpDiagGetSock,
			Flags: netlink.Request | netlink.Dump,
		},
		Data: b,
	}
}

// errShortMessage is returned for an inet_diag message shorter than its header.
var errShortMessage = errors.New("inet_diag message too short")

// parseSockDiag turns the replies to one sockDiagRequest into listening
// sockets. It is pure, so that it can be tested on recorded messages and
// fuzzed. Sockets that are not listeners (a UDP socket with a remote port, a
// socket in another state, port 0) are dropped.
func parseSockDiag(tcp bool, msgs []netlink.Message, out []sockEntry) ([]sockEntry, error) {
	for i := range msgs {
		var err error
		if out, err = parseSockDiagMsg(tcp, i, &msgs[i], out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// parseSockDiagMsg appends the listening socket in m, the i-th reply, if it
// holds one: parseSockDiag for one message, which dumpOne calls as each
// arrives.
func parseSockDiagMsg(tcp bool, i int, m *netlink.Message, out []sockEntry) ([]sockEntry, error) {
	if m.Header.Type != sockDiagByFamily && m.Header.Type != tcpDiagGetSock {
		// DONE and ERROR are handled by the caller (netlink.Conn.Execute,
		// parseDumpDatagram); anything else is not ours.
		return out, nil
	}
	e, ok, err := parseInetDiagMsg(tcp, m.Data)
	if err != nil {
		return out, fmt.Errorf("message %d: %w", i, err)
	}
	if ok {
		out = append(out, e)
	}
	return out, nil
}

// parseInetDiagMsg parses one struct inet_diag_msg and its attributes. ok is
// false for a socket that is not a listener.
func parseInetDiagMsg(tcp bool, b []byte) (e sockEntry, ok bool, err error) {
	if len(b) < inetDiagMsgLen {
		return e, false, fmt.Errorf("%w: %d bytes", errShortMessage, len(b))
	}
	family, state := b[0], b[1]
	sport := binary.BigEndian.Uint16(b[4:6])
	dport := binary.BigEndian.Uint16(b[6:8])
	e = sockEntry{
		tcp:     tcp,
		port:    sport,
		v6only:  -1,
		ifindex: binary.NativeEndian.Uint32(b[40:44]),
		uid:     binary.NativeEndian.Uint32(b[64:68]),
		inode:   uint64(binary.NativeEndian.Uint32(b[68:72])),
	}
	switch family {
	case unix.AF_INET:
		e.addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		a := netip.AddrFrom16([16]byte(b[8:24]))
		e.v6 = !a.Is4In6()
		e.addr = a.Unmap()
	default:
		return e, false, fmt.Errorf("unknown address family %d", family)
	}
	for a := b[inetDiagMsgLen:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a[0:2]))
		typ := binary.NativeEndian.Uint16(a[2:4]) & 0x3fff // drop NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if l < 4 || l > len(a) {
			return e, false, fmt.Errorf("bad attribute length %d", l)
		}
		if typ == inetDiagSKV6Only && l >= 5 {
			e.v6only = 0
			if a[4] != 0 {
				e.v6only = 1
			}
		}
		l = (l + 3) &^ 3
		if l > len(a) {
			break
		}
		a = a[l:]
	}
	if sport == 0 {
		return e, false, nil
	}
	if tcp {
		return e, state == tcpListen, nil
	}
	return e, state == tcpClose && dport == 0, nil
}

// dumpBufSize is the receive buffer of a sock_diag socket: the most the
// kernel puts in one dump datagram (32 KiB, see netlink_dump).
const dumpBufSize = 32 << 10

// sockDiagConn is a NETLINK_SOCK_DIAG socket bound to one network namespace
// (the one its creating thread was in).
//
// The socket is opened here, blocking and outside Go's network poller;
// github.com/mdlayher/netlink frames the requests and each reply
// (Message.MarshalBinary, Message.UnmarshalBinary). A socket in the poller
// (as netlink.Dial makes it, non-blocking and edge-triggered in its epoll
// set) woke an idle thread of the runtime for each datagram of every dump,
// only for it to find nothing to do: about fifteen wake-ups a look, on a VM
// a share of an idle daemon's CPU (bench/idle, strace). The kernel answers
// a dump as it is read, so a blocking receive does not wait on anything
// else; a receive timeout turns a kernel that stopped answering into an
// error, not a hung loop. The library's own Send and Receive also started
// a goroutine for every system call and copied every datagram.
type sockDiagConn struct {
	fd   int
	pid  uint32                   // the socket's netlink port id, as replies carry it
	seq  uint32                   // sequence number of the last request
	reqs [len(dumpQueries)][]byte // the requests of dumpAll, in its order
	buf  []byte                   // dumpBufSize bytes, reused by every receive
	to   unix.RawSockaddrNetlink
	// perFamilyTCP is set once the kernel refused tcpDiagRequest: TCP is
	// then dumped one family at a time, as UDP is.
	perFamilyTCP bool
}

// sockDiagTimeout bounds a receive: the kernel answers at once.
const sockDiagTimeout = 10 * time.Second

func dialSockDiag() (*sockDiagConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", os.NewSyscallError("socket", err))
	}
	s := &sockDiagConn{fd: fd, buf: make([]byte, dumpBufSize), to: unix.RawSockaddrNetlink{Family: unix.AF_NETLINK}}
	if err := s.init(); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return s, nil
}

// init binds the socket, learns its port id and builds the requests.
func (s *sockDiagConn) init() error {
	tv := unix.NsecToTimeval(sockDiagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	if err := unix.Bind(s.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("bind", err)
	}
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		return os.NewSyscallError("getsockname", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("getsockname: %T, not a netlink address", sa)
	}
	s.pid = nl.Pid
	for i, q := range dumpQueries {
		m := q.request()
		m.Header.Length = uint32(nlmsgHeaderLen + len(m.Data))
		m.Header.PID = s.pid
		var err error
		if s.reqs[i], err = m.MarshalBinary(); err != nil {
			return err
		}
	}
	return nil
}

func (s *sockDiagConn) Close() error { return unix.Close(s.fd) }

// dumpQueries are the dumps of dumpAll: TCP for both families at once, then
// UDP one family at a time (udp_diag takes no other request), and TCP one
// family at a time for a kernel that refuses the first.
var dumpQueries = [...]dumpQuery{{true, unix.AF_UNSPEC, true}, {false, unix.AF_INET, false}, {false, unix.AF_INET6, false},
	{true, unix.AF_INET, false}, {true, unix.AF_INET6, false}}

// dumpQuery is one dump of dumpAll.
type dumpQuery struct {
	tcp          bool
	family       uint8
	bothFamilies bool // tcpDiagRequest
}

// request builds q's request.
func (q dumpQuery) request() netlink.Message {
	if q.bothFamilies {
		return tcpDiagRequest()
	}
	return sockDiagRequest(q.tcp, q.family)
}

// dumpAll appends the listening sockets of both protocols and families.
func (s *sockDiagConn) dumpAll(out []sockEntry) ([]sockEntry, error) {
	for i, q := range dumpQueries {
		if q.tcp && q.bothFamilies == s.perFamilyTCP {
			continue
		}
		start := len(out)
		var err error
		out, err = s.dumpOne(q.tcp, s.reqs[i], out)
		if err != nil && q.bothFamilies && len(out) == start && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
			// Refused before any reply (EOPNOTSUPP, or EINVAL from a
			// kernel that dropped the old request): the rest of the
			// loop dumps TCP per family, now and from now on.
			s.perFamilyTCP = true
			continue
		}
		if err != nil {
			return out, fmt.Errorf("sock_diag dump: %w", err)
		}
	}
	return out, nil
}

// errTruncated is returned for a datagram larger than the receive buffer.
var errTruncated = errors.New("reply truncated")

// dumpOne sends one dump request and parses each datagram of replies as it
// is received, into the one reused buffer. On an error the socket may hold
// the rest of the dump: the caller closes it (see Watcher.dump).
func (s *sockDiagConn) dumpOne(tcp bool, req []byte, out []sockEntry) ([]sockEntry, error) {
	s.seq++
	binary.NativeEndian.PutUint32(req[8:12], s.seq)
	var err error = unix.EINTR
	for err == unix.EINTR {
		err = sendTo(s.fd, req, &s.to)
	}
	if err != nil {
		return out, fmt.Errorf("send: %w", err)
	}
	n := 0 // replies so far, for error messages
	for {
		var got int
		err := error(unix.EINTR)
		for err == unix.EINTR {
			got, err = recvTrunc(s.fd, s.buf)
		}
		switch {
		case err == unix.EAGAIN:
			return out, fmt.Errorf("receive: no answer from the kernel within %v", sockDiagTimeout)
		case err != nil:
			return out, fmt.Errorf("receive: %w", err)
		case got > len(s.buf):
			return out, fmt.Errorf("receive: %w: %d bytes", errTruncated, got)
		}
		var done bool
		if out, done, err = parseDumpDatagram(tcp, s.seq, s.pid, s.buf[:got], &n, out); err != nil || done {
			return out, err
		}
	}
}

// sendTo sends b to the kernel (a raw call: see rawsys.go).
func sendTo(fd int, b []byte, to *unix.RawSockaddrNetlink) error {
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
		uintptr(unsafe.Pointer(to)), unix.SizeofSockaddrNetlink)
	if errno != 0 {
		return errno
	}
	return nil
}

// recvTrunc receives one datagram into b, and returns its whole length even
// when b was too short for it (MSG_TRUNC). Unlike unix.Recvfrom it does not
// allocate the sender's address. It is a raw call (see rawsys.go).
func recvTrunc(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_TRUNC, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// nlmsgHeaderLen is sizeof(struct nlmsghdr).
const nlmsgHeaderLen = 16

// errMismatchedReply is returned for a reply that does not answer our request
// (its sequence number or port id differ), as netlink.Validate would.
var errMismatchedReply = errors.New("reply does not match the request")

// parseDumpDatagram parses one datagram of replies to the dump request
// numbered seq, sent from port id pid, appending the listening sockets found.
// done is true at the end of the dump (NLMSG_DONE). A netlink error (the dump
// could not start: inet_diag missing, say) is returned as the errno. n counts
// the replies of the dump across datagrams, for error messages. It is pure,
// so that it can be tested on recorded datagrams and fuzzed.
func parseDumpDatagram(tcp bool, seq, pid uint32, b []byte, n *int, out []sockEntry) (_ []sockEntry, done bool, err error) {
	for len(b) > 0 {
		i := *n
		*n++
		if len(b) < nlmsgHeaderLen {
			return out, false, fmt.Errorf("message %d: %w: %d bytes", i, errShortMessage, len(b))
		}
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		al := (l + 3) &^ 3
		if l < nlmsgHeaderLen || al > len(b) {
			return out, false, fmt.Errorf("message %d: bad length %d in %d bytes", i, l, len(b))
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:al]); err != nil {
			return out, false, fmt.Errorf("message %d: %w", i, err)
		}
		b = b[al:]
		if m.Header.Sequence != seq || (m.Header.PID != pid && pid != 0 && m.Header.PID != 0) {
			return out, false, fmt.Errorf("message %d: %w", i, errMismatchedReply)
		}
		switch m.Header.Type {
		case netlink.Error, netlink.Done:
			// An errno (negative), 0 for none; a DONE may also carry
			// nothing at all.
			if len(m.Data) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(m.Data[0:4])); code < 0 {
					return out, false, fmt.Errorf("message %d: %w", i, unix.Errno(-code))
				}
			} else if m.Header.Type == netlink.Error {
				return out, false, fmt.Errorf("message %d: %w: error message of %d bytes", i, errShortMessage, len(m.Data))
			}
			if m.Header.Type == netlink.Done {
				return out, true, nil
			}
			continue
		}
		if out, err = parseSockDiagMsg(tcp, i, &m, out); err != nil {
			return out, false, err
		}
	}
	return out, false, nil
}
