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

// TestReportCheck evaluates a fixed snapshot: the output format and exit
// codes, without the kernel.
func TestReportCheck(t *testing.T) {
	cfg, err := policy.Parse("p.yaml", []byte("version: 1\nallow:\n  - name: ssh\n    port: 22\n    exe: /usr/sbin/sshd\n  - name: lo\n    address: loopback\n"))
	if err != nil {
		t.Fatal(err)
	}
	sshd := watcher.Process{PID: 812, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	evil := watcher.Process{PID: 4242, Comm: "sshd", Exe: "/usr/bin/python3.11", UID: 33, User: "www-data"}
	eph := checkListener("udp", "0.0.0.0", 40000)
	eph.Ephemeral = true
	snap := &watcher.Snapshot{Time: time.Now(), Listeners: []watcher.Listener{
		checkListener("tcp", "0.0.0.0", 22, sshd),
		checkListener("tcp", "127.0.0.1", 631),
		checkListener("tcp", "0.0.0.0", 8080, evil),
		eph,
	}}
	tests := []struct {
		name     string
		snap     *watcher.Snapshot
		want     string
		wantCode int
	}{
		{
			name:     "unexpected",
			snap:     snap,
			wantCode: exitFound,
			want: "PORTWATCH CRITICAL - 4 listeners, 1 unexpected\n" +
				`no rule allows tcp 0.0.0.0:8080 (pid 4242 /usr/bin/python3.11, user www-data); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n",
		},
		{
			name:     "all allowed",
			snap:     &watcher.Snapshot{Time: snap.Time, Listeners: snap.Listeners[:2]},
			wantCode: exitOK,
			want:     "PORTWATCH OK - 2 listeners, 0 unexpected\n",
		},
		{
			// Not root: sshd is another user's process, so its socket
			// has no holder and the exe rule cannot match it.
			name:     "partial attribution, only a missing holder",
			snap:     &watcher.Snapshot{Time: snap.Time, Partial: true, Listeners: []watcher.Listener{checkListener("tcp", "0.0.0.0", 22), snap.Listeners[1]}},
			wantCode: exitError,
			want: "PORTWATCH UNKNOWN - 2 listeners, 0 unexpected, 1 unknown (attribution partial: run as root)\n" +
				`unknown: no rule allows tcp 0.0.0.0:22 (no known process); closest: rule "ssh" (p.yaml:3) wants exe /usr/sbin/sshd (the listener has no known process); rule "ssh" would allow it if its process were visible` + "\n",
		},
		{
			name: "partial attribution, a socket no rule covers",
			snap: &watcher.Snapshot{Time: snap.Time, Partial: true, Listeners: []watcher.Listener{
				checkListener("tcp", "0.0.0.0", 22), checkListener("tcp", "0.0.0.0", 9999)}},
			wantCode: exitFound,
			want: "PORTWATCH CRITICAL - 2 listeners, 1 unexpected, 1 unknown (attribution partial: run as root)\n" +
				`no rule allows tcp 0.0.0.0:9999 (no known process); closest: rule "lo" (p.yaml:6) wants address loopback` + "\n" +
				`unknown: no rule allows tcp 0.0.0.0:22 (no known process); closest: rule "ssh" (p.yaml:3) wants exe /usr/sbin/sshd (the listener has no known process); rule "ssh" would allow it if its process were visible` + "\n",
		},
		{
			name:     "full attribution, no holder is a finding",
			snap:     &watcher.Snapshot{Time: snap.Time, Listeners: []watcher.Listener{checkListener("tcp", "0.0.0.0", 22)}},
			wantCode: exitFound,
			want: "PORTWATCH CRITICAL - 1 listener, 1 unexpected\n" +
				`no rule allows tcp 0.0.0.0:22 (no known process); closest: rule "ssh" (p.yaml:3) wants exe /usr/sbin/sshd (the listener has no known process)` + "\n",
		},
		{
			name:     "nothing listening",
			snap:     &watcher.Snapshot{Time: snap.Time},
			wantCode: exitOK,
			want:     "PORTWATCH OK - 0 listeners, 0 unexpected\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := reportCheck(&stdout, &stderr, cfg, tt.snap, false)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if diff := cmp.Diff(tt.want, stdout.String()); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
		})
	}

	var stdout, stderr bytes.Buffer
	if code := reportCheck(&stdout, &stderr, cfg, snap, true); code != exitFound {
		t.Errorf("--json exit code = %d, want %d", code, exitFound)
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
	if out.Status != "CRITICAL" || out.Listeners != 4 || out.Unexpected != 1 || out.Ignored != 1 || out.Config != "p.yaml" {
		t.Errorf("--json summary = %+v", out)
	}
}

func TestCheckInvalidConfig(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{"portwatch.yaml": "allow:\n  - name: x\n    port: 0\n"})
	var stdout, stderr bytes.Buffer
	code := run([]string{"check", "-c", filepath.Join(dir, "portwatch.yaml")}, &stdout, &stderr)
	if code != exitError {
		t.Errorf("exit code = %d, want %d", code, exitError)
	}
	if diff := cmp.Diff("PORTWATCH UNKNOWN - invalid config: 1 error\n", stdout.String()); diff != "" {
		t.Errorf("stdout mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr.String(), "portwatch.yaml:3:11: port: 0 is outside 1..65535") {
		t.Errorf("stderr does not name the error:\n%s", &stderr)
	}
}

// TestCheckInvalidConfigJSON checks that --json still prints one JSON
// document when the config is invalid, with the errors in it.
func TestCheckInvalidConfigJSON(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{"portwatch.yaml": "allow:\n  - name: x\n    port: 0\n"})
	p := filepath.Join(dir, "portwatch.yaml")
	var stdout, stderr bytes.Buffer
	code := run([]string{"check", "--json", "-c", p}, &stdout, &stderr)
	if code != exitError {
		t.Errorf("exit code = %d, want %d", code, exitError)
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

// policyHelper is a listener child for the round trip (the list tests'
// child, without a new name): a TCP listener on 127.0.0.1, a dual-stack TCP
// wildcard and a UDP socket, with one more TCP listener on demand.
type policyHelper struct {
	*listenertest.Child
	ports []int
}

func startPolicyHelper(t *testing.T) *policyHelper {
	t.Helper()
	h := &policyHelper{Child: listenertest.Start(t, listenertest.Options{Env: []string{listHelperEnv + "="}})}
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
// so a failing check that names none of ours is retried.
func TestBaselineCheckRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attribution reads the descriptors of every process")
	}
	h := startPolicyHelper(t)
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
		case code == exitOK:
			passed = true
		case code == exitFound && !strings.Contains(stdout.String(), mine):
			t.Logf("attempt %d: another process opened a listener meanwhile:\n%s", attempt, &stdout)
		default:
			data, _ := os.ReadFile(out)
			t.Fatalf("check after baseline: exit %d\nstdout:\n%s\nstderr:\n%s\nbaseline:\n%s", code, &stdout, &stderr, data)
		}
	}
	if !passed {
		t.Fatal("check never passed after baseline")
	}
	if !strings.HasPrefix(stdout.String(), "PORTWATCH OK - ") {
		t.Errorf("check output = %q, want PORTWATCH OK first", &stdout)
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

	// One more listener: check exits 1 and names it.
	extra := h.Open(t, "tcp4", "127.0.0.1:0")
	stdout.Reset()
	stderr.Reset()
	code := run([]string{"check", "-c", out}, &stdout, &stderr)
	if code != exitFound {
		t.Fatalf("check with a new listener: exit %d, want %d\n%s%s", code, exitFound, &stdout, &stderr)
	}
	want := fmt.Sprintf("no rule allows tcp 127.0.0.1:%d (pid %d ", extra, h.PID())
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("check output does not name the new listener (%q):\n%s", want, &stdout)
	}
	if !strings.HasPrefix(stdout.String(), "PORTWATCH CRITICAL - ") {
		t.Errorf("check output = %q, want PORTWATCH CRITICAL first", &stdout)
	}
}
