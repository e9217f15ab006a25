package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/internal/listenertest"
)

// daemonStormEnv makes the test binary a storm child: "LO-HI:PAIRS:DURATION"
// makes it open and close PAIRS TCP listeners on 127.0.0.1, cycling over
// ports LO to HI, spread evenly over DURATION; daemonStormKeepEnv names
// ports ("P1,P2,...") it opens along the way, evenly spaced in the storm,
// and keeps open until its stdin closes. It says "done N" once the storm is
// over (N pairs made), and exits at EOF on stdin.
const (
	daemonStormEnv     = "PORTWATCHD_TEST_STORM"
	daemonStormKeepEnv = "PORTWATCHD_TEST_STORM_KEEP"
)

// TestDaemonHelperStorm is the storm child, not a test.
func TestDaemonHelperStorm(t *testing.T) {
	spec := os.Getenv(daemonStormEnv)
	if spec == "" {
		t.Skip("helper process for TestDaemonEBPFStorm")
	}
	var lo, hi, pairs int
	var dur time.Duration
	ports, rest, _ := strings.Cut(spec, ":")
	n, ds, _ := strings.Cut(rest, ":")
	_, err1 := fmt.Sscanf(ports, "%d-%d", &lo, &hi)
	pairs, err2 := strconv.Atoi(n)
	dur, err3 := time.ParseDuration(ds)
	if err1 != nil || err2 != nil || err3 != nil || lo > hi || pairs < 1 {
		fmt.Println("error: bad storm spec", spec)
		os.Exit(1)
	}
	var keep []int
	for _, p := range strings.Split(os.Getenv(daemonStormKeepEnv), ",") {
		if k, err := strconv.Atoi(p); err == nil {
			keep = append(keep, k)
		}
	}
	var kept []int // descriptors of the listeners kept open
	start := time.Now()
	made := 0
	for i := range pairs {
		if len(keep) > 0 && i == (len(kept)+1)*pairs/(len(keep)+1) {
			fd, err := stormListen(keep[len(kept)])
			if err != nil {
				fmt.Println("error: keep:", err)
				os.Exit(1)
			}
			kept = append(kept, fd)
		}
		// Pace: pair i is due at i/pairs of the duration.
		if d := time.Until(start.Add(dur * time.Duration(i) / time.Duration(pairs))); d > 0 {
			time.Sleep(d)
		}
		fd, err := stormListen(lo + i%(hi-lo+1))
		if err != nil {
			continue // the port was taken between two pairs: the storm goes on
		}
		syscall.Close(fd)
		made++
	}
	fmt.Printf("done %d in %v\n", made, time.Since(start).Round(time.Millisecond))
	// Bounded, like every helper: the test closes stdin long before.
	in := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(in)
	}()
	select {
	case <-in:
	case <-time.After(5 * time.Minute):
	}
	for _, fd := range kept {
		syscall.Close(fd)
	}
	os.Exit(0)
}

