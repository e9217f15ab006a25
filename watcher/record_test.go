package watcher

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

var (
	record = flag.Bool("record", false, "record sock_diag messages and /proc/net tables from a throwaway network namespace into testdata/")
	update = flag.Bool("update", false, "rewrite golden files")
)

// recordedSockets are the sockets TestRecord opens in its namespace. The
// recorded files are the fixtures of the parser tests, which check these
// come out as described.
var recordedSockets = []sockSpec{
	{kind: "tcp4", addr: "127.0.0.1:8001"},
	{kind: "tcp6only", addr: "[::1]:8002"},
	{kind: "tcp6dual", addr: "[::]:8003"},
	{kind: "tcp4dev", addr: "0.0.0.0:8004"}, // bound to lo
	{kind: "udp4", addr: "0.0.0.0:8005"},
	{kind: "udp6only", addr: "[::]:8006"},
	{kind: "udpconn", addr: "127.0.0.1:8007"}, // connected: not a listener
	{kind: "tcp6dual", addr: "[::ffff:127.0.0.1]:8008"},
	{kind: "udp6dual", addr: "[::]:8009"},
	{kind: "tcpconn", addr: "127.0.0.1:8010"}, // an established connection
}

// TestRecord refreshes testdata/sockdiag and testdata/proc from a throwaway
// namespace holding recordedSockets. Run with -record, as root.
func TestRecord(t *testing.T) {
	if !*record {
		t.Skip("run with -record to refresh the recorded kernel output")
	}
	requireRoot(t)
	if err := inNewNetns(recordedSockets, func([]int) error { return recordHere() }); err != nil {
		t.Fatal(err)
	}
}

// inNewNetns runs fn on a thread of its own, in a new network namespace with
// loopback up and socks open (fn gets their descriptors, which stay open).
// The thread is never handed back to the runtime: it dies with its
// goroutine, and what fn opened stays in the namespace.
func inNewNetns(socks []sockSpec, fn func(fds []int) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			fds := make([]int, 0, len(socks))
			for _, s := range socks {
				fd, err := openSock(s)
				if err != nil {
					return fmt.Errorf("%v: %w", s, err)
				}
				fds = append(fds, fd)
			}
			return fn(fds)
		}()
	}()
	return <-errc
}

// recordHere records the sock_diag dumps and /proc/net tables of the
// calling thread's namespace.
func recordHere() error {
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := os.MkdirAll("testdata/sockdiag", 0o755); err != nil {
		return err
	}
	for _, d := range sockDiagDumps {
		msgs, err := c.Execute(sockDiagRequest(d.tcp, d.family))
		if err != nil {
			return err
		}
		var out []byte
		for _, m := range msgs {
			b, err := m.MarshalBinary()
			if err != nil {
				return err
			}
			out = append(out, b...)
		}
		if err := os.WriteFile(filepath.Join("testdata/sockdiag", d.name+".bin"), out, 0o644); err != nil {
			return err
		}
	}
	dir := "testdata/proc/100/net"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range procNetFiles {
		b, err := os.ReadFile("/proc/thread-self/net/" + f.name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

var sockDiagDumps = []struct {
	name   string
	tcp    bool
	family uint8
}{
	{"tcp4", true, unix.AF_INET},
	{"tcp6", true, unix.AF_INET6},
	{"udp4", false, unix.AF_INET},
	{"udp6", false, unix.AF_INET6},
}

// splitMessages splits concatenated netlink messages. It stops at the first
// malformed one.
func splitMessages(b []byte) []netlink.Message {
	var msgs []netlink.Message
	for len(b) >= 16 {
		l := int(binary.NativeEndian.Uint32(b[:4]))
		if l < 16 || l > len(b) {
			break
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:l]); err != nil {
			break
		}
		msgs = append(msgs, m)
		b = b[min(len(b), (l+3)&^3):]
	}
	return msgs
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: opens sockets in new network namespaces and reads every process's descriptors")
	}
}
