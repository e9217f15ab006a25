// Command tick measures the steady-state cost of a long-lived watcher, as
// the daemon runs it: one watcher.Watcher, Snapshot called again and again
// with nothing changing in between. It prints a result.Tick as JSON.
//
// The CPU cost of a tick is the getrusage(RUSAGE_SELF) delta (user+sys, all
// threads, garbage collection included) over the measured ticks, divided by
// their number. The memory figures are read from /proc/self/status after the
// ticks. Everything is bounded: -n ticks, and -timeout for the whole run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/portwatchd/portwatchd/bench/internal/procstatus"
	"github.com/portwatchd/portwatchd/bench/internal/result"
	"github.com/portwatchd/portwatchd/watcher"
)

func main() {
	os.Exit(run())
}

func run() int {
	n := flag.Int("n", 200, "steady ticks to measure")
	warm := flag.Int("warm", 5, "snapshots before measuring (the first one is cold)")
	interval := flag.Duration("interval", 0, "pause between steady ticks (0: back to back)")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the steady ticks to this file")
	coldprofile := flag.String("coldprofile", "", "write a CPU profile of -cold one-shot snapshots (a fresh Watcher each) to this file")
	cold := flag.Int("cold", 20, "cold snapshots for -coldprofile")
	memprofile := flag.String("memprofile", "", "write a heap profile after the steady ticks to this file")
	flag.Parse()
	if *n < 1 || *warm < 1 {
		fmt.Fprintln(os.Stderr, "tick: -n and -warm must be at least 1")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	if *coldprofile != "" {
		if err := profileCold(ctx, *coldprofile, *cold); err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
			return 2
		}
	}

	res := result.Tick{Ticks: *n, Warm: *warm}
	seen := map[string]bool{}
	w, err := watcher.New(watcher.Options{Warn: func(msg string) {
		if !seen[msg] && len(res.Warnings) < 20 {
			seen[msg] = true
			res.Warnings = append(res.Warnings, msg)
		}
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tick: new watcher:", err)
		return 2
	}

	var snap *watcher.Snapshot
	for i := 0; i < *warm; i++ {
		r0, t0 := cpuTime(), time.Now()
		snap, err = w.Snapshot(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tick: snapshot:", err)
			return 2
		}
		if i == 0 {
			res.FirstWallMs = ms(time.Since(t0))
			res.FirstCPUMs = ms(cpuTime() - r0)
		}
	}

	res.VmRSSWarmKiB = statusKiB("VmRSS")
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
			return 2
		}
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	per := make([]time.Duration, 0, *n)
	start, wallStart := cpuTime(), time.Now()
	var paused time.Duration
	for i := 0; i < *n; i++ {
		r0 := cpuTime()
		snap, err = w.Snapshot(ctx)
		if err != nil {
			pprof.StopCPUProfile()
			fmt.Fprintf(os.Stderr, "tick: snapshot %d: %v\n", i, err)
			return 2
		}
		per = append(per, cpuTime()-r0)
		if *interval > 0 {
			p0 := time.Now()
			time.Sleep(*interval)
			paused += time.Since(p0)
		}
	}
	total, wall := cpuTime()-start, time.Since(wallStart)-paused
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)

	res.TickCPUMs = ms(total) / float64(*n)
	res.TickWallMs = ms(wall) / float64(*n)
	slices.Sort(per)
	res.TickCPUP50Ms = ms(per[len(per)/2])
	res.TickCPUP95Ms = ms(per[len(per)*95/100])
	res.NumGC = ms1.NumGC - ms0.NumGC
	res.HeapInuseKiB = int64(ms1.HeapInuse / 1024)
	res.GoSysKiB = int64(ms1.Sys / 1024)
	res.VmRSSKiB, res.VmHWMKiB = statusKiB("VmRSS"), statusKiB("VmHWM")
	res.Listeners = len(snap.Listeners)
	for _, l := range snap.Listeners {
		if len(l.Processes) == 0 {
			res.Unattributed++
		}
		res.Holders += len(l.Processes)
	}

	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "tick:", err)
			return 2
		}
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "tick:", err)
		return 2
	}
	return 0
}

// profileCold profiles n first snapshots, each by a fresh Watcher: the work
// `portwatchd list` does once.
func profileCold(ctx context.Context, path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	for i := 0; i < n; i++ {
		w, err := watcher.New(watcher.Options{})
		if err != nil {
			return fmt.Errorf("new watcher: %w", err)
		}
		if _, err := w.Snapshot(ctx); err != nil {
			return fmt.Errorf("cold snapshot: %w", err)
		}
	}
	return nil
}

// cpuTime is the user+system CPU time of this process so far, all threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// statusKiB reads one "Key:   1234 kB" line of /proc/self/status; -1 when
// it cannot.
func statusKiB(key string) int64 {
	if n, ok := procstatus.Field("/proc/self/status", key); ok {
		return n
	}
	return -1
}
