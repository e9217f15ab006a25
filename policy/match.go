package policy

import (
	"fmt"
	"math"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/watcher"
)

// Evaluate returns the verdict on l at time now, in this order:
//
//   - A listener that a rule of deny: matches is unexpected, whatever else
//     (see Rule.denies).
//   - An ephemeral UDP listener is ignored under ignore_ephemeral_udp,
//     unless a holder has a high-risk flag (see HighRisk): a range of ports
//     left unchecked must not let a memfd backdoor through either.
//   - A listener is allowed when some allow rule matches it, and accepts
//     its high-risk flags. It matches when every socket field the rule
//     names matches the socket, and one holder of the socket matches every
//     process field the rule names. (One holder for all fields, rather than
//     any holder per field, so that the exe of one process and the user of
//     another cannot add up to a match.) It accepts the high-risk flags of
//     every holder, not only of the one that matched (each holder can
//     accept on the socket), when its flags: names each of them; low-risk
//     flags need no naming. So a rule that names neither exe: nor flags:,
//     or exe: alone, never allows a listener with a high-risk flag. An
//     expired rule allows nothing. How exe matches a holder whose
//     executable is deleted, replaced or unverified is told at exeTrusted.
//
// An unexpected listener is critical when a holder has a high-risk flag
// (Decision.Flags names them), else a warning; the others are info.
//
// Globs are path.Match patterns, whose * does not cross "/". That matters
// for exe, and for unit: a unit started by a user's own systemd is
// "user@1000.service/nginx.service" (watcher.Process.Unit), so neither
// "unit: nginx.service" nor "unit: '*.service'" matches it; a rule for
// such units says "unit: 'user@1000.service/*'" (one user's) or
// "unit: 'user@*.service/*'" (any user's), ideally with user: too.
func (c *Config) Evaluate(l watcher.Listener, now time.Time) Decision {
	return c.EvaluateExposed(l, nil, now)
}

// EvaluateExposed is Evaluate for a listener whose exposure is e (nil when
// not known: it reads as unknown). A rule's exposure: then matches when
// one of e's classes is in its list, and the Decision carries e. An
// unexpected listener that e shows unreachable from outside (bound to
// loopback, or filtered, and published by no DNAT rule) is a notice rather
// than a warning; a critical one stays critical (see lowerForExposure).
func (c *Config) EvaluateExposed(l watcher.Listener, e *exposure.Exposure, now time.Time) Decision {
	d := c.evaluate(l, e, now)
	lowerForExposure(&d)
	return d
}

func (c *Config) evaluate(l watcher.Listener, e *exposure.Exposure, now time.Time) Decision {
	d := Decision{Listener: l, Severity: SeverityInfo, Exposure: e}
	risk := c.listenerRisk(&l)
	for i := range c.Deny {
		if hit, ok := c.Deny[i].denies(&l, e, now); ok {
			return denied(d, &c.Deny[i], hit, risk)
		}
	}
	if c.IgnoreEphemeralUDP && l.Protocol == watcher.UDP && l.Ephemeral && risk == 0 {
		d.Verdict = Ignored
		d.Reason = "ephemeral UDP port (ignore_ephemeral_udp)"
		return d
	}
	// The common case is an allowed listener: find the rule stopping at the
	// first failing field, building no messages.
	refused := -1 // the first rule that matched but refused a flag
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.mismatch(&l, e, now, nil, 1) == 0 {
			if risk&^r.flags == 0 {
				d.Verdict, d.Rule, d.Reason = Allowed, r.Name, r.Reason
				return d
			}
			if refused < 0 {
				refused = i
			}
		}
	}
	d.Verdict, d.Severity = Unexpected, SeverityWarning
	if risk != 0 {
		d.Severity, d.Flags = SeverityCritical, risk.List()
	}
	if refused >= 0 {
		r := &c.Rules[refused]
		d.Rule = r.Name
		d.Reason = fmt.Sprintf("no rule allows %s; rule %q (%s) would allow it but for %s, which its flags: does not name",
			describe(&l), r.Name, r.File, flagPhrase("high-risk", risk&^r.flags))
		return d
	}
	d.Rule, d.Reason = c.closest(&l, e, now)
	if risk != 0 {
		d.Reason += "; " + flagPhrase("high-risk", risk)
	}
	return d
}

