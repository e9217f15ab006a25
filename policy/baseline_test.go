package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/filetest"
	"github.com/portwatchd/portwatchd/watcher"
)

func baselineListeners() []watcher.Listener {
	hostile := watcher.Process{PID: 13, Comm: "x", Exe: "/tmp/dir [1]/*evil?", Cmdline: []string{"evil", "\nallow:\n  - name: pwned\n"}, UID: 1000, User: "alice", Unit: "session-2.scope"}
	worker := nginx
	worker.PID = 901
	return []watcher.Listener{
		listener("tcp", "0.0.0.0", 22, sshd),
		with(listener("tcp", "::", 22, sshd), func(l *watcher.Listener) { l.DualStack = true }),
		listener("tcp", "0.0.0.0", 80, nginx, worker),
		listener("tcp", "0.0.0.0", 443, nginx, worker),
		listener("tcp", "127.0.0.1", 8080, python),
		listener("udp", "::1", 8080, python),
		listener("tcp", "0.0.0.0", 2049),
		with(listener("udp", "0.0.0.0", 41000, python), func(l *watcher.Listener) { l.Ephemeral = true }),
		with(listener("tcp", "0.0.0.0", 8000, inCtr), func(l *watcher.Listener) { l.Netns = "container:0123456789ab" }),
		listener("tcp", "0.0.0.0", 4444, hostile),
		listener("tcp", "0.0.0.0", 4445, watcher.Process{PID: 14, Comm: "sshd", Exe: "/usr/bin/python3", UID: 0, User: "root"}),
		listener("tcp", "0.0.0.0", 4446, watcher.Process{PID: 15, Comm: "sshd", Exe: "/usr/bin/python3", UID: 0, User: "root"}),
		listener("tcp", "0.0.0.0", 4447, watcher.Process{PID: 15, Comm: "sshd", Exe: "/usr/bin/python3", UID: 0, User: "root"}),
		listener("tcp", "0.0.0.0", 4449, watcher.Process{PID: 15, Comm: "sshd", Exe: "/usr/bin/python3", UID: 0, User: "root"}),
	}
}

func TestBaseline(t *testing.T) {
	ls := baselineListeners()
	seen := time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC)
	out := Baseline(ls, seen, true)

	golden := "testdata/baseline.golden"
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(out)); diff != "" {
		t.Errorf("Baseline mismatch (-want +got):\n%s", diff)
	}

	// Validates by construction, and allows every listener it saw.
	c, err := Parse("baseline.yaml", out)
	if err != nil {
		t.Fatalf("baseline output does not parse: %v\n%s", err, out)
	}
	for _, l := range ls {
		if d := c.Evaluate(l, seen); d.Verdict == Unexpected {
			t.Errorf("baseline does not allow its own listener: %s", d.Reason)
		}
	}
	// And not more than it should: the same port from another program, or a
	// loopback-only program on a wildcard address, is unexpected.
	for _, l := range []watcher.Listener{
		listener("tcp", "0.0.0.0", 22, fake),
		listener("tcp", "0.0.0.0", 8080, python),
		listener("tcp", "0.0.0.0", 80, python),
	} {
		if d := c.Evaluate(l, seen); d.Verdict != Unexpected {
			t.Errorf("baseline allows %s %s:%d by %s; want unexpected", l.Processes[0].Exe, l.Address, l.Port, d.Rule)
		}
	}
	if strings.Contains(string(out), "\n  - name: pwned") {
		t.Error("a cmdline injected a rule into the baseline")
	}
}

func TestBaselineEmpty(t *testing.T) {
	out := Baseline(nil, time.Now(), true)
	c, err := Parse("baseline.yaml", out)
	if err != nil {
		t.Fatalf("empty baseline does not parse: %v\n%s", err, out)
	}
	if len(c.Rules) != 0 {
		t.Errorf("empty baseline has %d rules", len(c.Rules))
	}
}

func TestBaselineEphemeralKept(t *testing.T) {
	ls := []watcher.Listener{with(listener("udp", "0.0.0.0", 41000, python), func(l *watcher.Listener) { l.Ephemeral = true })}
	out := Baseline(ls, time.Now(), false)
	c, err := Parse("baseline.yaml", out)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.Evaluate(ls[0], time.Now()); d.Verdict != Allowed {
		t.Errorf("with ignore_ephemeral_udp off, baseline does not allow ephemeral UDP: %s", d.Reason)
	}
}

// TestBaselineReserved checks that baseline rule names avoid the names of
// rules that stay in force (drop-ins), and say so.
func TestBaselineReserved(t *testing.T) {
	seen := time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC)
	ls := []watcher.Listener{listener("tcp", "0.0.0.0", 22, sshd), listener("tcp", "0.0.0.0", 80, nginx)}
	out := string(BaselineReserving(ls, seen, true, map[string]string{"ssh": "/etc/portwatch.d/10-ssh.yaml:4", "ssh-2": "/etc/portwatch.d/10-ssh.yaml:9"}))
	for _, want := range []string{
		"  # named ssh-3: rule ssh is already defined at /etc/portwatch.d/10-ssh.yaml:4\n",
		"  - name: ssh-3\n",
		"  - name: nginx\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("baseline lacks %q:\n%s", want, out)
		}
	}
	// Loaded together with the drop-in, the names are unique.
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml":           out,
		"portwatch.d/10-ssh.yaml":  "allow:\n  - name: ssh\n    port: 22\n  - name: ssh-2\n    port: 2222\n",
		"portwatch.d/20-misc.yaml": "allow:\n  - name: misc\n    port: 3\n",
	})
	if _, err := testLoader(nil).load(filepath.Join(dir, "portwatch.yaml")); err != nil {
		t.Errorf("baseline with the drop-ins: %v", err)
	}
}

// TestBaselineUnverifiedExe checks that baseline pins no exe that a rule
// could not match back (deleted, or unverified outside a container), and
// that its output then still allows every listener.
func TestBaselineUnverifiedExe(t *testing.T) {
	seen := time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC)
	bound := watcher.Process{PID: 20, Comm: "python3", Exe: "/usr/bin/python3", UID: 1000, User: "alice", ExeUnverified: true}
	gone := watcher.Process{PID: 21, Comm: "app", Exe: "/opt/app", UID: 1000, User: "alice", ExeDeleted: true}
	ctr := inCtr
	ctr.ExeUnverified = true
	ls := []watcher.Listener{
		listener("tcp", "0.0.0.0", 5000, bound),
		listener("tcp", "0.0.0.0", 5001, gone),
		with(listener("tcp", "0.0.0.0", 8000, ctr), func(l *watcher.Listener) { l.Netns = "container:0123456789ab" }),
	}
	out := BaselineReserving(ls, seen, true, nil)
	for _, want := range []string{
		"  # exe /usr/bin/python3 not pinned: unverified: the path does not name on the host the file the process runs\n",
		"  # exe /opt/app not pinned: the executable was deleted; if an upgrade replaced it, restart the service\n",
		"    exe: /app/server\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("baseline lacks %q:\n%s", want, out)
		}
	}
	c := mustParse(t, string(out))
	for _, l := range ls {
		if d := c.Evaluate(l, seen); d.Verdict != Allowed {
			t.Errorf("baseline does not allow its own listener: %s", d.Reason)
		}
	}
}
