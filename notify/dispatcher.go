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

// CONTRACT (owned by the notify work): the signatures of New, Send, Run,
// Reload, Drain, Test and NewEvent are used by cmd/portwatchd and must stay.

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
}

// sink is one webhook with its spool and its delivery worker.
type sink struct {
	name  string
	spool *spool
	wake  chan struct{} // one pending wake-up
	taken *accepted     // event ids fsynced into the spool, for Send's retries

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

func (s *sink) poke() {
	select {
	case s.wake <- struct{}{}:
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
	if ev.Severity == SeverityInfo || ev.Severity == "" {
		return false
	}
	if len(h.Events) > 0 && !slices.Contains(h.Events, shortType(ev.Type)) {
		return false
	}
	return severityOf(ev.Severity) >= h.MinSeverity
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
	var errs []error
	if j := d.journal.Load(); j != nil {
		d.jdTaken.reserve(len(events))
		if n, err := j.write(events, d.jdTaken); err != nil {
			errs = append(errs, &SinkError{Sink: "journald", Events: n, Err: err})
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
		n, err := s.spool.takeDropped()
		if n > 0 {
			d.report(MessageIDOverflow, journal.PriWarning,
				fmt.Sprintf("webhook %s: spool full (%d events), dropped the %d oldest", s.name, s.spool.max, n),
				map[string]string{"PORTWATCH_SINK": s.name, "PORTWATCH_DROPPED": strconv.FormatUint(n, 10)})
		}
		if err != nil {
			d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("spool full, and the oldest batch could not be removed")
		}
		s.poke()
	}
	return errors.Join(errs...)
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

// Run delivers spooled events until ctx ends or Drain stops the dispatcher.
// Whatever is not delivered stays spooled.
func (d *Dispatcher) Run(ctx context.Context) {
	d.mu.Lock()
	if d.stopped || d.runCtx != nil {
		d.mu.Unlock()
		return
	}
	d.runCtx = ctx
	for _, s := range d.sinks {
		d.start(ctx, s)
	}
	d.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-d.stopCh:
	}
	d.mu.Lock()
	d.runCtx = nil
	sinks := slices.Clone(d.sinks)
	d.mu.Unlock()
	for _, s := range sinks {
		stopWorker(s)
	}
}

// start runs the delivery worker of s under ctx. d.mu is held.
func (d *Dispatcher) start(ctx context.Context, s *sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.cancel, s.done = cancel, done
	go func() {
		defer close(done)
		d.deliver(wctx, s)
		s.mu.Lock()
		if s.done == done {
			s.cancel()
			s.cancel = nil
		}
		s.mu.Unlock()
	}()
}

// stopWorker cancels the worker of s, if one runs, and waits for it. An
// interrupted request leaves its batch in the spool.
func stopWorker(s *sink) {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Merge limits: how much one delivery may carry when the pending batches of
// a sink are merged (after an outage, or when events come faster than the
// receiver answers). Chat formats show the first events and count the rest
// ("… and N more"), so a long outage is a few messages, not one per
// snapshot. Generic and Alertmanager receivers get every event, so their
// requests stay smaller.
const (
	mergeEventsChat = 1000
	mergeEventsList = 500
	mergeBytesMax   = 4 << 20 // of spool files; the request body is about as large
)

func mergeLimit(format string) int {
	switch format {
	case "generic", "alertmanager":
		return mergeEventsList
	}
	return mergeEventsChat
}

// deliver is the one retry loop for every webhook. It merges the oldest
// pending batches (up to mergeLimit) into one delivery and sends it until it
// is accepted (2xx) or refused for good (another 4xx, or a redirect),
// waiting with exponential backoff and jitter, or as long as Retry-After
// says, between attempts. Spool entries are removed only once the delivery
// that carried them is accepted. It returns when ctx ends, or when the spool
// is empty while draining.
//
// While a chat delivery is retried, batches spooled in the meantime join it,
// so the message sent when the receiver is back covers the whole outage. A
// generic delivery is retried as it was first tried, so its webhook-id
// (derived from its event ids) stays the same on every retry, as Standard
// Webhooks wants. A merged delivery refused for good is split: its batches
// are tried one at a time, so that one bad batch cannot take the others with
// it.
func (d *Dispatcher) deliver(ctx context.Context, s *sink) {
	attempt := 0
	wait := func(delay time.Duration) bool {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var (
		cur    []*batch // the batches of the delivery in progress, in order
		frozen bool     // cur must be retried as it is
		split  []*batch // batches of a refused merge, to be tried one at a time
	)
	for ctx.Err() == nil {
		h, n := s.current()
		switch {
		case len(cur) == 0 && len(split) > 0:
			cur, split, frozen = []*batch{split[0]}, split[1:], true
		case len(cur) == 0 || !frozen:
			var after uint64
			events, size := 0, 0
			for _, b := range cur {
				events += len(b.Events)
				size += b.size
			}
			if len(cur) > 0 {
				after = cur[len(cur)-1].seq
			}
			more, err := s.spool.take(after, len(cur) == 0, mergeLimit(h.Format)-events, mergeBytesMax-size)
			d.reportCorrupt(s)
			if err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("read spool")
				if len(cur) == 0 {
					attempt++
					if !wait(d.backoff.delay(attempt)) {
						return
					}
					continue
				}
			}
			cur = append(cur, more...)
		}
		if len(cur) == 0 {
			if s.draining.Load() {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		var events []Event
		for _, b := range cur {
			events = append(events, b.Events...)
		}
		retry, err := n.Notify(ctx, events)
		if ctx.Err() != nil {
			// Stopped mid-request: the batches stay for the next start,
			// which may deliver them twice (with the same ids).
			return
		}
		if err == nil {
			attempt = 0
			if err := s.spool.remove(seqs(cur)...); err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("remove delivered batch")
			}
			cur, frozen = nil, false
			continue
		}
		if !retry {
			attempt = 0
			if len(cur) > 1 {
				d.log.WithFields(logrus.Fields{"sink": s.name, "batches": len(cur), "events": len(events), "error": err.Error()}).
					Warn("webhook refused a merged delivery; trying its batches one at a time")
				split = append(slices.Clone(cur[1:]), split...)
				cur, frozen = cur[:1:1], true
				continue
			}
			d.report(MessageIDDropped, journal.PriErr,
				fmt.Sprintf("webhook %s: dropped %d events after a permanent failure: %v", s.name, len(events), err),
				map[string]string{"PORTWATCH_SINK": s.name, "PORTWATCH_FORMAT": h.Format, "PORTWATCH_DROPPED": strconv.Itoa(len(events)), "PORTWATCH_ERROR": err.Error()})
			if err := s.spool.remove(seqs(cur)...); err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("remove refused batch")
			}
			cur, frozen = nil, false
			continue
		}
		if h.Format == "generic" {
			frozen = true
		}
		attempt++
		delay := d.backoff.delay(attempt)
		if ra := retryAfterOf(err); ra > 0 {
			delay = ra
		}
		d.log.WithFields(logrus.Fields{
			"sink": s.name, "attempt": attempt, "events": len(events), "retry_in": delay.Round(time.Millisecond).String(), "error": err.Error(),
		}).Warn("webhook delivery failed; will retry")
		if !wait(delay) {
			return
		}
	}
}

func seqs(bs []*batch) []uint64 {
	out := make([]uint64, len(bs))
	for i, b := range bs {
		out[i] = b.seq
	}
	return out
}

// Reload swaps in sinks built from cfg. Spools of sinks that remain are kept;
// the spool of a removed sink stays on disk and is reported. Everything that
// can fail is done before anything changes: on error the old sinks stay.
func (d *Dispatcher) Reload(cfg policy.Notify) error {
	var errs []error
	hooks := make(map[string]*webhook, len(cfg.Webhooks))
	for _, h := range cfg.Webhooks {
		if _, dup := hooks[h.Name]; dup {
			errs = append(errs, fmt.Errorf("webhook %s: defined twice", h.Name))
			continue
		}
		w, err := newWebhook(h, d.rt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hooks[h.Name] = w
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	d.mu.Lock()
	old := make(map[string]*sink, len(d.sinks))
	for _, s := range d.sinks {
		old[s.name] = s
	}
	d.mu.Unlock()
	spools := map[string]*spool{}
	for _, h := range cfg.Webhooks {
		if _, ok := old[h.Name]; ok {
			continue
		}
		sp, err := openSpool(filepath.Join(d.spoolRoot(), spoolDirName(h.Name)), cfg.SpoolSize)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: %w", h.Name, err))
			continue
		}
		spools[h.Name] = sp
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// Swap.
	if cfg.Journald {
		d.journal.Store(d.jd)
	} else {
		d.journal.Store(nil)
	}
	d.mu.Lock()
	var sinks, removed []*sink
	for _, h := range cfg.Webhooks {
		s, ok := old[h.Name]
		if ok {
			delete(old, h.Name)
			s.spool.mu.Lock()
			s.spool.max = spoolMax(cfg.SpoolSize)
			s.spool.mu.Unlock()
		} else {
			s = &sink{name: h.Name, spool: spools[h.Name], wake: make(chan struct{}, 1), taken: newAccepted()}
		}
		s.mu.Lock()
		s.hook, s.n = hooks[h.Name].hook, hooks[h.Name]
		s.mu.Unlock()
		sinks = append(sinks, s)
		if !ok && d.runCtx != nil {
			d.start(d.runCtx, s)
		}
	}
	for _, s := range old {
		removed = append(removed, s)
	}
	d.sinks = sinks
	d.mu.Unlock()
	for _, s := range removed {
		stopWorker(s)
	}
	for _, s := range sinks {
		d.reportCorrupt(s)
	}
	d.reportOrphans(cfg)
	return nil
}

func spoolMax(n int) int {
	if n <= 0 {
		return DefaultSpoolSize
	}
	return n
}

// reportOrphans reports every spool directory that holds events but belongs
// to no configured webhook. The events are kept: re-adding a webhook of the
// same name delivers them.
func (d *Dispatcher) reportOrphans(cfg policy.Notify) {
	des, err := os.ReadDir(d.spoolRoot())
	if err != nil {
		return
	}
	known := map[string]bool{}
	for _, h := range cfg.Webhooks {
		known[spoolDirName(h.Name)] = true
	}
	for _, de := range des {
		if !de.IsDir() || known[de.Name()] {
			continue
		}
		dir := filepath.Join(d.spoolRoot(), de.Name())
		n, err := pendingEvents(dir)
		if err != nil || n == 0 {
			continue
		}
		d.report(MessageIDOrphanSpool, journal.PriWarning,
			fmt.Sprintf("spool %s holds %d undelivered events for webhook %q, which is no longer configured; they are kept until a webhook of that name returns or the directory is removed", dir, n, de.Name()),
			map[string]string{"PORTWATCH_SINK": de.Name(), "PORTWATCH_PENDING": strconv.Itoa(n), "PORTWATCH_SPOOL": dir})
	}
}

// Drain waits up to grace for pending deliveries, then stops. Whatever is
// still pending stays in the spools for the next start. It may be called
// whether or not Run is running; after Drain, Send still spools but nothing
// is delivered.
func (d *Dispatcher) Drain(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	sinks := slices.Clone(d.sinks)
	for _, s := range sinks {
		s.draining.Store(true)
		s.poke()
		d.start(ctx, s) // no-op when Run's worker is running
	}
	d.mu.Unlock()
	for _, s := range sinks {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	for _, s := range sinks {
		stopWorker(s)
	}
	close(d.stopCh)
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
