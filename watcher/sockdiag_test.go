package watcher

import (
	"encoding/binary"
	"fmt"
	"runtime"
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
	type result struct {
		both, perFamily, refused []sockEntry
		fellBack, stayed         bool
		err                      error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var r result
		r.err = func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			for _, s := range recordedSockets {
				if _, err := openSock(s); err != nil {
					return err
				}
			}
			c, err := dialSockDiag()
			if err != nil {
				return err
			}
			defer c.Close()
			if r.both, err = c.dumpAll(nil); err != nil {
				return fmt.Errorf("both families: %w", err)
			}
			r.stayed = !c.perFamilyTCP
			c.perFamilyTCP = true
			if r.perFamily, err = c.dumpAll(nil); err != nil {
				return fmt.Errorf("per family: %w", err)
			}
			// A request type sock_diag does not know: the kernel
			// answers EINVAL, as one without TCPDIAG_GETSOCK would.
			c.perFamilyTCP = false
			binary.NativeEndian.PutUint16(c.reqs[0][4:6], 17)
			if r.refused, err = c.dumpAll(nil); err != nil {
				return fmt.Errorf("after the refusal: %w", err)
			}
			r.fellBack = c.perFamilyTCP
			return nil
		}()
		resc <- r
	}()
	r := <-resc
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.stayed {
		t.Error("the kernel refused TCPDIAG_GETSOCK: TCP was dumped per family")
	}
	if !r.fellBack {
		t.Error("a refused request did not switch the connection to per-family TCP dumps")
	}
	for _, c := range []struct {
		name string
		got  []sockEntry
	}{{"both families", r.both}, {"per family", r.perFamily}, {"after the refusal", r.refused}} {
		if diff := cmp.Diff(recordedListeners, byPort(t, c.got)); diff != "" {
			t.Errorf("%s: listeners mismatch (-want +got):\n%s", c.name, diff)
		}
	}
	if diff := cmp.Diff(formatEntries(r.perFamily), formatEntries(r.both)); diff != "" {
		t.Errorf("one TCP request against one per family (-per family +both):\n%s", diff)
	}
}

// BenchmarkDumpAll dumps 1,000 listeners (TCP and UDP, both families) of a
// throwaway network namespace: TCP of both families in one request, and
// one family at a time.
func BenchmarkDumpAll(b *testing.B) {
	requireRoot(b)
	type result struct {
		c   *sockDiagConn
		fds []int
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var r result
		r.err = func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := loopbackUp(); err != nil {
				return err
			}
			kinds := []string{"tcp4", "tcp6only", "udp4", "udp6only"}
			for i := range 1000 {
				addr := fmt.Sprintf("127.0.0.1:%d", 20000+i)
				k := kinds[i%len(kinds)]
				if k == "tcp6only" || k == "udp6only" {
					addr = fmt.Sprintf("[::1]:%d", 20000+i)
				}
				fd, err := openSock(sockSpec{kind: k, addr: addr})
				if err != nil {
					return err
				}
				r.fds = append(r.fds, fd)
			}
			var err error
			r.c, err = dialSockDiag() // bound to this namespace for good
			return err
		}()
		resc <- r
	}()
	r := <-resc
	if r.err != nil {
		b.Fatal(r.err)
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
