package latency

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/internal/listenertest"
	"github.com/portwatchd/portwatchd/internal/syncbuf"
)

// listenEnv makes the test binary a listener child: it listens on the
// address in the variable, prints the wall-clock time (Unix nanoseconds)
// at which listen() returned, and exits when its stdin closes.
const listenEnv = "PORTWATCHD_LATENCY_LISTEN"

// TestLatencyHelperListener is the listener child, not a test.
func TestLatencyHelperListener(t *testing.T) {
	addr := os.Getenv(listenEnv)
	if addr == "" {
		t.Skip("helper process for BenchmarkDetectionLatency")
	}
	ln, err := net.Listen("tcp", addr)
	at := time.Now().UnixNano()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(at)
	_, _ = io.Copy(io.Discard, os.Stdin)
	ln.Close()
	os.Exit(0)
}

// arrivals records when the alert for each port was first seen.
type arrivals struct {
	mu sync.Mutex
	at map[int]time.Time
}

func (a *arrivals) see(port int, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.at[port]; !ok {
		a.at[port] = t
	}
}

func (a *arrivals) get(port int) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[port]
	return t, ok
}

// BenchmarkDetectionLatency measures, for one unexpected listener at a time,
// the time from the child's listen() returning to (a) the alert's journald
// entry being readable (a journalctl query, repeated, finds it), (a') a
// follower of the journal (journalctl -f) printing it, (c) journald
// stamping it (__REALTIME_TIMESTAMP: the entry is in the file from then
// on; the query of (a) adds its own start-up and 10 ms of polling), and (b)
// the loopback
// webhook receiving it. journalctl runs in the private journald's namespace. The daemon runs with interval 1s; trials start at random phases of its
// tick. Run it with -benchtime=20x for 20 trials (bench/latency/run.sh does);
// it reports p50 and p99 of both, in milliseconds.
func BenchmarkDetectionLatency(b *testing.B) {
	j, dir := setUp(b)

	// Webhook receiver (generic format).
	hook := &arrivals{at: map[int]time.Time{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var body struct {
			Events []struct {
				Type     string `json:"type"`
				Listener struct {
					Port  int    `json:"port"`
					Netns string `json:"netns"`
				} `json:"listener"`
			} `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, ev := range body.Events {
			if ev.Type == "listener.opened" && ev.Listener.Netns == "host" {
				hook.see(ev.Listener.Port, now)
			}
		}
	}))
	defer srv.Close()

	base := freeBlock(b)
	const block = 200
	cfg := writeConfig(b, dir, base, block, fmt.Sprintf(`  webhooks:
    - name: receiver
      format: generic
      url: %s
`, srv.URL))

	// The journal follower: journalctl -f prints each entry as journald
	// makes it readable.
	journal := &arrivals{at: map[int]time.Time{}}
	// stamped is when journald received each entry (__REALTIME_TIMESTAMP):
	// it appends the entry to the mmapped journal file as it stamps it, so
	// a reader can read it from then on. Unlike the queries below, the
	// figure has no polling granularity and no journalctl start-up in it.
	stamped := &arrivals{at: map[int]time.Time{}}
	var exes sync.Map // port -> PORTWATCH_EXE of its alert, to explain outliers
	follow := j.Command("journalctl", "-f", "-n", "0", "-o", "json", "SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_NETNS=host")
	fout, err := follow.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	go func() {
		sc := bufio.NewScanner(fout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			now := time.Now()
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			if p, ok := e["PORTWATCH_PORT"].(string); ok {
				if n, err := strconv.Atoi(p); err == nil {
					journal.see(n, now)
					if us, ok := e["__REALTIME_TIMESTAMP"].(string); ok {
						if v, err := strconv.ParseInt(us, 10, 64); err == nil {
							stamped.see(n, time.UnixMicro(v))
						}
					}
					exe, _ := e["PORTWATCH_EXE"].(string)
					exes.Store(n, exe)
				}
			}
		}
	}()

	dlog := startDaemon(b, j, dir, cfg)
	var toJournal, toStamp, toFollow, toHook []time.Duration
	port := base
	for b.Loop() {
		if port >= base+block {
			b.Fatal("out of ports")
		}
		// A random phase against the daemon's 1s tick.
		time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
		listenAt, stop := startListener(b, port)
		deadline := time.Now().Add(30 * time.Second)
		readable := pollJournal(j, port, deadline)
		for {
			ft, fok := journal.get(port)
			ht, hok := hook.get(port)
			if fok && hok {
				toFollow = append(toFollow, ft.Sub(listenAt))
				if st, ok := stamped.get(port); ok {
					toStamp = append(toStamp, st.Sub(listenAt))
				}
				toHook = append(toHook, ht.Sub(listenAt))
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("trial %d: no alert for port %d after 30s (journalctl -f %v, webhook %v)\ndaemon log:\n%s", len(toHook), port, fok, hok, dlog.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		rt, ok := <-readable
		if !ok {
			b.Fatalf("trial %d: alert for port %d never readable by a journal query", len(toHook), port)
		}
		toJournal = append(toJournal, rt.Sub(listenAt))
		if d := toHook[len(toHook)-1]; d > 1500*time.Millisecond {
			exe, _ := exes.Load(port)
			b.Logf("trial %d: slow: webhook after %v, journal readable after %v (alert exe %q)", len(toHook), d.Round(time.Millisecond), toJournal[len(toJournal)-1].Round(time.Millisecond), exe)
		}
		stop()
		port++
	}
	if len(toJournal) == 0 {
		return
	}
	for _, s := range []struct {
		name string
		ds   []time.Duration
	}{{"journald", toJournal}, {"journald-stamp", toStamp}, {"journalctl-f", toFollow}, {"webhook", toHook}} {
		if len(s.ds) == 0 {
			continue
		}
		p50, p99 := percentile(s.ds, 50), percentile(s.ds, 99)
		b.ReportMetric(float64(p50)/1e6, "p50-"+s.name+"-ms")
		b.ReportMetric(float64(p99)/1e6, "p99-"+s.name+"-ms")
		b.Logf("%s: %d trials, p50 %v, p99 %v, max %v", s.name, len(s.ds), p50.Round(time.Millisecond), p99.Round(time.Millisecond), slices.Max(s.ds).Round(time.Millisecond))
	}
}

// writeConfig writes the daemon's config in dir: interval 1s, the ebpf:
// mode of benchMode, every port allowed but the block of ports from base,
// journald, and notify, the rest of the notify section. It returns its path.
func writeConfig(b *testing.B, dir string, base, block int, notify string) string {
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o700); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "etc", "portwatch.yaml")
	conf := fmt.Sprintf(`version: 1
interval: 1s
ebpf: %s
allow:
  - name: everything-else
    port: ["1-%d", "%d-65535"]
metrics:
  textfile: %s
notify:
  journald: true
`, benchMode(), base-1, base+block, filepath.Join(dir, "portwatch.prom")) + notify
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// benchMode is the daemon's ebpf: mode, PORTWATCH_BENCH_EBPF (run.sh's
// EBPF): off measures polling, on the kernel programs' triggers.
func benchMode() string {
	if m := os.Getenv("PORTWATCH_BENCH_EBPF"); m != "" {
		return m
	}
	return "off"
}

// setUp skips b unless run as root, waits for the bench lock, and starts a
// private journald; it returns it and a temporary directory.
func setUp(b *testing.B) (*journaltest.Journal, string) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: runs systemd-journald in a private mount namespace and attributes other processes' sockets")
	}
	lockBench(b)
	return journaltest.Start(b), b.TempDir()
}

// lockBench waits for the lock that bench/run.sh also takes: other
// benchmarks on a 2-core machine would distort the figures. It waits, but
// not forever, and holds the lock until b ends.
func lockBench(b *testing.B) {
	f, err := os.OpenFile("/tmp/portwatchd-bench.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	deadline := time.Now().Add(10 * time.Minute)
	for unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	b.Cleanup(func() { f.Close() })
}

// startDaemon builds portwatchd and runs it with the config cfg inside j's
// namespace, until b ends; it returns once the daemon is ready, with its
// log.
func startDaemon(b *testing.B, j *journaltest.Journal, dir, cfg string) *syncbuf.Buffer {
	bin := filepath.Join(dir, "portwatchd")
	// go test puts its own GOROOT/bin first in PATH.
	build := exec.Command("go", "build", "-o", bin, "../../cmd/portwatchd")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	// The daemon, inside journald's namespace.
	notifyPath := filepath.Join(dir, "notify.sock")
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nconn.Close() })
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		once := sync.Once{}
		for {
			n, err := nconn.Read(buf)
			if err != nil {
				return
			}
			if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	d := j.Command(bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"))
	d.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	// Read while the daemon writes: the buffer takes a lock for both.
	dlog := &syncbuf.Buffer{}
	d.Stderr = dlog
	if err := d.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = d.Process.Signal(syscall.SIGTERM)
		_ = d.Wait()
	})
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		b.Fatalf("daemon not ready after 60s:\n%s", dlog.String())
	}
	return dlog
}

// pollJournal queries the journal for the alert on port, one journalctl run
// after the other, until it is there or the deadline passes. It sends the
// time the first successful query returned: the entry was readable by then
// (an upper bound, by at most one query's run time). A follower (journalctl
// -f) sees entries later than that: journald tells followers of new entries
// through inotify, which it batches.
func pollJournal(j *journaltest.Journal, port int, deadline time.Time) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		defer close(out)
		for time.Now().Before(deadline) {
			q := j.Command("journalctl", "--no-pager", "-q", "-o", "cat", "SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_NETNS=host", "PORTWATCH_PORT="+strconv.Itoa(port))
			got, err := q.Output()
			if err == nil && len(strings.TrimSpace(string(got))) > 0 {
				out <- time.Now()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return out
}

// percentile returns the p-th percentile of ds by the nearest-rank method:
// with 20 trials, p99 is the largest.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

// startListener starts a listener child on 127.0.0.1:port. It returns the
// time its listen() returned, and a function that closes it.
func startListener(b *testing.B, port int) (time.Time, func()) {
	b.Helper()
	c := listenertest.Start(b, listenertest.Options{
		Args:        []string{"-test.run=^TestLatencyHelperListener$", "-test.count=1"},
		Env:         []string{fmt.Sprintf("%s=127.0.0.1:%d", listenEnv, port)},
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	line := c.Line(b)
	ns, err := strconv.ParseInt(line, 10, 64)
	if err != nil {
		c.Stop()
		b.Fatalf("listener child on port %d: %q, %v", port, line, err)
	}
	return time.Unix(0, ns), c.Stop
}

// freeBlock finds 200 consecutive free loopback TCP ports below the usual
// ephemeral range.
func freeBlock(b *testing.B) int {
	for base := 21000 + os.Getpid()%50*200; base < 32000; base += 200 {
		ok := true
		for p := base; p < base+200 && ok; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	b.Fatal("no block of 200 free ports")
	return 0
}
