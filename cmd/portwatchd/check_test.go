package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/portwatchd/portwatchd/internal/listenertest"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func checkListener(proto, addr string, port uint16, procs ...watcher.Process) watcher.Listener {
	if procs == nil {
		procs = []watcher.Process{}
	}
	return watcher.Listener{Protocol: proto, Family: watcher.IPv4, Address: netip.MustParseAddr(addr), Port: port, Netns: watcher.HostNetns, Processes: procs}
}

// TestReportCheck evaluates fixed snapshots: the status, exit code and
// output of every case, as text and as JSON, without the kernel. The codes
// are the monitoring-plugins ones: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
func TestReportCheck(t *testing.T) {
	const rules = "version: 1\nallow:\n  - name: ssh\n    port: 22\n    exe: /usr/sbin/sshd\n  - name: lo\n    address: loopback\n"
	// A rule allowing the ephemeral-looking port 8443, expiring on a date.
	expiring := func(date string) string {
		return rules + "  - name: temp\n    port: 8443\n    expires: " + date + "\n"
	}
	now := time.Date(2027, 3, 29, 12, 0, 0, 0, time.Local)
	sshd := watcher.Process{PID: 812, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	evil := watcher.Process{PID: 4242, Comm: "sshd", Exe: "/usr/bin/python3.11", UID: 33, User: "www-data"}
	eph := checkListener("udp", "0.0.0.0", 40000)
	eph.Ephemeral = true
	ssh := checkListener("tcp", "0.0.0.0", 22, sshd)
	cups := checkListener("tcp", "127.0.0.1", 631)
	temp := checkListener("tcp", "0.0.0.0", 8443)
	snap := func(partial bool, ls ...watcher.Listener) *watcher.Snapshot {
		return &watcher.Snapshot{Time: now, Partial: partial, Listeners: ls}
	}
	const (
		unexpected8080 = `no rule allows tcp 0.0.0.0:8080 (pid 4242 /usr/bin/python3.11, user www-data); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n"
		unknown22      = `unknown: no rule allows tcp 0.0.0.0:22 (no known process); closest: rule "ssh" (p.yaml:3) wants exe /usr/sbin/sshd (the listener has no known process); rule "ssh" would allow it if its process were visible` + "\n"
	)
	tests := []struct {
		name       string
		policy     string // rules when empty
		snap       *watcher.Snapshot
		warnExpiry time.Duration // 7 days when zero; negative for 0
		want       string
		wantStatus string
		wantCode   int
	}{
		{
			name:       "all allowed",
			snap:       snap(false, ssh, cups),
			wantStatus: "OK", wantCode: 0,
			want: "PORTWATCH OK - 2 listeners, 0 unexpected | listeners=2 unexpected=0 unknown=0 expiring_rules=0\n",
		},
		{
			name:       "nothing listening",
			snap:       snap(false),
			wantStatus: "OK", wantCode: 0,
			want: "PORTWATCH OK - 0 listeners, 0 unexpected | listeners=0 unexpected=0 unknown=0 expiring_rules=0\n",
		},
		{
			name:       "unexpected listener is critical",
			snap:       snap(false, ssh, cups, checkListener("tcp", "0.0.0.0", 8080, evil), eph),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 4 listeners, 1 unexpected | listeners=4 unexpected=1 unknown=0 expiring_rules=0\n" + unexpected8080,
		},
		{
			// The reason holds the raw path; it is escaped once, so a
			// backslash shows as \\ and an escape sequence as \x1b, never
			// doubled (\\x1b).
			name:       "hostile exe escaped once",
			snap:       snap(false, checkListener("tcp", "0.0.0.0", 8080, watcher.Process{PID: 7, Comm: "x", Exe: "/tmp/a\x1bb\\c\nd", UID: 33, User: "www-data"})),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 1 listener, 1 unexpected | listeners=1 unexpected=1 unknown=0 expiring_rules=0\n" +
				`no rule allows tcp 0.0.0.0:8080 (pid 7 /tmp/a\x1bb\\c\nd, user www-data); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n",
		},
		{
			name:       "full attribution, no holder is a finding",
			snap:       snap(false, checkListener("tcp", "0.0.0.0", 22)),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 1 listener, 1 unexpected | listeners=1 unexpected=1 unknown=0 expiring_rules=0\n" +
				`no rule allows tcp 0.0.0.0:22 (no known process); closest: rule "ssh" (p.yaml:3) wants exe /usr/sbin/sshd (the listener has no known process)` + "\n",
		},
		{
			// Not root: sshd is another user's process, so its socket
			// has no holder and the exe rule cannot match it.
			name:       "partial attribution hides the verdict",
			snap:       snap(true, checkListener("tcp", "0.0.0.0", 22), cups),
			wantStatus: "UNKNOWN", wantCode: 3,
			want: "PORTWATCH UNKNOWN - 2 listeners, 0 unexpected, 1 unknown (attribution partial: run as root) | listeners=2 unexpected=0 unknown=1 expiring_rules=0\n" + unknown22,
		},
		{
			name:       "partial attribution, a socket no rule covers",
			snap:       snap(true, checkListener("tcp", "0.0.0.0", 22), checkListener("tcp", "0.0.0.0", 9999)),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 2 listeners, 1 unexpected, 1 unknown (attribution partial: run as root) | listeners=2 unexpected=1 unknown=1 expiring_rules=0\n" +
				`no rule allows tcp 0.0.0.0:9999 (no known process); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n" + unknown22,
		},
		{
			name:       "partial attribution, nothing unexpected",
			snap:       snap(true, cups),
			wantStatus: "WARNING", wantCode: 1,
			want: "PORTWATCH WARNING - 1 listener, 0 unexpected, attribution partial (run as root) | listeners=1 unexpected=0 unknown=0 expiring_rules=0\n",
		},
		{
			name:       "rule expiring within the window",
			policy:     expiring("2027-03-31"),
			snap:       snap(false, ssh, temp),
			wantStatus: "WARNING", wantCode: 1,
			want: "PORTWATCH WARNING - 2 listeners, 0 unexpected, 1 rule expiring within 7d | listeners=2 unexpected=0 unknown=0 expiring_rules=1\n" +
				`expiring: rule "temp" (p.yaml:8) allows nothing after 2027-03-31` + "\n",
		},
		{
			// A rule that allows nothing now still warns: its service
			// may be down for the moment.
			name:       "expiring rule that allows no current listener",
			policy:     expiring("2027-03-31"),
			snap:       snap(false, ssh),
			wantStatus: "WARNING", wantCode: 1,
			want: "PORTWATCH WARNING - 1 listener, 0 unexpected, 1 rule expiring within 7d | listeners=1 unexpected=0 unknown=0 expiring_rules=1\n" +
				`expiring: rule "temp" (p.yaml:8) allows nothing after 2027-03-31` + "\n",
		},
		{
			name:       "rule expiring after the window",
			policy:     expiring("2027-04-30"),
			snap:       snap(false, ssh, temp),
			wantStatus: "OK", wantCode: 0,
			want: "PORTWATCH OK - 2 listeners, 0 unexpected | listeners=2 unexpected=0 unknown=0 expiring_rules=0\n",
		},
		{
			name:       "a longer window",
			policy:     expiring("2027-04-30"),
			snap:       snap(false, ssh, temp),
			warnExpiry: 40 * 24 * time.Hour,
			wantStatus: "WARNING", wantCode: 1,
			want: "PORTWATCH WARNING - 2 listeners, 0 unexpected, 1 rule expiring within 40d | listeners=2 unexpected=0 unknown=0 expiring_rules=1\n" +
				`expiring: rule "temp" (p.yaml:8) allows nothing after 2027-04-30` + "\n",
		},
		{
			name:       "window 0 turns the expiry warning off",
			policy:     expiring("2027-03-31"),
			snap:       snap(false, ssh, temp),
			warnExpiry: -1,
			wantStatus: "OK", wantCode: 0,
			want: "PORTWATCH OK - 2 listeners, 0 unexpected | listeners=2 unexpected=0 unknown=0 expiring_rules=0\n",
		},
		{
			// An expired rule allows nothing: what it allowed is a
			// finding, not a warning.
			name:       "expired rule",
			policy:     expiring("2027-03-28"),
			snap:       snap(false, ssh, temp),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 2 listeners, 1 unexpected | listeners=2 unexpected=1 unknown=0 expiring_rules=0\n" +
				`no rule allows tcp 0.0.0.0:8443 (no known process); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n",
		},
		{
			name:       "unexpected listener and an expiring rule",
			policy:     expiring("2027-03-31"),
			snap:       snap(false, temp, checkListener("tcp", "0.0.0.0", 8080, evil)),
			wantStatus: "CRITICAL", wantCode: 2,
			want: "PORTWATCH CRITICAL - 2 listeners, 1 unexpected, 1 rule expiring within 7d | listeners=2 unexpected=1 unknown=0 expiring_rules=1\n" +
				unexpected8080 + `expiring: rule "temp" (p.yaml:8) allows nothing after 2027-03-31` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policyText := tt.policy
			if policyText == "" {
				policyText = rules
			}
			cfg, err := policy.Parse("p.yaml", []byte(policyText))
			if err != nil {
				t.Fatal(err)
			}
			opts := checkOptions{warnExpiry: 7 * 24 * time.Hour}
			switch {
			case tt.warnExpiry < 0:
				opts.warnExpiry = 0
			case tt.warnExpiry > 0:
				opts.warnExpiry = tt.warnExpiry
			}
			var stdout, stderr bytes.Buffer
			if code := reportCheck(&stdout, &stderr, cfg, tt.snap, opts); code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if diff := cmp.Diff(tt.want, stdout.String()); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}

			// --json: the same status and exit code.
			stdout.Reset()
			opts.json = true
			if code := reportCheck(&stdout, &stderr, cfg, tt.snap, opts); code != tt.wantCode {
				t.Errorf("--json exit code = %d, want %d", code, tt.wantCode)
			}
			var out checkOutput
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("--json output does not parse: %v\n%s", err, &stdout)
			}
			if out.Status != tt.wantStatus {
				t.Errorf("--json status = %q, want %q", out.Status, tt.wantStatus)
			}
		})
	}
}

