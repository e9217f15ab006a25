package exposure

import (
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Facts describe one listener for Evaluate.
type Facts struct {
	Protocol string     // tcp or udp
	Address  netip.Addr // the bind address
	Port     uint16
}

// Evaluate gives a listener's bind scope and the verdict of the ruleset of
// its namespace for a new connection from outside: an unknown source, a
// non-loopback interface, conntrack state new, to the bind address (or, for
// a wildcard, an address of the namespace). It walks every filter base chain
// of the prerouting and input hooks of the families that see the packet, in
// hook and priority order: the packet must be accepted by each (an accept
// in one base chain does not stop a drop in another). Published is left to
// Join. Evaluate is pure: rs comes from Read or Decode.
func Evaluate(rs *Ruleset, f Facts) Exposure {
	ex := Exposure{Scope: ScopeOf(f.Address)}
	if rs == nil {
		ex.Verdict, ex.Reason = VerdictUnknown, "ruleset not read"
		return ex
	}
	p, why := rs.packet(f.Protocol, f.Address, f.Port)
	if p == nil {
		ex.Verdict, ex.Reason = VerdictUnknown, why
		return ex
	}
	r := rs.walkHooks(p, unix.NF_INET_LOCAL_IN, nil)
	ex.Verdict, ex.Reason, ex.Deciding, ex.RestrictedTo = r.v, r.reason, r.rule, r.to
	return ex
}

// packet builds the synthetic packet to addr:port; for a wildcard address it
// takes an address of the namespace of that family, not loopback.
func (rs *Ruleset) packet(proto string, addr netip.Addr, port uint16) (*packet, string) {
	p := &packet{dport: port, local: rs.isLocal, loIndex: 1}
	switch proto {
	case "tcp":
		p.l4proto = unix.IPPROTO_TCP
	case "udp":
		p.l4proto = unix.IPPROTO_UDP
	default:
		return nil, "protocol " + proto
	}
	addr = addr.Unmap()
	p.family = unix.NFPROTO_IPV6
	if addr.Is4() {
		p.family = unix.NFPROTO_IPV4
	}
	for _, l := range rs.Links {
		if l.Name == "lo" {
			p.loIndex = uint32(l.Index)
		}
	}
	p.daddr = addr
	if addr.IsUnspecified() {
		p.daddr = rs.hostAddr(addr.Is4())
		if !p.daddr.IsValid() {
			// No address to be reached at from outside; a match on
			// the destination address then stays unknown.
			p.daddr = addr
		}
	}
	return p, ""
}

// hostAddr returns a global address of the namespace, else a link-local
// one, not loopback.
func (rs *Ruleset) hostAddr(v4 bool) netip.Addr {
	var ll netip.Addr
	for _, l := range rs.Links {
		for _, s := range l.Addrs {
			pf, err := netip.ParsePrefix(s)
			if err != nil || pf.Addr().Is4() != v4 || pf.Addr().IsLoopback() {
				continue
			}
			if pf.Addr().IsLinkLocalUnicast() {
				if !ll.IsValid() {
					ll = pf.Addr()
				}
				continue
			}
			return pf.Addr()
		}
	}
	return ll
}

// isLocal reports whether a is an address of the namespace.
func (rs *Ruleset) isLocal(a netip.Addr) bool {
	for _, l := range rs.Links {
		for _, s := range l.Addrs {
			if pf, err := netip.ParsePrefix(s); err == nil && pf.Addr() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// linkTo returns the interface whose subnet holds a, or nil.
func (rs *Ruleset) linkTo(a netip.Addr) *Link {
	for i := range rs.Links {
		for _, s := range rs.Links[i].Addrs {
			if pf, err := netip.ParsePrefix(s); err == nil && pf.Masked().Contains(a) && !pf.Addr().IsLoopback() {
				return &rs.Links[i]
			}
		}
	}
	return nil
}

// blind lists what may filter packets where this package cannot see:
// iptables-legacy tables, netdev and bridge chains, ingress hooks, XDP and
// tc programs. Each can only drop more, so a filtered verdict stands.
func (rs *Ruleset) blind() string {
	var why []string
	if len(rs.Legacy) > 0 {
		why = append(why, "iptables-legacy tables present ("+strings.Join(rs.Legacy, ", ")+")")
	}
	for _, c := range rs.Chains {
		if c.Hook == nil {
			continue
		}
		switch {
		case c.Family == unix.NFPROTO_NETDEV:
			why = append(why, "netdev chain "+c.Table+" "+c.Name)
		case c.Family == unix.NFPROTO_BRIDGE:
			why = append(why, "bridge chain "+c.Table+" "+c.Name)
		case c.Family == unix.NFPROTO_INET && *c.Hook == nfInetIngress:
			why = append(why, "ingress chain "+c.Table+" "+c.Name)
		}
	}
	for _, l := range rs.Links {
		if l.XDP {
			why = append(why, "XDP program on "+l.Name)
		}
		if l.TCIngress != "" && l.Name != "lo" {
			why = append(why, "tc "+l.TCIngress+" qdisc on "+l.Name)
		}
	}
	return strings.Join(why, "; ")
}

// nfInetIngress is NF_INET_INGRESS, the inet family's ingress hook.
const nfInetIngress = 5

// walkHooks walks the filter base chains of prerouting and hook (input or
// forward) that see packet p, and joins their verdicts. pre, when not nil,
// is the packet before a DNAT, for prerouting chains that run before it.
func (rs *Ruleset) walkHooks(p *packet, hook uint32, pre *packet) result {
	var cs []*Chain
	for _, c := range rs.Chains {
		if c.Hook == nil || c.Type != "filter" || (c.Family != p.family && c.Family != unix.NFPROTO_INET) {
			continue
		}
		if *c.Hook == hook || *c.Hook == unix.NF_INET_PRE_ROUTING {
			cs = append(cs, c)
		}
	}
	sortChains(cs)
	var out result
	out.v = VerdictOpen
	for _, c := range cs {
		pk := p
		// Before the DNAT (priority dstnat, -100) a prerouting chain
		// sees the packet as it came.
		if pre != nil && *c.Hook == unix.NF_INET_PRE_ROUTING && c.Priority < -100 {
			pk = pre
		}
		w := &walker{rs: rs, p: pk}
		r := w.base(c)
		switch r.v {
		case VerdictFiltered:
			return r
		case VerdictUnknown:
			if out.v != VerdictUnknown {
				out = r
			}
		case VerdictRestricted:
			if out.v == VerdictOpen {
				out = r
			} else if out.v == VerdictRestricted {
				out.to = append(slices.Clip(out.to), r.to...)
			}
		}
	}
	if why := rs.blind(); why != "" {
		return result{v: VerdictUnknown, reason: why}
	}
	if out.v == VerdictOpen {
		out.rule = nil
		if len(cs) == 0 {
			out.reason = "no filter chain"
		}
	}
	out.to = dedup(out.to)
	return out
}

func dedup(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
