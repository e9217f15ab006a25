package notify

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func TestNewEvent(t *testing.T) {
	plain := unexpected(4444, "x")
	v6 := unexpected(22, "x")
	v6.Address = netip.MustParseAddr("::")
	v6.Netns = "container:abc"
	none := unexpected(4444, "x")
	none.Processes = []watcher.Process{}
	renamed := unexpected(4444, "sshd")
	spoofed := unexpected(4444, "x")
	spoofed.Processes = []watcher.Process{spoofed.Processes[0]}
	spoofed.Processes[0].ExeUnverified = true
	deleted := unexpected(4444, "x")
	deleted.Processes = []watcher.Process{deleted.Processes[0]}
	deleted.Processes[0].ExeUnverified, deleted.Processes[0].ExeDeleted = true, true
	noExe := unexpected(4444, "x")
	noExe.Processes = []watcher.Process{noExe.Processes[0]}
	noExe.Processes[0].Exe, noExe.Processes[0].ExeUnverified = "", true
	crit := critical(4444)
	legacy := unexpected(4444, "x") // alerted before severities: none set
	legacy.Severity = policy.SeverityInfo
	warnFlags := unexpected(4444, "x")
	warnFlags.Severity = policy.SeverityWarning
	warnFlags.Processes[0].Flags = []watcher.Flag{watcher.FlagRootUnprivilegedPort, "made_up\x1b[2J", watcher.FlagExeUnpackaged}
	type row struct {
		name     string
		typ      string
		d        policy.Decision
		severity string
		message  string
	}
	// warnOpened is a row for an unexpected listener opened: a warning.
	warnOpened := func(name string, d policy.Decision, message string) row {
		return row{name: name, typ: TypeOpened, d: d, severity: "warning", message: message}
	}
	tests := []row{
		warnOpened("opened unexpected", plain,
			"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"),
		warnOpened("renamed process shows its comm", renamed,
			`unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (comm "sshd", pid 812, user nobody, unit evil.service): no rule allows it`),
		warnOpened("unverified exe", spoofed,
			"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (unverified) (pid 812, user nobody, unit evil.service): no rule allows it"),
		warnOpened("deleted exe", deleted,
			"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (deleted) (pid 812, user nobody, unit evil.service): no rule allows it"),
		warnOpened("unreadable exe shows the comm, not marked", noExe,
			"unexpected listener tcp 0.0.0.0:4444 opened by x (pid 812, user nobody, unit evil.service): no rule allows it"),
		warnOpened("ipv6 in a container", v6,
			"unexpected listener tcp [::]:22 in netns container:abc opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"),
		warnOpened("unattributed", none,
			"unexpected listener tcp 0.0.0.0:4444 opened by an unattributed process: no rule allows it"),
		{name: "changed", typ: TypeChanged, d: plain, severity: "warning",
			message: "unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "closed after alert", typ: TypeClosed, d: plain, severity: "notice",
			message: "unexpected listener tcp 0.0.0.0:4444 closed, alert resolved (was held by /tmp/x (pid 812, user nobody, unit evil.service))"},
		{name: "allowed", typ: TypeOpened, d: allowed(22), severity: "info",
			message: "allowed listener tcp 0.0.0.0:22 opened by /usr/sbin/sshd (pid 812, user nobody, unit evil.service): rule ssh: remote administration"},
		{name: "allowed closed", typ: TypeClosed, d: allowed(22), severity: "info",
			message: "allowed listener tcp 0.0.0.0:22 closed (was held by /usr/sbin/sshd (pid 812, user nobody, unit evil.service))"},
		warnOpened("hostile", unexpected(4444, hostile),
			`unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (comm "x\n<!channel>\x1b[2J", pid 812, user nobody, unit evil.service): no rule allows it`),
		{name: "critical opened", typ: TypeOpened, d: crit, severity: "critical",
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service, +1 more) [flags: exe_gone, exe_in_writable_dir, session_launched]: rule web names no exe: and does not accept exe_gone, exe_in_writable_dir"},
		{name: "critical changed", typ: TypeChanged, d: crit, severity: "critical",
			message: "unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service, +1 more) [flags: exe_gone, exe_in_writable_dir, session_launched]: rule web names no exe: and does not accept exe_gone, exe_in_writable_dir"},
		{name: "critical resolved is a notice", typ: TypeClosed, d: crit, severity: "notice",
			message: "unexpected listener tcp 0.0.0.0:4444 closed, alert resolved (was held by /tmp/x (pid 812, user nobody, unit evil.service, +1 more) [flags: exe_gone, exe_in_writable_dir, session_launched])"},
		// Flags in AllFlags order; a name that is not a flag is never shown.
		warnOpened("warning with low flags", warnFlags,
			"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service) [flags: exe_unpackaged, root_unprivileged_port]: no rule allows it"),
		warnOpened("unexpected without a severity is a warning", legacy,
			"unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"),
		{name: "test", typ: TypeTest, d: policy.Decision{}, severity: "notice", message: "portwatchd test notification from web-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := NewEvent(tt.typ, tt.d, "web-1", testTime)
			got := struct{ Severity, Message string }{ev.Severity.String(), ev.Message}
			want := struct{ Severity, Message string }{tt.severity, tt.message}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("NewEvent (-want +got):\n%s", diff)
			}
			if len(ev.ID) != 32 || ev.Type != tt.typ || !ev.Time.Equal(testTime) || ev.Host != "web-1" {
				t.Errorf("id %q type %q time %v host %q", ev.ID, ev.Type, ev.Time, ev.Host)
			}
			if strings.ContainsAny(ev.Message, "\n\r\x1b\x00") {
				t.Errorf("message holds control characters: %q", ev.Message)
			}
		})
	}
	if a, b := NewEvent(TypeOpened, plain, "h", testTime), NewEvent(TypeOpened, plain, "h", testTime); a.ID == b.ID {
		t.Errorf("two events share id %s", a.ID)
	}
}

