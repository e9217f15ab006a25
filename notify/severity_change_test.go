package notify

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestSeverityChanged: the listener.changed event of an alert whose
// severity rose with the same owners says both severities and the flags
// that made it, carries severity_before, and for Alertmanager resolves the
// alert as it was labelled (warning) while it raises the critical one.
func TestSeverityChanged(t *testing.T) {
	p := watcher.Process{PID: 812, Comm: "x", Exe: "/tmp/x", ExeDeleted: true, User: "nobody",
		Flags: []watcher.Flag{watcher.FlagExeGone, watcher.FlagExeInWritableDir}}
	d := policy.Decision{Listener: watcher.Listener{Protocol: "tcp", Family: watcher.IPv4, Address: netip.IPv4Unspecified(), Port: 4444,
		Netns: watcher.HostNetns, Processes: []watcher.Process{p}}, Verdict: policy.Unexpected, Severity: policy.SeverityCritical,
		Reason: "no rule allows it", Flags: []watcher.Flag{watcher.FlagExeGone, watcher.FlagExeInWritableDir}}
	prev := d
	prev.Severity, prev.Flags = policy.SeverityWarning, nil
	prev.Listener.Processes = []watcher.Process{{PID: 812, Comm: "x", Exe: "/tmp/x", User: "nobody"}}
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := NewEvent(TypeChanged, d, "h", now, WithPrevious(&prev), WithSeverityBefore(policy.SeverityWarning))
	want := "unexpected listener tcp 0.0.0.0:4444 (held by /tmp/x (deleted) (pid 812, user nobody) [flags: exe_gone, exe_in_writable_dir]) is now critical, was warning: no rule allows it"
	if ev.Message != want {
		t.Errorf("message\n got %q\nwant %q", ev.Message, want)
	}
	if ev.Severity != policy.SeverityCritical || ev.SeverityBefore == nil || *ev.SeverityBefore != policy.SeverityWarning {
		t.Errorf("severity %s, before %v; want critical, warning", ev.Severity, ev.SeverityBefore)
	}
	if f := eventFields(ev); f["PORTWATCH_SEVERITY"] != "critical" {
		t.Errorf("PORTWATCH_SEVERITY = %q, want critical", f["PORTWATCH_SEVERITY"])
	}
	now2 := now.Add(time.Second)
	body, err := buildAlertmanager([]Event{ev}, policy.Webhook{Format: "alertmanager"}, now2)
	if err != nil {
		t.Fatal(err)
	}
	var firing, resolved bool
	for _, a := range decodeAlerts(t, body) {
		switch {
		case a.Labels["severity"] == "critical" && a.EndsAt.After(now2):
			firing = true
		case a.Labels["severity"] == "warning" && a.EndsAt.Equal(now):
			resolved = true
		}
	}
	if !firing || !resolved {
		t.Errorf("Alertmanager body: critical firing %v, warning resolved %v; want both\n%s", firing, resolved, body)
	}
}

// decodeAlerts reads an Alertmanager request body.
func decodeAlerts(t *testing.T, body []byte) []amAlert {
	t.Helper()
	var as []amAlert
	if err := json.Unmarshal(body, &as); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	return as
}
