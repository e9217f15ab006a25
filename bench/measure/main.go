// Command measure runs inside a bench scene (see bench/scene) and compares
// one-shot `portwatchd list --json` with `ss -ltnup`: each is run -n times,
// interleaved so that drift on a shared machine hits both alike, and the
// median wall time, user+sys CPU time and peak RSS (from the child's
// rusage) are reported with portwatchd/ss ratios. With -tick it then runs
// bench/tick for the steady-state cost of a long-lived watcher.
//
//	measure -scene large -portwatchd ./portwatchd -tick ./tick -json large.json
//	measure -report small.json large.json    # a Markdown table of saved runs
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portwatchd/portwatchd/bench/internal/procnet"
	"github.com/portwatchd/portwatchd/bench/internal/result"
)

func main() {
	os.Exit(run())
}

func run() int {
	scene := flag.String("scene", os.Getenv("PORTWATCH_BENCH_SCENE"), "scene name, for the report")
	reps := flag.Int("n", 11, "repetitions of each one-shot command (the median is reported)")
	pw := flag.String("portwatchd", "portwatchd", "portwatchd binary")
	ss := flag.String("ss", "ss", "ss binary")
	nice := flag.Int("nice", 0, "nice value for the measured commands (-20 keeps other work on the machine from distorting wall times)")
	launcher := flag.String("launch", "", "bench/launch binary (default: launch next to this program)")
	tick := flag.String("tick", "", "bench/tick binary; empty skips the steady-state figures")
	tickArgs := flag.String("tick-args", "-n 200 -warm 5", "arguments for bench/tick")
	out := flag.String("json", "", "also write the figures as JSON to this file")
	timeout := flag.Duration("timeout", 4*time.Minute, "give up after this long")
	report := flag.Bool("report", false, "print a Markdown table of the JSON files given as arguments, and exit")
	flag.Parse()
	if *report {
		return printReport(flag.Args())
	}
	if *reps < 1 {
		fmt.Fprintln(os.Stderr, "measure: -n must be at least 1")
		return 2
	}
	if *launcher == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "measure: -launch not given:", err)
			return 2
		}
		*launcher = filepath.Join(filepath.Dir(self), "launch")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	res := result.Scene{
		Scene: *scene,
		Date:  time.Now().UTC().Format(time.RFC3339),
		CPUs:  runtime.NumCPU(),
		Setup: os.Getenv("PORTWATCH_BENCH_SETUP"),
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		res.Kernel = cstring(u.Release[:])
	}
	res.Processes, res.Fds = countProcs()
	if c, err := procnet.Read("/proc"); err == nil {
		res.ListenKernel = c.Total()
	}
	res.Nice = *nice
	res.LoadBefore = loadavg()

	pwCmd := []string{*pw, "list", "--json"}
	ssCmd := []string{*ss, "-ltnup"}

	// One run each with the output kept, to check that both see the scene
	// (and to warm the page cache for both binaries).
	if b, err := output(ctx, pwCmd); err != nil {
		res.Portwatchd.Err = err.Error()
	} else {
		var doc struct {
			Listeners []struct {
				Processes []json.RawMessage `json:"processes"`
			} `json:"listeners"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			res.Portwatchd.Err = fmt.Sprintf("decode list --json: %v", err)
		}
		res.ListenPW = len(doc.Listeners)
		for _, l := range doc.Listeners {
			if len(l.Processes) == 0 {
				res.Unattrib++
			}
		}
	}
	b, err := output(ctx, ssCmd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "measure:", err)
		return 2
	}
	res.ListenSS = max(0, bytes.Count(b, []byte("\n"))-1) // minus the header

	var pwRuns, ssRuns []sample
	for i := 0; i < *reps; i++ {
		// Alternate the order, so neither always runs second.
		order := []bool{i%2 == 0, i%2 != 0}
		for _, isPW := range order {
			if isPW && res.Portwatchd.Err == "" {
				s, err := measure(ctx, *launcher, *nice, pwCmd)
				if err != nil {
					res.Portwatchd.Err = err.Error()
					continue
				}
				pwRuns = append(pwRuns, s)
			}
			if !isPW {
				s, err := measure(ctx, *launcher, *nice, ssCmd)
				if err != nil {
					fmt.Fprintln(os.Stderr, "measure:", err)
					return 2
				}
				ssRuns = append(ssRuns, s)
			}
		}
	}
	res.SS = summarize(ssCmd, ssRuns)
	res.Portwatchd = summarize(pwCmd, pwRuns)
	if len(pwRuns) == *reps {
		res.Ratio = &result.Ratio{
			Wall:   res.Portwatchd.WallMs / res.SS.WallMs,
			CPU:    res.Portwatchd.CPUMs / res.SS.CPUMs,
			MaxRSS: float64(res.Portwatchd.MaxRSS) / float64(res.SS.MaxRSS),
		}
	} else if res.Portwatchd.Err == "" {
		res.Portwatchd.Err = "not every repetition succeeded"
	}

	if *tick != "" {
		// Through the launcher for the same nice value; its result on fd 3
		// is not needed.
		args := append([]string{*launcher, "-nice", strconv.Itoa(*nice), *tick}, strings.Fields(*tickArgs)...)
		b, err := output(ctx, args)
		if err != nil {
			res.TickErr = err.Error()
		} else {
			var t result.Tick
			if err := json.Unmarshal(b, &t); err != nil {
				res.TickErr = fmt.Sprintf("decode tick output: %v", err)
			} else {
				res.Tick = &t
			}
		}
	}

	res.LoadAfter = loadavg()
	printScene(os.Stdout, &res)
	if *out != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(*out, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "measure: write json:", err)
			return 2
		}
	}
	return 0
}

// sample is one run of one command.
type sample struct {
	wall, cpu time.Duration
	maxRSS    int64 // KiB
}

// measure runs a command once through bench/launch (see there why), with
// its output thrown away, and returns its wall time and rusage.
func measure(ctx context.Context, launcher string, nice int, args []string) (sample, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return sample{}, err
	}
	defer devnull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return sample{}, err
	}
	defer pr.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, launcher, append([]string{"-nice", strconv.Itoa(nice)}, args...)...)
	cmd.Stdout = devnull
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	cmd.ExtraFiles = []*os.File{pw}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return sample{}, fmt.Errorf("start launcher: %w", err)
	}
	b, readErr := io.ReadAll(pr)
	if err := cmd.Wait(); err != nil {
		return sample{}, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, firstLine(stderr.String()))
	}
	if readErr != nil {
		return sample{}, fmt.Errorf("launcher result: %w", readErr)
	}
	var wall, cpu time.Duration
	var rss int64
	var status int
	if _, err := fmt.Sscan(string(b), &wall, &cpu, &rss, &status); err != nil {
		return sample{}, fmt.Errorf("launcher result %q: %w", b, err)
	}
	if status != 0 {
		return sample{}, fmt.Errorf("%s: exit status %d: %s", strings.Join(args, " "), status, firstLine(stderr.String()))
	}
	return sample{wall: wall, cpu: cpu, maxRSS: rss}, nil
}

// output runs a command once and returns its standard output.
func output(ctx context.Context, args []string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	b, err := cmd.Output()
	if stderr.Len() > 0 {
		// Warnings (partial attribution...) are worth seeing once.
		fmt.Fprintf(os.Stderr, "measure: %s: stderr: %s\n", args[0], strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, firstLine(stderr.String()))
	}
	return b, nil
}

func summarize(args []string, runs []sample) result.Run {
	r := result.Run{Command: args, Reps: len(runs)}
	if len(runs) == 0 {
		return r
	}
	var walls, cpus []time.Duration
	var rss []int64
	for _, s := range runs {
		walls, cpus, rss = append(walls, s.wall), append(cpus, s.cpu), append(rss, s.maxRSS)
	}
	slices.Sort(walls)
	slices.Sort(cpus)
	slices.Sort(rss)
	r.WallMs = ms(walls[len(walls)/2])
	r.CPUMs = ms(cpus[len(cpus)/2])
	r.MaxRSS = rss[len(rss)/2]
	r.MinWall, r.MaxWall = ms(walls[0]), ms(walls[len(walls)-1])
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// countProcs counts the processes this process can see in /proc, and their
// open descriptors: the work an fd scan has to do.
func countProcs() (procs, fds int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return -1, -1
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		procs++
		if f, err := os.ReadDir("/proc/" + e.Name() + "/fd"); err == nil {
			fds += len(f)
		}
	}
	return procs, fds
}

// loadavg returns the first three fields of /proc/loadavg: how busy the
// machine was (it is not namespaced).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func cstring(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// limited keeps the first n bytes written to it and drops the rest.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}
