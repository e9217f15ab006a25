package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/internal/listenertest"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// listHelperEnv makes the test binary a listener child (see
// internal/listenertest) for the list and check tests: it renames itself to
// the variable's value, if any, and then opens listeners on command.
const listHelperEnv = "PORTWATCHD_LIST_HELPER"

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(listHelperEnv); ok {
		os.Exit(listHelper(name))
	}
	os.Exit(m.Run())
}

func listHelper(name string) int {
	if name != "" {
		b := append([]byte(name), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 3
		}
	}
	if err := listenertest.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// hostileComm is a process name made to break a terminal: an escape
// sequence, a newline and a bell (PR_SET_NAME keeps 15 bytes).
const hostileComm = "\x1b[31mev\nil\a"

// startListHelper runs the test binary, copied to a hostile path, as a
// listener named hostileComm. It returns the child's pid and port.
func startListHelper(t *testing.T) (pid, port int, exe string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(t.TempDir(), "bad\tname\x1b]0;pwned\a")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	c := listenertest.Start(t, listenertest.Options{Path: exe, Env: []string{listHelperEnv + "=" + hostileComm}})
	return c.PID(), c.Open(t, "tcp4", "127.0.0.1:0"), exe
}

func requireRootList(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: reads the descriptors of every process")
	}
	if _, err := os.Stat("/etc/portwatch.yaml"); err == nil {
		t.Skip("/etc/portwatch.yaml exists; these tests use the embedded default policy")
	}
}