func TestAccepts(t *testing.T) {
	warn := NewEvent(TypeOpened, unexpected(1, "x"), "h", testTime)
	closed := NewEvent(TypeClosed, unexpected(1, "x"), "h", testTime)
	info := NewEvent(TypeOpened, allowed(22), "h", testTime)
	test := NewEvent(TypeTest, policy.Decision{}, "h", testTime)
	crit := NewEvent(TypeOpened, critical(1), "h", testTime)
	critClosed := NewEvent(TypeClosed, critical(1), "h", testTime)
	tests := []struct {
		name string
		hook policy.Webhook
		ev   Event
		want bool
	}{
		{name: "warning to default hook", ev: warn, want: true},
		{name: "info never to webhooks", ev: info, want: false},
		{name: "info not even with min info", hook: policy.Webhook{MinSeverity: policy.SeverityInfo}, ev: info, want: false},
		{name: "closed to default hook", ev: closed, want: true},
		{name: "min warning drops notice", hook: policy.Webhook{MinSeverity: policy.SeverityWarning}, ev: closed, want: false},
		{name: "events filter", hook: policy.Webhook{Events: []string{"opened", "changed"}}, ev: closed, want: false},
		{name: "events filter passes", hook: policy.Webhook{Events: []string{"closed"}}, ev: closed, want: true},
		{name: "critical to default hook", ev: crit, want: true},
		{name: "min warning passes critical", hook: policy.Webhook{MinSeverity: policy.SeverityWarning}, ev: crit, want: true},
		{name: "min critical passes critical", hook: policy.Webhook{MinSeverity: policy.SeverityCritical}, ev: crit, want: true},
		{name: "min critical drops warning", hook: policy.Webhook{MinSeverity: policy.SeverityCritical}, ev: warn, want: false},
		{name: "min critical drops a critical one's resolve", hook: policy.Webhook{MinSeverity: policy.SeverityCritical}, ev: critClosed, want: false},
		{name: "test goes everywhere", hook: policy.Webhook{Events: []string{"opened"}, MinSeverity: policy.SeverityWarning}, ev: test, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := accepts(tt.hook, tt.ev); got != tt.want {
				t.Errorf("accepts = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMessageEscapesOnce follows a hostile executable path from the policy's
// verdict to the event's message: every part is escaped once, where the
// message is built, so "\x1b" reads "\x1b" and not "\\x1b".
func TestMessageEscapesOnce(t *testing.T) {
	cfg, err := policy.Parse("p.yaml", []byte("version: 1\nallow:\n  - name: ssh\n    port: 22\n    exe: /usr/sbin/sshd\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := unexpected(4444, "a").Listener
	l.Processes[0].Exe = "/tmp/a\x1bb"
	l.Processes[0].User = "no\nbody"
	d := cfg.Evaluate(l, testTime)
	got := NewEvent(TypeOpened, d, "web-1", testTime).Message
	want := `unexpected listener tcp 0.0.0.0:4444 opened by /tmp/a\x1bb (comm "a", pid 812, user no\nbody, unit evil.service): ` +
		`no rule allows tcp 0.0.0.0:4444 (pid 812 /tmp/a\x1bb, user no\nbody); closest: rule "ssh" (p.yaml:3) wants port 22, exe /usr/sbin/sshd`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("message mismatch (-want +got):\n%s", diff)
	}
}

func TestNewEventOptions(t *testing.T) {
	plain := unexpected(4444, "x")
	inNetns := unexpected(22, "x")
	inNetns.Netns = "vpn\x1b"
	prev := allowed(4444)
	nowAllowed := allowed(22)
	nowAllowed.Rule = "port-22"
	nowIgnored := plain
	nowIgnored.Verdict = policy.Ignored
	tests := []struct {
		name     string
		typ      string
		d        policy.Decision
		opts     []EventOption
		message  string
		previous *policy.Decision
		id       string
	}{
		{name: "none", typ: TypeOpened, d: plain,
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "note", typ: TypeOpened, d: plain, opts: []EventOption{WithNote("reminder: open since 2026-11-28T01:02:03Z")},
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it (reminder: open since 2026-11-28T01:02:03Z)"},
		{name: "empty note", typ: TypeOpened, d: plain, opts: []EventOption{WithNote("")},
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "previous", typ: TypeChanged, d: plain, opts: []EventOption{WithPrevious(&prev)}, previous: &prev,
			message: "unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "nil previous", typ: TypeChanged, d: plain, opts: []EventOption{WithPrevious(nil)},
			message: "unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "now allowed", typ: TypeClosed, d: plain, opts: []EventOption{WithNowJudged(nowAllowed, "config reloaded")},
			message: `listener tcp 0.0.0.0:4444 is now allowed by rule "port-22" (config reloaded); alert resolved`},
		{name: "now ignored, in a netns", typ: TypeClosed, d: inNetns, opts: []EventOption{WithNowJudged(nowIgnored, "owner changed"), WithNote("x")},
			message: `listener tcp 0.0.0.0:22 in netns vpn\x1b is now ignored (owner changed); alert resolved`},
		{name: "id", typ: TypeOpened, d: plain, opts: []EventOption{WithID("ev1")}, id: "ev1",
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "transient", typ: TypeOpened, d: plain, opts: []EventOption{WithTransient(Transient{Lifetime: 12345678})},
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service) for 12.35ms (transient, already closed): no rule allows it"},
		{name: "transient, close unseen", typ: TypeOpened, d: plain, opts: []EventOption{WithTransient(Transient{Lifetime: 2500 * time.Microsecond, AtMost: true})},
			message: "unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service) for at most 2.5ms (transient, already closed): no rule allows it"},
		{name: "transient closed", typ: TypeClosed, d: plain, opts: []EventOption{WithTransient(Transient{Lifetime: 12345678})},
			message: "unexpected listener tcp 0.0.0.0:4444 closed after 12.35ms (transient), alert resolved (was held by /tmp/x (pid 812, user nobody, unit evil.service))"},
		{name: "transient ignored on changed", typ: TypeChanged, d: plain, opts: []EventOption{WithTransient(Transient{Lifetime: time.Millisecond})},
			message: "unexpected listener tcp 0.0.0.0:4444 changed owner to /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it"},
		{name: "transient summary", typ: TypeOpened, d: plain, opts: []EventOption{WithTransient(Transient{Lifetime: 40 * time.Microsecond,
			Summary: &TransientSummary{Count: 9950, PortLow: 4440, PortHigh: 4449, Since: time.Date(2026, 12, 4, 4, 41, 2, 0, time.UTC), Alerted: 20}})},
			message: "9950 more unexpected transient listeners (already closed) opened by /tmp/x (pid 812, user nobody, unit evil.service) on tcp port 4440-4449 in the host since 04:41:02, after 20 alerted one by one; the last 0.0.0.0:4444 for 40µs: no rule allows it"},
		{name: "hostile note", typ: TypeOpened, d: plain, opts: []EventOption{WithNote("a\nb")},
			message: `unexpected listener tcp 0.0.0.0:4444 opened by /tmp/x (pid 812, user nobody, unit evil.service): no rule allows it (a\nb)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := NewEvent(tt.typ, tt.d, "web-1", testTime, tt.opts...)
			if diff := cmp.Diff(tt.message, ev.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			if tt.id != "" && ev.ID != tt.id || tt.id == "" && len(ev.ID) != 32 {
				t.Errorf("id = %q, want %q (or a fresh one when empty)", ev.ID, tt.id)
			}
			if (ev.Transient != nil) != strings.Contains(tt.message, "transient") {
				t.Errorf("Transient = %+v for message %q", ev.Transient, ev.Message)
			}
			if ev.Previous != tt.previous {
				t.Errorf("previous = %v, want %v", ev.Previous, tt.previous)
			}
		})
	}
}
