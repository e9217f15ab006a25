package notify

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/policy"
)

// testResendInterval is far below the 10s that validation allows, so that
// these tests take seconds: notify takes the typed value as it comes.
const testResendInterval = time.Second

// amHook is an alertmanager sink re-sending every testResendInterval.
func amHook(base string) policy.Webhook {
	return policy.Webhook{Name: "am", Format: "alertmanager", URL: base, Timeout: 10 * time.Second, ResendInterval: testResendInterval}
}

// waitActive waits until Alertmanager shows the alert of port as active and
// returns it.
func waitActive(t *testing.T, base, port string) amAlert {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, a := range getAlerts(t, base) {
			if a.Labels["port"] == port && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no active alert for port %s after %v: %+v", port, waitTimeout, getAlerts(t, base))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGone waits until Alertmanager no longer shows the alert of port as
// active (its API leaves out alerts whose endsAt has passed).
func waitGone(t *testing.T, base, port string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		active := false
		for _, a := range getAlerts(t, base) {
			if a.Labels["port"] == port && a.Status.State == "active" && a.EndsAt.After(time.Now()) {
				active = true
			}
		}
		if !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert for port %s still active after %v", port, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLifetime checks that a firing alert ends at most 4 resend intervals
// after it was last sent, which was before now: not 30 days later.
func checkLifetime(t *testing.T, a amAlert) {
	t.Helper()
	if limit := time.Now().Add(4 * testResendInterval); a.EndsAt.After(limit) {
		t.Errorf("endsAt %v is more than 4 resend intervals (%v) ahead", a.EndsAt, 4*testResendInterval)
	}
}

// TestAlertmanagerRestart: Alertmanager keeps alerts in memory only. After
// a restart while an alert fires, the next re-send brings it back, with the
// time it was first raised as its start.
func TestAlertmanagerRestart(t *testing.T) {
	am := runAlertmanager(t)
	d, _ := startDispatcher(t, t.TempDir(), amHook(am.base))
	opened := NewEvent(TypeOpened, unexpected(4446, "x"), "web-1", time.Now().Add(-time.Minute).Truncate(time.Millisecond))
	if err := d.Send([]Event{opened}); err != nil {
		t.Fatal(err)
	}
	d.SetFiring([]Event{opened})
	a := waitActive(t, am.base, "4446")
	checkLifetime(t, a)

	am.stop()
	am.start()
	restarted := time.Now()
	if as := getAlerts(t, am.base); len(as) != 0 {
		t.Fatalf("a restarted Alertmanager still has alerts: %+v", as)
	}
	a = waitActive(t, am.base, "4446")
	t.Logf("alert back %v after the restart (resend interval %v)", time.Since(restarted).Round(time.Millisecond), testResendInterval)
	if !a.StartsAt.Equal(opened.Time) {
		t.Errorf("startsAt %v after the restart, want the time it was raised, %v", a.StartsAt, opened.Time)
	}
	checkLifetime(t, a)
}

// TestAlertmanagerStopped: when portwatchd stops (or its host dies), nothing
// re-sends the alert, and Alertmanager resolves it once its endsAt, at most
// 4 intervals after the last re-send, has passed.
func TestAlertmanagerStopped(t *testing.T) {
	am := runAlertmanager(t)
	d, _ := startDispatcher(t, t.TempDir(), amHook(am.base))
	opened := NewEvent(TypeOpened, unexpected(4447, "x"), "web-1", time.Now().Truncate(time.Millisecond))
	if err := d.Send([]Event{opened}); err != nil {
		t.Fatal(err)
	}
	d.SetFiring([]Event{opened})
	checkLifetime(t, waitActive(t, am.base, "4447"))
	// Let a few re-sends go, then stop as portwatchd does.
	time.Sleep(3 * testResendInterval)
	d.Drain(time.Second)
	stopped := time.Now()
	for _, a := range getAlerts(t, am.base) {
		checkLifetime(t, a)
	}
	waitGone(t, am.base, "4447")
	t.Logf("alert resolved %v after the stop (resend interval %v)", time.Since(stopped).Round(time.Millisecond), testResendInterval)
}

// TestAlertmanagerResolveTime: a resolve ends the alert at the time the
// listener closed, as Alertmanager's own resolved notification shows.
func TestAlertmanagerResolveTime(t *testing.T) {
	rc := newReceiver(t, nil)
	am := runAlertmanagerWith(t, `route:
  receiver: hook
  group_wait: 100ms
  group_interval: 500ms
receivers:
  - name: hook
    webhook_configs:
      - url: `+rc.URL+`/
        send_resolved: true
`)
	d, _ := startDispatcher(t, t.TempDir(), amHook(am.base))
	dec := unexpected(4448, "x")
	opened := NewEvent(TypeOpened, dec, "web-1", time.Now().Add(-time.Minute).Truncate(time.Millisecond))
	if err := d.Send([]Event{opened}); err != nil {
		t.Fatal(err)
	}
	d.SetFiring([]Event{opened})
	waitActive(t, am.base, "4448")
	closedAt := time.Now().Add(-2 * time.Second).Truncate(time.Millisecond)
	if err := d.Send([]Event{NewEvent(TypeClosed, dec, "web-1", closedAt)}); err != nil {
		t.Fatal(err)
	}
	d.SetFiring(nil)
	type notification struct {
		Status string `json:"status"`
		Alerts []struct {
			Labels   map[string]string `json:"labels"`
			StartsAt time.Time         `json:"startsAt"`
			EndsAt   time.Time         `json:"endsAt"`
		} `json:"alerts"`
	}
	for n := 1; ; n++ {
		r := rc.waitRequests(t, n)[n-1]
		var nt notification
		if err := json.Unmarshal(r.Body, &nt); err != nil {
			t.Fatalf("decode Alertmanager's notification %s: %v", r.Body, err)
		}
		if nt.Status != "resolved" {
			continue
		}
		if len(nt.Alerts) != 1 {
			t.Fatalf("resolved notification with %d alerts, want 1: %s", len(nt.Alerts), r.Body)
		}
		a := nt.Alerts[0]
		if !a.EndsAt.Equal(closedAt) || !a.StartsAt.Equal(opened.Time) {
			t.Errorf("resolved alert from %v to %v, want from %v (raised) to %v (closed)", a.StartsAt, a.EndsAt, opened.Time, closedAt)
		}
		return
	}
}
