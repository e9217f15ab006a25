package policy

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/watcher"
)

// Rule is one validated rule of allow: or deny:. An empty or nil field
// matches anything.
type Rule struct {
	Name   string
	File   string // file:line of the rule, for messages
	Reason string // free text shown in alerts

	// Socket fields.
	Protocols []string       // watcher.TCP, watcher.UDP
	Ports     []PortRange    // port:
	Addresses []AddressMatch // address:
	Netns     string         // glob on watcher.Listener.Netns ("host", "container:<id>", ...)
	// Exposure is exposure:, the classes of which the listener's exposure
	// must have one (ExposureClasses; see Config.EvaluateExposed).
	Exposure []string

	// Process fields: one holder of the socket must match all of them.
	Exe       string // glob on the real executable path
	Comm      string // glob on the process name (spoofable)
	User      string // user name, or a uid when UserIsUID
	UserIsUID bool
	UID       uint32 // when UserIsUID
	Unit      string // glob on the systemd unit
	Container string // glob on the container id

	// Flags is flags:. In an allow rule: the high-risk flags the rule
	// accepts (see HighRisk); low-risk flags need no naming. In a deny
	// rule: the rule matches a holder that has any of them.
	Flags []watcher.Flag
	flags watcher.FlagSet

	// Expires is the first instant at which the rule allows nothing (local
	// midnight after the expires: date); zero means never.
	Expires time.Time
	// ExpiresText is the date as written, YYYY-MM-DD.
	ExpiresText string
	// Builtin marks a rule the config makes rather than one written in it
	// (MetricsRuleName).
	Builtin bool

	portText, addrText, exposureText string
}

// PortRange is an inclusive range of ports. Protocol is set when the range
// came from a service name that exists for that protocol only.
type PortRange struct {
	Protocol string
	Lo, Hi   uint16
}

// AddressMatch is one entry of address:.
type AddressMatch struct {
	Kind   AddressKind
	Prefix netip.Prefix // for AddressPrefix; a single IP is a /32 or /128
}

// AddressKind says how an AddressMatch matches.
type AddressKind int

// Address kinds.
const (
	AddressAny      AddressKind = iota // any
	AddressLoopback                    // 127.0.0.0/8 and ::1
	AddressWildcard                    // 0.0.0.0 and ::
	AddressPrefix                      // an IP or a CIDR
)

// Match reports whether a matches addr.
func (a AddressMatch) Match(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	switch a.Kind {
	case AddressAny:
		return true
	case AddressLoopback:
		return addr.IsLoopback()
	case AddressWildcard:
		return addr.IsUnspecified()
	default:
		return a.Prefix.Contains(addr)
	}
}

// hasProcessFields reports whether the rule names any process field; only a
// rule without them can allow an unattributed listener.
func (r *Rule) hasProcessFields() bool {
	return r.Exe != "" || r.Comm != "" || r.User != "" || r.Unit != "" || r.Container != ""
}

// socketOnly returns a copy of r without its process fields. Keep it in
// step with hasProcessFields.
func (r Rule) socketOnly() Rule {
	r.Exe, r.Comm, r.User, r.UserIsUID, r.UID, r.Unit, r.Container = "", "", "", false, 0, "", ""
	return r
}

var ruleKeys = []string{"name", "protocol", "port", "address", "netns", "exe", "comm", "user", "unit", "container", "flags", "exposure", "expires", "reason"}

