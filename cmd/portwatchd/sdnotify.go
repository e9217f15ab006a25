package main

import (
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	sdd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// sdNotify sends state to systemd's notification socket. Outside systemd
// (no NOTIFY_SOCKET) it does nothing. A failure is logged at debug level
// only: the daemon's work does not depend on it.
func sdNotify(log logrus.FieldLogger, state string) {
	if err := notifier.send(os.Getenv("NOTIFY_SOCKET"), state); err != nil {
		log.WithError(err).Debug("sd_notify")
	}
}

// notifier keeps one datagram socket connected to NOTIFY_SOCKET: the
// watchdog pings several times a minute, and a socket made for each (as
// go-systemd's SdNotify does) costs four system calls and the Go poller's
// registration each time. The socket does not block: a systemd that does
// not read its queue must not stop the loop (the message is dropped, as
// a ping that systemd misses would be).
var notifier sdNotifier

type sdNotifier struct {
	mu   sync.Mutex
	fd   int // connected to path, when path is set
	path string
}

func (n *sdNotifier) send(path, state string) error {
	if path == "" {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for try := 0; ; try++ {
		if err := n.connect(path); err != nil {
			return err
		}
		// Raw, as the watcher's calls of a steady look (watcher/rawsys.go):
		// a ping must not wake the runtime's sysmon.
		_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(n.fd), uintptr(unsafe.Pointer(unsafe.StringData(state))), uintptr(len(state)))
		switch {
		case errno == 0:
			return nil
		case try > 0 || errno == unix.EAGAIN:
			return fmt.Errorf("notify socket %s: %w", path, errno)
		}
		// systemd made the socket again (a re-exec, say): connect anew once.
		unix.Close(n.fd)
		n.path = ""
	}
}

// connect connects n to path unless it is already.
func (n *sdNotifier) connect(path string) error {
	if n.path == path {
		return nil
	}
	if n.path != "" {
		unix.Close(n.fd)
		n.path = ""
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	// A name starting with @ is in the abstract namespace.
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("notify socket %s: %w", path, err)
	}
	n.fd, n.path = fd, path
	return nil
}

// monotonicUsec is the MONOTONIC_USEC= field that systemd 253 and later
// want with RELOADING=1 for Type=notify-reload; older systemd, and
// Type=notify, ignore it.
func monotonicUsec() string {
	return sdd.SdNotifyMonotonicUsec()
}

// watchdogInterval returns the watchdog timeout systemd set (WATCHDOG_USEC,
// for this pid), if any.
func watchdogInterval(log logrus.FieldLogger) (time.Duration, bool) {
	wd, err := sdd.SdWatchdogEnabled(false)
	if err != nil {
		log.WithError(err).Warn("watchdog disabled")
		return 0, false
	}
	return wd, wd > 0
}

// The watchdog: systemd wants WATCHDOG=1 at least once per timeout (wd),
// and only while the snapshot loop makes progress, so that a loop stuck in
// a snapshot (or anywhere else) stops the pings and systemd restarts the
// daemon.
//
// One clock wakes the daemon for both the loop and its watchdog: the
// loop's clock (clock.go), read by the clock goroutine, which hands each
// tick to the loop and then checks the loop. An idle daemon with eBPF
// should wake only for its reconcile snapshots: each other wake-up costs a
// burst of the Go runtime's own work, about 0.6 ms of CPU on the
// development VM (bench/idle), and a timer of its own, or one pushed back
// at each ping (the runtime wakes at its old deadline all the same), cost
// as much as the snapshots. The loop ticks at least every half timeout
// (setPeriod; a tick snapshots only when one is due) and pings after a
// tick when the last ping is a quarter of the timeout old (fed). The clock
// pings too when the loop's last completed tick is at most one period plus
// half the timeout old (a slow loop), and otherwise says once that the
// loop is stuck and withholds the pings.

// fed records that the loop completed a tick at now, and pings the
// watchdog when due. It runs in the loop.
func (d *daemon) fed(now time.Time) {
	d.progress.Store(now.UnixNano())
	if !d.wdOn.Load() || now.Sub(time.Unix(0, d.wdPinged.Load())) < d.wd/4 {
		return
	}
	if d.wdStalled.CompareAndSwap(true, false) {
		d.log.Info("snapshot loop making progress again; watchdog pings resumed")
	}
	d.ping(now)
}

// ping sends WATCHDOG=1.
func (d *daemon) ping(now time.Time) {
	sdNotify(d.log, "WATCHDOG=1")
	d.wdPinged.Store(now.UnixNano())
}

// startWatchdog has the loop and the clock ping from now on.
func (d *daemon) startWatchdog() {
	d.wdPinged.Store(time.Now().UnixNano())
	d.wdOn.Store(true)
}

// clock hands the loop's ticks to it (one waiting at most: a busy loop
// skips ticks, as a ticker does) and checks the loop at each.
func (d *daemon) clock(ticks chan<- time.Time) {
	for {
		now, ok := d.clk.wait()
		if !ok {
			return
		}
		select {
		case ticks <- now:
		default:
		}
		if d.wdOn.Load() {
			d.checkLoop(time.Now())
		}
	}
}

// checkLoop pings for a slow loop, or says once that it is stuck.
func (d *daemon) checkLoop(now time.Time) {
	since := now.Sub(time.Unix(0, d.progress.Load()))
	if since <= time.Duration(d.intervalNS.Load())+d.wd/2 {
		if now.Sub(time.Unix(0, d.wdPinged.Load())) >= d.wd/2 {
			d.ping(now) // a loop slower than its period
		}
		return
	}
	if d.wdStalled.CompareAndSwap(false, true) {
		d.log.WithField("since_last_tick", since.Round(time.Millisecond)).
			Error("snapshot loop stuck; withholding watchdog pings so that systemd restarts the daemon")
	}
}
