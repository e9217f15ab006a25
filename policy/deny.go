package policy

import (
	"fmt"
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/watcher"
)

// denies reports whether the deny rule r matches l at now, and which of
// r's flags the matching holder has. Its fields match as an allow rule's
// do, with two differences that make a deny rule catch more, never less:
//
//   - flags: matches a holder that has any of the flags named. Process
//     fields and flags: must all match one and the same holder.
//   - exe: matches the path the holder shows, verified or not, deleted or
//     not: the trust that an allow rule needs before it lets a listener
//     through is not needed to refuse one. A process that shows a path
//     it is not running from only ever gets itself denied.
//
// A deny rule with process fields or flags: never matches a listener with
// no known holder. exposure: matches as in an allow rule, an exposure not
// known being unknown: `exposure: [open, published, unknown]` denies what
// is or may be reachable.
func (r *Rule) denies(l *watcher.Listener, e *exposure.Exposure, now time.Time) (watcher.FlagSet, bool) {
	if r.socketMismatch(l, e, now, nil, 1) > 0 {
		return 0, false
	}
	if !r.hasProcessFields() && r.flags == 0 {
		return 0, true
	}
	for i := range l.Processes {
		p := &l.Processes[i]
		if !r.denyProcess(p) {
			continue
		}
		if r.flags == 0 {
			return 0, true
		}
		if hit := watcher.FlagsOf(p.Flags) & r.flags; hit != 0 {
			return hit, true
		}
	}
	return 0, false
}

// denyProcess reports whether p matches every process field of r, exe by
// its path alone.
func (r *Rule) denyProcess(p *watcher.Process) bool {
	return (r.Exe == "" || globMatch(r.Exe, p.Exe)) &&
		(r.Comm == "" || globMatch(r.Comm, p.Comm)) &&
		(r.User == "" || r.matchUser(p)) &&
		(r.Unit == "" || globMatch(r.Unit, p.Unit)) &&
		(r.Container == "" || globMatch(r.Container, p.Container))
}

// denied is the decision on a listener that the deny rule r matched, hit
// being the flags of r that the holder had and risk the listener's
// high-risk flags.
func denied(d Decision, r *Rule, hit, risk watcher.FlagSet) Decision {
	d.Verdict, d.Rule, d.Severity = Unexpected, r.Name, SeverityWarning
	if risk != 0 {
		d.Severity = SeverityCritical
	}
	d.Flags = (hit | risk).List()
	d.Reason = fmt.Sprintf("denied by rule %q (%s): %s", r.Name, r.File, describe(&d.Listener))
	if hit != 0 {
		d.Reason += " with " + flagPhrase("", hit)
	}
	if extra := risk &^ hit; extra != 0 {
		d.Reason += "; " + flagPhrase("high-risk", extra)
	}
	if len(r.Exposure) > 0 {
		d.Reason += "; exposure " + exposurePhrase(d.Exposure)
	}
	if r.Reason != "" {
		d.Reason += "; reason: " + r.Reason
	}
	return d
}
