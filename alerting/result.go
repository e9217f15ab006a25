package alerting

import (
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// What the engine gives out: the events of a Step and the like, the
// figures, and the alerts in force.

// Emission is one event the engine wants sent. The daemon turns it into a
// notify.Event with notify.NewEvent.
type Emission struct {
	Type     string // notify.TypeOpened, TypeClosed or TypeChanged
	Decision policy.Decision
	// NowJudged, when set, is how a listener still open is judged now that
	// its alert is resolved (allowed by a rule, or ignored), and Why says
	// what changed: the type alone would mislead (notify.WithNowJudged).
	NowJudged *policy.Decision
	Why       string
	// Note, when set, is added to the message in parentheses.
	Note string
	// ClosedAt, when set, is when the listener of a resolved alert closed:
	// the resolve comes flap_window later, and its time is the close's (an
	// Alertmanager alert ends then).
	ClosedAt time.Time
	// Transient, when set on a resolve, is how long the listener lived: it
	// closed so soon that the kernel's close event resolved it at once
	// (ResolveClosed).
	Transient *notify.Transient
	// Previous is, for a change of an alert in force, the decision that
	// was alerted before.
	Previous *policy.Decision
	// EventID, when set, is the id the event must carry: that of an event
	// that raises an alert, which Firing reports with the alert. Other
	// events take a fresh id.
	EventID string
	// ExposureChanged is set on the events of Rejudge: the listener's
	// exposure changed, ExposureBefore being the one it had (nil when not
	// known) and Decision.Exposure the new one (notify.WithExposureBefore).
	ExposureChanged bool
	ExposureBefore  *exposure.Exposure
	// SeverityChanged is set on the listener.changed event of an alerted
	// listener whose severity changed with the same owners (its holder's
	// flags changed: the executable deleted under it), SeverityBefore being
	// the severity it was alerted with (notify.WithSeverityBefore).
	SeverityChanged bool
	SeverityBefore  policy.Severity
}

// Result is what one Step or Reload of the engine produced.
type Result struct {
	Emit []Emission
	// StateChanged says the persisted alert state changed and must be saved.
	StateChanged bool
}

// Stats are the figures portwatchd reports: the daemon's STATUS and start
// line, and check. A listener is one listening socket, one row of
// `portwatchd list`: sockets that share an address and port (SO_REUSEPORT)
// each count, although the engine judges and alerts them together as one
// key. Unexpected counts the listeners judged unexpected.
//
// In the engine's figures Unexpected also counts those held back for
// attribution that would be unexpected as they are now: the figures say what
// is there, the alert waits until it is sure. (So at startup a kernel socket
// is counted in the summary line although its alert comes a few snapshots
// later.)
type Stats struct {
	Listeners, Unexpected, Namespaces int
}

// Count adds n listening sockets judged v to the figures.
func (s *Stats) Count(n int, v policy.Verdict) {
	s.Listeners += n
	if v == policy.Unexpected {
		s.Unexpected += n
	}
}

// FiringAlert is an alert in force: raised and not resolved.
type FiringAlert struct {
	Key watcher.Key
	// Decision is the listener as alerted, as the resolve will carry it.
	Decision policy.Decision
	// AlertedAt is when the alert was raised; a change of owners raises
	// a new one.
	AlertedAt time.Time
	// EventID is the id of the event that raised it; empty for an alert
	// persisted by a version that did not record it.
	EventID string
	// ClosedAt is zero while the listener is open; else the listener
	// closed then, and the resolve waits out flap_window.
	ClosedAt time.Time
}

// Firing returns every alert in force, in key order: those whose listener
// is open, and those whose listener closed within flap_window, whose
// resolve is not sent yet. Receivers that forget alerts (Alertmanager keeps
// them in memory) are sent these again.
func (e *Engine) Firing() []FiringAlert {
	out := make([]FiringAlert, 0, len(e.alerts))
	for _, k := range sortedKeys(e.alerts) {
		a := e.alerts[k]
		out = append(out, FiringAlert{Key: k, Decision: a.Decision, AlertedAt: a.AlertedAt, EventID: a.EventID, ClosedAt: a.ClosedAt})
	}
	return out
}

// Stats returns the figures after the last Step or Reload.
func (e *Engine) Stats() Stats { return e.stats }

// count sets the figures from the tracks and the number of namespaces in
// the last snapshot.
func (e *Engine) count(namespaces int) {
	s := Stats{Namespaces: namespaces}
	for _, t := range e.tracks {
		s.Count(t.sockets, t.dec.Verdict)
	}
	e.stats = s
}
