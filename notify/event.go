package notify

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
)

// Event types.
const (
	TypeOpened  = "listener.opened"
	TypeClosed  = "listener.closed"
	TypeChanged = "listener.changed"
	TypeTest    = "test"
)

// Event is one thing that happened to a listener, as delivered to sinks.
type Event struct {
	ID       string          `json:"id"` // unique, and stable across retries
	Type     string          `json:"type"`
	Time     time.Time       `json:"time"`
	Host     string          `json:"host"`
	Listener policy.Decision `json:"listener"`
	// Severity is "critical" or "warning" for an unexpected listener that
	// opens or changes hands, "notice" for its resolve and for a test,
	// "info" for allowed and ignored listeners (see severityFor).
	Severity policy.Severity `json:"severity"`
	Message  string          `json:"message"` // one readable line
	// Previous is, on a listener.changed event that replaces an alert in
	// force, the listener as it was alerted before: receivers that key
	// alerts on the owner (Alertmanager's exe label) resolve the old one.
	Previous *policy.Decision `json:"previous,omitempty"`
	// Transient is set on the listener.opened event of a listener that had
	// closed before any snapshot could see it, reported from the kernel's
	// event (WithTransient): no alert stays in force for it, nothing will
	// resolve it. It is also set on the listener.closed event that resolves
	// at once, from the kernel's close event, the alert on a listener that a
	// snapshot saw and that closed soon after.
	Transient *Transient `json:"transient,omitempty"`
	// ExposureBefore is, on the listener.changed event of a change of
	// exposure (WithExposureBefore), the exposure the listener had before;
	// Listener.Exposure is the new one. Absent when it was not known.
	ExposureBefore *exposure.Exposure `json:"exposure_before,omitempty"`
	// ExposureChanged says the event is that of a change of exposure.
	ExposureChanged bool `json:"exposure_changed,omitempty"`
	// SeverityBefore is, on the listener.changed event of an alerted
	// listener whose severity changed with the same owners
	// (WithSeverityBefore), the severity it was alerted with: its
	// executable deleted under it makes a warning critical.
	SeverityBefore *policy.Severity `json:"severity_before,omitempty"`
}

// Transient says how long a transient listener lived.
type Transient struct {
	// Lifetime is from listen() or bind() to the socket's close, or, when
	// the close was not seen (UDP), to when the daemon found it gone.
	Lifetime time.Duration `json:"lifetime_ns"`
	// AtMost says the close was not seen: Lifetime is an upper bound.
	AtMost bool `json:"lifetime_at_most"`
	// Summary, when set, makes the event stand for many transient
	// listeners of one program that were not alerted one by one (a storm);
	// the event's listener and lifetime are those of the last of them.
	Summary *TransientSummary `json:"summary,omitempty"`
}

// TransientSummary counts the transient listeners of one program that an
// event stands for.
type TransientSummary struct {
	Count    int       `json:"count"`     // listeners summarised, the event's own included
	PortLow  uint16    `json:"port_low"`  // the lowest port among them
	PortHigh uint16    `json:"port_high"` // the highest
	Since    time.Time `json:"since"`     // when the first of them opened
	Alerted  int       `json:"alerted"`   // listeners of the program alerted one by one before them, since Since
}

// String is the lifetime as the message shows it: "12ms", "at most 3ms".
func (t Transient) String() string {
	s := t.Lifetime.Round(lifetimeRound(t.Lifetime)).String()
	if t.AtMost {
		s = "at most " + s
	}
	return s
}

// lifetimeRound keeps two or three significant digits.
func lifetimeRound(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return time.Millisecond
	case d >= time.Millisecond:
		return 10 * time.Microsecond
	}
	return time.Microsecond
}

