package notify

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
)

// TestJournald sends events through a Dispatcher running inside a real
// journald's mount namespace (a helper process: see TestHelperJournald) and
// reads the entries back with journalctl -o json.
func TestJournald(t *testing.T) {
	j := journaltest.Start(t)
	j.RunHelper(t, "TestHelperJournald")
	// Five events and the test event of TestHelperJournald.
	all := j.Wait(t, 6, "SYSLOG_IDENTIFIER=portwatchd")
	if len(all) != 6 {
		t.Fatalf("got %d entries, want 6 (exactly one per event, hostile name included)", len(all))
	}
	es := all[:5]
	keys := []string{
		"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "PORTWATCH_SEVERITY", "PORTWATCH_FLAGS", "PORTWATCH_RISK_FLAGS",
		"PORTWATCH_EVENT", "PORTWATCH_EVENT_ID", "PORTWATCH_VERDICT", "PORTWATCH_RULE", "PORTWATCH_REASON",
		"PORTWATCH_PROTOCOL", "PORTWATCH_ADDRESS", "PORTWATCH_PORT", "PORTWATCH_NETNS", "PORTWATCH_PID",
		"PORTWATCH_COMM", "PORTWATCH_EXE", "PORTWATCH_USER", "PORTWATCH_UNIT", "PORTWATCH_CONTAINER",
	}
	var got []map[string]string
	for _, e := range es {
		m := map[string]string{}
		for _, k := range keys {
			if v, ok := e[k]; ok {
				m[k] = v
			}
		}
		got = append(got, m)
	}
	base := func(event, id, prio, msgID, comm, msg string) map[string]string {
		sev := map[string]string{"4": "warning", "5": "notice"}[prio]
		return map[string]string{
			"MESSAGE": msg, "MESSAGE_ID": msgID, "PRIORITY": prio, "SYSLOG_IDENTIFIER": "portwatchd", "PORTWATCH_SEVERITY": sev,
			"PORTWATCH_EVENT": event, "PORTWATCH_EVENT_ID": id, "PORTWATCH_VERDICT": "unexpected",
			"PORTWATCH_RULE": "web", "PORTWATCH_REASON": "no rule allows it", "PORTWATCH_PROTOCOL": "tcp",
			"PORTWATCH_ADDRESS": "0.0.0.0", "PORTWATCH_PORT": "4444", "PORTWATCH_NETNS": "host",
			"PORTWATCH_PID": "812", "PORTWATCH_COMM": textesc.Line(comm), "PORTWATCH_EXE": "/tmp/x", "PORTWATCH_USER": "nobody",
			"PORTWATCH_UNIT": "evil.service",
		}
	}
	allowedEntry := map[string]string{
		"MESSAGE":            "allowed listener tcp 0.0.0.0:22 opened by /usr/sbin/sshd (pid 812, user nobody, unit evil.service): rule ssh: remote administration",
		"MESSAGE_ID":         MessageIDOpened,
		"PRIORITY":           "6",
		"SYSLOG_IDENTIFIER":  "portwatchd",
		"PORTWATCH_SEVERITY": "info",
		"PORTWATCH_EVENT":    "opened",
		"PORTWATCH_EVENT_ID": "ev000000000000000000000000000004",
		"PORTWATCH_VERDICT":  "allowed", "PORTWATCH_RULE": "ssh", "PORTWATCH_REASON": "remote administration",
		"PORTWATCH_PROTOCOL": "tcp", "PORTWATCH_ADDRESS": "0.0.0.0", "PORTWATCH_PORT": "22", "PORTWATCH_NETNS": "host",
		"PORTWATCH_PID": "812", "PORTWATCH_COMM": "sshd", "PORTWATCH_EXE": "/usr/sbin/sshd", "PORTWATCH_USER": "nobody",
		"PORTWATCH_UNIT": "evil.service",
	}
	want := []map[string]string{
		base("opened", "ev000000000000000000000000000001", "4", MessageIDOpened, hostile,
			`unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (comm "x\n<!channel>\x1b[2J", pid 812, user nobody, unit evil.service): no rule allows it`),
		base("changed", "ev000000000000000000000000000002", "4", MessageIDChanged, "x",
			"unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"),
		base("closed", "ev000000000000000000000000000003", "5", MessageIDClosed, "x",
			"unexpected listener tcp 0.0.0.0:4444 closed, alert resolved (was held by /tmp/x (pid 812, user nobody, unit evil.service))"),
		allowedEntry,
	}
	// A critical listener: PRIORITY crit, its severity, the flags of its
	// holders and those that made it critical.
	crit := base("opened", "ev000000000000000000000000000005", "2", MessageIDOpened, "x",
		"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service, +1 more) [flags: exe_gone, exe_in_writable_dir, session_launched]: rule web names no exe: and does not accept exe_gone, exe_in_writable_dir")
	crit["PORTWATCH_SEVERITY"] = "critical"
	crit["PORTWATCH_REASON"] = "rule web names no exe: and does not accept exe_gone, exe_in_writable_dir"
	crit["PORTWATCH_FLAGS"] = "exe_gone,exe_in_writable_dir,session_launched"
	crit["PORTWATCH_RISK_FLAGS"] = "exe_gone,exe_in_writable_dir"
	want = append(want, crit)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journal entries (-want +got):\n%s", diff)
	}
	// The query the README gives for unexpected listeners finds exactly the opened ones.
	es, err := j.Entries("-t", "portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_VERDICT=unexpected")
	if err != nil || len(es) != 2 {
		t.Errorf("journalctl -t portwatchd PORTWATCH_EVENT=opened PORTWATCH_VERDICT=unexpected: %d entries, %v; want 2", len(es), err)
	}
	// Those the README gives for critical alerts find the critical one only.
	for _, q := range [][]string{{"-t", "portwatchd", "-p", "crit"}, {"-t", "portwatchd", "PORTWATCH_SEVERITY=critical"}} {
		es, err := j.Entries(q...)
		if err != nil || len(es) != 1 || es[0]["PORTWATCH_EVENT_ID"] != "ev000000000000000000000000000005" {
			t.Errorf("journalctl %s: %d entries, %v; want the critical one", strings.Join(q, " "), len(es), err)
		}
	}
	// The test event from Test.
	es = all[5:]
	if es[0]["MESSAGE_ID"] != MessageIDTest || es[0]["PRIORITY"] != "5" || !strings.Contains(es[0]["MESSAGE"], "test notification") {
		t.Errorf("test entry: %v", es[0])
	}
}

