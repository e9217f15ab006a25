package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/bench/internal/procnet"
)

// The test binary plays every part: the outer scene process (outerArg), PID
// 1 of the scene (initArg, as the real binary), and the census taken inside
// the scene (censusArg).
const (
	outerArg  = "__test_outer"
	censusArg = "__test_census"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case initArg:
			os.Exit(runInit(os.Args[2:]))
		case outerArg:
			os.Exit(runOuter(os.Args[2:]))
		case censusArg:
			os.Exit(runCensus())
		}
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: the scene needs root to create network, PID and mount namespaces")
	}
}

// census is what a process inside the scene sees.
type census struct {
	Listeners   map[string]int // per /proc/net file: TCP in LISTEN, UDP unconnected
	Established int            // TCP connection ends, both families
	Processes   int            // in /proc, this one included
	SocketFds   int            // descriptors of sockets, all processes
	Pid1Sockets int            // of which held by PID 1: none, PID 1 hands them all out
	Pid1IsInit  bool           // /proc/1 is the scene's init
	Pid1Netns   bool           // PID 1 shares this process's network namespace
}

func runCensus() int {
	c, err := takeCensus()
	if err != nil {
		fmt.Fprintln(os.Stderr, "census:", err)
		return 2
	}
	if err := json.NewEncoder(os.Stdout).Encode(c); err != nil {
		fmt.Fprintln(os.Stderr, "census:", err)
		return 2
	}
	return 0
}

func takeCensus() (census, error) {
	var c census
	counts, err := procnet.Read("/proc")
	if err != nil {
		return c, err
	}
	c.Listeners, c.Established = counts.Listeners, counts.Established
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return c, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c.Processes++
		dir := filepath.Join("/proc", e.Name(), "fd")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				c.SocketFds++
				if pid == 1 {
					c.Pid1Sockets++
				}
			}
		}
	}
	cmdline, err := os.ReadFile("/proc/1/cmdline")
	if err != nil {
		return c, err
	}
	c.Pid1IsInit = strings.Contains(string(cmdline), initArg)
	own, err1 := os.Readlink("/proc/self/ns/net")
	pid1, err2 := os.Readlink("/proc/1/ns/net")
	if err := errors.Join(err1, err2); err != nil {
		return c, err
	}
	c.Pid1Netns = own == pid1
	return c, nil
}

func TestSmallScene(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command(os.Args[0], outerArg, "-size", "small", "-timeout", "2m", "--", os.Args[0], censusArg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scene: %v\n%s", err, stderr.String())
	}
	var got census
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("census output %q: %v", out, err)
	}
	z := sizes["small"]
	want := census{
		Listeners: map[string]int{"tcp": 5, "tcp6": 5, "udp": 5, "udp6": 5},
		// Both ends of every connection are in this namespace.
		Established: 2 * z.conns,
		// PID 1, the holders and the census itself.
		Processes:   1 + z.listenerProcs + 2*z.connGroups + z.idleProcs + 1,
		SocketFds:   z.listeners + 2*z.conns,
		Pid1Sockets: 0,
		Pid1IsInit:  true,
		Pid1Netns:   true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("census inside the small scene (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr.String(), "READY scene=small") {
		t.Errorf("stderr does not say READY:\n%s", stderr.String())
	}
}

// TestStopsByItself holds a scene with no command and checks that it stops
// at its timeout and that none of its processes outlive it.
func TestStopsByItself(t *testing.T) {
	requireRoot(t)
	ready := filepath.Join(t.TempDir(), "ready")
	const timeout = 3 * time.Second
	cmd := exec.Command(os.Args[0], outerArg, "-size", "small", "-timeout", timeout.String(), "-ready", ready)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Only if the test failed before the scene stopped.
		cmd.Process.Kill()
	})

	var pidns string
	for deadline := time.Now().Add(30 * time.Second); pidns == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		f, err := os.Open(ready)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan()
		f.Close()
		pid, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "READY pid=")
		if !ok {
			continue
		}
		if pidns, err = os.Readlink("/proc/" + pid + "/ns/pid"); err != nil {
			t.Fatalf("scene init %s: %v", pid, err)
		}
	}
	if pidns == "" {
		t.Fatal("no READY within 30s")
	}

	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 124 {
			t.Errorf("scene exited with %v, want exit status 124 (timeout)", err)
		}
		if el := time.Since(start); el < timeout {
			t.Errorf("scene stopped after %v, before its %v timeout", el, timeout)
		}
	case <-time.After(timeout + time.Minute):
		t.Fatalf("scene still running %v after its %v timeout", time.Minute, timeout)
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file left behind: %v", err)
	}

	// PID 1 is reaped only once every process of its namespace is dead, so
	// none may be left; retry briefly all the same.
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left = inPidns(pidns)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("%d scene processes outlived it: %v", len(left), left)
	}
}

// inPidns lists the pids whose PID namespace is ns.
func inPidns(ns string) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// TestLayouts checks where each layout puts a holder's descriptors.
func TestLayouts(t *testing.T) {
	f := func(n int) []*os.File {
		files := make([]*os.File, n)
		for i := range files {
			files[i] = os.Stdin // place only moves them
		}
		return files
	}
	// at returns the descriptor numbers place gives the files.
	at := func(extra []*os.File) []int {
		var fds []int
		for k, e := range extra {
			if e != nil {
				fds = append(fds, 3+k)
			}
		}
		return fds
	}
	for _, tt := range []struct {
		name string
		l    layout
		n, p int
		want []int
	}{
		{name: "dense", l: dense, n: 4, want: []int{3, 4, 5, 6}},
		{name: "gaps", l: gaps, n: 18, want: []int{3, 4, 5, 7, 8, 9, 11, 12, 13, 15, 16, 17, 19, 20, 21, 23, 56, 57}},
		{name: "stray", l: stray, n: 3, p: 2, want: []int{3, 4, 255 + 74}},
		{name: "stray, one", l: stray, n: 1, want: []int{3}},
		{name: "churned", l: churned, n: 66, want: append(seq(3, 67), 83, 84)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, at(tt.l.place(f(tt.n), tt.p))); diff != "" {
				t.Errorf("descriptor numbers (-want +got):\n%s", diff)
			}
		})
	}
	for p := range 1000 {
		if s := stray.slot(9, 10, p); s < 255 || s > 1023 {
			t.Fatalf("stray descriptor of holder %d at %d, want 255 to 1023", p, s)
		}
	}
}

// seq returns lo, lo+1, ... hi-1.
func seq(lo, hi int) []int {
	var out []int
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out
}