// TestReportCheckJSON checks the members of the --json document.
func TestReportCheckJSON(t *testing.T) {
	cfg, err := policy.Parse("p.yaml", []byte("version: 1\nallow:\n  - name: ssh\n    port: 22\n    exe: /usr/sbin/sshd\n  - name: lo\n    address: loopback\n  - name: temp\n    port: 8443\n    expires: 2027-03-31\n"))
	if err != nil {
		t.Fatal(err)
	}
	sshd := watcher.Process{PID: 812, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	evil := watcher.Process{PID: 4242, Comm: "sshd", Exe: "/usr/bin/python3.11", UID: 33, User: "www-data"}
	eph := checkListener("udp", "0.0.0.0", 40000)
	eph.Ephemeral = true
	snap := &watcher.Snapshot{Time: time.Date(2027, 3, 29, 12, 0, 0, 0, time.Local), Listeners: []watcher.Listener{
		checkListener("tcp", "0.0.0.0", 22, sshd),
		checkListener("tcp", "127.0.0.1", 631),
		checkListener("tcp", "0.0.0.0", 8080, evil),
		eph,
	}}
	var stdout, stderr bytes.Buffer
	if code := reportCheck(&stdout, &stderr, cfg, snap, checkOptions{json: true, warnExpiry: 7 * 24 * time.Hour}); code != 2 {
		t.Errorf("--json exit code = %d, want 2", code)
	}
	var out checkOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, &stdout)
	}
	var verdicts []string
	for _, d := range out.Decisions {
		verdicts = append(verdicts, fmt.Sprintf("%d %s %s", d.Port, d.Verdict, d.Rule))
	}
	if diff := cmp.Diff([]string{"22 allowed ssh", "631 allowed lo", "8080 unexpected lo", "40000 ignored "}, verdicts); diff != "" {
		t.Errorf("--json decisions mismatch (-want +got):\n%s", diff)
	}
	want := checkOutput{
		Status: "CRITICAL", Config: "p.yaml", Listeners: 4, Unexpected: 1, Ignored: 1,
		Expiring: []expiringRule{{Name: "temp", File: "p.yaml:8", Expires: "2027-03-31"}},
	}
	if diff := cmp.Diff(want, out, cmpopts.IgnoreFields(checkOutput{}, "Host", "Time", "Decisions")); diff != "" {
		t.Errorf("--json summary mismatch (-want +got):\n%s", diff)
	}
}

