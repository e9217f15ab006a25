package ebpf

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkListenToEvent measures how long after listen() returns the event
// is read from the ring buffer, and reports the median and the 99th
// percentile (p50-ns, p99-ns) besides the time per listen and close. In
// "after" the reader calls Read once listen has returned; in "waiting" a
// reader is already blocked in Read, as the daemon's is, and the figure
// includes its wake-up.
func BenchmarkListenToEvent(b *testing.B) {
	p := openProbe(b)
	b.Run("after", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			port, fd := bindLoopback(b)
			listen(b, fd)
			returned := MonotonicNow()
			readListen(b, p, port)
			lat = append(lat, MonotonicNow()-returned)
			unix.Close(fd)
		}
		reportLatency(b, lat)
	})
	b.Run("waiting", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			ports, read := make(chan uint16), make(chan time.Duration)
			go func() {
				port := <-ports
				readListen(b, p, port)
				read <- MonotonicNow()
			}()
			// The reader learns the port, then waits in Read while
			// the listen happens.
			port, fd := bindLoopback(b)
			ports <- port
			listen(b, fd)
			returned := MonotonicNow()
			lat = append(lat, max(0, <-read-returned))
			unix.Close(fd)
		}
		reportLatency(b, lat)
	})
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

// readListen reads events until the listen on port.
func readListen(b *testing.B, p *Probe, port uint16) {
	for {
		e, err := p.Read(context.Background())
		if err != nil {
			b.Error(err)
			return
		}
		if e.Port == port && e.Kind == KindListen {
			return
		}
	}
}

// bindLoopback binds a TCP socket to 127.0.0.1 with a port chosen by the
// kernel.
func bindLoopback(b *testing.B) (uint16, int) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		b.Fatal(err)
	}
	name, err := unix.Getsockname(fd)
	if err != nil {
		b.Fatal(err)
	}
	return uint16(name.(*unix.SockaddrInet4).Port), fd
}

func listen(b *testing.B, fd int) {
	if err := unix.Listen(fd, 1); err != nil {
		b.Fatal(err)
	}
}
