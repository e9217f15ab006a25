package notify

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/policy"
)

// CONTRACT (owned by the notify work): the signatures in this file are used by
// cmd/portwatchd and must stay; bodies are placeholders.

// Options configure a Dispatcher.
type Options struct {
	// StateDir holds one spool directory per webhook sink.
	StateDir string
	// Log is the operational log (delivery failures, dropped events). It is
	// not where alerts go.
	Log logrus.FieldLogger
}

// Dispatcher fans events out to every configured sink: the journald sink
// synchronously, and webhooks through their durable spools and the retry
// loop.
type Dispatcher struct{}

// New builds the sinks for cfg. It opens (and recovers) each webhook's spool
// under opts.StateDir, so events pending from a previous run are delivered.
func New(cfg policy.Notify, opts Options) (*Dispatcher, error) {
	return nil, errors.New("not implemented")
}

// Send hands one snapshot's events to every sink. It returns once the events
// are written to journald and fsynced into every webhook spool; delivery
// happens in the background, started by Run.
func (d *Dispatcher) Send(events []Event) error { return errors.New("not implemented") }

// Run delivers spooled events until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {}

// Reload swaps in sinks built from cfg. Spools of sinks that remain are kept;
// the spool of a removed sink stays on disk and is reported.
func (d *Dispatcher) Reload(cfg policy.Notify) error { return errors.New("not implemented") }

// Drain waits up to grace for pending deliveries, then stops. Whatever is
// still pending stays in the spools for the next start.
func (d *Dispatcher) Drain(grace time.Duration) {}

// Result is the outcome of a test delivery to one sink.
type Result struct {
	Sink string
	Err  error // nil means ok; never contains the URL
}

// Test sends a test event through every sink directly (not through the
// spool) and reports each outcome.
func (d *Dispatcher) Test(ctx context.Context, ev Event) []Result { return nil }

// NewEvent builds an event of type typ for decision d: it fills the id,
// severity and message.
func NewEvent(typ string, d policy.Decision, host string, now time.Time) Event {
	return Event{Type: typ, Listener: d, Host: host, Time: now}
}
