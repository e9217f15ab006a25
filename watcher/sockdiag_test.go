package watcher

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestDumpAllLive dumps recordedSockets from a throwaway network namespace:
// TCP of both families in one request (tcpDiagRequest), TCP one family at a
// time, and after the kernel refused the first request. Each must list the
// same sockets.
func TestDumpAllLive(t *testing.T) {
	requireRoot(t)
	var (
		both, perFamily, refused []sockEntry
		fellBack, stayed         bool
	)
	err := inNewNetns(recordedSockets, func([]int) error {
		c, err := dialSockDiag()
		if err != nil {
			return err
		}
		defer c.Close()
		if both, err = c.dumpAll(nil); err != nil {
			return fmt.Errorf("both families: %w", err)
		}
		stayed = !c.perFamilyTCP
		c.perFamilyTCP = true
		if perFamily, err = c.dumpAll(nil); err != nil {
			return fmt.Errorf("per family: %w", err)
		}
		// A request type sock_diag does not know: the kernel answers
		// EINVAL, as one without TCPDIAG_GETSOCK would.
		c.perFamilyTCP = false
		binary.NativeEndian.PutUint16(c.reqs[0][4:6], 17)
		if refused, err = c.dumpAll(nil); err != nil {
			return fmt.Errorf("after the refusal: %w", err)
		}
		fellBack = c.perFamilyTCP
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !stayed {
		t.Error("the kernel refused TCPDIAG_GETSOCK: TCP was dumped per family")
	}
	if !fellBack {
		t.Error("a refused request did not switch the connection to per-family TCP dumps")
	}
	for _, c := range []struct {
		name string
		got  []sockEntry
	}{{"both families", both}, {"per family", perFamily}, {"after the refusal", refused}} {
		if diff := cmp.Diff(recordedListeners, byPort(t, c.got)); diff != "" {
			t.Errorf("%s: listeners mismatch (-want +got):\n%s", c.name, diff)
		}
	}
	if diff := cmp.Diff(formatEntries(perFamily), formatEntries(both)); diff != "" {
		t.Errorf("one TCP request against one per family (-per family +both):\n%s", diff)
	}
}

// BenchmarkDumpAll dumps 1,000 listeners (TCP and UDP, both families) of a
// throwaway network namespace: TCP of both families in one request, and
// one family at a time.
func BenchmarkDumpAll(b *testing.B) {
	requireRoot(b)
	kinds := []string{"tcp4", "tcp6only", "udp4", "udp6only"}
	var socks []sockSpec
	for i := range 1000 {
		s := sockSpec{kind: kinds[i%len(kinds)], addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)}
		if s.kind == "tcp6only" || s.kind == "udp6only" {
			s.addr = fmt.Sprintf("[::1]:%d", 20000+i)
		}
		socks = append(socks, s)
	}
	var r struct {
		c   *sockDiagConn
		fds []int
	}
	err := inNewNetns(socks, func(fds []int) error {
		r.fds = fds
		var err error
		r.c, err = dialSockDiag() // bound to this namespace for good
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		r.c.Close()
		for _, fd := range r.fds {
			unix.Close(fd)
		}
	}()
	for _, perFamily := range []bool{false, true} {
		name := "tcp-both-families"
		if perFamily {
			name = "tcp-per-family"
		}
		b.Run(name, func(b *testing.B) {
			r.c.perFamilyTCP = perFamily
			var out []sockEntry
			for b.Loop() {
				var err error
				if out, err = r.c.dumpAll(out[:0]); err != nil {
					b.Fatal(err)
				}
				if len(out) != 1000 {
					b.Fatalf("%d listeners, want 1000", len(out))
				}
			}
		})
	}
}