// rule builds one rule of allow: or, with deny set, of deny: from its
// mapping node. names maps the rule names seen so far, in every file and
// both lists, to where they were defined. It returns false when the rule
// has errors, which are recorded.
func (l *loader) rule(d *decoder, n *yaml.Node, names map[string]string, deny bool) (Rule, bool) {
	r := Rule{File: fmt.Sprintf("%s:%d", d.file, n.Line)}
	fs := d.fields(n, "rule", ruleKeys)
	if n.Kind != yaml.MappingNode {
		return r, false
	}
	before := len(*d.errs)
	byKey := map[string]field{}
	for _, f := range fs {
		byKey[f.key] = f
	}
	if f, ok := byKey["name"]; ok {
		if name, ok := d.str(f); ok {
			if first, dup := names[name]; dup {
				d.errorf(f.v, "duplicate rule name %q (first defined at %s)", clip(name), first)
			} else {
				names[name] = r.File
				r.Name = name
			}
		}
	} else {
		d.errorf(n, "rule: name is required")
	}
	// Protocols first: service names in port: resolve for them.
	protos := []string{watcher.TCP, watcher.UDP}
	if f, ok := byKey["protocol"]; ok {
		items, ok := d.strs(f)
		if ok {
			protos = nil
			for _, it := range items {
				p := strings.ToLower(it.Value)
				if p != watcher.TCP && p != watcher.UDP {
					d.errorf(it, "protocol: %q is not tcp or udp", clip(it.Value))
					continue
				}
				if !contains(protos, p) {
					protos = append(protos, p)
				}
			}
			r.Protocols = protos
		}
	}
	for _, f := range fs {
		switch f.key {
		case "port":
			r.Ports, r.portText = l.ports(d, f, protos)
		case "address":
			r.Addresses, r.addrText = d.addresses(f)
		case "netns":
			r.Netns = d.glob(f)
		case "exe":
			r.Exe = d.glob(f)
			if r.Exe != "" && !strings.HasPrefix(r.Exe, "/") && !strings.HasPrefix(r.Exe, "*") {
				d.errorf(f.v, "exe: must be an absolute path (or a glob on one), got %q", clip(r.Exe))
			} else if exeNeverMatches(r.Exe) {
				// Not an error: the rule loads and allows nothing, as
				// before; but it is almost surely not what was meant.
				l.warns = append(l.warns, textesc.Controls(fmt.Sprintf("%s:%d:%d: exe: glob %q never matches: executable paths start with \"/\" and * does not match \"/\" (write the directory: /usr/bin/python3*)",
					d.file, f.v.Line, f.v.Column, clip(r.Exe))))
			}
		case "comm":
			r.Comm = d.glob(f)
		case "unit":
			r.Unit = d.glob(f)
		case "container":
			r.Container = d.glob(f)
		case "user":
			if s, ok := d.str(f); ok {
				r.User = s
				if uid, err := strconv.ParseUint(s, 10, 32); err == nil {
					r.UserIsUID, r.UID = true, uint32(uid)
				}
			}
		case "expires":
			if s, ok := d.str(f); ok {
				t, err := time.ParseInLocation("2006-01-02", s, time.Local)
				if err != nil {
					d.errorf(f.v, "expires: invalid date %q (use YYYY-MM-DD)", clip(s))
				} else {
					r.Expires, r.ExpiresText = t.AddDate(0, 0, 1), s
				}
			}
		case "flags":
			r.Flags, r.flags = d.flagList(f)
		case "exposure":
			r.Exposure = d.exposureList(f)
			r.exposureText = strings.Join(r.Exposure, ",")
		case "reason":
			r.Reason, _ = d.str(f)
		}
	}
	if f, ok := byKey["flags"]; ok && !deny && r.flags&bitBroad != 0 && r.Exe == "" && r.Unit == "" && r.Container == "" {
		// Not an error: it may be meant (a port that only ever a
		// throwaway tool uses), but it is the port-only rule that the
		// high-risk flags exist to refuse.
		l.warns = append(l.warns, textesc.Controls(fmt.Sprintf("%s:%d:%d: rule %q accepts %s with no exe:, unit: or container: to say which program: any program with them is allowed on what the rule matches",
			d.file, f.v.Line, f.v.Column, clip(r.Name), flagPhrase("high-risk", r.flags&bitBroad))))
	}
	return r, len(*d.errs) == before
}

// flagList decodes flags:, a flag name or a list of them.
func (d *decoder) flagList(f field) ([]watcher.Flag, watcher.FlagSet) {
	items, ok := d.strs(f)
	if !ok {
		return nil, 0
	}
	var m watcher.FlagSet
	for _, it := range items {
		b := watcher.Flag(it.Value).Bit()
		if b == 0 {
			known := make([]string, len(watcher.AllFlags))
			for i, k := range watcher.AllFlags {
				known[i] = string(k)
			}
			if it.Value == "exe_deleted" {
				// The first name for the pair, which an admin
				// may have read about.
				d.errorf(it, "flags: exe_deleted is two flags: exe_replaced (an upgrade replaced the file; low-risk) and exe_gone (high-risk)")
			} else if s := suggest(it.Value, known); s != "" {
				d.errorf(it, "flags: unknown flag %q; did you mean %q? (known flags: %s)", clip(it.Value), s, strings.Join(known, ", "))
			} else {
				d.errorf(it, "flags: unknown flag %q (known flags: %s)", clip(it.Value), strings.Join(known, ", "))
			}
			continue
		}
		m |= b
	}
	return m.List(), m
}

