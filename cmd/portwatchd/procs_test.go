package main

import (
	"runtime"
	"testing"
)

func TestProcLimit(t *testing.T) {
	start := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(start) })
	if start < 2 {
		runtime.GOMAXPROCS(2) // as on a host with two CPUs
	}
	full := runtime.GOMAXPROCS(0)

	t.Setenv("GOMAXPROCS", "")
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