// closest names the rule with the fewest fields that l fails, and says in
// a reason which they are.
func (c *Config) closest(l *watcher.Listener, e *exposure.Exposure, now time.Time) (rule, reason string) {
	best, bestN := -1, 0
	for i := range c.Rules {
		n := c.Rules[i].mismatch(l, e, now, nil, math.MaxInt)
		if best < 0 || n < bestN {
			best, bestN = i, n
		}
	}
	reason = "no rule allows " + describe(l)
	if best < 0 {
		return "", reason + "; the policy has no rules"
	}
	r := &c.Rules[best]
	var why []string
	r.mismatch(l, e, now, &why, math.MaxInt)
	return r.Name, reason + fmt.Sprintf("; closest: rule %q (%s) %s", r.Name, r.File, joinWhy(why))
}

// ExpiredBetween reports whether a rule (allow or deny) expired after from
// and at or before to: a decision made at from may not hold at to. Time
// enters a decision only through expires: dates.
func (c *Config) ExpiredBetween(from, to time.Time) bool {
	return c.Expiring(from, to) > 0
}

// Expiring counts the rules (allow and deny) in force at from that have
// expired at to.
func (c *Config) Expiring(from, to time.Time) int {
	n := 0
	for _, list := range [][]Rule{c.Rules, c.Deny} {
		for i := range list {
			if !list[i].expired(from) && list[i].expired(to) {
				n++
			}
		}
	}
	return n
}

// Expired returns the rules that have expired at now, in file order.
func (c *Config) Expired(now time.Time) []Rule {
	var out []Rule
	for _, r := range c.Rules {
		if r.expired(now) {
			out = append(out, r)
		}
	}
	return out
}

func (r *Rule) expired(now time.Time) bool {
	return !r.Expires.IsZero() && !now.Before(r.Expires)
}

// Matches reports whether the fields of r match l at now, l's exposure
// being unknown. Whether r's flags: accept the holders' high-risk flags is
// Config.Evaluate's part.
func (r *Rule) Matches(l watcher.Listener, now time.Time) bool {
	return r.mismatch(&l, nil, now, nil, 1) == 0
}

// mismatch counts the fields of r that l fails, up to stop; 0 means r
// matches l. When why is not nil, it also appends an "expired ..." or
// "wants ..." phrase per failing field.
func (r *Rule) mismatch(l *watcher.Listener, e *exposure.Exposure, now time.Time, why *[]string, stop int) int {
	n := r.socketMismatch(l, e, now, why, stop)
	if n >= stop || !r.hasProcessFields() {
		return n
	}
	if len(l.Processes) == 0 {
		return n + r.processWants(nil, why)
	}
	best, bestN := 0, -1
	for i := range l.Processes {
		k := r.processWants(&l.Processes[i], nil)
		if k == 0 {
			return n
		}
		if bestN < 0 || k < bestN {
			best, bestN = i, k
		}
	}
	return n + r.processWants(&l.Processes[best], why)
}

// socketMismatch is mismatch for the expiry and the socket fields alone
// (exposure: is one: a fact about the socket).
func (r *Rule) socketMismatch(l *watcher.Listener, e *exposure.Exposure, now time.Time, why *[]string, stop int) int {
	n := 0
	fail := func(f func() string) {
		n++
		if why != nil {
			*why = append(*why, f())
		}
	}
	if r.expired(now) {
		fail(func() string { return "expired after " + r.ExpiresText })
	}
	if n >= stop {
		return n
	}
	if len(r.Protocols) > 0 && !contains(r.Protocols, l.Protocol) {
		fail(func() string { return "wants protocol " + strings.Join(r.Protocols, ",") })
	}
	if n >= stop {
		return n
	}
	if len(r.Ports) > 0 && !r.matchPort(l.Protocol, l.Port) {
		fail(func() string { return "wants port " + r.portText })
	}
	if n >= stop {
		return n
	}
	if len(r.Addresses) > 0 && !r.matchAddress(l) {
		fail(func() string {
			w := "wants address " + r.addrText
			if l.DualStack && r.matchAddr(l.Address) {
				w += " (the listener is dual-stack: the rule must cover both 0.0.0.0 and ::)"
			}
			return w
		})
	}
	if n >= stop {
		return n
	}
	if r.Netns != "" && !globMatch(r.Netns, l.Netns) {
		fail(func() string { return "wants netns " + r.Netns })
	}
	if n >= stop {
		return n
	}
	if len(r.Exposure) > 0 && !r.matchExposure(e) {
		fail(func() string { return "wants exposure " + r.exposureText + " (it is " + exposurePhrase(e) + ")" })
	}
	return n
}

