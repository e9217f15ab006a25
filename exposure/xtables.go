package exposure

import (
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// xtMatch evaluates an xtables match (iptables-nft). done is false when the
// match held and the rule goes on.
func (w *walker) xtMatch(st state, r *Rule, i int, g *regs, m *expr.Match) (result, bool) {
	c := st.stack[len(st.stack)-1].c
	inRange := func(v uint16, rg [2]uint16) bool { return v >= rg[0] && v <= rg[1] }
	fail := func() (result, bool) { return w.cont(st), true }
	cond := func(desc string) (result, bool) {
		yes := st.clone()
		yes.conds = append(yes.conds, desc)
		return condMerge(w.exprs(yes, r, i+1, cloneRegs(g)), w.cont(st), strings.Join(yes.conds, " ")), true
	}
	switch info := m.Info.(type) {
	case *xt.Comment:
		return result{}, false
	case *xt.Tcp:
		if w.p.l4proto != unix.IPPROTO_TCP || inRange(w.p.dport, info.DstPorts) == (info.InvFlags&xt.TcpInvDestPorts != 0) {
			return fail()
		}
		if info.FlagsMask != 0 && (0x02&info.FlagsMask == info.FlagsCmp) == (info.InvFlags&xt.TcpInvFlags != 0) {
			return fail()
		}
		if info.SrcPorts != [2]uint16{0, 0xffff} {
			return cond("tcp sport " + portRange(info.SrcPorts))
		}
		return result{}, false
	case *xt.Udp:
		if w.p.l4proto != unix.IPPROTO_UDP || inRange(w.p.dport, info.DstPorts) == (info.InvFlags&xt.UdpInvDestPorts != 0) {
			return fail()
		}
		if info.SrcPorts != [2]uint16{0, 0xffff} {
			return cond("udp sport " + portRange(info.SrcPorts))
		}
		return result{}, false
	case *xt.ConntrackMtinfo1, *xt.ConntrackMtinfo2, *xt.ConntrackMtinfo3:
		var base xt.ConntrackMtinfoBase
		var state, status uint16
		switch v := info.(type) {
		case *xt.ConntrackMtinfo1:
			base, state, status = v.ConntrackMtinfoBase, uint16(v.StateMask), uint16(v.StatusMask)
		case *xt.ConntrackMtinfo2:
			base, state, status = v.ConntrackMtinfoBase, v.StateMask, v.StatusMask
		case *xt.ConntrackMtinfo3:
			base, state, status = v.ConntrackMtinfoBase, v.StateMask, v.StatusMask
		}
		if base.MatchFlags&^uint16(xt.ConntrackState|xt.ConntrackStatus|xt.ConntrackStateAlias) != 0 {
			return w.either("conntrack match not modelled ("+w.ref(c, r).String()+")",
				w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st)), true
		}
		if base.MatchFlags&uint16(xt.ConntrackState) != 0 {
			hit := state&(1<<(2+1)) != 0 // XT_CONNTRACK_STATE_BIT(IP_CT_NEW)
			if hit == (base.InvertFlags&uint16(xt.ConntrackState) != 0) {
				return fail()
			}
		}
		if base.MatchFlags&uint16(xt.ConntrackStatus) != 0 {
			hit := uint32(status)&w.p.ctStat != 0
			if hit == (base.InvertFlags&uint16(xt.ConntrackStatus) != 0) {
				return fail()
			}
		}
		return result{}, false
	case *xt.AddrType, *xt.AddrTypeV1:
		var src, dst uint16
		var invSrc, invDst bool
		if v, ok := info.(*xt.AddrType); ok {
			src, dst, invSrc, invDst = v.Source, v.Dest, v.InvertSource, v.InvertDest
		} else {
			v := info.(*xt.AddrTypeV1)
			src, dst = v.Source, v.Dest
			invSrc, invDst = v.Flags&1 != 0, v.Flags&2 != 0 // XT_ADDRTYPE_INVERT_SOURCE, _DEST
		}
		if dst != 0 {
			local := !w.p.daddr.IsValid() || w.p.local(w.p.daddr)
			typ := uint16(xt.AddrTypeUnicast)
			if local {
				typ = uint16(xt.AddrTypeLocal)
			}
			if (dst&typ != 0) == invDst {
				return fail()
			}
		}
		if src != 0 {
			neg := ""
			if invSrc {
				neg = "!= "
			}
			return cond("fib saddr type " + neg + "0x" + hexs([]byte{byte(src >> 8), byte(src)}))
		}
		return result{}, false
	}
	switch m.Name {
	case "limit", "hashlimit", "recent", "connlimit", "quota":
		return w.either("rate limit ("+w.ref(c, r).String()+")", w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st)), true
	}
	return w.either("xt match "+m.Name+" not understood ("+w.ref(c, r).String()+")",
		w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st)), true
}

func portRange(r [2]uint16) string {
	if r[0] == r[1] {
		return strconv.Itoa(int(r[0]))
	}
	return strconv.Itoa(int(r[0])) + "-" + strconv.Itoa(int(r[1]))
}

// xtTarget applies an xtables target (iptables-nft).
func (w *walker) xtTarget(st state, r *Rule, t *expr.Target) result {
	c := st.stack[len(st.stack)-1].c
	switch t.Name {
	case "REJECT":
		return result{v: VerdictFiltered, rule: w.ref(c, r)}
	case "LOG", "NFLOG", "MARK", "CONNMARK", "CT", "TCPMSS", "CHECKSUM", "NOTRACK", "TRACE", "CLASSIFY", "DSCP", "TOS":
		return w.cont(st)
	case "MASQUERADE", "SNAT", "REDIRECT":
		return result{v: VerdictOpen}
	case "DNAT":
		if w.p.pubMode {
			return w.dnatXT(st, r, t)
		}
		return result{v: VerdictOpen}
	}
	return w.unknown(st, r, "xt target "+t.Name+" not understood ("+w.ref(c, r).String()+")")
}