// Notifier delivers a batch of events, produced by one snapshot, to one sink.
// When err is not nil, retry says whether trying again may succeed.
type Notifier interface {
	Notify(ctx context.Context, events []Event) (retry bool, err error)
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(ctx context.Context, events []Event) (bool, error)

// Notify calls f.
func (f NotifierFunc) Notify(ctx context.Context, events []Event) (bool, error) {
	return f(ctx, events)
}

// NewEvent builds an event of type typ for decision d: it fills the id and
// the severity, and writes the message, with every part that a process or a
// config chose escaped once (textesc). Options add what the type and the
// decision do not say.
func NewEvent(typ string, d policy.Decision, host string, now time.Time, opts ...EventOption) Event {
	var o eventOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.id == "" {
		o.id = NewID()
	}
	ev := Event{
		ID:       o.id,
		Type:     typ,
		Time:     now,
		Host:     host,
		Listener: d,
		Severity: severityFor(typ, d),
		Previous: o.previous,
	}
	switch {
	case o.transient != nil && typ == TypeOpened:
		ev.Transient = o.transient
		ev.Message = transientMessage(d, *o.transient)
	case o.transient != nil && typ == TypeClosed:
		ev.Transient = o.transient
		ev.Message = transientClosedMessage(d, *o.transient)
	case o.now != nil:
		ev.Message = nowJudgedMessage(d, *o.now, o.why)
	case o.exposureChanged && typ == TypeChanged:
		ev.ExposureChanged, ev.ExposureBefore = true, o.exposureBefore
		ev.Message = exposureChangedMessage(d, o.exposureBefore)
	case o.severityBefore != nil && typ == TypeChanged:
		ev.SeverityBefore = o.severityBefore
		ev.Message = severityChangedMessage(d, *o.severityBefore)
	default:
		ev.Message = message(typ, d, host)
		if o.note != "" {
			ev.Message += " (" + textesc.Line(o.note) + ")"
		}
	}
	return ev
}

// EventOption adds to an event what its type and decision do not say.
type EventOption func(*eventOptions)

type eventOptions struct {
	id       string
	note     string
	previous *policy.Decision
	now      *policy.Decision
	why      string

	transient *Transient

	exposureChanged bool
	exposureBefore  *exposure.Exposure

	severityBefore *policy.Severity
}

// WithSeverityBefore marks a listener.changed event as that of an alerted
// listener whose severity changed while its owners did not, before being
// the severity it was alerted with, and writes its message: "unexpected
// listener tcp 0.0.0.0:4444 (held by /tmp/x ...) is now critical, was
// warning: ...". Other types ignore it.
func WithSeverityBefore(before policy.Severity) EventOption {
	return func(o *eventOptions) { o.severityBefore = &before }
}

// WithExposureBefore marks a listener.changed event as that of a change of
// the listener's exposure, before being what it was (nil: not known), and
// writes its message: "unexpected listener tcp 0.0.0.0:5432 (held by ...)
// is now open, was filtered by inet filter input policy: no rule allows
// it". Other types ignore it.
func WithExposureBefore(before *exposure.Exposure) EventOption {
	return func(o *eventOptions) { o.exposureChanged, o.exposureBefore = true, before }
}

// WithTransient marks a listener.opened event as that of a transient
// listener, one that closed before any snapshot saw it, and writes its
// message with the lifetime: "unexpected listener tcp 0.0.0.0:4444 opened
// by /tmp/x (pid 812, user nobody) for 12ms (transient, already closed): no
// rule allows it". On a listener.closed event it says how long the
// listener lived: "unexpected listener tcp 0.0.0.0:4444 closed after 12ms
// (transient), alert resolved (was held by ...)". Other types ignore it.
func WithTransient(t Transient) EventOption {
	return func(o *eventOptions) { o.transient = &t }
}

// WithID gives the event the id id instead of a fresh random one: that of
// an alert's event, for receivers that key on it. An empty id sets nothing.
func WithID(id string) EventOption { return func(o *eventOptions) { o.id = id } }

// WithNote adds note to the message, in parentheses ("reminder: open since
// ..."). An empty note adds nothing.
func WithNote(note string) EventOption { return func(o *eventOptions) { o.note = note } }

// WithPrevious sets Event.Previous: on a listener.changed event that
// replaces an alert in force, the decision alerted before. nil sets nothing.
func WithPrevious(prev *policy.Decision) EventOption {
	return func(o *eventOptions) { o.previous = prev }
}

// WithNowJudged writes the message of a listener.closed event that resolves
// the alert on a listener still open but no longer unexpected: it is now
// judged as now (allowed by a rule, or ignored), because of why ("config
// reloaded", "owner changed"). It replaces any note.
func WithNowJudged(now policy.Decision, why string) EventOption {
	return func(o *eventOptions) { o.now, o.why = &now, why }
}

// nowJudgedMessage is the message of a resolve for a listener that is still
// open but no longer unexpected.
func nowJudgedMessage(alerted, now policy.Decision, why string) string {
	verdict := string(now.Verdict)
	if now.Verdict == policy.Allowed {
		verdict = "allowed by rule " + strconv.Quote(now.Rule)
	}
	return fmt.Sprintf("listener %s is now %s (%s); alert resolved", endpoint(alerted.Listener), verdict, textesc.Line(why))
}
