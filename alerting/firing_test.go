package alerting

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/portwatchd/portwatchd/watcher"
)

// firingLine renders a FiringAlert for readable diffs.
func firingLine(f FiringAlert) string {
	s := describeListener(f.Decision.Listener) + " since " + f.AlertedAt.Sub(engT0).String()
	if !f.ClosedAt.IsZero() {
		s += " closed at " + f.ClosedAt.Sub(engT0).String()
	}
	return s
}

// TestFiring: Firing lists every alert in force, with the id of the event
// that raised it, until its resolve is sent; restarts keep them.
func TestFiring(t *testing.T) {
	e := New(nil)
	cfg := Config{Settings: engFlap30, Evaluator: allow22}
	ids := map[watcher.Key]string{}
	firing := func(at time.Duration, want ...string) {
		t.Helper()
		var got []string
		for _, f := range e.Firing() {
			got = append(got, firingLine(f))
			if f.EventID == "" || f.EventID != ids[f.Key] {
				t.Errorf("at %v: %s has event id %q, want %q, that of the event that raised it", at, firingLine(f), f.EventID, ids[f.Key])
			}
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("at %v: Firing() mismatch (-want +got):\n%s", at, diff)
		}
	}
	step := func(at time.Duration, s *watcher.Snapshot) {
		t.Helper()
		for _, em := range e.Step(s, cfg, engT0.Add(at)).Emit {
			if em.Type != "listener.closed" {
				ids[em.Decision.Key()] = em.EventID
			}
		}
	}

	firing(0)
	step(0, engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("tcp", 5555, procEvil2)))
	firing(0, "tcp 0.0.0.0:4444 since 0s", "tcp 0.0.0.0:5555 since 0s")
	// Closed, within the flap window: the resolve is not sent yet.
	step(time.Second, engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)))
	firing(time.Second, "tcp 0.0.0.0:4444 since 0s", "tcp 0.0.0.0:5555 since 0s closed at 1s")
	e = engRestart(t, e)
	firing(2*time.Second, "tcp 0.0.0.0:4444 since 0s", "tcp 0.0.0.0:5555 since 0s closed at 1s")
	step(3*time.Second, engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)))
	firing(3*time.Second, "tcp 0.0.0.0:4444 since 0s")
	// Another owner: a new alert, with a new event.
	l4444 := engL("tcp", 4444)
	old := ids[l4444.Key()]
	step(4*time.Second, engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil2)))
	step(5*time.Second, engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil2)))
	firing(5*time.Second, "tcp 0.0.0.0:4444 since 5s")
	if ids[l4444.Key()] == old {
		t.Errorf("the changed alert kept the event id of the first")
	}
	// Allowed by a reload: resolved, no longer firing.
	e.Reload(Config{Evaluator: engPolicy{allow: map[uint16]string{22: "", 4444: ""}}}, engT0.Add(6*time.Second))
	firing(6 * time.Second)
}
