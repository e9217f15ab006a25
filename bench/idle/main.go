// Command idle measures what the daemon itself costs while nothing changes:
// it starts `portwatchd run` in each mode given, waits until its first
// snapshot is done and the process has settled, and then samples it over
// -wall: CPU time per second of wall and resident memory. It runs inside a
// bench scene (bench/run.sh IDLE=1), so that the daemon watches the scene's
// 1,000 listeners and 1,120 processes.
//
// CPU time is the sum of every thread's sum_exec_runtime
// (/proc/PID/task/*/schedstat, nanoseconds): utime+stime in /proc/PID/stat
// count in clock ticks of 10 ms, too coarse for a daemon that should use
// about 12 ms a minute. Both are printed. RSS is VmRSS from
// /proc/PID/status, sampled every second; the figure is the highest sample.
//
// With eBPF the daemon looks whenever a listener opens anywhere on the
// machine, so its idle cost depends on what else runs there. To tell the
// two apart, the tool loads the kernel programs itself and counts the
// events of the sampling window (every namespace, the scene's and the
// host's), by kind.
//
// Everything is bounded: each daemon is stopped (SIGTERM, then SIGKILL by
// its PID) once measured, and -timeout bounds the whole run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portwatchd/portwatchd/bench/internal/procstatus"
	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

func main() {
	os.Exit(run())
}

// Mode is one daemon configuration measured.
type Mode struct {
	EBPF     string        `json:"ebpf"`     // on or off
	Interval time.Duration `json:"interval"` // interval, or reconcile_interval with eBPF
}

// Result is what was measured of one mode.
type Result struct {
	Mode
	WallS      float64 `json:"wall_s"`
	CPUMsPerS  float64 `json:"cpu_ms_per_s"`      // schedstat: every thread's run time
	StatMsPerS float64 `json:"stat_cpu_ms_per_s"` // utime+stime, clock ticks
	// WakeupsPerS counts the times a thread of the daemon was put on a CPU
	// (schedstat's time slices), per second of wall. On a VM each costs
	// tens of µs of CPU besides the work done, and unlike the CPU time it
	// hardly varies from run to run.
	WakeupsPerS float64 `json:"wakeups_per_s"`
	MaxRSSKiB   int64   `json:"max_vmrss_kib"`
	LastRSSKiB  int64   `json:"last_vmrss_kib"`
	Threads     int     `json:"threads"`
	Listeners   string  `json:"status,omitempty"` // the daemon's last STATUS= line
	StartupSecs float64 `json:"startup_s"`
	// Events are the kernel programs' events during the window, on the
	// whole machine, by kind (listen, close, bind).
	Events map[string]int `json:"events"`
}

func run() int {
	bin := flag.String("portwatchd", "portwatchd", "the daemon's binary")
	wall := flag.Duration("wall", 60*time.Second, "how long to sample each daemon")
	settle := flag.Duration("settle", 15*time.Second, "wait this long after the daemon is ready before sampling")
	modes := flag.String("modes", "on:10s,off:1s", "comma-separated ebpf:interval pairs to measure, in turn")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	timeout := flag.Duration("timeout", 6*time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var res []Result
	for _, m := range strings.Split(*modes, ",") {
		mode, iv, ok := strings.Cut(m, ":")
		d, err := time.ParseDuration(iv)
		if !ok || err != nil || (mode != "on" && mode != "off") {
			fmt.Fprintf(os.Stderr, "idle: bad mode %q (want on:10s or off:1s)\n", m)
			return 2
		}
		r, err := measure(ctx, *bin, Mode{EBPF: mode, Interval: d}, *wall, *settle)
		if err != nil {
			fmt.Fprintf(os.Stderr, "idle: ebpf %s: %v\n", mode, err)
			return 1
		}
		res = append(res, r)
		fmt.Printf("idle ebpf=%s interval=%v: CPU %.3f ms per s of wall (utime+stime %.3f), %.2f thread wake-ups per s, VmRSS max %.1f MiB (last %.1f), %d threads, over %.0f s\n",
			r.EBPF, r.Interval, r.CPUMsPerS, r.StatMsPerS, r.WakeupsPerS, float64(r.MaxRSSKiB)/1024, float64(r.LastRSSKiB)/1024, r.Threads, r.WallS)
		fmt.Printf("  STATUS=%s\n  kernel events on the machine meanwhile: %v\n", r.Listeners, r.Events)
	}
	if len(res) == 2 && res[1].CPUMsPerS > 0 {
		fmt.Printf("idle CPU ratio %s/%s: %.3f\n", label(res[0].Mode), label(res[1].Mode), res[0].CPUMsPerS/res[1].CPUMsPerS)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "idle:", err)
			return 1
		}
	}
	return 0
}

func label(m Mode) string { return fmt.Sprintf("ebpf %s at %v", m.EBPF, m.Interval) }

// textfilePath is where the measured daemon writes its metrics textfile:
// never node_exporter's directory (the default when it exists), whose
// node_exporter would serve the scene's listeners, but a directory of its
// own on a tmpfs when there is one, as the packaged unit writes it in its
// runtime directory (/run/portwatchd, a tmpfs) and links node_exporter's
// file there.
func textfilePath(dir string) (string, error) {
	base := dir
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	d, err := os.MkdirTemp(base, "portwatchd-idle-metrics.")
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "portwatch.prom"), nil
}