// TestHelperJournald runs inside the journal's namespace for TestJournald.
func TestHelperJournald(t *testing.T) {
	if !journaltest.IsHelper() {
		t.Skip("helper process for TestJournald")
	}
	d, err := New(policy.Notify{Journald: true}, Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if d.jd.fallback != nil {
		t.Fatal("no journal socket inside the namespace")
	}
	events := []Event{
		fixedEvent(1, TypeOpened, unexpected(4444, hostile)),
		fixedEvent(2, TypeChanged, unexpected(4444, "x")),
		fixedEvent(3, TypeClosed, unexpected(4444, "x")),
		fixedEvent(4, TypeOpened, allowed(22)),
		fixedEvent(5, TypeOpened, critical(4444)),
	}
	if err := d.Send(events); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Test(t.Context(), NewEvent(TypeTest, policy.Decision{}, "web-1", testTime)) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
}

// TestJournaldHostileFields: every text field of an entry is escaped as
// MESSAGE is, so that journalctl -o json consumers, log shippers and
// terminals get no control bytes; where escaping changed a value, its exact
// bytes are in NAME_RAW, as journald's binary-safe fields allow.
func TestJournaldHostileFields(t *testing.T) {
	j := journaltest.Start(t)
	j.RunHelper(t, "TestHelperJournaldHostile")
	es := j.Wait(t, 1, "SYSLOG_IDENTIFIER=portwatchd")
	if len(es) != 1 {
		t.Fatalf("got %d entries, want 1", len(es))
	}
	got := map[string]string{}
	for k, v := range es[0] {
		if strings.HasPrefix(k, "PORTWATCH_") {
			got[k] = v
		}
	}
	want := map[string]string{
		"PORTWATCH_EVENT": "opened", "PORTWATCH_EVENT_ID": "ev000000000000000000000000000001",
		"PORTWATCH_SEVERITY": "warning", "PORTWATCH_VERDICT": "unexpected", "PORTWATCH_RULE": "web",
		"PORTWATCH_REASON": `no rule allows /tmp/x\n\x1b[31mname`, "PORTWATCH_REASON_RAW": "no rule allows /tmp/x\n\x1b[31mname",
		"PORTWATCH_PROTOCOL": "tcp", "PORTWATCH_ADDRESS": "0.0.0.0", "PORTWATCH_PORT": "4444",
		"PORTWATCH_NETNS": `ns\xff\u202e`, "PORTWATCH_NETNS_RAW": "ns\xff\u202e",
		"PORTWATCH_PID":  "812",
		"PORTWATCH_COMM": `x\n<!channel>\x1b[2J`, "PORTWATCH_COMM_RAW": hostile,
		"PORTWATCH_EXE": `/tmp/x\n\x1b[31mname`, "PORTWATCH_EXE_RAW": "/tmp/x\n\x1b[31mname",
		"PORTWATCH_USER": `no\tbody\\`, "PORTWATCH_USER_RAW": "no\tbody\\",
		"PORTWATCH_UNIT": "evil.service",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journal fields (-want +got):\n%s", diff)
	}
	for k, v := range es[0] {
		if !strings.HasSuffix(k, "_RAW") && strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) {
			t.Errorf("%s = %q holds a control or format character", k, v)
		}
	}
	// The exact value matches, as journalctl matches bytes.
	if es, err := j.Entries("PORTWATCH_EXE_RAW=/tmp/x\n\x1b[31mname"); err != nil || len(es) != 1 {
		t.Errorf("journalctl PORTWATCH_EXE_RAW=<raw>: %d entries, %v; want 1", len(es), err)
	}
}

