package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/internal/listenertest"
)

// The end-to-end test of `portwatchd run`: the real binary, a real
// systemd-journald (in a private mount namespace), a unixgram socket standing
// in for systemd's notify socket, a loopback webhook receiver, and real
// listeners opened by child processes.

// daemonListenEnv makes the test binary a listener child: it listens on the
// address in the variable, says "listening" on stdout, and exits when its
// stdin closes.
const daemonListenEnv = "PORTWATCHD_TEST_LISTEN"

// TestDaemonHelperListener is the listener child, not a test.
func TestDaemonHelperListener(t *testing.T) {
	if os.Getenv(daemonHoldEnv) != "" {
		holdInherited()
	}
	addr := os.Getenv(daemonListenEnv)
	if addr == "" {
		t.Skip("helper process for TestDaemonEndToEnd")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("listening")
	// A line on stdin names an executable: hand the socket over to it
	// (it inherits the descriptor and holds it), then exit. "exec PATH
	// ARGS": become PATH, keeping the socket. EOF: close.
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		ln.Close()
		os.Exit(0)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if argv, ok := strings.CutPrefix(strings.TrimSpace(line), "exec "); ok {
		// File's copy is close-on-exec; this one must stay.
		_, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0)
		if err == nil {
			args := strings.Fields(argv)
			err = syscall.Exec(args[0], args, os.Environ())
		}
		fmt.Println("error:", err)
		os.Exit(1)
	}
	cmd := exec.Command(strings.TrimSpace(line), "-test.run=^TestDaemonHelperListener$", "-test.count=1")
	cmd.Env = append(os.Environ(), daemonHoldEnv+"=1")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(l) != "holding" {
		fmt.Println("error: holder said", l, err)
		os.Exit(1)
	}
	fmt.Println("handed", cmd.Process.Pid)
	os.Exit(0)
}

// daemonHoldEnv makes the test binary hold the listening socket it
// inherited as descriptor 3, until it is killed.
const daemonHoldEnv = "PORTWATCHD_TEST_HOLD"

func holdInherited() {
	ln, err := net.FileListener(os.NewFile(3, "inherited"))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("holding")
	os.Stdout.Close()
	// Bounded, like every helper: the test kills it long before.
	time.Sleep(10 * time.Minute)
	ln.Close()
	os.Exit(0)
}

// daemonListener is a running listener child.
type daemonListener struct{ *listenertest.Child }

// startDaemonListener starts a child listening on 127.0.0.1:port and returns once
// its listen() has returned.
func startDaemonListener(t *testing.T, port int) *daemonListener {
	t.Helper()
	c := listenertest.Start(t, listenertest.Options{
		Args:        []string{"-test.run=^TestDaemonHelperListener$", "-test.count=1"},
		Env:         []string{fmt.Sprintf("%s=127.0.0.1:%d", daemonListenEnv, port)},
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if line := c.Line(t); line != "listening" {
		t.Fatalf("listener child on port %d: %q", port, line)
	}
	return &daemonListener{c}
}

// handOff makes the child pass its socket to a new process running exe, and
// exit. It returns the pid of the new holder, which the caller must kill.
func (c *daemonListener) handOff(t *testing.T, exe string) int {
	t.Helper()
	line := c.Send(t, exe)
	var pid int
	if _, err := fmt.Sscanf(line, "handed %d", &pid); err != nil {
		t.Fatalf("hand-off: child said %q (%v)", line, err)
	}
	c.close()
	return pid
}

// close makes the child close its socket and exit, and waits for it.
func (c *daemonListener) close() { c.Stop() }

// daemonNotifySocket stands in for systemd's notification socket.
type daemonNotifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string // one per line of every datagram, in order
}

func newDaemonNotifySocket(t *testing.T, dir string) *daemonNotifySocket {
	t.Helper()
	ns := &daemonNotifySocket{path: filepath.Join(dir, "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")...)
			ns.mu.Unlock()
		}
	}()
	return ns
}

// mark returns the number of messages so far, to look only at later ones.
func (ns *daemonNotifySocket) mark() int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return len(ns.msgs)
}

// since returns the messages from mark on.
func (ns *daemonNotifySocket) since(mark int) []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.msgs[mark:]...)
}

