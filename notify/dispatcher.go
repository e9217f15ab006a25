package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/policy"
)

// Options configure a Dispatcher.
type Options struct {
	// StateDir holds one spool directory per webhook sink, under
	// StateDir/spool/<sink name>.
	StateDir string
	// Log is the operational log (delivery failures, dropped events). It is
	// not where alerts go. Default: a logrus logger writing to Stderr.
	Log logrus.FieldLogger
	// Stderr receives the logfmt fallback of the journald sink when there is
	// no journal socket. Default os.Stderr.
	Stderr io.Writer
	// BackoffBase and BackoffCap shape the retry delays; zero means
	// DefaultBackoffBase and DefaultBackoffCap. Tests shorten them.
	BackoffBase, BackoffCap time.Duration
	// Transport, when set, replaces the HTTP transport of every webhook.
	Transport http.RoundTripper
	// Observe, when set, is told the outcome of every delivery to a sink
	// (journald or a webhook's name), with the events it carried: one of
	// the Delivery results. It is called from the delivery goroutines and
	// must not block. The daemon's metrics count them.
	Observe func(sink, result string, events int)
}

// Delivery results given to Options.Observe.
const (
	DeliveryOK       = "ok"       // the sink took the events
	DeliveryFailed   = "failed"   // a failure; the events are retried
	DeliveryRefused  = "refused"  // refused for good; the events are dropped
	DeliveryOverflow = "overflow" // dropped from a full spool (spool_size)
)

// observe calls Options.Observe when set.
func (d *Dispatcher) observe(sink, result string, events int) {
	if d.opts.Observe != nil {
		d.opts.Observe(sink, result, events)
	}
}

// Dispatcher fans events out to every configured sink: the journald sink
// synchronously, and webhooks through their durable spools and the retry
// loop.
type Dispatcher struct {
	opts    Options
	log     logrus.FieldLogger
	backoff backoff
	rt      http.RoundTripper
	jd      *journald // built once: journal.Enabled is checked at New
	jdTaken *accepted // event ids written to the journal, for Send's retries

	journal atomic.Pointer[journald] // nil when notify.journald is false

	mu      sync.Mutex
	sinks   []*sink // in config order
	runCtx  context.Context
	stopped bool
	stopCh  chan struct{} // closed by Drain

	firing firing // alerts in force, for the alertmanager re-sends
}

// sink is one webhook with its spool and its delivery worker.
type sink struct {
	name      string
	spool     *spool
	wake      chan struct{} // one pending wake-up
	resendNow chan struct{} // one pending re-send of the firing alerts
	reconf    chan struct{} // one pending notice that Reload changed hook
	taken     *accepted     // event ids fsynced into the spool, for Send's retries

	mu       sync.Mutex
	hook     policy.Webhook
	n        Notifier
	cancel   context.CancelFunc // of the running worker; nil when none runs
	done     chan struct{}      // closed when the worker returns
	draining atomic.Bool
}

func (s *sink) current() (policy.Webhook, Notifier) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hook, s.n
}

func newSink(name string, sp *spool) *sink {
	return &sink{
		name: name, spool: sp, taken: newAccepted(),
		wake: make(chan struct{}, 1), resendNow: make(chan struct{}, 1), reconf: make(chan struct{}, 1),
	}
}

// poke wakes the delivery worker of s.
func (s *sink) poke() { signal(s.wake) }

// signal makes a send on c, a channel of one pending item, unless one is
// pending already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// accepts applies the routing rules: test events go everywhere; info events
// (allowed listeners) never go to webhooks; then the sink's events: list and
// min_severity.
func accepts(h policy.Webhook, ev Event) bool {
	if ev.Type == TypeTest {
		return true
	}
	if ev.Severity <= policy.SeverityInfo {
		return false
	}
	if len(h.Events) > 0 && !slices.Contains(h.Events, shortType(ev.Type)) {
		return false
	}
	return ev.Severity >= h.MinSeverity
}