// TestHelperJournaldHostile runs inside the journal's namespace for
// TestJournaldHostileFields.
func TestHelperJournaldHostile(t *testing.T) {
	if !journaltest.IsHelper() {
		t.Skip("helper process for TestJournaldHostileFields")
	}
	d, err := New(policy.Notify{Journald: true}, Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dec := unexpected(4444, hostile)
	dec.Netns = "ns\xff\u202e"
	dec.Reason = "no rule allows /tmp/x\n\x1b[31mname"
	dec.Processes[0].Exe = "/tmp/x\n\x1b[31mname"
	dec.Processes[0].User = "no\tbody\\"
	if err := d.Send([]Event{fixedEvent(1, TypeOpened, dec)}); err != nil {
		t.Fatal(err)
	}
}

// TestJournaldRefusalEscapedOnce: a receiver's answer quoted in a dropped
// batch's report is escaped once, where the journal gets it: MESSAGE and
// PORTWATCH_ERROR show "\x1b" and "\\" for ESC and a backslash, and
// PORTWATCH_ERROR_RAW holds the answer's bytes.
func TestJournaldRefusalEscapedOnce(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "bad \\ \x1b[2J")
	})
	j := journaltest.Start(t)
	j.RunHelper(t, "TestHelperJournaldRefusal", "PORTWATCH_TEST_URL="+rc.URL)
	es := j.Wait(t, 1, "MESSAGE_ID="+MessageIDDropped)
	got := map[string]string{"MESSAGE": es[0]["MESSAGE"], "PORTWATCH_ERROR": es[0]["PORTWATCH_ERROR"], "PORTWATCH_ERROR_RAW": es[0]["PORTWATCH_ERROR_RAW"]}
	want := map[string]string{
		"MESSAGE":             `webhook refuse: dropped 1 events after a permanent failure: webhook refuse: HTTP 400 Bad Request: bad \\ \x1b[2J`,
		"PORTWATCH_ERROR":     `webhook refuse: HTTP 400 Bad Request: bad \\ \x1b[2J`,
		"PORTWATCH_ERROR_RAW": "webhook refuse: HTTP 400 Bad Request: bad \\ \x1b[2J",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dropped report (-want +got):\n%s", diff)
	}
}

