package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// requireEBPF skips where the kernel programs cannot load at all (no BTF,
// no root): the daemon's eBPF mode has nothing to show there.
func requireEBPF(t *testing.T) {
	t.Helper()
	p, err := ebpf.Open(ebpf.Options{})
	if err != nil {
		t.Skipf("the kernel programs cannot load here: %v", err)
	}
	p.Close()
}

// TestDaemonEBPF runs the daemon with ebpf: on against a real journald and a
// loopback webhook: STATUS says eBPF is active, a listener is alerted as it
// opens (the latency is reported, not asserted), and a listener that closed
// before the daemon could look gives one alert marked transient, with its
// lifetime, and no resolve.
func TestDaemonEBPF(t *testing.T) {
	requireEBPF(t)
	e := newDaemonE2E(t, "TestDaemonEBPF")
	e.ebpf = "on"
	// A reconcile_interval and a flap_window far beyond the test: every
	// alert below comes from an event's look, and every resolve from a
	// close event. An interval of 5s: a listener that lived less is
	// resolved at once when it closes, even on a slow test machine.
	e.flapWindow = "1h"
	selfExe, err := filepath.EvalSymlinks(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	// execPort is allowed to this test's program only (see the exec
	// subtest).
	execPort := e.base + 44
	cfg := strings.Replace(e.configText(), "interval: 300ms\n", "interval: 5s\nreconcile_interval: 1h\n", 1)
	cfg = strings.Replace(cfg, "allow:\n", fmt.Sprintf("allow:\n  - name: exec-test\n    port: %d\n    exe: %s\n    flags: [%s]\n", execPort, selfExe, testProgramFlags), 1)
	e.writeConfig(cfg)
	p := e.start()
	readyAt := e.notify.wait(t, 0, 1, "READY=1", notifyIs("READY=1"))
	if st := e.notify.since(0)[:readyAt]; !slices.ContainsFunc(st, func(m string) bool {
		return strings.HasPrefix(m, "STATUS=watching ") && strings.HasSuffix(m, "; ebpf: active")
	}) {
		t.Errorf("no STATUS=watching ...; ebpf: active before READY=1: %q", st)
	}
	e.waitLog(0, "ebpf=active")
	// The watchdog is fed while the snapshot runs every hour.
	e.notify.wait(t, readyAt, 3, "WATCHDOG=1", notifyIs("WATCHDOG=1"))

	t.Run("listener alerted as it opens", func(t *testing.T) {
		var lat []time.Duration
		for i := range 10 {
			port := e.base + 20 + i
			opened := time.Now()
			c := startDaemonListener(t, port)
			es := e.waitEvents("opened", port, 1)
			lat = append(lat, time.Since(opened))
			if es[0]["PORTWATCH_TRANSIENT"] != "" {
				t.Errorf("listener still open reported transient: %v", es[0]["MESSAGE"])
			}
			c.close()
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		// Child start to journald entry read back: an upper bound of the
		// alert latency (bench/latency measures listen() to entry).
		t.Logf("child start -> journald entry, 10 listeners: min %v, median %v, max %v", lat[0], lat[5], lat[9])
	})

	t.Run("transient listener alerted once, with its lifetime", func(t *testing.T) {
		// Hold the loop (the stall hook) while a listener opens and closes
		// 10 ms later, so that no snapshot can see it: the daemon has only
		// the events.
		from := e.logLen()
		if err := os.WriteFile(e.stall, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		e.waitLog(from, "test hook: snapshot loop stalled")
		port := e.base + 40
		c := startDaemonListener(t, port)
		time.Sleep(10 * time.Millisecond)
		c.close()
		if err := os.Remove(e.stall); err != nil {
			t.Fatal(err)
		}
		es := e.waitEvents("opened", port, 1)
		ent := es[0]
		for k, want := range map[string]string{
			"PORTWATCH_TRANSIENT": "1",
			"PORTWATCH_VERDICT":   "unexpected",
			"PORTWATCH_EXE":       selfExe,
			"PORTWATCH_PID":       strconv.Itoa(c.PID()),
		} {
			if ent[k] != want {
				t.Errorf("transient entry %s = %q, want %q", k, ent[k], want)
			}
		}
		checkAlertPriority(t, "transient entry", ent)
		// Its flags are decided as a snapshot's: with the dpkg index, the
		// test binary (under /tmp, no package's) is exe_unpackaged too.
		if fl := ent["PORTWATCH_FLAGS"]; !strings.Contains(fl, "exe_in_writable_dir") || !strings.Contains(fl, "exe_unpackaged") {
			t.Errorf("transient entry PORTWATCH_FLAGS = %q, want exe_in_writable_dir and exe_unpackaged", fl)
		}
		if us, err := strconv.Atoi(ent["PORTWATCH_LIFETIME_USEC"]); err != nil || us < 10000 {
			t.Errorf("PORTWATCH_LIFETIME_USEC = %q, want at least 10 ms", ent["PORTWATCH_LIFETIME_USEC"])
		}
		if !strings.Contains(ent["MESSAGE"], "(transient, already closed)") {
			t.Errorf("message %q does not say the listener was transient", ent["MESSAGE"])
		}
		e.hook.wait(t, "opened", port, 1)
		e.hook.mu.Lock()
		for _, ev := range e.hook.events {
			if ev.Listener.Port == port && (ev.Transient == nil || ev.Transient.Lifetime < int64(10*time.Millisecond)) {
				t.Errorf("webhook event for the transient listener: transient %+v, want a lifetime of at least 10ms", ev.Transient)
			}
		}
		e.hook.mu.Unlock()
		// One alert, nothing to resolve: the sentinels of the barrier are
		// alerted after anything the daemon had to say about it.
		e.barrier()
		if n, m := len(e.events("opened", port)), len(e.events("closed", port)); n != 1 || m != 0 {
			t.Errorf("transient listener: %d opened and %d closed entries, want 1 and 0", n, m)
		}
	})

	t.Run("listener seen open resolved at once when it closes", func(t *testing.T) {
		// The alert is in journald, so a look saw the listener open;
		// its close event resolves the alert at once (flap_window is an
		// hour), saying it was transient and how long it lived.
		port := e.base + 41
		opened := time.Now()
		c := startDaemonListener(t, port)
		op := e.waitEvents("opened", port, 1)[0]
		c.close()
		lived := time.Since(opened)
		if op["PORTWATCH_TRANSIENT"] != "" {
			t.Fatalf("listener still open reported transient: %v", op["MESSAGE"])
		}
		ent := e.waitEvents("closed", port, 1)[0]
		us, err := strconv.Atoi(ent["PORTWATCH_LIFETIME_USEC"])
		if ent["PORTWATCH_TRANSIENT"] != "1" || err != nil || us <= 0 || time.Duration(us)*time.Microsecond > lived {
			t.Errorf("closed entry: PORTWATCH_TRANSIENT=%q PORTWATCH_LIFETIME_USEC=%q, want 1 and at most %v", ent["PORTWATCH_TRANSIENT"], ent["PORTWATCH_LIFETIME_USEC"], lived)
		}
		if !strings.Contains(ent["MESSAGE"], " (transient), alert resolved") || ent["PORTWATCH_EXE"] != selfExe {
			t.Errorf("closed entry: message %q, exe %q; want it transient, with exe %s", ent["MESSAGE"], ent["PORTWATCH_EXE"], selfExe)
		}
		e.barrier()
		if n, m := len(e.events("opened", port)), len(e.events("closed", port)); n != 1 || m != 1 {
			t.Errorf("%d opened and %d closed entries, want 1 and 1", n, m)
		}
	})

	t.Run("udp bind seen open resolved at once when it closes", func(t *testing.T) {
		port := e.base + 43
		c, err := net.ListenPacket("udp4", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		e.waitEvents("opened", port, 1)
		c.Close()
		ent := e.waitEvents("closed", port, 1)[0]
		if ent["PORTWATCH_TRANSIENT"] != "1" || !strings.Contains(ent["MESSAGE"], " (transient), alert resolved") {
			t.Errorf("closed entry of the UDP socket: %q (PORTWATCH_TRANSIENT=%q), want it resolved at once as transient", ent["MESSAGE"], ent["PORTWATCH_TRANSIENT"])
		}
	})

	t.Run("close of one socket of a reuseport group resolves nothing", func(t *testing.T) {
		port := e.base + 42
		a, b := listenReusePort(t, port), listenReusePort(t, port)
		e.waitEvents("opened", port, 1)
		a.Close()
		e.barrier()
		if n := len(e.events("closed", port)); n != 0 {
			t.Errorf("%d closed entries while a socket of the group still listens, want 0", n)
		}
		b.Close()
		e.waitEvents("closed", port, 1)
	})

	t.Run("holder that execs another program judged at once", func(t *testing.T) {
		// Allowed to this program; it execs sleep, keeping the socket:
		// no socket event, no snapshot due for an hour, only the exec
		// (and the look it has follow, for the engine's second
		// snapshot).
		c := startDaemonListener(t, execPort)
		c.KillOnStop = true
		e.barrier()
		if n := len(e.events("opened", execPort)); n != 0 {
			t.Fatalf("%d alerts for the allowed listener before the exec", n)
		}
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep")
		}
		if sleep, err = filepath.EvalSymlinks(sleep); err != nil {
			t.Fatal(err)
		}
		from := e.logLen()
		c.Tell(t, "exec "+sleep+" 600")
		ent := e.waitEvents("changed", execPort, 1)[0]
		// Told by the exec event, not found by the rolling re-check
		// (which on a host with few holders may find it as soon).
		e.waitLog(from, "holders exec'd")
		if ent["PORTWATCH_EXE"] != sleep || ent["PORTWATCH_PID"] != strconv.Itoa(c.PID()) || ent["PORTWATCH_VERDICT"] != "unexpected" {
			t.Errorf("after the exec: %q (exe %q pid %q verdict %q), want it unexpected, held by %s, pid %d",
				ent["MESSAGE"], ent["PORTWATCH_EXE"], ent["PORTWATCH_PID"], ent["PORTWATCH_VERDICT"], sleep, c.PID())
		}
	})

	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, daemonWait); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// listenReusePort listens on 127.0.0.1:port with SO_REUSEPORT, in this
// process.
func listenReusePort(t *testing.T, port int) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestDaemonEBPFOnWithoutCapabilities: with ebpf: on, a daemon that may not
// load the programs refuses to start, with exit status 2 and the reason on
// stderr. Its capabilities are dropped with setpriv, as
// watcher/ebpf's TestCapabilities does.
func TestDaemonEBPFOnWithoutCapabilities(t *testing.T) {
	requireEBPF(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "portwatchd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tests := []struct {
		name, mode string
		code       int
		stderr     string
	}{
		{name: "on", mode: "on", code: exitError, stderr: ebpf.ErrPermission.Error()},
		// auto starts and polls; it is stopped by the context below.
		{name: "auto", mode: "auto", code: -1, stderr: "eBPF unavailable; polling every interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, tt.name+".yaml")
			if err := os.WriteFile(cfg, []byte(fmt.Sprintf("version: 1\ninclude: []\nebpf: %s\nnotify:\n  journald: false\nmetrics:\n  textfile: \"\"\n", tt.mode)), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(setpriv, "--bounding-set=-all", "--inh-caps=-all", "--",
				bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state-"+tt.name))
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			code := -1
			select {
			case err := <-done:
				code = cmd.ProcessState.ExitCode()
				_ = err
			case <-time.After(3 * time.Second):
				_ = cmd.Process.Signal(os.Interrupt)
				<-done
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tt.stderr, stderr.String())
			}
			if n := strings.Count(stderr.String(), "eBPF unavailable"); tt.mode == "auto" && n != 1 {
				t.Errorf("%d warnings about eBPF, want one:\n%s", n, stderr.String())
			}
		})
	}
}