// measure starts the daemon in mode m, waits for READY=1 and settle, and
// samples it over wall.
func measure(ctx context.Context, bin string, m Mode, wall, settle time.Duration) (Result, error) {
	dir, err := os.MkdirTemp("", "portwatchd-idle.")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	textfile, err := textfilePath(dir)
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(filepath.Dir(textfile))
	// Everything is allowed: an idle daemon with nothing to say.
	cfg := fmt.Sprintf("version: 1\ninclude: []\ninterval: %v\nallow:\n  - name: all\n    port: [\"1-65535\"]\n    reason: idle benchmark\nnotify:\n  journald: false\nebpf: %s\nmetrics:\n  textfile: %s\n", m.Interval, m.EBPF, textfile)
	if m.EBPF == "on" {
		cfg = fmt.Sprintf("version: 1\ninclude: []\nreconcile_interval: %v\nallow:\n  - name: all\n    port: [\"1-65535\"]\n    reason: idle benchmark\nnotify:\n  journald: false\nebpf: on\nmetrics:\n  textfile: %s\n", m.Interval, textfile)
	}
	cfgPath := filepath.Join(dir, "portwatch.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return Result{}, err
	}
	sock := filepath.Join(dir, "notify")
	ns, err := newNotify(sock)
	if err != nil {
		return Result{}, err
	}
	defer ns.Close()
	cmd := exec.Command(bin, "run", "-c", cfgPath, "--state-dir", filepath.Join(dir, "state"))
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=30000000")
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return Result{}, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Result{}, err
	}
	pid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	var status string
	readyBy := time.After(2 * time.Minute)
	for ready := false; !ready; {
		select {
		case msg := <-ns.msgs:
			if strings.HasPrefix(msg, "STATUS=") {
				status = strings.TrimPrefix(msg, "STATUS=")
			}
			ready = ready || msg == "READY=1"
		case err := <-done:
			log, _ := os.ReadFile(logf.Name())
			return Result{}, fmt.Errorf("daemon exited before READY=1 (%v):\n%s", err, log)
		case <-readyBy:
			return Result{}, errors.New("no READY=1 within 2 minutes")
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	r := Result{Mode: m, StartupSecs: time.Since(start).Seconds()}
	if err := sleep(ctx, settle, done, ns, &status); err != nil {
		return Result{}, err
	}
	evs := countEvents(ctx)
	cpu0, slices0 := schedCPU(pid)
	stat0, t0 := statCPU(pid), time.Now()
	for time.Since(t0) < wall {
		if err := sleep(ctx, time.Second, done, ns, &status); err != nil {
			return Result{}, err
		}
		rss := statusKiB(pid, "VmRSS")
		r.MaxRSSKiB = max(r.MaxRSSKiB, rss)
		r.LastRSSKiB = rss
	}
	el := time.Since(t0)
	r.WallS = el.Seconds()
	cpu1, slices1 := schedCPU(pid)
	r.CPUMsPerS = float64(cpu1-cpu0) / float64(time.Millisecond) / r.WallS
	r.WakeupsPerS = float64(slices1-slices0) / r.WallS
	r.StatMsPerS = float64(statCPU(pid)-stat0) / float64(time.Millisecond) / r.WallS
	r.Events = evs()
	r.Threads = int(statusKiB(pid, "Threads"))
	r.Listeners = status
	return r, nil
}

// sleep waits d, keeping the last STATUS= and failing if the daemon exits.
func sleep(ctx context.Context, d time.Duration, done <-chan error, ns *notify, status *string) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case msg := <-ns.msgs:
			if strings.HasPrefix(msg, "STATUS=") {
				*status = strings.TrimPrefix(msg, "STATUS=")
			}
		case err := <-done:
			return fmt.Errorf("daemon exited while measured: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// countEvents loads the kernel programs and counts their events until the
// returned function is called, which returns the counts by kind (nil when
// the programs cannot load).
func countEvents(ctx context.Context) func() map[string]int {
	p, err := ebpf.Open(ebpf.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle: no event count:", err)
		return func() map[string]int { return nil }
	}
	n := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := p.Read(ctx)
			if errors.Is(err, ebpf.ErrParse) {
				continue
			}
			if err != nil {
				return
			}
			n[ev.Kind.String()]++
		}
	}()
	return func() map[string]int {
		p.Close()
		<-done
		return n
	}
}

// schedCPU is the run time of every thread of pid, and the number of time
// slices they ran, from schedstat. (A thread that exited in between takes
// its counts with it: the daemon's threads live as long as it does.)
func schedCPU(pid int) (time.Duration, int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	var slices int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(b)); len(fs) == 3 {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			k, _ := strconv.ParseInt(fs[2], 10, 64)
			sum += time.Duration(n)
			slices += k
		}
	}
	return sum, slices
}

// statCPU is utime+stime of pid from /proc/PID/stat.
func statCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fs[11], 10, 64)
	st, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// statusKiB reads a numeric field of /proc/PID/status; 0 when it cannot.
func statusKiB(pid int, key string) int64 {
	n, _ := procstatus.Field(fmt.Sprintf("/proc/%d/status", pid), key)
	return n
}

// notify stands in for systemd's notification socket.
type notify struct {
	conn *os.File
	msgs chan string
}

func newNotify(path string) (*notify, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	// Non-blocking, so that Close ends the reader's Read.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	n := &notify{conn: os.NewFile(uintptr(fd), path), msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			for _, m := range strings.Split(string(buf[:k]), "\n") {
				select {
				case n.msgs <- m:
				default: // nobody reads while the daemon is being stopped
				}
			}
		}
	}()
	return n, nil
}

// Close stops the reader.
func (n *notify) Close() error { return n.conn.Close() }
