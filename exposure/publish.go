package exposure

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// ipsDstNat is IPS_DST_NAT, the conntrack status bit of a DNATed connection.
const ipsDstNat = 1 << 5

// Publications finds the DNAT rules of the nat prerouting chains that send
// a port of the host to another address and port, with the forward hook's
// verdict for each (the input hook's for a DNAT to an address of the host).
// It walks the nat chains for a new connection to every port a rule
// mentions, with the destination address left open: a match on it binds
// HostAddr, `fib daddr type local` and `-m addrtype --dst-type LOCAL` leave
// it any local address (0.0.0.0, ::). DNATs to addresses that are not the
// host's (Kubernetes ClusterIPs) are not publications and are left out.
func Publications(rs *Ruleset) []Publication {
	var out []Publication
	ports := rs.candidatePorts()
	for _, fam := range []byte{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6} {
		var cs []*Chain
		for _, c := range rs.Chains {
			if c.Hook != nil && *c.Hook == unix.NF_INET_PRE_ROUTING && c.Type == "nat" &&
				(c.Family == fam || c.Family == unix.NFPROTO_INET) {
				cs = append(cs, c)
			}
		}
		if len(cs) == 0 {
			continue
		}
		sortChains(cs)
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			for _, port := range ports {
				p := &packet{family: fam, l4proto: proto, dport: port, local: rs.isLocal, loIndex: 1, pubMode: true}
				for _, c := range cs {
					w := &walker{rs: rs, p: p}
					out = append(out, w.base(c).pubs...)
				}
			}
		}
	}
	out = slices.DeleteFunc(out, func(p Publication) bool {
		return !p.HostAddr.IsUnspecified() && !rs.isLocal(p.HostAddr)
	})
	slices.SortFunc(out, func(a, b Publication) int {
		return cmp.Or(strings.Compare(a.Proto, b.Proto), cmp.Compare(a.HostPort, b.HostPort),
			a.HostAddr.Compare(b.HostAddr), a.ToAddr.Compare(b.ToAddr), cmp.Compare(a.ToPort, b.ToPort),
			cmp.Compare(a.Rule.Handle, b.Rule.Handle))
	})
	out = slices.CompactFunc(out, func(a, b Publication) bool {
		return a.Proto == b.Proto && a.HostAddr == b.HostAddr && a.HostPort == b.HostPort &&
			a.ToAddr == b.ToAddr && a.ToPort == b.ToPort && a.Rule == b.Rule
	})
	for i := range out {
		rs.forwardVerdict(&out[i])
	}
	return out
}

// forwardVerdict fills the verdict of a publication.
func (rs *Ruleset) forwardVerdict(pub *Publication) {
	proto := byte(unix.IPPROTO_TCP)
	if pub.Proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	fam := byte(unix.NFPROTO_IPV6)
	if pub.ToAddr.Is4() {
		fam = unix.NFPROTO_IPV4
	}
	host := pub.HostAddr
	if host.IsUnspecified() {
		if a := rs.hostAddr(host.Is4()); a.IsValid() {
			host = a
		}
	}
	pre := &packet{family: fam, l4proto: proto, daddr: host, dport: pub.HostPort, local: rs.isLocal, loIndex: 1}
	p := *pre
	p.daddr, p.dport, p.ctStat, p.oif = pub.ToAddr, pub.ToPort, ipsDstNat, rs.linkTo(pub.ToAddr)
	// The connection comes from outside, so not in on the interface
	// towards the destination (Docker's `! -i docker0`).
	p.notIif, pre.notIif = p.oif, p.oif
	hook := uint32(unix.NF_INET_FORWARD)
	if rs.isLocal(pub.ToAddr) || pub.ToAddr.IsLoopback() {
		hook = unix.NF_INET_LOCAL_IN
	}
	r := rs.walkHooks(&p, hook, pre)
	pub.Verdict, pub.Reason, pub.Deciding, pub.RestrictedTo = r.v, r.reason, r.rule, r.to
}