// New builds the sinks for cfg. It opens (and recovers) each webhook's spool
// under opts.StateDir, so events pending from a previous run are delivered.
func New(cfg policy.Notify, opts Options) (*Dispatcher, error) {
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Log == nil {
		l := logrus.New()
		l.SetOutput(opts.Stderr)
		opts.Log = l
	}
	if opts.StateDir == "" && len(cfg.Webhooks) > 0 {
		return nil, errors.New("notify: no state directory for the webhook spools")
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.BackoffCap <= 0 {
		opts.BackoffCap = DefaultBackoffCap
	}
	if opts.BackoffCap < opts.BackoffBase {
		opts.BackoffCap = opts.BackoffBase
	}
	d := &Dispatcher{
		opts:    opts,
		log:     opts.Log,
		backoff: backoff{base: opts.BackoffBase, cap: opts.BackoffCap},
		rt:      opts.Transport,
		jd:      newJournald(opts.Stderr),
		jdTaken: newAccepted(),
		stopCh:  make(chan struct{}),
	}
	if d.rt == nil {
		d.rt = newTransport()
	}
	if err := d.Reload(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Dispatcher) spoolRoot() string { return filepath.Join(d.opts.StateDir, "spool") }

// spoolDirName makes a sink name safe as a directory name.
func spoolDirName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '.' && i > 0) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// SinkError is the failure of one sink in Send: the journal could not be
// written, or a webhook's spool could not store the batch.
type SinkError struct {
	Sink   string // "journald" or the webhook's name
	Events int    // events the sink did not take
	Err    error  // names the sink; never holds a URL
}

func (e *SinkError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *SinkError) Unwrap() error { return e.Err }

// Send hands one snapshot's events to every sink. It returns once the events
// are written to journald and fsynced into every webhook spool; delivery
// happens in the background, started by Run.
//
// Send is idempotent per sink. When some sinks fail, the error joins one
// *SinkError per failed sink, and the caller sends the same events again
// later: each sink remembers the ids it took, so only the sinks that failed
// get them then. Nothing is written twice to the journal or spooled twice
// for a webhook.
func (d *Dispatcher) Send(events []Event) error {
	if len(events) == 0 {
		return nil
	}
	// Before anything is spooled: no re-send of an alert may follow its
	// resolve into a spool.
	d.resolveFiring(events)
	var errs []error
	if j := d.journal.Load(); j != nil {
		d.jdTaken.reserve(len(events))
		if n, err := j.write(events, d.jdTaken); err != nil {
			errs = append(errs, &SinkError{Sink: "journald", Events: n, Err: err})
			d.observe("journald", DeliveryFailed, n)
		} else {
			d.observe("journald", DeliveryOK, len(events))
		}
	}
	d.mu.Lock()
	sinks := slices.Clone(d.sinks)
	d.mu.Unlock()
	for _, s := range sinks {
		h, _ := s.current()
		s.taken.reserve(len(events))
		var sel []Event
		for _, ev := range events {
			if accepts(h, ev) && !s.taken.has(ev.ID) {
				sel = append(sel, ev)
			}
		}
		if len(sel) == 0 {
			continue
		}
		if err := s.spool.append(sel); err != nil {
			errs = append(errs, &SinkError{Sink: s.name, Events: len(sel), Err: fmt.Errorf("webhook %s: %w", s.name, err)})
			continue
		}
		s.taken.add(ids(sel)...)
		d.reportDropped(s)
		s.poke()
	}
	return errors.Join(errs...)
}

// reportDropped reports the events the spool of s dropped to stay within
// spool_size since the last call.
func (d *Dispatcher) reportDropped(s *sink) {
	n, err := s.spool.takeDropped()
	if n > 0 {
		d.observe(s.name, DeliveryOverflow, int(n))
		d.report(MessageIDOverflow, journal.PriWarning,
			fmt.Sprintf("webhook %s: spool full (%d events), dropped the %d oldest", s.name, s.spool.max, n),
			map[string]string{"PORTWATCH_SINK": s.name, "PORTWATCH_DROPPED": strconv.FormatUint(n, 10)})
	}
	if err != nil {
		d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("spool full, and the oldest events could not be removed")
	}
}

// ids returns the ids of events, nil for none.
func ids(events []Event) []string {
	var s []string
	for _, ev := range events {
		s = append(s, ev.ID)
	}
	return s
}

// reportCorrupt reports the batches of s that were set aside because they
// could not be read or decoded: their events are lost.
func (d *Dispatcher) reportCorrupt(s *sink) {
	for _, c := range s.spool.takeCorrupt() {
		d.report(MessageIDDropped, journal.PriErr,
			fmt.Sprintf("webhook %s: spool file unreadable, its events are lost (kept as %s): %v", s.name, c.path, c.err),
			map[string]string{"PORTWATCH_SINK": s.name, "PORTWATCH_SPOOL": c.path, "PORTWATCH_ERROR": c.err.Error()})
	}
}

// report writes a delivery problem to the journal (or its stderr fallback)
// with a catalogued MESSAGE_ID, or to the operational log when the journald
// sink is off.
func (d *Dispatcher) report(id string, p journal.Priority, msg string, fields map[string]string) {
	if j := d.journal.Load(); j != nil {
		if err := j.report(id, p, msg, fields); err == nil {
			return
		}
	}
	lf := logrus.Fields{"message_id": id}
	for k, v := range fields {
		lf[strings.ToLower(strings.TrimPrefix(k, "PORTWATCH_"))] = v
	}
	if p <= journal.PriErr {
		d.log.WithFields(lf).Error(msg)
		return
	}
	d.log.WithFields(lf).Warn(msg)
}

// Pending returns the number of events waiting in each webhook's spool.
func (d *Dispatcher) Pending() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]int, len(d.sinks))
	for _, s := range d.sinks {
		_, n := s.spool.len()
		m[s.name] = n
	}
	return m
}

// Result is the outcome of a test delivery to one sink.
type Result struct {
	Sink string
	Err  error // nil means ok; never contains the URL
}

// Test sends a test event through every sink directly (not through the
// spool) and reports each outcome. Each webhook gets one attempt.
func (d *Dispatcher) Test(ctx context.Context, ev Event) []Result {
	var rs []Result
	if j := d.journal.Load(); j != nil {
		_, err := j.Notify(ctx, []Event{ev})
		rs = append(rs, Result{Sink: "journald", Err: err})
	}
	d.mu.Lock()
	sinks := slices.Clone(d.sinks)
	d.mu.Unlock()
	for _, s := range sinks {
		_, n := s.current()
		_, err := n.Notify(ctx, []Event{ev})
		rs = append(rs, Result{Sink: s.name, Err: err})
	}
	return rs
}