// stormListen opens a TCP listener on 127.0.0.1:port with the system calls
// alone: the storm should cost the kernel programs and the daemon, not the
// Go runtime's poller.
func stormListen(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Listen(fd, 16); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// startStorm starts a storm child; see daemonStormEnv.
func startStorm(t *testing.T, lo, hi, pairs int, dur time.Duration, keep []int) *listenertest.Child {
	t.Helper()
	var ks []string
	for _, k := range keep {
		ks = append(ks, strconv.Itoa(k))
	}
	return listenertest.Start(t, listenertest.Options{
		Args: []string{"-test.run=^TestDaemonHelperStorm$", "-test.count=1"},
		Env: []string{
			fmt.Sprintf("%s=%d-%d:%d:%v", daemonStormEnv, lo, hi, pairs, dur),
			daemonStormKeepEnv + "=" + strings.Join(ks, ","),
		},
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
}

// rssSampler samples a process's VmRSS until stopped.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	max  int64 // KiB
	n    int
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			if kib := vmRSS(pid); kib > 0 {
				s.mu.Lock()
				s.max, s.n = max(s.max, kib), s.n+1
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return s
}

// end stops sampling and returns the highest VmRSS seen, in KiB, and the
// number of samples.
func (s *rssSampler) end() (int64, int) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max, s.n
}

// vmRSS is VmRSS of pid in KiB, 0 when it cannot be read.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	return 0
}

// stormRSSLimit bounds the daemon's resident memory during a storm. Idle
// on a host it holds about 15 MiB; what a storm may add is bounded by the
// code, not by the storm: at most maxPending (4,096) events with their
// processes waiting for a look (a few KiB each: some 16 MiB at worst), at
// most maxUnsent events kept for another Send, and the webhook's spool on
// disk, not in memory. 64 MiB leaves room for the Go heap's growth factor
// over that; a daemon whose memory grew with the storm's length (an event,
// an alert or a journal line kept per pair) would pass it well before the
// 10,000th pair.
const stormRSSLimit = 64 << 10 // KiB

// TestDaemonEBPFStorm runs the daemon with ebpf: on through storms of 10,000
// TCP listen/close pairs in 5 s from one process, first on ports the config
// allows, then on ports it does not: the daemon stays up and feeds the
// watchdog, its RSS stays under stormRSSLimit, and every listener opened
// during the storm that stays open is alerted exactly once, not as
// transient.
func TestDaemonEBPFStorm(t *testing.T) {
	requireEBPF(t)
	e := newDaemonE2E(t, "TestDaemonEBPFStorm")
	e.ebpf = "on"
	e.flapWindow = "1s"
	const pairs, stormDur = 10000, 5 * time.Second
	stormLo, stormHi := e.base+30, e.base+37 // 8 ports
	var stormPorts []int
	for p := stormLo; p <= stormHi; p++ {
		stormPorts = append(stormPorts, p)
	}
	config := func(allowStorm bool) string {
		var extra []int
		if allowStorm {
			extra = stormPorts
		}
		return strings.Replace(e.configText(extra...), "interval: 300ms\n", "interval: 300ms\nreconcile_interval: 10s\n", 1)
	}
	e.writeConfig(config(true))
	p := e.start()
	e.notify.wait(t, 0, 1, "READY=1", notifyIs("READY=1"))
	pid := p.cmd.Process.Pid
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != e.bin {
		t.Fatalf("pid %d is %q (%v), not the daemon %s", pid, exe, err, e.bin)
	}
	t.Logf("daemon VmRSS before the storms: %d KiB", vmRSS(pid))

	// transientCount is the daemon's count of unexpected transient
	// listeners, from its last STATUS=, and that STATUS.
	transientCount := func() (int, string) {
		var st string
		for _, m := range e.notify.since(0) {
			if strings.HasPrefix(m, "STATUS=") {
				st = m
			}
		}
		// "..., 12 unexpected transient" at its end; absent while none.
		var counted int
		if i := strings.LastIndex(st, ", "); i >= 0 && strings.HasSuffix(st, " unexpected transient") {
			fmt.Sscanf(st[i+2:], "%d unexpected transient", &counted)
		}
		return counted, st
	}
	// lostLogged counts the daemon's "events lost" entries so far.
	lostLogged := func() []string {
		var lost []string
		es, _ := e.j.Entries("SYSLOG_IDENTIFIER=" + daemonLogIdent)
		for _, en := range es {
			if strings.Contains(en["MESSAGE"], "events lost") {
				lost = append(lost, en["MESSAGE"])
			}
		}
		return lost
	}
	// storm runs one storm and says whether the daemon logged lost events
	// (ring buffer full) meanwhile.
	storm := func(t *testing.T, keep []int) (dropped bool) {
		mark := e.notify.mark()
		lostBefore := len(lostLogged())
		rss := sampleRSS(pid)
		c := startStorm(t, stormLo, stormHi, pairs, stormDur, keep[:len(keep)-1])
		// One more, from another process, in the middle of the storm.
		time.Sleep(stormDur / 2)
		other := startDaemonListener(t, keep[len(keep)-1])
		defer other.close()
		line := c.Line(t)
		if !strings.HasPrefix(line, "done ") {
			t.Fatalf("storm child: %q", line)
		}
		t.Logf("storm: %s", line)
		for _, k := range keep {
			e.waitEvents("opened", k, 1)
		}
		// Whatever the daemon had to say about the storm has been said.
		e.barrier()
		maxRSS, n := rss.end()
		t.Logf("daemon VmRSS: max %d KiB over %d samples during the storm", maxRSS, n)
		if maxRSS > stormRSSLimit {
			t.Errorf("daemon VmRSS reached %d KiB during the storm, want at most %d", maxRSS, stormRSSLimit)
		}
		select {
		case <-p.done:
			t.Fatalf("the daemon exited during the storm: %v", p.err)
		default:
		}
		// Fed through the storm: the watchdog pinger runs every second
		// (WATCHDOG_USEC 2s) only while the loop makes progress.
		if got := e.notify.count(mark, notifyIs("WATCHDOG=1")); got < 5 {
			t.Errorf("%d WATCHDOG=1 since the storm began, want at least 5", got)
		}
		for _, k := range keep {
			es := e.events("opened", k)
			if len(es) != 1 {
				t.Errorf("port %d, open through the storm: %d opened entries, want 1", k, len(es))
				continue
			}
			if es[0]["PORTWATCH_TRANSIENT"] != "" {
				t.Errorf("port %d, open through the storm, reported transient: %s", k, es[0]["MESSAGE"])
			}
		}
		lost := lostLogged()[lostBefore:]
		t.Logf("drops logged: %q", lost)
		c.Stop()
		return len(lost) > 0
	}

	t.Run("allowed", func(t *testing.T) {
		before, _ := transientCount()
		storm(t, []int{e.base + 40, e.base + 41, e.base + 42, e.base + 43})
		// Summarised or not, none of them may count as unexpected.
		if after, st := transientCount(); after != before {
			t.Errorf("%d unexpected transient listeners before the allowed storm, %d after (%s)", before, after, st)
		}
		for _, sp := range stormPorts {
			if n := len(e.events("opened", sp)); n != 0 {
				t.Errorf("storm port %d, allowed: %d opened entries, want 0", sp, n)
			}
		}
	})

	t.Run("unexpected", func(t *testing.T) {
		from := e.logLen()
		e.writeConfig(config(false))
		e.waitLog(from, "config reloaded")
		dropped := storm(t, []int{e.base + 44, e.base + 45, e.base + 46, e.base + 47})
		// The program's first transientBurst listeners are alerted one
		// by one, the rest in one summary once its minute is over;
		// listeners a look saw alive are the engine's, alerted as any.
		alone, engine := 0, 0
		for _, sp := range stormPorts {
			for _, en := range e.events("opened", sp) {
				switch {
				case en["PORTWATCH_TRANSIENT_COUNT"] != "":
				case en["PORTWATCH_TRANSIENT"] != "":
					alone++
				default:
					engine++
				}
			}
		}
		t.Logf("storm ports, unexpected: %d transient listeners alerted one by one, %d alerts from looks that saw one open", alone, engine)
		if alone > transientBurst {
			t.Errorf("%d transient listeners of the storm alerted one by one, want at most %d", alone, transientBurst)
		}
		summary := e.waitSummary(transientWindow + daemonWait)
		t.Logf("summary: %s", summary["MESSAGE"])
		more, _ := strconv.Atoi(summary["PORTWATCH_TRANSIENT_COUNT"])
		// Nothing lost unsaid: the daemon's count of unexpected
		// transient listeners (STATUS) is what was alerted one by one
		// and what the summary says.
		counted, st := transientCount()
		if alone+more != counted {
			t.Errorf("%d alerted one by one + %d summarised = %d, want the %d of %s", alone, more, alone+more, counted, st)
		}
		// Events the ring buffer had no room for cannot be reported:
		// the daemon counts them, logs them and takes a full snapshot
		// (checked above). Without drops, most pairs must be reported.
		switch {
		case dropped:
			t.Logf("%d of the storm's %d pairs reported as transient; the rest was dropped by a full ring buffer (logged)", counted, pairs)
		case counted < pairs/2:
			t.Errorf("%d of the storm's %d pairs reported as transient with no event dropped, want most of them", counted, pairs)
		}
		e.hook.mu.Lock()
		var hooked int
		for _, ev := range e.hook.events {
			if ev.Transient != nil && ev.Transient.Summary != nil {
				hooked += ev.Transient.Summary.Count
			}
		}
		e.hook.mu.Unlock()
		if hooked != more {
			t.Errorf("webhook summaries count %d listeners, journald's %d", hooked, more)
		}
	})

	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, daemonWait); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// waitSummary waits up to within for a journald alert that summarises
// transient listeners, and returns it.
func (e *daemonE2E) waitSummary(within time.Duration) journaltest.Entry {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		es, err := e.j.Entries("SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_TRANSIENT=1")
		if err != nil {
			e.t.Fatal(err)
		}
		for _, en := range es {
			if en["PORTWATCH_TRANSIENT_COUNT"] != "" {
				return en
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no summary of transient listeners after %v", within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