// processWants counts the process fields of r that p fails, and appends a
// phrase for each to why when it is not nil. With p nil (an unattributed
// listener) every process field fails.
func (r *Rule) processWants(p *watcher.Process, why *[]string) int {
	n := 0
	suffix := ""
	if p == nil {
		suffix = " (the listener has no known process)"
	}
	check := func(field, pattern, value string) {
		if pattern != "" && (p == nil || !globMatch(pattern, value)) {
			n++
			if why != nil {
				*why = append(*why, "wants "+field+" "+pattern+suffix)
			}
		}
	}
	var exe, comm, unit, container string
	if p != nil {
		exe, comm, unit, container = p.Exe, p.Comm, p.Unit, p.Container
	}
	if r.Exe != "" && p != nil && globMatch(r.Exe, exe) {
		if ok, whyNot := r.exeTrusted(p); !ok {
			n++
			if why != nil {
				*why = append(*why, "wants exe "+r.Exe+" ("+whyNot+")")
			}
		}
	} else {
		check("exe", r.Exe, exe)
	}
	check("comm", r.Comm, comm)
	if r.User != "" && (p == nil || !r.matchUser(p)) {
		n++
		if why != nil {
			*why = append(*why, "wants user "+r.User+suffix)
		}
	}
	check("unit", r.Unit, unit)
	check("container", r.Container, container)
	return n
}

// exeTrusted reports whether an exe pattern of r may match p at all, and
// when not, says why in a phrase. The exe path is what readlink of
// /proc/PID/exe shows, and that is the path in the process's own mount
// namespace: any user can make one (unshare -Urm), bind a file of theirs
// over /usr/sbin/sshd there, and run it. So:
//
//   - a deleted or memfd executable never matches an exe pattern: there is
//     no file left to vouch for; except one replaced by an upgrade
//     (exe_replaced: the watcher found the path again, owned by a package
//     and newer than the process), under a rule that also names user: or
//     unit:. The path of a deleted executable is still the one in the
//     process's own mount namespace, so a user could stage one (bind a
//     file of theirs over /usr/sbin/nginx in a private namespace, run it,
//     delete it, and wait for an upgrade of nginx); user: and unit: are
//     what that user cannot choose (a uid, a cgroup made by root);
//   - a verified executable (the watcher found that its path names, on the
//     host, the very file the process runs; Process.ExeUnverified false)
//     matches as its path says;
//   - an unverified one matches only inside a container, and only under a
//     rule that pins the container: it names container: or a netns
//     "container:...". A container's paths are relative to its own root, so
//     they never verify on the host; the container id comes from the cgroup
//     path, which only root can choose, so the rule's container pin bounds
//     what the exe path can claim. A cgroup under a user manager
//     (user@UID.service/..., rootless podman) is chosen by that user, so
//     such a container gets no exception: use container:, comm: or user:
//     without exe: for it;
//   - any other unverified executable never matches an exe pattern. It may
//     also be a host process running from a path the daemon cannot see the
//     same way (a private /tmp or a protected /home of the hardened unit):
//     allow those by unit: and user: instead.
func (r *Rule) exeTrusted(p *watcher.Process) (bool, string) {
	replaced := p.ExeDeleted && slices.Contains(p.Flags, watcher.FlagExeReplaced) &&
		!slices.Contains(p.Flags, watcher.FlagExeGone) && !slices.Contains(p.Flags, watcher.FlagExeMemfd)
	switch {
	case replaced && r.User == "" && r.Unit == "":
		return false, "the executable was replaced by an upgrade (exe_replaced): restart the service, or name user: or unit: in the rule too"
	case replaced && p.Container == "":
		return true, ""
	case p.ExeDeleted && !replaced:
		return false, "the executable was deleted; if an upgrade replaced it, restart the service"
	case !p.ExeUnverified:
		return true, ""
	case p.Container == "" || watcher.UserManagedUnit(p.Unit):
		return false, "unverified: the path does not name on the host the file the process runs"
	case r.Container == "" && !strings.HasPrefix(r.Netns, "container:"):
		return false, "a container's executable matches only a rule that also names container: or a container: netns"
	}
	return true, ""
}

