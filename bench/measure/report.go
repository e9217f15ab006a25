package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/portwatchd/portwatchd/bench/internal/result"
)

// Targets on the large scene: the README's figures.
const (
	targetWallRatio = 0.55
	targetTickCPUMs = 3.0
	targetRSSKiB    = 30 * 1024
)

func mib(kib int64) float64 { return float64(kib) / 1024 }

// verdict marks a figure against its target, on the large scenes only.
func verdict(scene string, ok bool) string {
	if scene != "large" && !strings.HasPrefix(scene, "large-") {
		return ""
	}
	if ok {
		return "  [ok]"
	}
	return "  [MISSED]"
}

// printScene writes the figures of one scene for a reader at a terminal.
func printScene(w io.Writer, r *result.Scene) {
	fmt.Fprintf(w, "\n== scene %s  (%s, %d CPUs, kernel %s)\n", r.Scene, r.Date, r.CPUs, r.Kernel)
	fmt.Fprintf(w, "   %d processes, %d open fds; listeners: kernel (/proc/net) %d, portwatchd %d (%d unattributed), ss %d\n",
		r.Processes, r.Fds, r.ListenKernel, r.ListenPW, r.Unattrib, r.ListenSS)
	fmt.Fprintf(w, "   nice %d; load average before %s, after %s\n", r.Nice, r.LoadBefore, r.LoadAfter)
	if r.Setup != "" {
		fmt.Fprintf(w, "   scene: %s\n", r.Setup)
	}
	if r.Portwatchd.Err == "" && (r.ListenPW != r.ListenKernel || r.ListenSS != r.ListenKernel) {
		fmt.Fprintf(w, "   WARNING: portwatchd, ss and the kernel disagree on the number of listeners\n")
	}
	fmt.Fprintf(w, "   one-shot, median of %d interleaved runs:\n", r.SS.Reps)
	fmt.Fprintf(w, "   %-26s %10s %10s %12s\n", "", "wall ms", "CPU ms", "peak RSS MiB")
	row := func(name string, x result.Run) {
		fmt.Fprintf(w, "   %-26s %10.1f %10.1f %12.1f   (wall min %.1f max %.1f)\n",
			name, x.WallMs, x.CPUMs, mib(x.MaxRSS), x.MinWall, x.MaxWall)
	}
	if r.Portwatchd.Err != "" {
		fmt.Fprintf(w, "   %-26s failed: %s\n", "portwatchd list --json", r.Portwatchd.Err)
	} else {
		row("portwatchd list --json", r.Portwatchd)
	}
	row("ss -ltnup", r.SS)
	if r.Ratio != nil {
		fmt.Fprintf(w, "   %-26s %10.2f %10.2f %12.2f%s\n", "ratio portwatchd/ss",
			r.Ratio.Wall, r.Ratio.CPU, r.Ratio.MaxRSS, verdict(r.Scene, r.Ratio.Wall <= targetWallRatio))
	}
	if t := r.Tick; t != nil {
		fmt.Fprintf(w, "   steady tick (%d ticks after %d warm): %.2f ms CPU mean (p50 %.2f, p95 %.2f), %.2f ms wall, %d GCs%s\n",
			t.Ticks, t.Warm, t.TickCPUMs, t.TickCPUP50Ms, t.TickCPUP95Ms, t.TickWallMs, t.NumGC,
			verdict(r.Scene, t.TickCPUMs <= targetTickCPUMs))
		fmt.Fprintf(w, "   first (cold) snapshot: %.1f ms wall, %.1f ms CPU; %d listeners, %d holders, %d unattributed\n",
			t.FirstWallMs, t.FirstCPUMs, t.Listeners, t.Holders, t.Unattributed)
		fmt.Fprintf(w, "   long-lived watcher: VmRSS %.1f MiB (%.1f after warm-up), VmHWM %.1f MiB, Go heap in use %.1f MiB, Go sys %.1f MiB%s\n",
			mib(t.VmRSSKiB), mib(t.VmRSSWarmKiB), mib(t.VmHWMKiB), mib(t.HeapInuseKiB), mib(t.GoSysKiB),
			verdict(r.Scene, t.VmRSSKiB <= targetRSSKiB))
		for _, m := range t.Warnings {
			fmt.Fprintf(w, "   watcher warning: %s\n", m)
		}
	} else if r.TickErr != "" {
		fmt.Fprintf(w, "   steady tick: failed: %s\n", r.TickErr)
	}
}

