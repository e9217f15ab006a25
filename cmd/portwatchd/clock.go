package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loopClock is the loop's periodic clock: a timerfd, waited on in Go's
// network poller and read with a raw system call, rather than a
// time.Ticker.
//
// The runtime's sysmon thread sleeps until the next Go timer is due. With a
// Ticker it woke at every tick beside the thread that runs the loop, and
// then, because the loop's goroutines hand over to each other without the
// P's scheduling count moving (runnext), it took the look for a goroutine
// that had run since the last look, preempted it (a signal) and polled
// every 20 µs while the look lasted (runtime/proc.go, sysmon and retake):
// some thirteen wake-ups a look, each about 60 µs of CPU on a VM, where the
// switch traps to the hypervisor (bench/idle: 0.8 ms of sysmon per 2 ms
// look). A descriptor that becomes readable wakes only the poller's
// thread, and sysmon sleeps on as long as the look makes no blocking system
// call (watcher/rawsys.go, sdNotifier), at most a minute.
//
// A wait allocates nothing: on this VM an idle daemon's wake-up, cold, made
// a per-wait context.AfterFunc cost a tenth of a look (perf).
//
// A host whose seccomp filter refuses timerfd_create gets a Ticker.
type loopClock struct {
	ctx     context.Context
	f       *os.File        // the timerfd; nil with ticker
	rc      syscall.RawConn // f's, for raw reads
	ticker  *time.Ticker
	stopped chan struct{} // closed by Stop
	stop    sync.Once
	unhook  func() bool  // undoes the context.AfterFunc of a timerfd clock
	period  atomic.Int64 // nanoseconds; Reset runs in the loop, wait in the clock goroutine
}

// newLoopClock starts a clock that ticks every period until ctx is done.
func newLoopClock(ctx context.Context, period time.Duration) *loopClock {
	return newClock(ctx, period, true)
}

// newClock is newLoopClock; without timerfd, it makes the Ticker clock
// (for tests).
func newClock(ctx context.Context, period time.Duration, timerfd bool) *loopClock {
	c := &loopClock{ctx: ctx, stopped: make(chan struct{})}
	c.period.Store(int64(period))
	if !timerfd || c.openTimerfd(period) != nil {
		c.ticker = time.NewTicker(period)
		return c
	}
	// Once ctx is done every wait ends at once: a read deadline in the
	// past, set once.
	c.unhook = context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Now()) })
	return c
}

// openTimerfd makes the clock a timerfd ticking every period; on error the
// clock has none.
func (c *loopClock) openTimerfd(period time.Duration) error {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return err
	}
	c.f = os.NewFile(uintptr(fd), "timerfd")
	if c.rc, err = c.f.SyscallConn(); err == nil {
		err = c.Reset(period)
	}
	if err != nil {
		c.f.Close()
		c.f, c.rc = nil, nil
	}
	return err
}

// Reset has the clock tick every period from now on.
func (c *loopClock) Reset(period time.Duration) error {
	c.period.Store(int64(period))
	if c.ticker != nil {
		c.ticker.Reset(period)
		return nil
	}
	ts := unix.NsecToTimespec(period.Nanoseconds())
	var err error
	if cerr := c.rc.Control(func(fd uintptr) {
		err = unix.TimerfdSettime(int(fd), 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil)
	}); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	return nil
}

// wait returns at the next tick, or false once the clock's ctx is done or
// the clock stopped. Ticks missed while nobody waited are dropped, as a
// Ticker drops them.
func (c *loopClock) wait() (time.Time, bool) {
	if c.ticker != nil {
		return c.after(c.ticker.C)
	}
	var (
		expirations [8]byte
		errno       syscall.Errno
	)
	if err := c.rc.Read(func(fd uintptr) bool {
		_, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&expirations[0])), uintptr(len(expirations)))
		return errno != unix.EAGAIN
	}); err != nil || c.ctx.Err() != nil {
		return time.Time{}, false // ctx done (the deadline above), or Stop
	}
	if errno != 0 {
		// Not seen: a timerfd read fails only with EAGAIN, which the
		// poller waits out. The period is waited out instead, so that a
		// lasting error cannot spin the loop.
		if _, ok := c.after(time.After(time.Duration(c.period.Load()))); !ok {
			return time.Time{}, false
		}
	}
	return time.Now(), true
}

// after returns what ch sends, or false once the clock's ctx is done or it
// stopped.
func (c *loopClock) after(ch <-chan time.Time) (time.Time, bool) {
	select {
	case <-c.ctx.Done():
		return time.Time{}, false
	case <-c.stopped:
		return time.Time{}, false
	case now := <-ch:
		return now, true
	}
}

// Stop stops the clock; a wait in progress returns false. Stopping it
// again does nothing.
func (c *loopClock) Stop() {
	c.stop.Do(func() {
		close(c.stopped)
		if c.ticker != nil {
			c.ticker.Stop()
			return
		}
		c.unhook()
		c.f.Close()
	})
}

// resetClock sets the loop's clock to the period in force (setPeriod).
func (d *daemon) resetClock() {
	if err := d.clk.Reset(d.setPeriod()); err != nil {
		d.log.WithError(err).Error("snapshot clock not reset; it keeps its period")
	}
}
