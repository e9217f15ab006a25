package alerting

import (
	"reflect"
	"slices"
	"time"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// Rejudge judges again, at once, the listeners of keys, whose facts outside
// the snapshot changed (their exposure: the daemon's evaluator now answers
// with another one), and says why in note ("exposure changed"). For each
// key the engine tracks and has announced:
//
//   - unexpected and alerted, and no longer: the alert resolves (the
//     resolve says what it is judged now, and why);
//   - not unexpected before, unexpected now: it alerts, with a
//     listener.changed event;
//   - unexpected before and now, its decision changed (its exposure, so
//     perhaps its severity): a listener.changed event replaces the alert;
//   - allowed before and now: a listener.changed info event with
//     log_allowed, as for the other allowed listeners.
//
// Every event but the resolve carries the exposure before and after. Keys
// not tracked (closed since) or not announced yet (waiting for their
// holder; their provisional decision is updated) give nothing; nor does a
// key whose decision is the same. No second snapshot is awaited, unlike
// for an owner change: the exposure comes from a ruleset read whole, not
// from a snapshot's race with a process.
func (e *Engine) Rejudge(keys []watcher.Key, note string, cfg Config, now time.Time) Result {
	var r Result
	e.settled = false
	keys = slices.Clone(keys)
	slices.SortFunc(keys, watcher.Key.Compare)
	keys = slices.Compact(keys)
	for _, k := range keys {
		t := e.tracks[k]
		if t == nil {
			continue
		}
		old := t.dec
		t.dec = cfg.Evaluate(t.l, now)
		if !t.announced || sameDecision(&old, &t.dec) {
			continue
		}
		was, is := old.Verdict == policy.Unexpected, t.dec.Verdict == policy.Unexpected
		a := e.openAlert(k)
		switch {
		case a != nil && !is:
			e.resolve(&r, k, &t.dec, note)
			continue
		case is:
			e.raise(&r, k, notify.TypeChanged, t, now, note)
		case !was && t.dec.Verdict == policy.Allowed && cfg.LogAllowed:
			r.Emit = append(r.Emit, Emission{Type: notify.TypeChanged, Decision: t.dec, Note: note})
		default:
			continue
		}
		em := &r.Emit[len(r.Emit)-1]
		em.ExposureChanged, em.ExposureBefore = true, old.Exposure
	}
	e.count(e.stats.Namespaces)
	return r
}

// sameDecision reports whether a and b judge the same listener alike: the
// same verdict, rule, severity, flags and exposure.
func sameDecision(a, b *policy.Decision) bool {
	return a.Verdict == b.Verdict && a.Rule == b.Rule && a.Severity == b.Severity && a.Reason == b.Reason &&
		slices.Equal(a.Flags, b.Flags) && reflect.DeepEqual(a.Exposure, b.Exposure)
}
