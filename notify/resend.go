package notify

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Alertmanager keeps alerts in memory only and ends each at its endsAt, so,
// as Prometheus does, every alertmanager sink re-sends each alert still
// firing every resend_interval, with endsAt 4 intervals after the request
// (alertLifetime): a restarted Alertmanager has the alerts back within one
// interval, and if portwatchd stops or its host dies they resolve within
// about four. Re-sends go through the spool and the retry loop like any
// event, but a sink's spool holds at most one pending re-send (the newest
// replaces the one before), so an outage does not pile them up.
//
// Order matters: Alertmanager takes a firing alert that arrives after its
// resolve as firing again. So the closed event of an alert takes it out of
// the firing set before it is spooled, and a re-send reads the set and is
// spooled under the same lock: no re-send of an alert is ever spooled after
// its closed event.

// firing is the set of alerts in force, keyed by their Alertmanager
// identity (the label set).
type firing struct {
	mu     sync.Mutex
	alerts map[string]Event
	known  bool // SetFiring was called
}

// alertKey is the identity of the alert an event raises or resolves: its
// Alertmanager labels, in key order.
func alertKey(ev Event) string {
	labels := alertLabels(ev)
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// SetFiring sets the alerts in force: every alert raised and not yet
// resolved, persisted ones from before a restart included, each as the
// event that raised it (listener.opened or listener.changed, with its
// original id and time, which becomes startsAt). The daemon calls it at
// start and whenever its alert engine changes them. Alertmanager sinks
// re-send them every resend_interval; the first call re-sends at once,
// since Alertmanager may have lost them while portwatchd was down.
func (d *Dispatcher) SetFiring(events []Event) {
	m := make(map[string]Event, len(events))
	for _, ev := range events {
		if ev.Type == TypeOpened || ev.Type == TypeChanged {
			// A re-send carries the alert only: the previous owner's alert
			// was resolved when the change was first sent.
			ev.Previous = nil
			m[alertKey(ev)] = ev
		}
	}
	d.firing.mu.Lock()
	first := !d.firing.known
	d.firing.alerts, d.firing.known = m, true
	d.firing.mu.Unlock()
	if !first {
		return
	}
	d.mu.Lock()
	sinks := slices.Clone(d.sinks)
	d.mu.Unlock()
	for _, s := range sinks {
		signal(s.resendNow)
	}
}

// resolveFiring takes the alerts that events resolve out of the firing set:
// closed events, and the previous owner's alert of a changed event.
func (d *Dispatcher) resolveFiring(events []Event) {
	d.firing.mu.Lock()
	defer d.firing.mu.Unlock()
	for _, ev := range events {
		switch {
		case ev.Type == TypeClosed:
			delete(d.firing.alerts, alertKey(ev))
		case ev.Type == TypeChanged && ev.Previous != nil:
			prev := ev
			prev.Listener, prev.Previous = *ev.Previous, nil
			delete(d.firing.alerts, alertKey(prev))
		}
	}
}

// resendLoop re-sends the firing alerts of s every resend interval while s
// is an alertmanager sink, until ctx ends.
func (d *Dispatcher) resendLoop(ctx context.Context, s *sink) {
	last := time.Now()
	for {
		h, _ := s.current()
		var tick <-chan time.Time
		t := time.NewTimer(time.Until(last.Add(resendInterval(h))))
		if h.Format == "alertmanager" {
			tick = t.C
		}
		now := true
		select {
		case <-ctx.Done():
			now = false
		case <-s.reconf: // the format or the interval may have changed
			now = false
		case <-s.resendNow:
		case <-tick:
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
		if now {
			last = time.Now()
			d.resend(s)
		}
	}
}

// resend spools one re-send of the firing alerts s takes, replacing the
// re-send still pending, if any.
func (d *Dispatcher) resend(s *sink) {
	h, _ := s.current()
	if h.Format != "alertmanager" || s.draining.Load() {
		return
	}
	d.firing.mu.Lock()
	var sel []Event
	for _, k := range slices.Sorted(maps.Keys(d.firing.alerts)) {
		if ev := d.firing.alerts[k]; accepts(h, ev) {
			sel = append(sel, ev)
		}
	}
	err := s.spool.resend(sel)
	d.firing.mu.Unlock()
	if err != nil {
		d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("spool the re-send of the firing alerts")
		return
	}
	d.reportDropped(s)
	s.poke()
}
