// Package journaltest runs a real systemd-journald for tests, without touching
// the host's journal.
//
// Start launches /lib/systemd/systemd-journald in a private mount namespace
// (unshare --mount --propagation private) with tmpfs on /run/systemd/journal,
// /run/log/journal and, when it exists, /var/log/journal, and with a
// journald.conf bind-mounted over the host's (volatile storage, no rate limit,
// no forwarding, no kmsg). Writers that use the fixed socket path
// /run/systemd/journal/socket (go-systemd's journal package, sd_journal_send)
// must run inside that namespace: Command builds such a command with
// nsenter -t PID -m. A Go test process cannot join a mount namespace itself
// (setns fails in a multi-threaded process), so a test re-executes its own
// binary through Command, see Helper.
//
// Entries and Wait read the journal back with journalctl -o json, run inside
// the namespace.
//
// Typical use:
//
//	func TestX(t *testing.T) {
//		j := journaltest.Start(t)
//		j.RunHelper(t, "TestHelperWriter", "MODE=x")
//		got := j.Wait(t, 1, "SYSLOG_IDENTIFIER=portwatchd")
//		...
//	}
//
//	func TestHelperWriter(t *testing.T) {
//		if !journaltest.IsHelper() { t.Skip("helper process") }
//		... journal.Send(...) ...
//	}
//
// Start needs root, util-linux (unshare, nsenter) and systemd (journald,
// journalctl); it skips the test with a clear message when one is missing.
// If /run/systemd/journal or /run/log/journal does not exist on the host, an
// empty directory is created there as the mount point (as systemd itself
// would); nothing else outside the test's temporary directory is written.
package journaltest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/internal/proctest"
	"github.com/portwatchd/portwatchd/internal/syncbuf"
)

// Paths of the programs used. They are variables so that a test can point
// them elsewhere; they are not meant to change at run time.
var (
	JournaldPath = "/lib/systemd/systemd-journald"
	Unshare      = "unshare"
	Nsenter      = "nsenter"
	Journalctl   = "journalctl"
)

// HelperEnv is set in the environment of processes started by Helper.
const HelperEnv = "JOURNALTEST_HELPER"

// DefaultTimeout is how long Wait and Start wait by default. It is generous on
// purpose: machines are shared and slow.
const DefaultTimeout = 30 * time.Second

const journaldConf = `[Journal]
Storage=volatile
Compress=no
Seal=no
SplitMode=none
RateLimitIntervalSec=0
RateLimitBurst=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
Audit=no
`

// setup runs inside the new mount namespace, then becomes journald. $1 is the
// journald.conf to bind-mount, $2 journald's path.
const setup = `set -e
mkdir -p /run/systemd/journal /run/log/journal
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/journal
mount -t tmpfs -o mode=2755 tmpfs /run/log/journal
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
mount --bind "$1" /etc/systemd/journald.conf
exec "$2"
`

// Journal is a running systemd-journald in a private mount namespace.
type Journal struct {
	cmd    *exec.Cmd
	pid    int
	stderr *syncbuf.Buffer
	done   chan struct{}
	err    error // set when done is closed
}