// TestCheckUnknown runs check where it cannot evaluate: each case ends
// UNKNOWN (exit 3) with one first line and no performance data.
func TestCheckUnknown(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{
		"invalid.yaml": "allow:\n  - name: x\n    port: 0\n",
		"ok.yaml":      "version: 1\nallow: []\n",
	})
	tests := []struct {
		name       string
		args       []string
		want       string
		wantStderr string
	}{
		{
			name:       "invalid config",
			args:       []string{"-c", filepath.Join(dir, "invalid.yaml")},
			want:       "PORTWATCH UNKNOWN - invalid config: 1 error\n",
			wantStderr: "invalid.yaml:3:11: port: 0 is outside 1..65535",
		},
		{
			name:       "missing config",
			args:       []string{"-c", filepath.Join(dir, "missing.yaml")},
			want:       "PORTWATCH UNKNOWN - invalid config: 1 error\n",
			wantStderr: "missing.yaml",
		},
		{
			name:       "unknown flag",
			args:       []string{"-c", filepath.Join(dir, "ok.yaml"), "--bogus"},
			want:       "PORTWATCH UNKNOWN - usage: flag provided but not defined: -bogus\n",
			wantStderr: "flag provided but not defined: -bogus",
		},
		{
			name:       "bad --warn-expiry",
			args:       []string{"-c", filepath.Join(dir, "ok.yaml"), "--warn-expiry", "soon"},
			want:       "PORTWATCH UNKNOWN - usage: invalid value \"soon\" for flag -warn-expiry: use a duration such as 7d, 36h or 0\n",
			wantStderr: "invalid value",
		},
		{
			name:       "extra argument",
			args:       []string{"-c", filepath.Join(dir, "ok.yaml"), "now"},
			want:       "PORTWATCH UNKNOWN - usage: unexpected argument \"now\"\n",
			wantStderr: `unexpected argument "now"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(append([]string{"check"}, tt.args...), &stdout, &stderr); code != 3 {
				t.Errorf("exit code = %d, want 3", code)
			}
			if diff := cmp.Diff(tt.want, stdout.String()); diff != "" {
				t.Errorf("stdout mismatch (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, &stderr)
			}
		})
	}
}

// TestCheckInvalidConfigJSON checks that --json still prints one JSON
// document when the config is invalid, with the errors in it.
func TestCheckInvalidConfigJSON(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{"portwatch.yaml": "allow:\n  - name: x\n    port: 0\n"})
	p := filepath.Join(dir, "portwatch.yaml")
	var stdout, stderr bytes.Buffer
	code := run([]string{"check", "--json", "-c", p}, &stdout, &stderr)
	if code != 3 {
		t.Errorf("exit code = %d, want 3 (UNKNOWN)", code)
	}
	var got checkError
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%s", err, stdout.String())
	}
	if dec.More() {
		t.Errorf("stdout holds more than one JSON document")
	}
	want := checkError{Status: "UNKNOWN", Config: p, Error: "invalid config: 1 error", Errors: []string{p + ":3:11: port: 0 is outside 1..65535"}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(checkError{}, "Host", "Time")); diff != "" {
		t.Errorf("JSON mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr.String(), "portwatch.yaml:3:11: port: 0 is outside 1..65535") {
		t.Errorf("stderr does not name the error:\n%s", &stderr)
	}
}

// checkHelper is the listener child of the check tests (the list tests'
// child process, started with its environment): a TCP listener on
// 127.0.0.1, a dual-stack TCP wildcard and a UDP socket, with one more TCP
// listener on demand.
type checkHelper struct {
	*listenertest.Child
	ports []int
}

func startCheckHelper(t *testing.T) *checkHelper {
	t.Helper()
	h := &checkHelper{Child: listenertest.Start(t, listenertest.Options{Env: []string{listHelperEnv + "="}})}
	h.ports = append(h.ports, h.Open(t, "tcp4", "127.0.0.1:0"))
	h.ports = append(h.ports, h.Open(t, "tcp", "[::]:0")) // dual-stack wildcard: no traffic, just a socket
	// A UDP port below ip_local_port_range: an ephemeral one would be
	// ignored, and left out of the baseline.
	for p := 20000 + h.PID()%5000; ; p++ {
		if p >= 26000 {
			t.Fatal("no free UDP port in 20000..26000")
		}
		if port, err := h.TryOpen(t, "udp4", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			h.ports = append(h.ports, port)
			break
		}
	}
	return h
}

// TestBaselineCheckRoundTrip opens real listeners in a child process, writes
// a baseline, and checks that check then passes; after one more listener,
// check fails and names it. Other tests on this machine open listeners too,
// so a failing check that names none of ours is retried. Where attribution
// is partial (not root, or a sandbox that hides some processes from root),
// a passing check is WARNING, not OK.
func TestBaselineCheckRoundTrip(t *testing.T) {
	h := startCheckHelper(t)
	dir := writePolicyFiles(t, map[string]string{"seed.yaml": "version: 1\ninclude: []\n"})
	seed := filepath.Join(dir, "seed.yaml")
	out := filepath.Join(dir, "portwatch.yaml")
	mine := fmt.Sprintf("(pid %d ", h.PID())

	var stdout, stderr bytes.Buffer
	passed := false
	for attempt := 1; attempt <= 5 && !passed; attempt++ {
		stdout.Reset()
		stderr.Reset()
		if code := run([]string{"baseline", "-c", seed, "-o", out, "--force"}, &stdout, &stderr); code != exitOK {
			t.Fatalf("baseline: exit %d\n%s", code, &stderr)
		}
		stdout.Reset()
		stderr.Reset()
		code := run([]string{"check", "-c", out}, &stdout, &stderr)
		switch {
		case code == 0, code == 1 && strings.Contains(firstLine(stdout.String()), "attribution partial"):
			passed = true
		case code == 2 && !strings.Contains(stdout.String(), mine):
			t.Logf("attempt %d: another process opened a listener meanwhile:\n%s", attempt, &stdout)
		default:
			data, _ := os.ReadFile(out)
			t.Fatalf("check after baseline: exit %d\nstdout:\n%s\nstderr:\n%s\nbaseline:\n%s", code, &stdout, &stderr, data)
		}
	}
	if !passed {
		t.Fatal("check never passed after baseline")
	}
	if !strings.HasPrefix(stdout.String(), "PORTWATCH OK - ") && !strings.HasPrefix(stdout.String(), "PORTWATCH WARNING - ") {
		t.Errorf("check output = %q, want PORTWATCH OK (or WARNING, attribution partial) first", &stdout)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range h.ports {
		if !strings.Contains(string(data), strconv.Itoa(p)) {
			t.Errorf("baseline does not mention helper port %d:\n%s", p, data)
		}
	}

	// One more listener: check exits 2 (CRITICAL) and names it.
	extra := h.Open(t, "tcp4", "127.0.0.1:0")
	stdout.Reset()
	stderr.Reset()
	code := run([]string{"check", "-c", out}, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("check with a new listener: exit %d, want 2\n%s%s", code, &stdout, &stderr)
	}
	want := fmt.Sprintf("no rule allows tcp 127.0.0.1:%d (pid %d ", extra, h.PID())
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("check output does not name the new listener (%q):\n%s", want, &stdout)
	}
	if !strings.HasPrefix(stdout.String(), "PORTWATCH CRITICAL - ") {
		t.Errorf("check output = %q, want PORTWATCH CRITICAL first", &stdout)
	}
}

// firstLine is the first line of s.
func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// TestCheckStatusLive runs check on the real host, with a child holding
// real sockets, under policies chosen to give each status. Other tests may
// open listeners meanwhile, so the policies either allow every socket or
// none that the child holds. Where attribution is partial (not root, or a
// sandbox that hides some processes from root), what would be OK is WARNING.
func TestCheckStatusLive(t *testing.T) {
	h := startCheckHelper(t)
	tomorrow := time.Now().AddDate(0, 0, 1).Format("2006-01-02")
	dir := writePolicyFiles(t, map[string]string{
		"all.yaml":      "version: 1\nallow:\n  - name: all\n    flags: [" + everyHighRiskFlag + "]\n",
		"expiring.yaml": "version: 1\nallow:\n  - name: all\n    flags: [" + everyHighRiskFlag + "]\n    expires: " + tomorrow + "\n",
		"loopback.yaml": "version: 1\nallow:\n  - name: lo\n    address: loopback\n",
		"invalid.yaml":  "version: 1\nallow:\n  - name: all\n    port: http-alt-typo\n",
	})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "--json", "-c", filepath.Join(dir, "all.yaml")}, &stdout, &stderr); code != 0 && code != 1 {
		t.Fatalf("check allowing everything: exit %d\n%s%s", code, &stdout, &stderr)
	}
	var probe checkOutput
	if err := json.Unmarshal(stdout.Bytes(), &probe); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, &stdout)
	}
	allowed := "OK"
	if probe.Partial {
		allowed = "WARNING"
		t.Logf("attribution is partial here (euid %d): an all-allowed check is WARNING", os.Geteuid())
	}
	codes := map[string]int{"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
	// The child's dual-stack wildcard socket: no loopback rule allows it.
	wildcard := fmt.Sprintf("no rule allows tcp [::]:%d (dual-stack) (pid %d ", h.ports[1], h.PID())
	tests := []struct {
		name       string
		file       string
		wantStatus string
		wantLine   string // a line of the output that must be there
	}{
		{name: "everything allowed", file: "all.yaml", wantStatus: allowed},
		{name: "rule expires tomorrow", file: "expiring.yaml", wantStatus: "WARNING",
			wantLine: `expiring: rule "all" (` + filepath.Join(dir, "expiring.yaml") + `:3) allows nothing after ` + tomorrow},
		{name: "unexpected listener", file: "loopback.yaml", wantStatus: "CRITICAL", wantLine: wildcard},
		{name: "invalid config", file: "invalid.yaml", wantStatus: "UNKNOWN"},
		{name: "missing config", file: "missing.yaml", wantStatus: "UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode := codes[tt.wantStatus]
			var stdout, stderr bytes.Buffer
			code := run([]string{"check", "-c", filepath.Join(dir, tt.file)}, &stdout, &stderr)
			if code != wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", code, wantCode, &stdout, &stderr)
			}
			if prefix := "PORTWATCH " + tt.wantStatus + " - "; !strings.HasPrefix(stdout.String(), prefix) {
				t.Errorf("output does not start with %q:\n%s", prefix, &stdout)
			}
			if tt.wantLine != "" && !strings.Contains(stdout.String(), tt.wantLine) {
				t.Errorf("output does not contain %q:\n%s", tt.wantLine, &stdout)
			}

			stdout.Reset()
			stderr.Reset()
			code = run([]string{"check", "--json", "-c", filepath.Join(dir, tt.file)}, &stdout, &stderr)
			if code != wantCode {
				t.Errorf("--json exit code = %d, want %d", code, wantCode)
			}
			var got struct{ Status string }
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("--json output does not parse: %v\n%s", err, &stdout)
			}
			if got.Status != tt.wantStatus {
				t.Errorf("--json status = %q, want %q", got.Status, tt.wantStatus)
			}
		})
	}
}

// everyHighRiskFlag is the flags: that lets a rule allow every listener:
// without it, a rule allowing "everything" refuses the listeners of
// programs with high-risk flags (test binaries run from /tmp, for one).
const everyHighRiskFlag = "exe_gone, exe_memfd, exe_in_writable_dir, exe_unpackaged, session_launched, interpreter, netcat_family"
