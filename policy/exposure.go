package policy

import (
	"slices"
	"strings"

	"github.com/portwatchd/portwatchd/exposure"
)

// ExposureClasses are the values of a rule's exposure: field, as
// exposure.Exposure.Classes gives them.
var ExposureClasses = []string{"loopback", "filtered", "restricted", "open", "published", "unknown"}

// exposureClasses returns the classes of e; a nil e (exposure off, or not
// computed yet) is unknown: the policy never guesses a listener safer
// than it knows it to be.
func exposureClasses(e *exposure.Exposure) []string {
	if e == nil {
		return []string{"unknown"}
	}
	return e.Classes()
}

// matchExposure reports whether one of e's classes is in r's exposure:.
func (r *Rule) matchExposure(e *exposure.Exposure) bool {
	for _, c := range exposureClasses(e) {
		if slices.Contains(r.Exposure, c) {
			return true
		}
	}
	return false
}

// unreachable reports whether e is known to keep new connections from
// outside away from the listener: bound to loopback or filtered, and
// published by no DNAT rule. Restricted (accepted from some sources) and
// unknown are not.
func unreachable(e *exposure.Exposure) bool {
	if e == nil || len(e.Published) > 0 {
		return false
	}
	return e.Scope == exposure.ScopeLoopback || e.Verdict == exposure.VerdictFiltered
}

// ExposurePhrase says in a few words what e is, for a reason line or a
// message (nil: "unknown (not computed)").
func ExposurePhrase(e *exposure.Exposure) string { return exposurePhrase(e) }

// ExposureClassesOf returns the classes of e, as a rule's exposure:
// matches them: nil is unknown.
func ExposureClassesOf(e *exposure.Exposure) []string { return exposureClasses(e) }

// exposurePhrase says in a few words what e is, for a reason line:
// "open", "filtered by inet filter input policy", "loopback",
// "published: host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker)",
// "unknown (no CAP_NET_ADMIN)".
func exposurePhrase(e *exposure.Exposure) string {
	if e == nil {
		return "unknown (not computed)"
	}
	var parts []string
	switch {
	case e.Scope == exposure.ScopeLoopback:
		parts = append(parts, "loopback")
	case e.Verdict == exposure.VerdictFiltered && e.Deciding != nil:
		parts = append(parts, "filtered by "+e.Deciding.String())
	case e.Verdict == exposure.VerdictRestricted && len(e.RestrictedTo) > 0:
		parts = append(parts, "restricted to "+strings.Join(e.RestrictedTo, " or "))
	case e.Verdict == exposure.VerdictUnknown && e.Reason != "":
		parts = append(parts, "unknown ("+e.Reason+")")
	default:
		parts = append(parts, string(e.Verdict))
	}
	for _, p := range e.Published {
		parts = append(parts, "published: "+p.String())
	}
	return strings.Join(parts, "; ")
}

// lowerForExposure lowers the severity of an unexpected listener that no
// connection from outside can reach (see unreachable) one step, warning to
// notice, and says so in the reason. A critical one stays critical: its
// high-risk flags are about the program, not the network; a filtered
// backdoor is one firewall command from open, and a loopback one is still
// reachable by every local user and through any tunnel.
func lowerForExposure(d *Decision) {
	if d.Verdict != Unexpected || d.Severity != SeverityWarning || !unreachable(d.Exposure) {
		return
	}
	d.Severity = SeverityNotice
	d.Reason += "; notice rather than warning: not reachable from outside (" + exposurePhrase(d.Exposure) + ")"
}