func (r *Rule) matchUser(p *watcher.Process) bool {
	if r.UserIsUID {
		return p.UID == r.UID
	}
	return p.User != "" && p.User == r.User
}

func (r *Rule) matchPort(proto string, port uint16) bool {
	for _, pr := range r.Ports {
		if (pr.Protocol == "" || pr.Protocol == proto) && port >= pr.Lo && port <= pr.Hi {
			return true
		}
	}
	return false
}

func (r *Rule) matchAddr(a netip.Addr) bool {
	for _, m := range r.Addresses {
		if m.Match(a) {
			return true
		}
	}
	return false
}

// matchAddress matches the listener's address. A dual-stack IPv6 wildcard
// socket also accepts IPv4, so the rule must cover both wildcards.
func (r *Rule) matchAddress(l *watcher.Listener) bool {
	if l.DualStack && l.Address.IsUnspecified() {
		return r.matchAddr(netip.IPv6Unspecified()) && r.matchAddr(netip.IPv4Unspecified())
	}
	return r.matchAddr(l.Address)
}

// globMatch matches a validated path.Match pattern. An empty value never
// matches: "container: '*'" means "in some container", not "anywhere".
func globMatch(pattern, value string) bool {
	if value == "" {
		return false
	}
	ok, _ := path.Match(pattern, value)
	return ok
}

func joinWhy(why []string) string {
	var exp, wants []string
	for _, w := range why {
		if s, ok := strings.CutPrefix(w, "wants "); ok {
			wants = append(wants, s)
		} else {
			exp = append(exp, w)
		}
	}
	out := strings.Join(exp, ", ")
	if len(wants) > 0 {
		if out != "" {
			out += " and "
		}
		out += "wants " + strings.Join(wants, ", ")
	}
	return out
}

// describe renders a listener for a one-line message: "tcp 0.0.0.0:8080
// (pid 4242 /usr/bin/python3.11, user www-data)".
func describe(l *watcher.Listener) string {
	var b strings.Builder
	b.WriteString(l.Protocol)
	b.WriteByte(' ')
	b.WriteString(netip.AddrPortFrom(l.Address, l.Port).String())
	if l.DualStack {
		b.WriteString(" (dual-stack)")
	}
	if l.Netns != "" && l.Netns != watcher.HostNetns {
		b.WriteString(" in netns ")
		b.WriteString(l.Netns)
	}
	b.WriteString(" (")
	if len(l.Processes) == 0 {
		b.WriteString("no known process")
	} else {
		b.WriteString(describeProcess(&l.Processes[0]))
		if n := len(l.Processes) - 1; n > 0 {
			fmt.Fprintf(&b, "; and %d more", n)
		}
	}
	b.WriteByte(')')
	return b.String()
}

func describeProcess(p *watcher.Process) string {
	name := p.Exe
	if name == "" {
		name = "[" + p.Comm + "]"
	}
	user := p.User
	if user == "" {
		user = "uid " + strconv.FormatUint(uint64(p.UID), 10)
	} else {
		user = "user " + user
	}
	return fmt.Sprintf("pid %d %s, %s", p.PID, name, user)
}
