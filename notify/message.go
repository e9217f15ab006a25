package notify

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// shortType is the event type without its "listener." prefix: opened,
// closed, changed or test. It is the value of PORTWATCH_EVENT and of the
// webhook events: filter.
func shortType(typ string) string { return strings.TrimPrefix(typ, "listener.") }

// NewID returns a random 128-bit event id in hex: the id NewEvent gives
// an event when no WithID names one. The alert engine makes the ids of the
// events that raise alerts with it, so that it can keep them.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux >= 3.17; a panic here is a
		// broken system, not bad input.
		panic(fmt.Sprintf("notify: crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// severityFor implements the severity rules: an unexpected listener that
// opens or changes takes the listener's severity (alertSeverity: critical
// with a high-risk flag, else warning); the close of an unexpected (hence
// alerted) listener is a notice, which resolves the alert; everything about
// allowed or ignored listeners is info, which goes to journald only.
func severityFor(typ string, d policy.Decision) policy.Severity {
	switch {
	case typ == TypeTest:
		return policy.SeverityNotice
	case d.Verdict != policy.Unexpected:
		return policy.SeverityInfo
	case typ == TypeClosed:
		return policy.SeverityNotice
	default:
		return alertSeverity(d)
	}
}

// alertSeverity is the severity of the alert on the unexpected listener d:
// the policy's, warning or critical. A decision without one (alerted before
// severities existed, read back from an old state file) is a warning, as it
// was then, so that its Alertmanager labels stay those it fired with.
func alertSeverity(d policy.Decision) policy.Severity {
	return min(max(d.Severity, policy.SeverityWarning), policy.SeverityCritical)
}

// endpoint formats a listener as "tcp 0.0.0.0:4444", with the namespace when
// it is not the host's.
func endpoint(l watcher.Listener) string {
	s := l.Protocol + " " + hostPort(l.Address, l.Port)
	if ns := otherNetns(l); ns != "" {
		s += " in netns " + textesc.Line(ns)
	}
	return s
}

// otherNetns is the name of l's network namespace, raw, or "" for the
// host's.
func otherNetns(l watcher.Listener) string {
	if l.Netns == watcher.HostNetns {
		return ""
	}
	return l.Netns
}

// netnsName names l's network namespace for a message.
func netnsName(l watcher.Listener) string {
	if ns := otherNetns(l); ns != "" {
		return "netns " + textesc.Line(ns)
	}
	return "the host"
}

func hostPort(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "*:" + strconv.Itoa(int(port))
	}
	return netip.AddrPortFrom(a, port).String()
}

// holder describes the first process holding the socket: "/tmp/x (pid 812,
// user nobody)", then the flags of every holder, if any: "[flags: exe_gone,
// exe_in_writable_dir]". When the comm differs from the executable's base
// name it is shown too, because a renamed process must not pass for another
// one.
func holder(l watcher.Listener) string {
	if len(l.Processes) == 0 {
		return "an unattributed process"
	}
	p := l.Processes[0]
	name := p.Exe
	if name == "" {
		name = p.Comm
	}
	s := textesc.Line(name)
	switch {
	case p.ExeDeleted:
		s += " (deleted)"
	case p.ExeUnverified && p.Exe != "":
		// The path does not name the file run: say so, lest it pass for
		// the genuine program.
		s += " (unverified)"
	}
	var attrs []string
	if p.Exe != "" && p.Comm != "" && p.Comm != filepath.Base(p.Exe) {
		attrs = append(attrs, "comm "+strconv.Quote(p.Comm))
	}
	attrs = append(attrs, "pid "+strconv.Itoa(p.PID))
	user := p.User
	if user == "" {
		user = strconv.FormatUint(uint64(p.UID), 10)
	}
	attrs = append(attrs, "user "+textesc.Line(user))
	if p.Container != "" {
		attrs = append(attrs, "container "+textesc.Line(p.Container))
	} else if p.Unit != "" {
		attrs = append(attrs, "unit "+textesc.Line(p.Unit))
	}
	if n := len(l.Processes) - 1; n > 0 {
		attrs = append(attrs, fmt.Sprintf("+%d more", n))
	}
	s += " (" + strings.Join(attrs, ", ") + ")"
	// The evidence against the program, of every holder: fixed names,
	// which need no escaping.
	if fs := HolderFlags(l); len(fs) > 0 {
		s += " [flags: " + joinFlags(fs, ", ") + "]"
	}
	return s
}

// transientMessage is the message of a transient listener's opened event.
func transientMessage(d policy.Decision, t Transient) string {
	l := d.Listener
	if s := t.Summary; s != nil {
		ports := strconv.Itoa(int(s.PortLow))
		if s.PortHigh != s.PortLow {
			ports += "-" + strconv.Itoa(int(s.PortHigh))
		}
		// "... and 9,950 more": after the ones alerted one by one.
		return fmt.Sprintf("%d more %s transient listeners (already closed) opened by %s on %s port %s in %s since %s, after %d alerted one by one; the last %s for %s: %s",
			s.Count, d.Verdict, holder(l), l.Protocol, ports, netnsName(l), s.Since.UTC().Format(time.TimeOnly), s.Alerted,
			hostPort(l.Address, l.Port), t.String(), reason(d))
	}
	return fmt.Sprintf("%s listener %s opened by %s for %s (transient, already closed): %s", d.Verdict, endpoint(l), holder(l), t.String(), reason(d))
}

// transientClosedMessage is the message of the listener.closed event that
// resolves at once the alert on a listener that lived t.
func transientClosedMessage(d policy.Decision, t Transient) string {
	return closedMessage(d, "closed after "+t.String()+" (transient)")
}

// closedMessage is the message of a listener.closed event; closed says how
// the listener closed ("closed", "closed after 12ms (transient)").
func closedMessage(d policy.Decision, closed string) string {
	ep := endpoint(d.Listener)
	if d.Verdict == policy.Unexpected {
		return fmt.Sprintf("unexpected listener %s %s, alert resolved (was held by %s)", ep, closed, holder(d.Listener))
	}
	return fmt.Sprintf("%s listener %s %s (was held by %s)", d.Verdict, ep, closed, holder(d.Listener))
}

// reason says why d was judged as it was, escaped: the rule and its reason.
func reason(d policy.Decision) string {
	why := textesc.Line(d.Reason)
	if why == "" {
		switch d.Verdict {
		case policy.Unexpected:
			why = "no rule allows it"
		case policy.Allowed:
			why = "allowed"
		}
	}
	if d.Rule != "" && d.Verdict == policy.Allowed {
		why = "rule " + textesc.Line(d.Rule) + ": " + why
	}
	return why
}

// message builds the one-line description of an event. Every part that comes
// from a process (names, paths, users) is escaped, so the line holds no
// control characters.
func message(typ string, d policy.Decision, host string) string {
	ep := endpoint(d.Listener)
	switch typ {
	case TypeTest:
		return "portwatchd test notification from " + textesc.Line(host)
	case TypeOpened:
		return fmt.Sprintf("%s listener %s%s opened by %s: %s", d.Verdict, ep, exposureTag(d), holder(d.Listener), reason(d))
	case TypeChanged:
		return fmt.Sprintf("%s listener %s%s changed owner to %s: %s", d.Verdict, ep, exposureTag(d), holder(d.Listener), reason(d))
	case TypeClosed:
		return closedMessage(d, "closed")
	}
	return fmt.Sprintf("%s: %s listener %s held by %s: %s", textesc.Line(typ), d.Verdict, ep, holder(d.Listener), reason(d))
}

// exposureTag is " (open)", " (published: host 0.0.0.0:8080/tcp → ...)":
// the listener's exposure in a short phrase, escaped, for a message; "" when
// not known (exposure off), so that messages stay as they were.
func exposureTag(d policy.Decision) string {
	if d.Exposure == nil {
		return ""
	}
	return " (" + textesc.Line(policy.ExposurePhrase(d.Exposure)) + ")"
}

// exposureChangedMessage is the message of a change of exposure.
func exposureChangedMessage(d policy.Decision, before *exposure.Exposure) string {
	return fmt.Sprintf("%s listener %s (held by %s) is now %s, was %s: %s", d.Verdict, endpoint(d.Listener), holder(d.Listener),
		textesc.Line(policy.ExposurePhrase(d.Exposure)), textesc.Line(policy.ExposurePhrase(before)), reason(d))
}

// severityChangedMessage is the message of a change of severity: the
// holder's flags, which made it, are in holder's text.
func severityChangedMessage(d policy.Decision, before policy.Severity) string {
	return fmt.Sprintf("%s listener %s%s (held by %s) is now %s, was %s: %s", d.Verdict, endpoint(d.Listener), exposureTag(d),
		holder(d.Listener), d.Severity, before, reason(d))
}

// truncate shortens s to at most n runes, ending it with "…" when cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
