package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

// restoreGC puts the runtime's pacing back after a test changed it.
func restoreGC(t *testing.T) {
	t.Cleanup(func() {
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(math.MaxInt64)
	})
}

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// sink keeps garbage reachable until the test drops it.
var sink [][]byte

func TestGCPacer(t *testing.T) {
	restoreGC(t)
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	p := newGCPacer()
	if !p.on {
		t.Fatal("pacer off with neither GOGC nor GOMEMLIMIT set")
	}
	if old := debug.SetGCPercent(-1); old != -1 {
		t.Errorf("GOGC = %d, want -1 (off: no forced collection every two minutes)", old)
	}
	if lim := debug.SetMemoryLimit(-1); lim < gcLimitFloor || lim == math.MaxInt64 {
		t.Errorf("memory limit = %d, want at least %d", lim, gcLimitFloor)
	}

	// Right after a collection the heap has not grown: no collection.
	runtime.GC()
	p.check()
	if p.running.Load() {
		t.Error("a collection started right after one")
	}

	// Garbage beyond what the last collection left live, and more than
	// gcMinGrowth: the next check collects.
	live := []metrics.Sample{{Name: gcLive}}
	metrics.Read(live)
	for n := uint64(0); n < live[0].Value.Uint64()+2*gcMinGrowth; n += 1 << 10 {
		sink = append(sink, make([]byte, 1<<10))
	}
	sink = nil
	before := gcCycles()
	p.check()
	for deadline := time.Now().Add(10 * time.Second); gcCycles() == before; {
		if time.Now().After(deadline) {
			t.Fatalf("no collection after the heap doubled (%d cycles)", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGCPacerEnvironment(t *testing.T) {
	restoreGC(t)
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("GOGC", "")
			t.Setenv("GOMEMLIMIT", "")
			t.Setenv(env, map[string]string{"GOGC": "200", "GOMEMLIMIT": "1GiB"}[env])
			debug.SetGCPercent(100)
			if p := newGCPacer(); p.on {
				t.Errorf("pacer on with %s set", env)
			}
			if old := debug.SetGCPercent(100); old != 100 {
				t.Errorf("GOGC = %d, want the runtime's own left alone", old)
			}
		})
	}
}