func TestListTable(t *testing.T) {
	requireRootList(t)
	pid, port, _ := startListHelper(t)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"list"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for i, r := range out {
		if r != '\n' && (r < 0x20 || r == 0x7f) {
			t.Fatalf("raw control character %q at %d in the table:\n%s", r, i, out)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if h := strings.Fields(lines[0]); !slices.Equal(h, []string{"PROTO", "LOCAL", "ADDRESS:PORT", "NETNS", "PID/PROGRAM", "EXE", "USER", "UNIT", "FLAGS", "EXPOSURE", "VERDICT"}) {
		t.Errorf("header = %q", lines[0])
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	var mine []string
	for _, l := range lines[1:] {
		if strings.Contains(l, addr+" ") {
			mine = append(mine, l)
		}
	}
	if len(mine) != 1 {
		t.Fatalf("want one line for %s, got %q in:\n%s", addr, mine, out)
	}
	f := strings.Fields(mine[0])
	want := []string{"tcp", addr, "host", strconv.Itoa(pid) + `/\x1b[31mev\nil\a`}
	if diff := cmp.Diff(want, f[:4]); diff != "" {
		t.Errorf("line %q (-want +got):\n%s", mine[0], diff)
	}
	if !strings.Contains(mine[0], `bad\tname\x1b]0;pwned\a`) || !strings.Contains(mine[0], " root ") {
		t.Errorf("line %q: want the escaped exe and user root", mine[0])
	}
}

func TestListJSON(t *testing.T) {
	requireRootList(t)
	pid, port, exe := startListHelper(t)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"list", "--json"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("%v in:\n%s", err, stdout.String())
	}
	if diff := cmp.Diff([]string{"ebpf", "host", "listeners", "time"}, listKeys(doc)); diff != "" {
		t.Errorf("top-level keys (-want +got):\n%s", diff)
	}
	if m := string(doc["ebpf"]); m != `"auto"` && m != `"on"` && m != `"off"` {
		t.Errorf("ebpf = %s, want the config's mode: auto, on or off", m)
	}
	var listeners []map[string]any
	if err := json.Unmarshal(doc["listeners"], &listeners); err != nil {
		t.Fatal(err)
	}
	// exposure: list reads the rulesets (exposure: auto), and every
	// listener has one, unknown at worst.
	listenerKeys := []string{"address", "dual_stack", "ephemeral", "exposure", "family", "inode", "interface", "netns", "netns_inode",
		"port", "processes", "protocol", "reason", "rule", "service", "severity", "uid", "verdict"}
	processKeys := []string{"cmdline", "comm", "container", "exe", "exe_deleted", "flags", "pid", "uid", "unit", "user"}
	found := false
	// Left out when empty: risk_flags of a listener, flags_unknown of a
	// process.
	optional := func(ks []string, opt string) []string {
		return slices.DeleteFunc(ks, func(k string) bool { return k == opt })
	}
	for _, l := range listeners {
		if diff := cmp.Diff(listenerKeys, optional(optional(listKeys(l), "risk_flags"), "published")); diff != "" {
			t.Fatalf("listener keys (-want +got):\n%s", diff)
		}
		procs := l["processes"].([]any)
		for _, p := range procs {
			if diff := cmp.Diff(processKeys, optional(listKeys(p.(map[string]any)), "flags_unknown")); diff != "" {
				t.Fatalf("process keys (-want +got):\n%s", diff)
			}
		}
		if l["address"] != "127.0.0.1" || l["port"] != float64(port) {
			continue
		}
		found = true
		if len(procs) != 1 {
			t.Fatalf("holders %v", procs)
		}
		p := procs[0].(map[string]any)
		got := []any{l["protocol"], l["family"], l["netns"], p["pid"], p["comm"], p["exe"], p["exe_deleted"], p["user"]}
		want := []any{"tcp", "ipv4", "host", float64(pid), hostileComm, exe, false, "root"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("listener (-want +got):\n%s", diff)
		}
		if _, ok := p["cmdline"].([]any); !ok {
			t.Errorf("cmdline %v is not an array", p["cmdline"])
		}
	}
	// Every listener: a severity by its name (info when not unexpected);
	// flags per process and risk_flags, when present, arrays of known
	// flags. (The watcher gives [] for a process without flags; null is
	// let pass here only so that this test does not depend on that.)
	knownFlags := func(where string, v any) {
		if v == nil {
			return
		}
		a, ok := v.([]any)
		if !ok {
			t.Errorf("%s: %v is not an array", where, v)
			return
		}
		for _, f := range a {
			if s, _ := f.(string); !watcher.Flag(s).Known() {
				t.Errorf("%s: %v is not a flag", where, f)
			}
		}
	}
	for _, l := range listeners {
		where := fmt.Sprint(l["protocol"], " ", l["address"], ":", l["port"])
		sev, verdict := l["severity"], l["verdict"]
		switch sev {
		case "info":
		case "warning", "critical":
			if verdict != "unexpected" {
				t.Errorf("%s: severity %v for verdict %v", where, sev, verdict)
			}
		default:
			t.Errorf("%s: severity %v is not info, warning or critical", where, sev)
		}
		if rf, ok := l["risk_flags"]; ok {
			knownFlags(where+" risk_flags", rf)
		}
		for _, p := range l["processes"].([]any) {
			knownFlags(where+" flags", p.(map[string]any)["flags"])
		}
	}
	if !found {
		t.Errorf("listener 127.0.0.1:%d not in:\n%s", port, stdout.String())
	}
}

func listKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestListErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // stderr, exactly
	}{
		{"missing config", []string{"list", "-c", "/nonexistent/portwatch.yaml"}, "portwatchd list: "},
		{"bad flag", []string{"list", "--nope"}, "flag provided but not defined: -nope\n"},
		{"argument", []string{"list", "extra"}, "portwatchd list: unexpected argument \"extra\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != exitError {
				t.Errorf("exit %d, want %d", code, exitError)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
			got := stderr.String()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("stderr = %q, want it to start with %q", got, tt.want)
			}
			if tt.name == "missing config" && strings.Count(got, "\n") != 1 {
				t.Errorf("stderr = %q, want one line", got)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "nginx: worker process", "nginx: worker process"},
		{"escape sequence", "\x1b[2J", `\x1b[2J`},
		{"newline and tab", "a\nb\tc", `a\nb\tc`},
		{"backslash", `a\nb`, `a\\nb`},
		{"invalid utf8", "a\xffb", `a\xffb`},
		{"bidi override", "abc\u202egnp.exe", `abc\u202egnp.exe`},
		{"unicode", "café", "café"},
		{"nul", "a\x00b", `a\x00b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, escape(tt.in)); diff != "" {
				t.Errorf("escape(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	proc := func(pid int, comm, exe string) watcher.Process {
		return watcher.Process{PID: pid, Comm: comm, Exe: exe, User: "root", Cmdline: []string{exe}}
	}
	memfd := proc(4242, "payload", "/memfd:x")
	memfd.Flags = []watcher.Flag{watcher.FlagExeMemfd, watcher.FlagSessionLaunched}
	memfd2 := memfd
	memfd2.PID, memfd2.Flags = 4243, []watcher.Flag{watcher.FlagExeMemfd, watcher.FlagRootUnprivilegedPort}
	ds := []policy.Decision{
		{Listener: watcher.Listener{Protocol: "tcp", Family: "ipv4", Address: netip.MustParseAddr("0.0.0.0"), Port: 22, Service: "ssh", Netns: "host",
			Processes: []watcher.Process{proc(1, "systemd", "/usr/lib/systemd/systemd"), proc(812, "sshd", "/usr/sbin/sshd"), proc(813, "sshd", "/usr/sbin/sshd")}},
			Verdict: "allowed", Rule: "ssh", Exposure: &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictFiltered}},
		{Listener: watcher.Listener{Protocol: "tcp", Family: "ipv6", Address: netip.MustParseAddr("::"), Port: 8080, DualStack: true, Netns: "container:0123456789ab",
			Processes: []watcher.Process{{PID: 4242, Comm: "payload", Exe: "/memfd:x", ExeDeleted: true, ExeUnverified: true, User: "1000", Container: "0123456789abcdef"}}},
			Verdict: "unexpected", Rule: "closest", Exposure: &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictOpen,
				Published: []exposure.Publication{{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 80, ToAddr: netip.MustParseAddr("172.17.0.2"), ToPort: 8080}}}},
		// A published port with no socket of the host behind it.
		{Listener: watcher.Listener{Protocol: "tcp", Family: "ipv4", Address: netip.IPv4Unspecified(), Port: 80, Netns: "host",
			Published: "published → container:0123456789ab [::]:8080", Processes: []watcher.Process{}},
			Verdict: "unexpected", Exposure: &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictOpen,
				Published: []exposure.Publication{{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 80, ToAddr: netip.MustParseAddr("172.17.0.2"), ToPort: 8080}}}},
		{Listener: watcher.Listener{Protocol: "tcp", Family: "ipv4", Address: netip.MustParseAddr("127.0.0.1"), Port: 9000, Netns: "host",
			Processes: []watcher.Process{{PID: 900, Comm: "python3", Exe: "/usr/bin/python3", ExeUnverified: true, User: "root", Unit: "session-3.scope"}}},
			Verdict: "unexpected"},
		{Listener: watcher.Listener{Protocol: "udp", Family: "ipv4", Address: netip.MustParseAddr("10.0.0.1"), Port: 68, Interface: "eth0", Netns: "host", Processes: []watcher.Process{}},
			Verdict: "unexpected"},
		// Critical: the flags of both holders, in AllFlags order.
		{Listener: watcher.Listener{Protocol: "tcp", Family: "ipv4", Address: netip.MustParseAddr("0.0.0.0"), Port: 8443, Netns: "host",
			Processes: []watcher.Process{memfd, memfd2}},
			Verdict: "unexpected", Rule: "web", Severity: policy.SeverityCritical, Flags: []watcher.Flag{watcher.FlagExeMemfd}},
		{Listener: watcher.Listener{Protocol: "udp", Family: "ipv6", Address: netip.MustParseAddr("::1"), Port: 41000, Ephemeral: true, Netns: "host",
			Processes: []watcher.Process{{PID: 77, Comm: "dig", Exe: "/usr/bin/dig", User: "root", Unit: "session-3.scope"}}},
			Verdict: "ignored"},
	}
	var b strings.Builder
	if err := writeTable(&b, ds); err != nil {
		t.Fatal(err)
	}
	want := `PROTO  LOCAL ADDRESS:PORT     NETNS                   PID/PROGRAM     EXE                                           USER  UNIT                    FLAGS                   EXPOSURE        VERDICT
tcp    0.0.0.0:22 (ssh)       host                    812/sshd+2      /usr/sbin/sshd                                root  -                       -                       filtered        allowed (ssh)
tcp46  [::]:8080              container:0123456789ab  4242/payload    /memfd:x (deleted)                            1000  container:0123456789ab  -                       open,published  unexpected
tcp    0.0.0.0:80             host                    -               published → container:0123456789ab [::]:8080  -     -                       -                       open,published  unexpected
tcp    127.0.0.1:9000         host                    900/python3     /usr/bin/python3 (unverified)                 root  session-3.scope         -                       unknown         unexpected
udp    10.0.0.1%eth0:68       host                    -               -                                             -     -                       -                       unknown         unexpected
tcp    0.0.0.0:8443           host                    4242/payload+1  /memfd:x                                      root  -                       memfd,session,rootport  unknown         unexpected (critical)
udp6   [::1]:41000 ephemeral  host                    77/dig          /usr/bin/dig                                  root  session-3.scope         -                       unknown         ignored
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s\ngot:\n%s", diff, b.String())
	}
}

// TestFlagShort: every flag has a short name in list's FLAGS column, no
// two alike, and none that a comma would split.
func TestFlagShort(t *testing.T) {
	seen := map[string]watcher.Flag{}
	for _, f := range watcher.AllFlags {
		s, ok := flagShort[f]
		if !ok || s == "" || strings.ContainsAny(s, ", ") {
			t.Errorf("flag %s: short name %q", f, s)
		}
		if g, dup := seen[s]; dup {
			t.Errorf("flags %s and %s share the short name %q", g, f, s)
		}
		seen[s] = f
	}
	if len(flagShort) != len(watcher.AllFlags) {
		t.Errorf("%d short names for %d flags", len(flagShort), len(watcher.AllFlags))
	}
}