// TestHelperJournaldRefusal runs inside the journal's namespace for
// TestJournaldRefusalEscapedOnce.
func TestHelperJournaldRefusal(t *testing.T) {
	if !journaltest.IsHelper() {
		t.Skip("helper process for TestJournaldRefusalEscapedOnce")
	}
	d, err := New(policy.Notify{Journald: true, Webhooks: []policy.Webhook{hook("refuse", "slack", os.Getenv("PORTWATCH_TEST_URL"))}},
		Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go d.Run(ctx)
	if err := d.Send([]Event{fixedEvent(1, TypeOpened, unexpected(4444, "x"))}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
}

// TestJournaldFallback: without a journal socket, each event is one logfmt
// line on stderr, hostile names included.
func TestJournaldFallback(t *testing.T) {
	var buf bytes.Buffer
	j := &journald{fallback: &buf, now: func() time.Time { return testTime }}
	events := []Event{fixedEvent(1, TypeOpened, unexpected(4444, hostile)), fixedEvent(2, TypeClosed, unexpected(4444, "x"))}
	if _, err := j.Notify(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	want := `time=2026-11-28T01:02:03Z level=warning msg="unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (comm \"x\\n<!channel>\\x1b[2J\", pid 812, user nobody, unit evil.service): no rule allows it" message_id=5afa4fee23b147b2b22acfaa78d21b10 address=0.0.0.0 comm="x\n<!channel>\x1b[2J" event=opened event_id=ev000000000000000000000000000001 exe=/tmp/x netns=host pid=812 port=4444 protocol=tcp reason="no rule allows it" rule=web severity=warning unit=evil.service user=nobody verdict=unexpected
time=2026-11-28T01:02:03Z level=notice msg="unexpected listener tcp 0.0.0.0:4444 closed, alert resolved (was held by /tmp/x (pid 812, user nobody, unit evil.service))" message_id=fe57518077e24d9891b541da0696cfea address=0.0.0.0 comm=x event=closed event_id=ev000000000000000000000000000002 exe=/tmp/x netns=host pid=812 port=4444 protocol=tcp reason="no rule allows it" rule=web severity=notice unit=evil.service user=nobody verdict=unexpected
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("fallback lines (-want +got):\n%s", diff)
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Errorf("%d lines, want 2", n)
	}
}

// TestCatalog: the shipped catalog documents every MESSAGE_ID, and nothing
// else.
func TestCatalog(t *testing.T) {
	data, err := os.ReadFile("../packaging/systemd/portwatchd.catalog")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(data), "\n") {
		if id, ok := strings.CutPrefix(line, "-- "); ok {
			got = append(got, strings.TrimSpace(id))
		}
	}
	want := []string{MessageIDOpened, MessageIDClosed, MessageIDChanged, MessageIDTest, MessageIDDropped, MessageIDOverflow, MessageIDOrphanSpool}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("catalog ids (-want +got):\n%s", diff)
	}

	// journalctl compiles it: --update-catalog in a scratch root.
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("journalctl not installed; catalog not compiled")
	}
	root := t.TempDir()
	dir := filepath.Join(root, "usr/lib/systemd/catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/systemd/catalog"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "portwatchd.catalog"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("journalctl", "--root="+root, "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command("journalctl", "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for _, id := range want {
		if !strings.Contains(string(out), id+" portwatchd: ") {
			t.Errorf("compiled catalog lacks %s:\n%s", id, out)
		}
	}
}
