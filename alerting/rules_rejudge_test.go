package alerting

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// The rule of Rejudge, a part of the specification of rules_test.go kept in
// its own file (rules_test.go is past the length files keep to).

// engExposed is a policy that allows a listener of port 5432 only while
// its exposure, looked up by key in ex, is filtered, as the daemon's
// evaluator does with a rule's exposure: [filtered].
type engExposed struct {
	ex map[watcher.Key]*exposure.Exposure
}

func (p engExposed) Evaluate(l watcher.Listener, now time.Time) policy.Decision {
	e := p.ex[l.Key()]
	d := policy.Decision{Listener: l, Verdict: policy.Unexpected, Severity: policy.SeverityWarning, Exposure: e}
	if l.Port == 5432 && e != nil && e.Verdict == exposure.VerdictFiltered {
		d.Verdict, d.Rule, d.Severity = policy.Allowed, "pg", policy.SeverityInfo
	}
	return d
}

// TestRejudgeOnExposureChange: a change of exposure is judged again at
// once: a listener that becomes reachable and is no longer allowed alerts
// with listener.changed, carrying the exposure before; an alerted one that
// becomes allowed resolves; one not yet announced, or unchanged, gives
// nothing.
func TestRejudgeOnExposureChange(t *testing.T) {
	filtered := &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictFiltered}
	open := &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictOpen}
	pg := engL("tcp", 5432, procHelper)
	k := pg.Key()
	ev := engExposed{ex: map[watcher.Key]*exposure.Exposure{k: filtered}}
	e := New(nil)
	cfg := Config{Evaluator: ev}
	check := func(step string, r Result, want []string, wantBefore *exposure.Exposure) {
		t.Helper()
		if diff := cmp.Diff(want, engSummarize(r.Emit)); diff != "" {
			t.Errorf("%s: events (-want +got):\n%s", step, diff)
		}
		for _, em := range r.Emit {
			if em.Type == notify.TypeChanged && (!em.ExposureChanged || em.ExposureBefore != wantBefore) {
				t.Errorf("%s: changed event carries exposure before %v (changed %v), want %v", step, em.ExposureBefore, em.ExposureChanged, wantBefore)
			}
		}
	}
	check("first snapshot", e.Step(engS(pg), cfg, engT0), nil, nil)
	check("unchanged", e.Rejudge([]watcher.Key{k}, "exposure changed", cfg, engT0.Add(time.Second)), nil, nil)

	ev.ex[k] = open
	r := e.Rejudge([]watcher.Key{k, k}, "exposure changed", cfg, engT0.Add(2*time.Second))
	check("filtered to open", r, []string{"changed unexpected tcp 0.0.0.0:5432 [/usr/lib/helper] note=exposure changed"}, filtered)
	if !r.StateChanged || len(e.Firing()) != 1 {
		t.Errorf("filtered to open: state changed %v, %d alerts firing; want an alert", r.StateChanged, len(e.Firing()))
	}
	check("a snapshot after it", e.Step(engS(pg), cfg, engT0.Add(3*time.Second)), nil, nil)

	ev.ex[k] = filtered
	check("open to filtered", e.Rejudge([]watcher.Key{k}, "exposure changed", cfg, engT0.Add(4*time.Second)), []string{
		`closed unexpected tcp 0.0.0.0:5432 [/usr/lib/helper] msg=listener tcp 0.0.0.0:5432 is now allowed by rule "pg" (exposure changed); alert resolved`,
	}, nil)
	if n := len(e.Firing()); n != 0 {
		t.Errorf("open to filtered: %d alerts firing, want none", n)
	}

	// Unknown keys, and a key held back for attribution, give nothing.
	unattributed := engL("tcp", 6000)
	e.Step(engS(pg, unattributed), cfg, engT0.Add(5*time.Second))
	ev.ex[unattributed.Key()] = open
	check("not announced", e.Rejudge([]watcher.Key{unattributed.Key(), {Netns: "host", Protocol: "udp", Port: 1}}, "exposure changed", cfg, engT0.Add(6*time.Second)), nil, nil)
}
