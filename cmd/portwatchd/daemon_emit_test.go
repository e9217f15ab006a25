package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestDaemonStateNotSavedWhileUnsent: when one sink cannot take an alert
// (its spool directory is replaced by a file), the alert state is not saved,
// so that a crash then a restart alerts again instead of losing the alert;
// the next ticks resend only to that sink, and once it takes the event the
// state is saved.
func TestDaemonStateNotSavedWhileUnsent(t *testing.T) {
	state := t.TempDir()
	var logBuf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logBuf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logBuf.String())
		}
	})
	// Nothing runs the dispatcher: events stay in the spools, which is what
	// the test counts.
	hooks := []policy.Webhook{
		{Name: "ok", Format: "generic", URL: "http://127.0.0.1:1/", Timeout: time.Second},
		{Name: "broken", Format: "slack", URL: "http://127.0.0.1:1/", Timeout: time.Second},
	}
	disp, err := notify.New(policy.Notify{Webhooks: hooks}, notify.Options{StateDir: state, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: log, host: "web-1", stateDir: state, eng: alerting.New(nil), disp: disp}
	// No rules: every listener is unexpected.
	cfg := alerting.Config{Evaluator: &policy.Config{}}
	snap := &watcher.Snapshot{
		Listeners: []watcher.Listener{{
			Protocol: watcher.TCP, Family: watcher.IPv4, Address: netip.IPv4Unspecified(), Port: 4444, Netns: watcher.HostNetns,
			Processes: []watcher.Process{{PID: 200, Comm: "x", Exe: "/tmp/x", User: "nobody"}},
		}},
		Namespaces: []watcher.Namespace{{Name: watcher.HostNetns, Inspected: true}},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	// Break the broken sink's spool: a file where its directory was. This
	// fails for root too, unlike a chmod.
	spoolDir := filepath.Join(state, "spool", "broken")
	if err := os.Rename(spoolDir, spoolDir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spoolDir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}

	stateSaved := func() bool {
		_, err := os.Stat(filepath.Join(state, alerting.StateFileName))
		return err == nil
	}
	for i := range 3 {
		now := t0.Add(time.Duration(i) * time.Second)
		d.emit(d.eng.Step(snap, cfg, now), now)
		if stateSaved() {
			t.Fatalf("tick %d: alert state saved while the broken sink has not taken the alert", i)
		}
		if len(d.unsent) != 1 {
			t.Fatalf("tick %d: %d unsent events, want 1", i, len(d.unsent))
		}
		// The sink that took it is not sent it again.
		if diff := cmp.Diff(map[string]int{"ok": 1, "broken": 0}, disp.Pending()); diff != "" {
			t.Fatalf("tick %d: pending (-want +got):\n%s", i, diff)
		}
	}
	if !strings.Contains(logBuf.String(), "webhook broken: spool") {
		t.Errorf("the failing sink is not named in the log:\n%s", logBuf.String())
	}
	if n := strings.Count(logBuf.String(), "send events;"); n != 1 {
		t.Errorf("the same failure logged %d times in 3 ticks, want once", n)
	}

	// A crash now: the restarted daemon alerts again.
	alerts, err := alerting.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if r := alerting.New(alerts).Step(snap, cfg, t0.Add(time.Minute)); len(r.Emit) != 1 || r.Emit[0].Type != notify.TypeOpened {
		t.Errorf("after a restart: %v, want the alert again", r.Emit)
	}

	// The sink recovers: only it gets the event, and the state is saved.
	if err := os.Remove(spoolDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(spoolDir+".away", spoolDir); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(3 * time.Second)
	d.emit(d.eng.Step(snap, cfg, now), now)
	if diff := cmp.Diff(map[string]int{"ok": 1, "broken": 1}, disp.Pending()); diff != "" {
		t.Errorf("pending after recovery (-want +got):\n%s", diff)
	}
	if len(d.unsent) != 0 {
		t.Errorf("%d events unsent after recovery", len(d.unsent))
	}
	alerts, err = alerting.LoadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 {
		t.Errorf("saved state holds %d alerts, want 1", len(alerts))
	}
	if r := alerting.New(alerts).Step(snap, cfg, t0.Add(time.Minute)); len(r.Emit) != 0 {
		t.Errorf("after a restart: %v, want no repeat", r.Emit)
	}
}