// exposureList decodes a rule's exposure:, a class or a list of them.
func (d *decoder) exposureList(f field) []string {
	items, ok := d.strs(f)
	if !ok {
		return nil
	}
	var out []string
	for _, it := range items {
		v := it.Value
		if !slices.Contains(ExposureClasses, v) {
			if s := suggest(v, ExposureClasses); s != "" {
				d.errorf(it, "exposure: unknown class %q; did you mean %q? (classes: %s)", clip(v), s, strings.Join(ExposureClasses, ", "))
			} else {
				d.errorf(it, "exposure: unknown class %q (classes: %s)", clip(v), strings.Join(ExposureClasses, ", "))
			}
			continue
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// exeNeverMatches reports whether an exe glob that starts with * can match
// no absolute path: the stars can only stand for nothing, since * does not
// match "/", so what follows them must be able to match the leading "/".
// "*python*" and "*" never match; "*/usr/bin/x" matches /usr/bin/x.
func exeNeverMatches(glob string) bool {
	rest := strings.TrimLeft(glob, "*")
	if rest == glob {
		return false // starts with "/": checked as an absolute path
	}
	if rest == "" {
		return true
	}
	// "?" never matches "/"; a class ([/]) or an escape (\/) may.
	return rest[0] != '/' && rest[0] != '[' && rest[0] != '\\'
}

// glob decodes a path.Match pattern.
func (d *decoder) glob(f field) string {
	s, ok := d.str(f)
	if !ok {
		return ""
	}
	if _, err := path.Match(s, ""); err != nil {
		d.errorf(f.v, "%s: invalid glob %q: %v", f.key, clip(s), err)
		return ""
	}
	return s
}

func (l *loader) ports(d *decoder, f field, protos []string) ([]PortRange, string) {
	var items []*yaml.Node
	switch f.v.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{f.v}
	case yaml.SequenceNode:
		items = f.v.Content
		if len(items) == 0 {
			d.errorf(f.v, "port: empty list")
			return nil, ""
		}
	default:
		d.errorf(f.v, "port: expected a port, a service name, a range lo-hi, or a list of them, got %s", kindName(f.v))
		return nil, ""
	}
	var out []PortRange
	var text []string
	for _, it := range items {
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" || it.Value == "" {
			d.errorf(it, "port: expected a port, a service name or a range lo-hi, got %s", kindName(it))
			continue
		}
		v := it.Value
		text = append(text, v)
		if lo, hi, ok := strings.Cut(v, "-"); ok && isDigits(lo) && isDigits(hi) {
			a, okA := d.portNum(it, lo)
			b, okB := d.portNum(it, hi)
			if okA && okB {
				if a > b {
					d.errorf(it, "port: reversed range %s (%d > %d)", v, a, b)
					continue
				}
				out = append(out, PortRange{Lo: a, Hi: b})
			}
			continue
		}
		if isDigits(v) || it.Tag == "!!int" || it.Tag == "!!float" {
			if p, ok := d.portNum(it, v); ok {
				out = append(out, PortRange{Lo: p, Hi: p})
			}
			continue
		}
		if strings.ContainsAny(v, " \t") || hasControl(v) {
			d.errorf(it, "port: %q is not a port, a range lo-hi or a service name", clip(v))
			continue
		}
		svc, err := l.services()
		if err != nil {
			d.errorf(it, "port: cannot resolve service %q: %v", clip(v), err)
			continue
		}
		found := false
		for _, p := range protos {
			if port, ok := svc[v][p]; ok {
				out = append(out, PortRange{Protocol: p, Lo: port, Hi: port})
				found = true
			}
		}
		if !found {
			d.errorf(it, "port: unknown service %q for %s in %s", clip(v), strings.Join(protos, "/"), l.servicesFile)
		}
	}
	return out, strings.Join(text, ",")
}

func (d *decoder) portNum(n *yaml.Node, s string) (uint16, bool) {
	p, err := strconv.ParseUint(s, 10, 64)
	if err != nil && !isDigits(strings.TrimPrefix(s, "-")) {
		d.errorf(n, "port: %s is not a port number (1..65535)", clip(s))
		return 0, false
	}
	if err != nil || p < 1 || p > 65535 {
		d.errorf(n, "port: %s is outside 1..65535", clip(s))
		return 0, false
	}
	return uint16(p), true
}

func (d *decoder) addresses(f field) ([]AddressMatch, string) {
	items, ok := d.strs(f)
	if !ok {
		return nil, ""
	}
	var out []AddressMatch
	var text []string
	for _, it := range items {
		v := it.Value
		text = append(text, v)
		switch strings.ToLower(v) {
		case "any":
			out = append(out, AddressMatch{Kind: AddressAny})
			continue
		case "loopback":
			out = append(out, AddressMatch{Kind: AddressLoopback})
			continue
		case "wildcard":
			out = append(out, AddressMatch{Kind: AddressWildcard})
			continue
		}
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				d.errorf(it, "address: invalid CIDR %q", clip(v))
				continue
			}
			if p.Addr().Is4In6() {
				p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
			}
			out = append(out, AddressMatch{Kind: AddressPrefix, Prefix: p.Masked()})
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			d.errorf(it, "address: %q is not any, loopback, wildcard, an IP address or a CIDR", clip(v))
			continue
		}
		a = a.Unmap()
		out = append(out, AddressMatch{Kind: AddressPrefix, Prefix: netip.PrefixFrom(a, a.BitLen())})
	}
	return out, strings.Join(text, ",")
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