// printReport prints a Markdown table, one column per scene, of the JSON
// files measure -json wrote.
func printReport(paths []string) int {
	var scenes []result.Scene
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "measure:", err)
			return 2
		}
		var s result.Scene
		if err := json.Unmarshal(b, &s); err != nil {
			fmt.Fprintf(os.Stderr, "measure: %s: %v\n", p, err)
			return 2
		}
		scenes = append(scenes, s)
	}
	if len(scenes) == 0 {
		fmt.Fprintln(os.Stderr, "measure: -report needs JSON files")
		return 2
	}
	w := os.Stdout
	head := []string{"figure"}
	for _, s := range scenes {
		head = append(head, s.Scene)
	}
	head = append(head, "target (large)")
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	line := func(name, target string, f func(s *result.Scene) string) {
		cells := []string{name}
		for i := range scenes {
			cells = append(cells, f(&scenes[i]))
		}
		cells = append(cells, target)
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	pw := func(s *result.Scene, f func(r result.Run) string) string {
		if s.Portwatchd.Err != "" || s.Portwatchd.Reps == 0 {
			return "failed"
		}
		return f(s.Portwatchd)
	}
	ratio := func(s *result.Scene, f func(r *result.Ratio) float64) string {
		if s.Ratio == nil {
			return "-"
		}
		return fmt.Sprintf("**%.2f**", f(s.Ratio))
	}
	tick := func(s *result.Scene, f func(t *result.Tick) string) string {
		if s.Tick == nil {
			return "-"
		}
		return f(s.Tick)
	}
	line("date (UTC)", "", func(s *result.Scene) string { return s.Date })
	line("load average before → after (nice)", "", func(s *result.Scene) string {
		return fmt.Sprintf("%s → %s (%d)", s.LoadBefore, s.LoadAfter, s.Nice)
	})
	line("processes / open fds in the scene", "", func(s *result.Scene) string { return fmt.Sprintf("%d / %d", s.Processes, s.Fds) })
	line("listeners: kernel / portwatchd / ss", "", func(s *result.Scene) string {
		return fmt.Sprintf("%d / %d / %d", s.ListenKernel, s.ListenPW, s.ListenSS)
	})
	line("`portwatchd list --json` wall ms", "", func(s *result.Scene) string {
		return pw(s, func(r result.Run) string { return fmt.Sprintf("%.1f", r.WallMs) })
	})
	line("`ss -ltnup` wall ms", "", func(s *result.Scene) string { return fmt.Sprintf("%.1f", s.SS.WallMs) })
	line("wall ratio portwatchd / ss", fmt.Sprintf("≤ %.2f", targetWallRatio), func(s *result.Scene) string {
		return ratio(s, func(r *result.Ratio) float64 { return r.Wall })
	})
	line("`portwatchd list --json` CPU ms", "", func(s *result.Scene) string {
		return pw(s, func(r result.Run) string { return fmt.Sprintf("%.1f", r.CPUMs) })
	})
	line("`ss -ltnup` CPU ms", "", func(s *result.Scene) string { return fmt.Sprintf("%.1f", s.SS.CPUMs) })
	line("CPU ratio portwatchd / ss", "", func(s *result.Scene) string {
		return ratio(s, func(r *result.Ratio) float64 { return r.CPU })
	})
	line("`portwatchd list --json` peak RSS MiB", "", func(s *result.Scene) string {
		return pw(s, func(r result.Run) string { return fmt.Sprintf("%.1f", mib(r.MaxRSS)) })
	})
	line("`ss -ltnup` peak RSS MiB", "", func(s *result.Scene) string { return fmt.Sprintf("%.1f", mib(s.SS.MaxRSS)) })
	line("peak RSS ratio portwatchd / ss", "", func(s *result.Scene) string {
		return ratio(s, func(r *result.Ratio) float64 { return r.MaxRSS })
	})
	line("steady tick CPU ms (mean; p50 / p95)", fmt.Sprintf("≤ %.0f", targetTickCPUMs), func(s *result.Scene) string {
		return tick(s, func(t *result.Tick) string {
			return fmt.Sprintf("**%.2f**; %.2f / %.2f", t.TickCPUMs, t.TickCPUP50Ms, t.TickCPUP95Ms)
		})
	})
	line("steady tick wall ms", "", func(s *result.Scene) string {
		return tick(s, func(t *result.Tick) string { return fmt.Sprintf("%.2f", t.TickWallMs) })
	})
	line("first (cold) snapshot wall / CPU ms", "", func(s *result.Scene) string {
		return tick(s, func(t *result.Tick) string { return fmt.Sprintf("%.1f / %.1f", t.FirstWallMs, t.FirstCPUMs) })
	})
	line("long-lived watcher VmRSS MiB after the ticks (after warm-up; VmHWM)", fmt.Sprintf("≤ %d", targetRSSKiB/1024), func(s *result.Scene) string {
		return tick(s, func(t *result.Tick) string {
			return fmt.Sprintf("**%.1f** (%.1f; %.1f)", mib(t.VmRSSKiB), mib(t.VmRSSWarmKiB), mib(t.VmHWMKiB))
		})
	})
	return 0
}
