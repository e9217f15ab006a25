package watcher

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// sockSpec describes a socket for a test to open.
type sockSpec struct {
	kind string // tcp4 tcp6only tcp6dual tcp4dev udp4 udp6only udp6dual udpconn tcpconn
	addr string // ip:port
}

func (s sockSpec) String() string { return s.kind + "=" + s.addr }

func parseSpecs(s string) ([]sockSpec, error) {
	var out []sockSpec
	for _, f := range strings.Fields(s) {
		k, a, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("bad socket spec %q", f)
		}
		out = append(out, sockSpec{k, a})
	}
	return out, nil
}

// openSock opens the socket s describes and returns its descriptor. It is
// made with raw system calls so that IPV6_V6ONLY is exactly as asked.
func openSock(s sockSpec) (int, error) {
	ap, err := netip.ParseAddrPort(s.addr)
	if err != nil {
		return -1, err
	}
	tcp := strings.HasPrefix(s.kind, "tcp")
	typ := unix.SOCK_DGRAM
	if tcp {
		typ = unix.SOCK_STREAM
	}
	family := unix.AF_INET
	if ap.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%v: %w", s, err)
	}
	if family == unix.AF_INET6 {
		v6only := 0
		if strings.HasSuffix(s.kind, "only") {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail(err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(err)
	}
	if s.kind == "tcp4dev" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "lo"); err != nil {
			return fail(err)
		}
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	} else {
		sa = &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(err)
	}
	switch s.kind {
	case "udpconn":
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: 9}); err != nil {
			return fail(err)
		}
	case "tcpconn":
		// A listener and a connection to it: the accepted and connecting
		// sockets are ESTABLISHED and must not appear; the listener does.
		if err := unix.Listen(fd, 8); err != nil {
			return fail(err)
		}
		sa, _ := unix.Getsockname(fd)
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		if err := unix.Connect(c, sa); err != nil {
			return fail(err)
		}
	default:
		if tcp {
			if err := unix.Listen(fd, 8); err != nil {
				return fail(err)
			}
		}
	}
	return fd, nil
}

// sockInfo returns the inode and bound port of fd.
func sockInfo(fd int) (inode uint64, port int, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, 0, err
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port = sa.Port
	}
	return st.Ino, port, nil
}
