package notify

import (
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/policy"
)

// TestAlertmanagerOwnerChange: exe is a label, so a listener.changed event is
// a new alert in Alertmanager. The alert of the previous owner must be
// resolved by the same message, or it would fire for ever.
func TestAlertmanagerOwnerChange(t *testing.T) {
	base := startAlertmanager(t)
	d, _ := startDispatcher(t, t.TempDir(), policy.Webhook{Name: "am", Format: "alertmanager", URL: base, Timeout: 10 * time.Second})
	before := unexpected(4445, "x")
	opened := NewEvent(TypeOpened, before, "web-1", time.Now().Add(-2*time.Second).Truncate(time.Millisecond))
	if err := d.Send([]Event{opened}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	waitAlerts(t, base, "exe", map[string]string{"/tmp/x": "active"})

	after := unexpected(4445, "y")
	after.Processes[0].Exe = "/tmp/y"
	changed := NewEvent(TypeChanged, after, "web-1", time.Now().Truncate(time.Millisecond))
	changed.Previous = &before
	if err := d.Send([]Event{changed}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	waitAlerts(t, base, "exe", map[string]string{"/tmp/x": "resolved", "/tmp/y": "active"})
}

// waitAlerts waits until Alertmanager shows, for each value of label in
// want, an alert that is active, or resolved (absent, or ended in the past).
func waitAlerts(t *testing.T, base, label string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := map[string]string{}
		for _, a := range getAlerts(t, base) {
			state := "active"
			if a.Status.State != "active" || !a.EndsAt.After(time.Now()) {
				state = "resolved"
			}
			got[a.Labels[label]] = state
		}
		ok := true
		for v, state := range want {
			g, seen := got[v]
			if !seen {
				g = "resolved"
			}
			if g != state {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts by %s after %v: %v, want %v", label, waitTimeout, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
