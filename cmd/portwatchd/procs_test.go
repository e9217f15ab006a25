package main

import (
	"runtime"
	"testing"
)

// severalProcs runs the test with two processors at least, as on a host
// with two CPUs, and no GOMAXPROCS in the environment; it returns the
// number. The number in force before is restored after the test.
func severalProcs(t *testing.T) int {
	t.Helper()
	start := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(start) })
	if start < 2 {
		runtime.GOMAXPROCS(2)
	}
	t.Setenv("GOMAXPROCS", "")
	return runtime.GOMAXPROCS(0)
}

func TestProcLimit(t *testing.T) {
	full := severalProcs(t)
	p := newProcLimit()
	for _, step := range []struct {
		eventDriven bool
		want        int
	}{
		{true, 1},     // eBPF active after the first look
		{true, 1},     // again: unchanged
		{false, full}, // fell back to polling
		{false, full},
	} {
		p.set(step.eventDriven)
		if got := runtime.GOMAXPROCS(0); got != step.want {
			t.Errorf("set(%v): GOMAXPROCS %d, want %d", step.eventDriven, got, step.want)
		}
	}

	// The host's own setting wins.
	t.Setenv("GOMAXPROCS", "2")
	p = newProcLimit()
	p.set(true)
	if got := runtime.GOMAXPROCS(0); got != full {
		t.Errorf("with GOMAXPROCS in the environment: %d processors, want %d (unchanged)", got, full)
	}
}
