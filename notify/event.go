package notify

import (
	"context"
	"time"

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
	Severity string          `json:"severity"` // "warning", "notice" or "info"
	Message  string          `json:"message"`  // one readable line
	// Previous is, on a listener.changed event that replaces an alert in
	// force, the listener as it was alerted before: receivers that key
	// alerts on the owner (Alertmanager's exe label) resolve the old one.
	Previous *policy.Decision `json:"previous,omitempty"`
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

// NewEvent builds an event of type typ for decision d: it fills the id,
// severity and message.
func NewEvent(typ string, d policy.Decision, host string, now time.Time) Event {
	return Event{
		ID:       newID(),
		Type:     typ,
		Time:     now,
		Host:     host,
		Listener: d,
		Severity: severityFor(typ, d),
		Message:  message(typ, d, host),
	}
}