// count returns how many messages from mark on satisfy match.
func (ns *daemonNotifySocket) count(mark int, match func(string) bool) int {
	n := 0
	for _, m := range ns.since(mark) {
		if match(m) {
			n++
		}
	}
	return n
}

// wait waits for n messages from mark on that satisfy match, and returns the
// index just after the n-th.
func (ns *daemonNotifySocket) wait(t *testing.T, mark, n int, what string, match func(string) bool) int {
	t.Helper()
	deadline := time.Now().Add(daemonWait)
	for {
		seen := 0
		for i, m := range ns.since(mark) {
			if match(m) {
				seen++
				if seen == n {
					return mark + i + 1
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("notify socket: %d of %d %s after %v; messages since mark:\n%s", seen, n, what, daemonWait, strings.Join(ns.since(mark), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func notifyIs(s string) func(string) bool { return func(m string) bool { return m == s } }
func notifyPrefix(s string) func(string) bool {
	return func(m string) bool { return strings.HasPrefix(m, s) }
}

// daemonHook is a loopback generic-format webhook endpoint.
type daemonHook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events map[string]daemonHookEvent // by id: a redelivery is the same event
}

type daemonHookEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Listener struct {
		Port    int    `json:"port"`
		Netns   string `json:"netns"`
		Verdict string `json:"verdict"`
	} `json:"listener"`
	Transient *struct {
		Lifetime int64 `json:"lifetime_ns"`
		Summary  *struct {
			Count int `json:"count"`
		} `json:"summary"`
	} `json:"transient"`
}

func newDaemonHook(t *testing.T) *daemonHook {
	w := &daemonHook{events: map[string]daemonHookEvent{}}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []daemonHookEvent `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("webhook: bad body: %v", err)
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		for _, ev := range body.Events {
			w.events[ev.ID] = ev
		}
		w.mu.Unlock()
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// count returns how many distinct events of type typ (opened, closed) for
// the host's port were received.
func (w *daemonHook) count(typ string, port int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, ev := range w.events {
		if ev.Type == "listener."+typ && ev.Listener.Port == port && ev.Listener.Netns == "host" {
			n++
		}
	}
	return n
}

func (w *daemonHook) wait(t *testing.T, typ string, port, n int) {
	t.Helper()
	deadline := time.Now().Add(daemonWait)
	for w.count(typ, port) < n {
		if time.Now().After(deadline) {
			t.Fatalf("webhook: %d %s events for port %d after %v, want %d", w.count(typ, port), typ, port, daemonWait, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonWait bounds every wait: generous, since machines are shared and slow.
const daemonWait = 60 * time.Second

// daemonE2E holds what the end-to-end test runs against.
type daemonE2E struct {
	t        *testing.T
	bin      string
	dir      string
	config   string
	stateDir string
	stall    string
	j        *journaltest.Journal
	notify   *daemonNotifySocket
	hook     *daemonHook
	base     int // first port of the block the test owns
	next     int // next sentinel port
	// flapWindow is the config's flap_window; empty means 8s.
	flapWindow string
	// ebpf is the config's ebpf mode; empty means off, the daemon as it
	// was before its kernel programs.
	ebpf string
	// cur is the daemon run last started, for a stack dump on failure.
	cur *daemonProc
}

// daemonProc is one run of the daemon.
type daemonProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// daemonLogIdent is the SYSLOG_IDENTIFIER of the daemon's operational log, which
// the test sends to journald the way systemd sends a service's stderr.
const daemonLogIdent = "portwatchd-oplog"

func (e *daemonE2E) start() *daemonProc {
	e.t.Helper()
	cmd := e.j.Command("systemd-cat", "-t", daemonLogIdent, "--", e.bin, "run", "-c", e.config, "--state-dir", e.stateDir, "--log-level", "debug")
	cmd.Env = append(os.Environ(),
		"NOTIFY_SOCKET="+e.notify.path,
		"WATCHDOG_USEC=2000000",
		stallFileEnv+"="+e.stall,
	)
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, done: make(chan struct{})}
	e.cur = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitExit waits for the daemon to exit and returns its exit code.
func (p *daemonProc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("daemon still running %v after it was told to stop", within)
	}
	var ee *exec.ExitError
	if p.err == nil {
		return 0
	}
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatalf("daemon: %v", p.err)
	return -1
}

// writeConfig writes the config atomically: a temporary file in the same
// directory renamed over the old one, as editors and config management do.
func (e *daemonE2E) writeConfig(content string) {
	e.t.Helper()
	tmp := e.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.config); err != nil {
		e.t.Fatal(err)
	}
}

// configText is the test's config. It allows every port but the block the
// test owns, so that other listeners on the machine stay quiet, and allows
// the ports in extra.
// testProgramFlags are the risk flags the test's own listeners may have:
// `go test` runs its binary from a directory under /tmp (exe_in_writable_dir),
// no package owns it (exe_unpackaged), and run from a terminal it is in a
// login session (session_launched). A rule that allows them names these, as
// a sysadmin's rule for such a program would.
const testProgramFlags = "exe_in_writable_dir, exe_unpackaged, session_launched"

func (e *daemonE2E) configText(extra ...int) string {
	flap := e.flapWindow
	if flap == "" {
		flap = "8s"
	}
	mode := e.ebpf
	if mode == "" {
		mode = "off"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `version: 1
interval: 300ms
flap_window: %s
shutdown_grace: 3s
allow:
  - name: everything-else
    port: ["1-%d", "%d-65535"]
    flags: [%s]
    reason: not this test's business
`, flap, e.base-1, e.base+50, testProgramFlags)
	for _, p := range extra {
		fmt.Fprintf(&b, "  - name: allowed-%d\n    port: %d\n    flags: [%s]\n    reason: allowed by the test\n", p, p, testProgramFlags)
	}
	fmt.Fprintf(&b, `notify:
  journald: true
  webhooks:
    - name: receiver
      format: generic
      url: %s
      timeout: 5s
ebpf: %s
metrics:
  textfile: %s
`, e.hook.srv.URL, mode, filepath.Join(e.dir, "portwatch.prom"))
	return b.String()
}

// events returns the journald alert entries of type typ for the host's port.
func (e *daemonE2E) events(typ string, port int) []journaltest.Entry {
	e.t.Helper()
	es, err := e.j.Entries("SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT="+typ, "PORTWATCH_PORT="+strconv.Itoa(port), "PORTWATCH_NETNS=host")
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

// waitEvents waits for n journald entries of type typ for port.
func (e *daemonE2E) waitEvents(typ string, port, n int) []journaltest.Entry {
	e.t.Helper()
	matches := []string{"SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=" + typ, "PORTWATCH_PORT=" + strconv.Itoa(port), "PORTWATCH_NETNS=host"}
	deadline := time.Now().Add(journaltest.DefaultTimeout)
	for {
		es, err := e.j.Entries(matches...)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(es) >= n {
			return es
		}
		if time.Now().After(deadline) {
			// Say what the daemon did meanwhile: its log and its alerts,
			// and where its goroutines are (SIGQUIT makes the Go runtime
			// dump them to stderr, which goes to the log, and exit).
			if e.cur != nil {
				select {
				case <-e.cur.done:
				default:
					_ = e.cur.cmd.Process.Signal(syscall.SIGQUIT)
					select {
					case <-e.cur.done:
					case <-time.After(5 * time.Second):
					}
				}
			}
			var lines []string
			all, _ := e.j.Entries("SYSLOG_IDENTIFIER=" + daemonLogIdent)
			alerts, _ := e.j.Entries("SYSLOG_IDENTIFIER=portwatchd")
			for _, en := range append(all, alerts...) {
				lines = append(lines, en["SYSLOG_IDENTIFIER"]+": "+en["MESSAGE"])
			}
			e.t.Fatalf("got %d entries matching %q after %v, want %d; the daemon's log and alerts:\n%s",
				len(es), matches, journaltest.DefaultTimeout, n, strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits for an operational log line containing s, at or after
// entry number from of the log, and returns the number of log entries.
func (e *daemonE2E) waitLog(from int, s string) int {
	e.t.Helper()
	deadline := time.Now().Add(daemonWait)
	for {
		es, err := e.j.Entries("SYSLOG_IDENTIFIER=" + daemonLogIdent)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, en := range es[min(from, len(es)):] {
			if strings.Contains(en["MESSAGE"], s) {
				return len(es)
			}
		}
		if time.Now().After(deadline) {
			var all []string
			for _, en := range es {
				all = append(all, en["MESSAGE"])
			}
			e.t.Fatalf("no log line with %q after %v; log:\n%s", s, daemonWait, strings.Join(all, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logLen returns the number of operational log entries so far.
func (e *daemonE2E) logLen() int {
	es, err := e.j.Entries("SYSLOG_IDENTIFIER=" + daemonLogIdent)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(es)
}

// barrier returns once the daemon has taken two snapshots that started
// after the call: it opens two unexpected sentinel listeners one after the
// other and waits for the alert of each. Whatever the daemon was going to
// say about a listener opened before the call has been said by then.
func (e *daemonE2E) barrier() {
	e.t.Helper()
	for range 2 {
		port := e.next
		e.next++
		if e.next >= e.base+50 {
			e.t.Fatal("out of sentinel ports")
		}
		c := startDaemonListener(e.t, port)
		e.waitEvents("opened", port, 1)
		c.close()
	}
}

// waitChanged waits for a listener.changed entry of the host's port that
// match accepts, and returns it.
func (e *daemonE2E) waitChanged(port int, match func(journaltest.Entry) bool) journaltest.Entry {
	e.t.Helper()
	deadline := time.Now().Add(daemonWait)
	for {
		for _, en := range e.events("changed", port) {
			if match(en) {
				return en
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no matching changed entry for port %d after %v: %v", port, daemonWait, e.events("changed", port))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitState waits until the state file holds s.
func (e *daemonE2E) waitState(s string) {
	e.t.Helper()
	deadline := time.Now().Add(daemonWait)
	for {
		b, _ := os.ReadFile(filepath.Join(e.stateDir, alerting.StateFileName))
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("state file without %q after %v:\n%s", s, daemonWait, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonPortBlock finds 50 consecutive free loopback TCP ports below the usual
// ephemeral range.
func daemonPortBlock(t *testing.T) int {
	for base := 20000 + os.Getpid()%500*20; base < 32000; base += 50 {
		ok := true
		for p := base; p < base+50 && ok; p++ {
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
	t.Fatal("no block of 50 free ports")
	return 0
}

func TestDaemonEndToEnd(t *testing.T) {
	e := newDaemonE2E(t, "TestDaemonEndToEnd")
	target, held, flapper, handed := e.base, e.base+1, e.base+2, e.base+3
	selfExe, err := filepath.EvalSymlinks(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	e.writeConfig(e.configText())

	// 1. READY=1 after the first snapshot, then watchdog pings.
	p := e.start()
	readyAt := e.notify.wait(t, 0, 1, "READY=1", notifyIs("READY=1"))
	before := e.notify.since(0)[:readyAt-1]
	if !slices.ContainsFunc(before, notifyPrefix("STATUS=watching ")) {
		t.Errorf("READY=1 came before any STATUS=watching ...: %q", before)
	}
	e.notify.wait(t, readyAt, 2, "WATCHDOG=1", notifyIs("WATCHDOG=1"))
	// nsenter and systemd-cat exec: the process the test signals is the
	// daemon itself.
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.cmd.Process.Pid)); err != nil || exe != e.bin {
		t.Fatalf("pid %d runs %q (%v), want the daemon %s", p.cmd.Process.Pid, exe, err, e.bin)
	}
	t.Run("no listening socket of its own", func(t *testing.T) {
		snap, err := takeSnapshot("test", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range snap.Listeners {
			for _, pr := range l.Processes {
				if pr.PID == p.cmd.Process.Pid {
					t.Errorf("the daemon holds a listener: %s %v:%d", l.Protocol, l.Address, l.Port)
				}
			}
		}
	})
	e.waitLog(0, `msg="portwatchd started" config=`+e.config)

	t.Run("alert and resolve", func(t *testing.T) {
		c := startDaemonListener(t, target)
		es := e.waitEvents("opened", target, 1)
		ent := es[0]
		for k, want := range map[string]string{
			"PORTWATCH_VERDICT":  "unexpected",
			"PORTWATCH_PROTOCOL": "tcp",
			"PORTWATCH_ADDRESS":  "127.0.0.1",
			"PORTWATCH_PID":      strconv.Itoa(c.PID()),
			"PORTWATCH_EXE":      selfExe,
			"PORTWATCH_RULE":     "everything-else",
		} {
			if ent[k] != want {
				t.Errorf("opened entry %s = %q, want %q", k, ent[k], want)
			}
		}
		checkAlertPriority(t, "opened entry", ent)
		if ent["MESSAGE_ID"] == "" || ent["PORTWATCH_EVENT_ID"] == "" {
			t.Errorf("opened entry without MESSAGE_ID or PORTWATCH_EVENT_ID: %v", ent)
		}
		e.hook.wait(t, "opened", target, 1)
		c.close()
		e.waitEvents("closed", target, 1)
		e.hook.wait(t, "closed", target, 1)
	})

	t.Run("owner change is alerted once two snapshots agree", func(t *testing.T) {
		// Another executable: a copy of the test binary at another path.
		other := filepath.Join(e.dir, "other-exe")
		if out, err := exec.Command("cp", selfExe, other).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		c := startDaemonListener(t, handed)
		e.waitEvents("opened", handed, 1)
		pid := c.handOff(t, other)
		t.Cleanup(func() {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		})
		deadline := time.Now().Add(daemonWait)
		for {
			es := e.events("changed", handed)
			if n := len(es); n > 0 && es[n-1]["PORTWATCH_EXE"] == other {
				last := es[n-1]
				if last["PORTWATCH_PID"] != strconv.Itoa(pid) || last["PORTWATCH_VERDICT"] != "unexpected" {
					t.Errorf("changed entry: pid %s verdict %s, want pid %d, unexpected", last["PORTWATCH_PID"], last["PORTWATCH_VERDICT"], pid)
				}
				checkAlertPriority(t, "changed entry", last)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no changed entry naming %s after %v: %v", other, daemonWait, es)
			}
			time.Sleep(50 * time.Millisecond)
		}
		e.hook.wait(t, "changed", handed, 1)
		// The socket never closed: no resolve, no second alert.
		e.barrier()
		if n, m := len(e.events("opened", handed)), len(e.events("closed", handed)); n != 1 || m != 0 {
			t.Errorf("%d opened and %d closed entries for a listener that changed hands, want 1 and 0", n, m)
		}
	})

	t.Run("a holder whose executable is deleted under it turns its alert critical", func(t *testing.T) {
		// A dropper: its program under /opt (unpackaged, low risk: a
		// warning), deleted once it runs (exe_gone: critical).
		dropper := e.base + 4
		dir, err := os.MkdirTemp("/opt", "portwatchd-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(dir, "dropper")
		if out, err := exec.Command("cp", selfExe, exe).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		c := startDaemonListener(t, dropper)
		e.waitEvents("opened", dropper, 1)
		pid := c.handOff(t, exe)
		t.Cleanup(func() {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		})
		// Wait for the change to the dropper (a look may catch the new
		// holder before its exec, still the test binary: that is a
		// holder swap, and, under load, perhaps a change of its own).
		ch := e.waitChanged(dropper, func(en journaltest.Entry) bool { return en["PORTWATCH_EXE"] == exe })
		if ch["PORTWATCH_SEVERITY"] != "warning" {
			t.Fatalf("changed entry for the hand-off to %s: severity %q, want warning", exe, ch["PORTWATCH_SEVERITY"])
		}
		if err := os.Remove(exe); err != nil {
			t.Fatal(err)
		}
		// A deleted executable is an owner of its own ("... (deleted)"):
		// the change is told as one of owner, now critical.
		last := e.waitChanged(dropper, func(en journaltest.Entry) bool { return strings.Contains(en["PORTWATCH_FLAGS"], "exe_gone") })
		if last["PORTWATCH_SEVERITY"] != "critical" {
			t.Errorf("changed entry after the delete: severity %q (%s); want critical", last["PORTWATCH_SEVERITY"], last["MESSAGE"])
		}
		checkAlertPriority(t, "changed entry after the delete", last)
	})

	t.Run("reload by atomic rename allows the port", func(t *testing.T) {
		// Alerted again (the first alert was resolved), and still open
		// when the reload allows it: the reload resolves it.
		c := startDaemonListener(t, target)
		e.waitEvents("opened", target, 2)
		mark := e.notify.mark()
		e.writeConfig(e.configText(target))
		e.notify.wait(t, mark, 1, "RELOADING=1", notifyPrefix("RELOADING=1"))
		got := e.notify.since(mark)
		if !slices.ContainsFunc(got, notifyPrefix("MONOTONIC_USEC=")) {
			t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", got)
		}
		e.notify.wait(t, mark, 1, "READY=1 after RELOADING=1", notifyIs("READY=1"))
		es := e.waitEvents("closed", target, 2)
		if m := es[1]["MESSAGE"]; !strings.Contains(m, fmt.Sprintf(`is now allowed by rule "allowed-%d" (config reloaded)`, target)) {
			t.Errorf("resolve after the reload: MESSAGE = %q", m)
		}
		e.hook.wait(t, "closed", target, 2)
		c.close()
		c = startDaemonListener(t, target)
		e.barrier()
		if n := len(e.events("opened", target)); n != 2 {
			t.Errorf("%d opened entries for port %d, want still 2 (it is allowed now)", n, target)
		}
		if n := e.hook.count("opened", target); n != 2 {
			t.Errorf("%d opened webhook events for port %d, want still 2", n, target)
		}
		c.close()
	})

	t.Run("broken config keeps the old policy", func(t *testing.T) {
		from := e.logLen()
		mark := e.notify.mark()
		// The broken file would not allow target; the old policy does.
		broken := strings.Replace(e.configText(), "    reason: not this test's business\n", "    reason: not this test's business\n    prot: tcp\n", 1)
		e.writeConfig(broken)
		// The line of prot: in configText's output, whatever comes before.
		line := strings.Count(broken[:strings.Index(broken, "    prot: tcp")], "\n") + 1
		at := fmt.Sprintf("%s:%d:5: ", e.config, line)
		e.notify.wait(t, mark, 1, "STATUS=config reload failed", notifyPrefix("STATUS=config reload failed: "+at))
		e.waitLog(from, "config reload failed, keeping the config in force: "+at+"unknown key")
		c := startDaemonListener(t, target)
		e.barrier()
		if n := len(e.events("opened", target)); n != 2 {
			t.Errorf("%d opened entries for port %d, want still 2 (the old policy allows it)", n, target)
		}
		c.close()
		if n := e.notify.count(mark, notifyPrefix("RELOADING=1")); n != 0 {
			t.Errorf("a failed reload sent RELOADING=1 %d times", n)
		}
		// Back to the config in force: the failure no longer stands.
		mark = e.notify.mark()
		e.writeConfig(e.configText(target))
		e.notify.wait(t, mark, 1, "STATUS=watching after the config came back", notifyPrefix("STATUS=watching "))
	})

	t.Run("SIGHUP with an unchanged file does no reload work", func(t *testing.T) {
		from := e.logLen()
		mark := e.notify.mark()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		e.waitLog(from, `msg="config unchanged; reload skipped" trigger=SIGHUP`)
		if got := e.notify.since(mark); slices.ContainsFunc(got, notifyPrefix("RELOADING=1")) {
			t.Errorf("unchanged SIGHUP sent RELOADING=1: %q", got)
		}
	})

	t.Run("reload that no longer allows an open listener alerts", func(t *testing.T) {
		c := startDaemonListener(t, target)
		e.barrier()
		e.writeConfig(e.configText())
		es := e.waitEvents("opened", target, 3)
		if m := es[2]["MESSAGE"]; !strings.Contains(m, "(config reloaded)") {
			t.Errorf("alert after the reload: MESSAGE = %q", m)
		}
		e.hook.wait(t, "opened", target, 3)
		c.close()
	})

	t.Run("kill -9 and restart", func(t *testing.T) {
		c := startDaemonListener(t, held)
		e.waitEvents("opened", held, 1)
		e.hook.wait(t, "opened", held, 1)
		e.waitState(fmt.Sprintf(`"port": %d,`, held))
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		p.waitExit(t, daemonWait)
		mark := e.notify.mark()
		p = e.start()
		e.notify.wait(t, mark, 1, "READY=1 after restart", notifyIs("READY=1"))
		e.barrier()
		if n := len(e.events("opened", held)); n != 1 {
			t.Errorf("%d opened entries for port %d after a restart, want still 1", n, held)
		}
		if n := e.hook.count("opened", held); n != 1 {
			t.Errorf("%d opened webhook events for port %d after a restart, want still 1", n, held)
		}
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		p.waitExit(t, daemonWait)
		c.close() // while the daemon is down
		mark = e.notify.mark()
		p = e.start()
		e.notify.wait(t, mark, 1, "READY=1 after the second restart", notifyIs("READY=1"))
		e.waitEvents("closed", held, 1)
		e.hook.wait(t, "closed", held, 1)
	})

	t.Run("flap within the window alerts once", func(t *testing.T) {
		// A window of an hour: the close, the barriers and the
		// reopening need not fit in it on a slow machine. Its expiry is
		// tested by the engine tests, on a synthetic clock.
		mark := e.notify.mark()
		e.flapWindow = "1h"
		e.writeConfig(e.configText())
		e.notify.wait(t, mark, 1, "READY=1 after the reload to a long flap_window", notifyIs("READY=1"))
		c := startDaemonListener(t, flapper)
		e.waitEvents("opened", flapper, 1)
		c.close()
		e.barrier() // the close has been seen
		c = startDaemonListener(t, flapper)
		e.barrier() // the reopening has been seen
		if n := len(e.events("opened", flapper)); n != 1 {
			t.Errorf("%d opened entries for a listener reopened within flap_window, want 1", n)
		}
		if n := len(e.events("closed", flapper)); n != 0 {
			t.Errorf("%d closed entries while the flapping listener is open, want 0", n)
		}
		c.close()
		e.barrier() // the close has been seen: the resolve waits out the window
		if n := len(e.events("closed", flapper)); n != 0 {
			t.Errorf("%d closed entries within flap_window, want 0", n)
		}
		// A reload to a short window lets the resolve go.
		e.flapWindow = ""
		e.writeConfig(e.configText())
		e.waitEvents("closed", flapper, 1)
		e.hook.wait(t, "closed", flapper, 1)
		if n := e.hook.count("opened", flapper); n != 1 {
			t.Errorf("%d opened webhook events for the flapping listener, want 1", n)
		}
	})

	t.Run("a stalled snapshot loop stops the watchdog pings", func(t *testing.T) {
		from := e.logLen()
		if err := os.WriteFile(e.stall, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		e.waitLog(from, "snapshot loop stuck; withholding watchdog pings")
		mark := e.notify.mark()
		// With WATCHDOG_USEC=2s a healthy daemon pings every second;
		// three quiet seconds mean the pings stopped.
		time.Sleep(3 * time.Second)
		if n := e.notify.count(mark, notifyIs("WATCHDOG=1")); n != 0 {
			t.Errorf("%d WATCHDOG=1 while the snapshot loop was stalled", n)
		}
		if err := os.Remove(e.stall); err != nil {
			t.Fatal(err)
		}
		e.notify.wait(t, mark, 1, "WATCHDOG=1 once the loop runs again", notifyIs("WATCHDOG=1"))
	})

	t.Run("SIGTERM exits 0 within the grace", func(t *testing.T) {
		mark := e.notify.mark()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// shutdown_grace is 3s; what is bounded here is the wait, not
		// the speed.
		if code := p.waitExit(t, 3*time.Second+daemonWait/2); code != 0 {
			t.Errorf("exit code %d after SIGTERM, want 0", code)
		}
		if !slices.ContainsFunc(e.notify.since(mark), notifyIs("STOPPING=1")) {
			t.Errorf("no STOPPING=1 before exit: %q", e.notify.since(mark))
		}
		if _, err := os.Stat(filepath.Join(e.stateDir, alerting.StateFileName)); err != nil {
			t.Errorf("state not saved: %v", err)
		}
	})
}

// newDaemonE2E builds the daemon and starts what it runs against, or skips
// test name where that cannot run.
func newDaemonE2E(t *testing.T, name string) *daemonE2E {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(name + " needs root: it runs systemd-journald in a private mount namespace and attributes other processes' sockets")
	}
	if _, err := exec.LookPath("systemd-cat"); err != nil {
		t.Skip(name + " needs systemd-cat (install systemd)")
	}
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	j := journaltest.Start(t)
	dir := t.TempDir()
	e := &daemonE2E{
		t:        t,
		bin:      filepath.Join(dir, "portwatchd"),
		dir:      dir,
		config:   filepath.Join(dir, "etc", "portwatch.yaml"),
		stateDir: filepath.Join(dir, "state"),
		stall:    filepath.Join(dir, "stall"),
		j:        j,
		notify:   newDaemonNotifySocket(t, dir),
		hook:     newDaemonHook(t),
	}
	// go test puts its own GOROOT/bin first in PATH.
	build := exec.Command("go", "build", "-o", e.bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Mkdir(filepath.Dir(e.config), 0o700); err != nil {
		t.Fatal(err)
	}
	e.base = daemonPortBlock(t)
	e.next = e.base + 10
	return e
}
