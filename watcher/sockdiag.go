package watcher

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel constants from <linux/inet_diag.h> and <net/tcp_states.h>.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY

	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10

	inetDiagReqLen = 56 // sizeof(struct inet_diag_req_v2)
	inetDiagMsgLen = 72 // sizeof(struct inet_diag_msg)

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
	if m.Header.Type != sockDiagByFamily {
		// netlink.Conn.Execute and ReceiveIter strip DONE and turn ERROR
		// into errors; anything else is not ours.
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

// sockDiagConn is a NETLINK_SOCK_DIAG socket bound to one network namespace
// (the one its creating thread was in).
type sockDiagConn struct {
	c *netlink.Conn
}

func dialSockDiag() (*sockDiagConn, error) {
	// A fixed receive buffer saves the MSG_PEEK call the library otherwise
	// makes before every read. 32 KiB is the most the kernel puts in one
	// dump datagram.
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, &netlink.Config{MessageBufferSize: 32 << 10})
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return &sockDiagConn{c: c}, nil
}

func (s *sockDiagConn) Close() error { return s.c.Close() }

// dumpAll appends the listening sockets of both protocols and families.
func (s *sockDiagConn) dumpAll(out []sockEntry) ([]sockEntry, error) {
	for _, tcp := range []bool{true, false} {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			var err error
			if out, err = s.dumpOne(tcp, fam, out); err != nil {
				return out, fmt.Errorf("sock_diag dump: %w", err)
			}
		}
	}
	return out, nil
}

// errMismatchedReply is returned for a reply that does not answer our request
// (its sequence number or port id differ), as netlink.Validate would.
var errMismatchedReply = errors.New("reply does not match the request")

// dumpOne sends one dump request and parses each reply as it is received.
// This is what netlink.Conn.Execute does, without collecting every reply of
// the dump in a slice first: in the steady state that slice was most of the
// garbage of a tick. Replies are read to the end of the dump even after an
// error, so that the next request does not read the rest of this one.
func (s *sockDiagConn) dumpOne(tcp bool, family uint8, out []sockEntry) ([]sockEntry, error) {
	req, err := s.c.Send(sockDiagRequest(tcp, family))
	if err != nil {
		return out, err
	}
	var first error
	i := 0
	for m, err := range s.c.ReceiveIter() {
		if err != nil {
			return out, err
		}
		switch {
		case first != nil:
		case m.Header.Sequence != req.Header.Sequence ||
			(m.Header.PID != req.Header.PID && req.Header.PID != 0 && m.Header.PID != 0):
			first = fmt.Errorf("message %d: %w", i, errMismatchedReply)
		default:
			out, first = parseSockDiagMsg(tcp, i, &m, out)
		}
		i++
	}
	return out, first
}