// candidatePorts lists every port number a rule or set element could be
// matching: the 2-byte values of comparisons, ranges and xt tcp/udp
// matches, and the first two bytes of every 32-bit word of set keys.
func (rs *Ruleset) candidatePorts() []uint16 {
	seen := map[uint16]bool{}
	add2 := func(b []byte) {
		if len(b) >= 2 {
			seen[binary.BigEndian.Uint16(b)] = true
		}
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, e := range r.Exprs {
				switch x := e.E.(type) {
				case *expr.Cmp:
					if len(x.Data) == 2 {
						add2(x.Data)
					}
				case *expr.Range:
					if len(x.FromData) == 2 {
						add2(x.FromData)
						add2(x.ToData)
					}
				case *expr.Match:
					if t, ok := x.Info.(*xt.Tcp); ok {
						seen[t.DstPorts[0]] = true
					}
					if u, ok := x.Info.(*xt.Udp); ok {
						seen[u.DstPorts[0]] = true
					}
				}
			}
		}
	}
	for _, s := range rs.Sets {
		for _, e := range s.Elements {
			for j := 0; j+2 <= len(e.Key); j += 4 {
				add2(e.Key[j:])
			}
		}
	}
	delete(seen, 0)
	out := make([]uint16, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// dnatNative records the publication of an nft `dnat to` statement.
func (w *walker) dnatNative(st state, r *Rule, g *regs, x *expr.NAT) result {
	n := 4
	if x.Family == unix.NFPROTO_IPV6 {
		n = 16
	}
	if x.RegAddrMin == 0 {
		return w.unknown(st, r, "dnat without an address")
	}
	ab, ao, ok := g.read(x.RegAddrMin, n)
	if !ok || firstOrigin(ao) != nil {
		return w.unknown(st, r, "dnat to an address the evaluator cannot tell")
	}
	to, _ := netip.AddrFromSlice(ab)
	port := w.p.dport
	if x.RegProtoMin != 0 {
		pb, po, ok := g.read(x.RegProtoMin, 2)
		if !ok || firstOrigin(po) != nil {
			return w.unknown(st, r, "dnat to a port the evaluator cannot tell")
		}
		port = binary.BigEndian.Uint16(pb)
	}
	return w.publish(st, r, to, port)
}

// dnatXT records the publication of an iptables-nft DNAT target.
func (w *walker) dnatXT(st state, r *Rule, t *expr.Target) result {
	var ip []byte
	var min uint16
	var flags uint
	switch v := t.Info.(type) {
	case *xt.NatIPv4MultiRangeCompat:
		if len(*v) == 0 {
			return w.unknown(st, r, "DNAT without a range")
		}
		ip, min, flags = (*v)[0].MinIP, (*v)[0].MinPort, (*v)[0].Flags
	case *xt.NatRange:
		ip, min, flags = v.MinIP, v.MinPort, v.Flags
	case *xt.NatRange2:
		ip, min, flags = v.MinIP, v.MinPort, v.Flags
	default:
		return w.unknown(st, r, "DNAT target not understood")
	}
	to, ok := netip.AddrFromSlice(ip)
	if !ok {
		return w.unknown(st, r, "DNAT target without an address")
	}
	to = to.Unmap()
	port := w.p.dport
	if xt.NatRangeFlags(flags)&xt.NatRangeProtoSpecified != 0 {
		port = min
	}
	return w.publish(st, r, to, port)
}

func (w *walker) publish(st state, r *Rule, to netip.Addr, port uint16) result {
	c := st.stack[len(st.stack)-1].c
	host := st.daddr
	if !host.IsValid() {
		host = netip.IPv6Unspecified()
		if w.p.family == unix.NFPROTO_IPV4 {
			host = netip.IPv4Unspecified()
		}
	}
	proto := "tcp"
	if w.p.l4proto == unix.IPPROTO_UDP {
		proto = "udp"
	}
	names := []string{c.Table}
	for _, f := range st.stack {
		names = append(names, f.c.Name)
	}
	return result{v: VerdictOpen, pubs: []Publication{{
		Proto: proto, HostAddr: host, HostPort: w.p.dport, ToAddr: to, ToPort: port,
		Owner: ownerOf(names), Rule: *w.ref(c, r),
	}}}
}

// ownerOf names who wrote a DNAT from its table and the chains on its path.
func ownerOf(names []string) Owner {
	for _, n := range names {
		switch {
		case n == "DOCKER" || n == "docker-bridges" || strings.HasPrefix(n, "DOCKER-"):
			return OwnerDocker
		case n == "netavark" || strings.HasPrefix(n, "NETAVARK") || strings.HasPrefix(n, "nv_"):
			return OwnerPodman
		case strings.HasPrefix(n, "CNI-DN-") || strings.HasPrefix(n, "CNI-HOSTPORT"):
			return OwnerCNI
		case n == "kube-proxy" || strings.HasPrefix(n, "KUBE-"):
			return OwnerKubeProxy
		}
	}
	return OwnerDNAT
}
