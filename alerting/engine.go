package alerting

import (
	"slices"
	"time"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// Evaluator is the part of a policy the engine uses; *policy.Config is one.
type Evaluator interface {
	Evaluate(l watcher.Listener, now time.Time) policy.Decision
}

// Config is the policy in force, as the engine sees it.
type Config struct {
	policy.Settings
	Evaluator
	// ExpiredBetween, when set, reports whether a rule expired after from
	// and at or before to (policy.Config.ExpiredBetween): every listener is
	// then judged again, at the first Step at or after the expiry. When
	// nil, they are judged again every ReevaluateEvery.
	ExpiredBetween func(from, to time.Time) bool
}

// ReevaluateEvery is how often every listener is evaluated again even when
// nothing changed, so that a rule passing its expires: date takes effect,
// when the config cannot say when its rules expire (Config.ExpiredBetween).
const ReevaluateEvery = time.Minute

// attributionMargin is how many snapshots the engine waits, beyond
// watcher.AttributionTicks, for a new listener to be attributed.
const attributionMargin = 1

// track is what the engine knows about one key that is open now.
type track struct {
	l       watcher.Listener // last seen with the confirmed owners
	owners  watcher.Owners   // confirmed owners
	pending *watcher.Owners  // owners seen once, waiting for the next snapshot to agree
	// dec is the verdict on l; while not announced, the provisional one
	// (for the figures only).
	dec policy.Decision
	// announced is false for a new key still waiting to be attributed.
	announced  bool
	unknownFor int  // snapshots seen unattributed while not announced
	atStart    bool // open at the first snapshot (every track of the first Step is)
	// flip is set when l's holders changed, owners staying the same, and
	// the verdict with them: the next snapshot must agree.
	flip bool
	// sockets is how many listening sockets share the key (SO_REUSEPORT).
	sockets int
	seen    uint64 // the last Step that saw the key
}

// Engine is the alert engine. It is not safe for concurrent use.
type Engine struct {
	alerts map[watcher.Key]*Alert // persisted
	tracks map[watcher.Key]*track
	steps  uint64 // full Steps taken (a settled Step does not count)
	// last is the Listeners of the last full Step, and settled says that
	// Step left every track as it found it and nothing has changed a
	// track since: a Step given the same slice again (the watcher hands it
	// out again when nothing changed) would decide nothing, and is skipped.
	last    []watcher.Listener
	settled bool
	// unseen says some alert in force may have no track: persisted from
	// before a restart, in a namespace no snapshot has inspected since.
	unseen   bool
	lastFull time.Time
	stats    Stats
}

// New returns an engine starting from the persisted alerts (which it
// then owns and updates).
func New(alerts map[watcher.Key]*Alert) *Engine {
	if alerts == nil {
		alerts = map[watcher.Key]*Alert{}
	}
	return &Engine{alerts: alerts, tracks: map[watcher.Key]*track{}, unseen: len(alerts) > 0}
}

// Step takes one snapshot and returns the events it gives.
//
// A key the engine tracks, or has an alert on, that snap does not contain
// has closed, unless snap could not inspect its namespace: what could not
// be seen is unknown, and stays as it was.
func (e *Engine) Step(snap *watcher.Snapshot, cfg Config, now time.Time) Result {
	var r Result
	if !e.settled || !watcher.SameListeners(snap.Listeners, e.last) {
		e.observeAll(&r, snap, cfg, now)
	}
	e.expirePending(&r, cfg, now)
	e.remind(&r, cfg, now)
	if cfg.ExpiredBetween == nil && now.Sub(e.lastFull) >= ReevaluateEvery ||
		cfg.ExpiredBetween != nil && cfg.ExpiredBetween(e.lastFull, now) {
		e.reevaluate(&r, cfg, now, "policy re-evaluated")
	}
	e.stats.Namespaces = len(snap.Namespaces)
	return r
}

// observeAll is the full Step: every key of snap is observed, and those it
// lacks are closed. It notes whether the engine is settled: every key
// observed quietly (nothing to decide, nothing waiting for the next
// snapshot), none closed.
func (e *Engine) observeAll(r *Result, snap *watcher.Snapshot, cfg Config, now time.Time) {
	first := e.steps == 0
	e.steps++
	quiet, seen := !e.unseen, 0
	for l, n := range watcher.ByKey(snap.Listeners) {
		seen++
		k := l.Key()
		t := e.tracks[k]
		if t == nil {
			t = &track{atStart: first}
			e.tracks[k] = t
		}
		if t.sockets != n {
			quiet = false
		}
		t.seen, t.sockets = e.steps, n
		quiet = e.observe(r, k, t, l, cfg, now) && quiet
	}
	if closed := e.closeUnseen(snap, cfg, now, first); len(closed.Emit) > 0 || closed.StateChanged {
		// What closed is told before what opened: a key that passes
		// from one listener to another reads as a close, then an open.
		r.Emit = append(closed.Emit, r.Emit...)
		r.StateChanged = r.StateChanged || closed.StateChanged
		quiet = false
	}
	if first {
		e.lastFull = now
	}
	// A track left unseen in a blind namespace must be looked at again.
	e.last, e.settled = snap.Listeners, quiet && len(e.tracks) == seen
	e.count(len(snap.Namespaces))
}

// closeUnseen closes the keys that the snapshot of this step lacks, but
// for those in a namespace it could not inspect; and resolves the alerts
// persisted from before a restart whose key it lacks, likewise.
func (e *Engine) closeUnseen(snap *watcher.Snapshot, cfg Config, now time.Time, first bool) Result {
	var r Result
	var gone []watcher.Key
	for k, t := range e.tracks {
		if t.seen != e.steps {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 && !e.unseen {
		return r // the steady state: no namespace to look up
	}
	blind := blindNetns(snap)
	gone = slices.DeleteFunc(gone, func(k watcher.Key) bool { return blind[k.Netns] })
	slices.SortFunc(gone, watcher.Key.Compare)
	for _, k := range gone {
		e.closed(&r, k, cfg, now)
	}
	if e.unseen {
		// Alerted before a restart and not seen since: closed while we
		// were down, or unknown while its namespace cannot be inspected.
		// (One closed before the restart is resolved at once: the
		// restart ends its flap window. Later, alerts closed with no
		// track are just waiting out theirs.)
		e.unseen = false
		for _, k := range sortedKeys(e.alerts) {
			if a := e.alerts[k]; e.tracks[k] != nil || (!first && !a.ClosedAt.IsZero()) {
				continue
			}
			if blind[k.Netns] {
				e.unseen = true
				continue
			}
			e.resolve(&r, k, nil, "")
		}
	}
	return r
}

// blindNetns returns the Key.Netns of the namespaces snap could not
// inspect, or nil when it inspected them all.
func blindNetns(snap *watcher.Snapshot) map[string]bool {
	var blind map[string]bool
	for i := range snap.Namespaces {
		if ns := &snap.Namespaces[i]; !ns.Inspected {
			if blind == nil {
				blind = map[string]bool{}
			}
			blind[ns.KeyNetns()] = true
		}
	}
	return blind
}

// Reload evaluates every current listener again under a new policy.
func (e *Engine) Reload(cfg Config, now time.Time) Result {
	var r Result
	e.settled = false
	e.reevaluate(&r, cfg, now, "config reloaded")
	return r
}

// observe handles a key present in this snapshot. It reports whether it
// was quiet: it changed nothing and waits for nothing, so that observing
// the same l again would be quiet too.
func (e *Engine) observe(r *Result, k watcher.Key, t *track, l watcher.Listener, cfg Config, now time.Time) (quiet bool) {
	if t.announced && t.pending == nil && len(l.Processes) > 0 && sameHolders(&t.l, &l) {
		quiet = !t.flip
		t.l, t.flip = l, false // the steady state: nothing to decide
		return quiet
	}
	o := watcher.OwnersOf(&l)
	if !t.announced {
		if !o.Known {
			t.unknownFor++
			if t.unknownFor <= watcher.AttributionTicks(&l)+attributionMargin {
				t.l, t.dec = l, cfg.Evaluate(l, now)
				return false
			}
		}
		e.announce(r, k, t, l, o, cfg, now)
		return false
	}
	if !o.Known {
		return t.pending == nil && !t.flip // hold the confirmed owners
	}
	if o.Equal(t.owners) {
		// Other holders, the same owners: rules also match unit,
		// container, comm and cmdline, so judge again.
		t.pending = nil
		e.rejudge(r, k, t, l, cfg, now)
		return false
	}
	t.flip = false
	if t.pending == nil || !o.Equal(*t.pending) {
		t.pending = &o
		return false
	}
	// Two snapshots agree: the owners changed.
	wasKnown := t.owners.Known
	t.l, t.owners, t.pending = l, o, nil
	t.dec = cfg.Evaluate(l, now)
	a := e.openAlert(k)
	if !wasKnown {
		// First attribution of a listener judged unattributed: not a
		// change of hands, just a better view of the same one.
		switch {
		case t.dec.Verdict == policy.Unexpected && a == nil:
			e.raise(r, k, notify.TypeOpened, t, now, "")
		case t.dec.Verdict == policy.Unexpected:
			a.setOwners(o)
			r.StateChanged = true
		case a != nil:
			e.resolve(r, k, &t.dec, "now attributed")
		}
		return false
	}
	switch {
	case t.dec.Verdict == policy.Unexpected:
		e.raise(r, k, notify.TypeChanged, t, now, "")
	case a != nil:
		e.resolve(r, k, &t.dec, "owner changed")
		if t.dec.Verdict == policy.Allowed && cfg.LogAllowed {
			r.Emit = append(r.Emit, Emission{Type: notify.TypeChanged, Decision: t.dec})
		}
	case t.dec.Verdict == policy.Allowed && cfg.LogAllowed:
		r.Emit = append(r.Emit, Emission{Type: notify.TypeChanged, Decision: t.dec})
	}
	return false
}

// rejudge judges t again with its holders now those of l, its owners being
// the same. A verdict that flips between unexpected and not waits for the
// next snapshot to agree; one that does not is taken silently.
func (e *Engine) rejudge(r *Result, k watcher.Key, t *track, l watcher.Listener, cfg Config, now time.Time) {
	dec := cfg.Evaluate(l, now)
	if (dec.Verdict == policy.Unexpected) == (t.dec.Verdict == policy.Unexpected) {
		a := e.openAlert(k)
		// An alert state written before severities has info for all:
		// no change can be told from it.
		if a == nil || a.Decision.Severity == policy.SeverityInfo || dec.Severity == a.Decision.Severity {
			t.l, t.dec, t.flip = l, dec, false
			return
		}
		// Alerted, and its severity changed with the same owners: as
		// a verdict flip, once the next snapshot agrees (t.l is kept
		// until then, so that it is judged again).
		if !t.flip {
			t.flip = true
			return
		}
		t.l, t.dec, t.flip = l, dec, false
		before := a.Decision.Severity
		e.raise(r, k, notify.TypeChanged, t, now, "severity changed")
		em := &r.Emit[len(r.Emit)-1]
		em.SeverityChanged, em.SeverityBefore = true, before
		return
	}
	if !t.flip {
		t.flip = true
		return
	}
	t.l, t.dec, t.flip = l, dec, false
	a := e.openAlert(k)
	switch {
	case a == nil && dec.Verdict == policy.Unexpected:
		e.raise(r, k, notify.TypeOpened, t, now, "holder changed")
	case a != nil && dec.Verdict != policy.Unexpected:
		e.resolve(r, k, &dec, "holder changed")
	}
}

// announce judges a key for the first time since it opened (or since the
// daemon started).
func (e *Engine) announce(r *Result, k watcher.Key, t *track, l watcher.Listener, o watcher.Owners, cfg Config, now time.Time) {
	t.announced, t.l, t.owners, t.pending = true, l, o, nil
	t.dec = cfg.Evaluate(l, now)
	if a := e.alerts[k]; a != nil {
		unexpected := t.dec.Verdict == policy.Unexpected
		switch {
		case a.ClosedAt.IsZero() && unexpected && (!o.Known || o.Equal(a.owners())):
			return // alerted before a restart and still the same: nothing new
		case a.ClosedAt.IsZero() && unexpected && !a.Known:
			// Alerted unattributed before a restart, attributed now: not a
			// change of hands, just a better view of the same listener
			// (as in observe).
			a.setOwners(o)
			r.StateChanged = true
			return
		case a.ClosedAt.IsZero() && unexpected:
			e.raise(r, k, notify.TypeChanged, t, now, "")
			return
		case a.ClosedAt.IsZero():
			e.resolve(r, k, &t.dec, "since the last run")
			return
		case unexpected && slices.Equal(a.Exes, o.Exes) && now.Sub(a.ClosedAt) < cfg.FlapWindow:
			// Flap: the alert was never resolved, and is in force again.
			a.ClosedAt = time.Time{}
			r.StateChanged = true
			return
		default:
			e.resolve(r, k, nil, "")
		}
	}
	switch {
	case t.dec.Verdict == policy.Unexpected:
		e.raise(r, k, notify.TypeOpened, t, now, "")
	case t.dec.Verdict == policy.Allowed && cfg.LogAllowed && !t.atStart:
		r.Emit = append(r.Emit, Emission{Type: notify.TypeOpened, Decision: t.dec})
	}
}

// closed handles a key gone in this snapshot.
func (e *Engine) closed(r *Result, k watcher.Key, cfg Config, now time.Time) {
	t := e.tracks[k]
	delete(e.tracks, k)
	if a := e.openAlert(k); a != nil {
		if cfg.FlapWindow > 0 {
			a.ClosedAt = now
			r.StateChanged = true
		} else {
			e.resolve(r, k, nil, "")
		}
		return
	}
	if t != nil && t.announced && t.dec.Verdict == policy.Allowed && cfg.LogAllowed {
		r.Emit = append(r.Emit, Emission{Type: notify.TypeClosed, Decision: t.dec})
	}
}

// expirePending sends the resolves that waited out the flap window.
func (e *Engine) expirePending(r *Result, cfg Config, now time.Time) {
	due := e.alertsWhere(func(k watcher.Key, a *Alert) bool {
		return e.waiting(k, a) && now.Sub(a.ClosedAt) >= cfg.FlapWindow
	})
	for _, k := range due {
		e.resolve(r, k, nil, "")
	}
}

// remind sends repeat_interval reminders for alerts still open.
func (e *Engine) remind(r *Result, cfg Config, now time.Time) {
	if cfg.RepeatInterval <= 0 {
		return
	}
	due := e.alertsWhere(func(_ watcher.Key, a *Alert) bool {
		return a.ClosedAt.IsZero() && now.Sub(a.LastSent) >= cfg.RepeatInterval
	})
	for _, k := range due {
		a := e.alerts[k]
		a.LastSent = now
		r.StateChanged = true
		r.Emit = append(r.Emit, Emission{
			Type:     notify.TypeOpened,
			Decision: a.Decision,
			Note:     "reminder: open since " + a.AlertedAt.UTC().Format(time.RFC3339),
		})
	}
}

// alertsWhere returns the keys of the alerts for which f is true, in key
// order. It runs every tick, so it sorts only what it found.
func (e *Engine) alertsWhere(f func(watcher.Key, *Alert) bool) []watcher.Key {
	var keys []watcher.Key
	for k, a := range e.alerts {
		if f(k, a) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, watcher.Key.Compare)
	return keys
}

// reevaluate judges every announced listener again.
func (e *Engine) reevaluate(r *Result, cfg Config, now time.Time, why string) {
	e.lastFull = now
	defer e.count(e.stats.Namespaces)
	for _, k := range sortedKeys(e.tracks) {
		t := e.tracks[k]
		t.dec = cfg.Evaluate(t.l, now)
		if !t.announced {
			continue // provisional, for the figures
		}
		a := e.openAlert(k)
		switch {
		case a != nil && t.dec.Verdict != policy.Unexpected:
			e.resolve(r, k, &t.dec, why)
		case a == nil && t.dec.Verdict == policy.Unexpected:
			e.raise(r, k, notify.TypeOpened, t, now, why)
		}
	}
}

// raise records and emits an alert for t.
func (e *Engine) raise(r *Result, k watcher.Key, typ string, t *track, now time.Time, note string) {
	var prev *policy.Decision
	if a := e.openAlert(k); a != nil && typ == notify.TypeChanged {
		d := a.Decision
		prev = &d
	}
	a := &Alert{
		Decision:  t.dec,
		AlertedAt: now,
		LastSent:  now,
		EventID:   notify.NewID(),
	}
	a.setOwners(t.owners)
	e.alerts[k] = a
	r.StateChanged = true
	r.Emit = append(r.Emit, Emission{Type: typ, Decision: t.dec, Note: note, Previous: prev, EventID: a.EventID})
}

// resolve emits the resolved event of the alert on k and forgets it.
func (e *Engine) resolve(r *Result, k watcher.Key, now *policy.Decision, why string) {
	a := e.alerts[k]
	delete(e.alerts, k)
	r.StateChanged = true
	if now != nil {
		c := *now // the track's decision changes with later snapshots
		now = &c
	}
	r.Emit = append(r.Emit, Emission{Type: notify.TypeClosed, Decision: a.Decision, NowJudged: now, Why: why, ClosedAt: a.ClosedAt})
}

// openAlert returns the alert on k if it is in force (not closed).
func (e *Engine) openAlert(k watcher.Key) *Alert {
	if a := e.alerts[k]; a != nil && a.ClosedAt.IsZero() {
		return a
	}
	return nil
}

// waiting reports whether a, the alert on k, is waiting out flap_window:
// its listener closed and has not reopened since.
func (e *Engine) waiting(k watcher.Key, a *Alert) bool {
	return !a.ClosedAt.IsZero() && e.tracks[k] == nil
}

// sameHolders reports whether a and b are held by the same processes, alike
// in every field a rule may match, in the same order. It allocates nothing:
// it is the steady-state test of every tick.
func sameHolders(a, b *watcher.Listener) bool {
	if len(a.Processes) != len(b.Processes) {
		return false
	}
	for i := range a.Processes {
		p, q := &a.Processes[i], &b.Processes[i]
		if p.PID != q.PID || p.Exe != q.Exe || p.ExeDeleted != q.ExeDeleted || p.ExeUnverified != q.ExeUnverified ||
			p.UID != q.UID || p.User != q.User || p.Comm != q.Comm || p.Unit != q.Unit || p.Container != q.Container ||
			!slices.Equal(p.Cmdline, q.Cmdline) || !slices.Equal(p.Flags, q.Flags) {
			return false
		}
	}
	return true
}

// ResolveClosed resolves at once the alert on k whose listener the last
// Step found closed, instead of waiting out flap_window: the caller knows
// from the kernel that the socket closed, and when. The flap window exists
// for a snapshot's blind spots (a restart between two looks); a close the
// kernel reported has none. The resolve carries life (how long the listener
// lived) and the time the listener closed. It does nothing for a key with
// no such alert: one still open (the snapshot holds it: another socket of
// an SO_REUSEPORT group, say), or not alerted.
func (e *Engine) ResolveClosed(k watcher.Key, closedAt time.Time, life notify.Transient) Result {
	var r Result
	a := e.alerts[k]
	if a == nil || !e.waiting(k, a) {
		return r
	}
	e.settled = false
	a.ClosedAt = closedAt
	e.resolve(&r, k, nil, "")
	r.Emit[len(r.Emit)-1].Transient = &life
	return r
}