// Start starts journald for t and stops it when t ends. It skips t when not
// root or when a needed program is missing, and fails t when journald does not
// come up.
func Start(t testing.TB) *Journal {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("journaltest: needs root to create a mount namespace and run systemd-journald")
	}
	for _, p := range []string{JournaldPath, Unshare, Nsenter, Journalctl} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("journaltest: %s not found (install systemd and util-linux): %v", p, err)
		}
	}
	if _, err := os.Stat("/etc/systemd/journald.conf"); err != nil {
		// The bind mount needs a target; a systemd install has one.
		t.Skipf("journaltest: /etc/systemd/journald.conf missing: %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "journald.conf")
	if err := os.WriteFile(conf, []byte(journaldConf), 0o644); err != nil {
		t.Fatal(err)
	}
	j := &Journal{stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd := exec.Command(Unshare, "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", setup, "journaltest-setup", conf, JournaldPath)
	// journald's own messages go to its stderr rather than to the host's kmsg.
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_LEVEL=info")
	cmd.Stdout = j.stderr
	cmd.Stderr = j.stderr
	// If the test binary dies, journald must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("journaltest: start journald: %v", err)
	}
	j.cmd = cmd
	// unshare and sh exec, so this PID ends up being journald itself.
	j.pid = cmd.Process.Pid
	go func() {
		j.err = cmd.Wait()
		close(j.done)
	}()
	t.Cleanup(func() {
		j.stop()
		if t.Failed() {
			t.Logf("journaltest: journald output:\n%s", j.stderr.String())
		}
	})

	// Ready when the native socket exists inside the namespace and journalctl
	// can sync with journald.
	sock := filepath.Join("/proc", fmt.Sprint(j.pid), "root/run/systemd/journal/socket")
	deadline := time.Now().Add(DefaultTimeout)
	for {
		select {
		case <-j.done:
			t.Fatalf("journaltest: journald exited: %v\n%s", j.err, j.stderr.String())
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", j.pid)); err == nil && filepath.Base(exe) == filepath.Base(JournaldPath) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("journaltest: journald did not create its socket within %v\n%s", DefaultTimeout, j.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := j.Command(Journalctl, "--sync").CombinedOutput(); err != nil {
		t.Fatalf("journaltest: journalctl --sync: %v: %s", err, out)
	}
	return j
}

func (j *Journal) stop() {
	select {
	case <-j.done:
		return
	default:
	}
	proctest.Terminate(j.cmd.Process, j.done, 10*time.Second)
}

// PID is journald's process id; its mount namespace is /proc/PID/ns/mnt.
func (j *Journal) PID() int { return j.pid }

// Output returns what journald printed about itself so far.
func (j *Journal) Output() string { return j.stderr.String() }

// Command returns a command that runs name with args inside journald's mount
// namespace, so that it logs to this journal. Set Env, Stdout and so on as
// with exec.Command. Only the mount namespace is entered: the process shares
// the test's network, PID namespace and files (apart from the journal
// directories).
func (j *Journal) Command(name string, args ...string) *exec.Cmd {
	return j.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with a context that kills the command.
func (j *Journal) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", fmt.Sprint(j.pid), "-m", "--", name}, args...)
	cmd := exec.CommandContext(ctx, Nsenter, a...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Helper returns a command that runs the current test binary's test named
// test (an exact name, not a pattern) inside the namespace, with HelperEnv=1
// and env added to the environment. The helper test checks IsHelper and skips
// otherwise.
func (j *Journal) Helper(t testing.TB, test string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("journaltest: %v", err)
	}
	cmd := j.Command(exe, "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(append(os.Environ(), HelperEnv+"=1"), env...)
	return cmd
}

// RunHelper runs the Helper command for test and env to its end, and
// returns its output (stdout and stderr). It fails t with that output if the
// helper failed.
func (j *Journal) RunHelper(t testing.TB, test string, env ...string) []byte {
	t.Helper()
	out, err := j.Helper(t, test, env...).CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", test, err, out)
	}
	return out
}

// IsHelper reports whether this process was started by Helper.
func IsHelper() bool { return os.Getenv(HelperEnv) == "1" }

// Entry is one journal entry: field name to value. Binary values (which
// journalctl prints as arrays of bytes) are converted to strings; for a field
// with several values, the values are joined with "\n".
type Entry map[string]string

// Entries returns every entry in the journal matching all the given
// journalctl matches (for example "SYSLOG_IDENTIFIER=portwatchd"), oldest
// first. It asks journald to sync first, so that entries sent before the call
// returned are included.
func (j *Journal) Entries(matches ...string) ([]Entry, error) {
	if out, err := j.Command(Journalctl, "--sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("journalctl --sync: %w: %s", err, out)
	}
	args := append([]string{"--no-pager", "-o", "json"}, matches...)
	var stdout, stderr bytes.Buffer
	cmd := j.Command(Journalctl, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("journalctl: %w: %s", err, stderr.Bytes())
	}
	return parse(stdout.Bytes())
}

// Wait waits until at least n entries match, and returns every matching
// entry. It fails t after DefaultTimeout.
func (j *Journal) Wait(t testing.TB, n int, matches ...string) []Entry {
	t.Helper()
	deadline := time.Now().Add(DefaultTimeout)
	for {
		es, err := j.Entries(matches...)
		if err != nil {
			t.Fatalf("journaltest: %v", err)
		}
		if len(es) >= n {
			return es
		}
		if time.Now().After(deadline) {
			t.Fatalf("journaltest: got %d entries matching %q after %v, want %d:\n%s", len(es), matches, DefaultTimeout, n, format(es))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func format(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		keys := make([]string, 0, len(e))
		for k := range e {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q ", k, e[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// parse decodes journalctl -o json output: one object per line.
func parse(out []byte) ([]Entry, error) {
	var es []Entry
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			return es, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode journalctl output: %w", err)
		}
		e := make(Entry, len(raw))
		for k, v := range raw {
			s, err := value(v)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
			e[k] = s
		}
		es = append(es, e)
	}
}

// value decodes one field: a string, null (too large), an array of bytes, or
// an array of values when the field occurs several times.
func value(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var bs []byte
	var nums []int
	if err := json.Unmarshal(v, &nums); err == nil {
		for _, n := range nums {
			bs = append(bs, byte(n))
		}
		return string(bs), nil
	}
	var many []json.RawMessage
	if err := json.Unmarshal(v, &many); err != nil {
		if string(v) == "null" {
			return "", nil
		}
		return "", err
	}
	parts := make([]string, 0, len(many))
	for _, m := range many {
		p, err := value(m)
		if err != nil {
			return "", err
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "\n"), nil
}
