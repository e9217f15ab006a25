package main

import (
	"os"
	"runtime"
)

// With the kernel's events, the daemon runs its goroutines on one
// processor (GOMAXPROCS 1) from the end of its first look. Its looks are
// then small (one namespace, from the event's pid) or every
// reconcile_interval, and each is one goroutine's work; with a second
// processor idle, every goroutine the loop readies (the clock's tick, the
// event reader's trigger) wakes a second thread to look for work, which
// finds none. That thread's wake-up costs as much CPU as a part of the
// look itself: bench/idle, in runs alternating with GOMAXPROCS=1 over
// several sessions, measured 5-10 % less CPU and less than half the
// thread wake-ups with one processor. The first look, which reads every
// process, keeps every processor (its descriptor scan runs in parallel).
// Polling keeps them too: only the event-driven daemon, which sleeps
// between looks long enough for each wake-up to count, was measured with
// one. A daemon that falls back to polling gets them back.
//
// GOMAXPROCS in the environment leaves the number alone: a host's own
// setting wins.

// procLimit sets the number of processors the daemon's goroutines run on.
type procLimit struct {
	full int  // the number at start: CPUs and the cgroup's CPU limit
	on   bool // the daemon may change it
}

// newProcLimit takes the number in force at start as the full one.
func newProcLimit() procLimit {
	full := runtime.GOMAXPROCS(0)
	return procLimit{full: full, on: os.Getenv("GOMAXPROCS") == "" && full > 1}
}

// set runs the goroutines on one processor when eventDriven, and on the
// full number otherwise. The runtime stops the world only when the number
// changes.
func (p procLimit) set(eventDriven bool) {
	if !p.on {
		return
	}
	want := p.full
	if eventDriven {
		want = 1
	}
	runtime.GOMAXPROCS(want)
}

// setProcs sets the processors for the mode in force, as resetClock sets
// the loop's period: one while the kernel's events drive the looks.
func (d *daemon) setProcs() {
	d.procs.set(d.kern.ev != nil)
}
