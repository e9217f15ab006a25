package exposure

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// maxSteps bounds the expressions one evaluation may look at (branches
// included); past it the answer is unknown rather than slow.
const maxSteps = 200000

// nfDrop is NF_DROP, a base chain's policy.
const nfDrop = 0

// result is what one path (or a merge of paths) through a base chain gives.
type result struct {
	v      Verdict
	rule   *RuleRef
	reason string
	to     []string
	pubs   []Publication // the publication search: DNATs reached
}

type frame struct {
	c *Chain
	i int // next rule
}

// state is one path: the chain stack, and the conditions on source or
// interface that hold on it.
type state struct {
	stack []frame
	conds []string
	daddr netip.Addr // the publication search: the destination address a match bound
	hops  int        // jumps and gotos taken
}

// maxHops bounds the jumps and gotos of one path. The kernel refuses a
// ruleset with a loop, but a goto loop (which does not grow the stack) in
// a malformed or inconsistent dump would otherwise recurse until maxSteps,
// deep enough to overflow the goroutine's stack (FuzzDecode found one).
const maxHops = 256

func (s state) clone() state {
	s.stack = slices.Clone(s.stack)
	s.conds = slices.Clip(s.conds)
	return s
}

type walker struct {
	rs    *Ruleset
	p     *packet
	steps int
}

func (w *walker) ref(c *Chain, r *Rule) *RuleRef {
	h := uint64(0)
	if r != nil {
		h = r.Handle
	}
	return &RuleRef{Family: familyName(c.Family), Table: c.Table, Chain: c.Name, Handle: h}
}

// base walks one base chain from its first rule.
func (w *walker) base(c *Chain) result {
	return w.cont(state{stack: []frame{{c: c}}})
}

// cont goes on with the next rule of the innermost chain.
func (w *walker) cont(st state) result {
	for {
		top := &st.stack[len(st.stack)-1]
		if top.i < len(top.c.Rules) {
			r := top.c.Rules[top.i]
			top.i++
			return w.exprs(st, r, 0, &regs{})
		}
		if len(st.stack) == 1 {
			return w.policy(top.c)
		}
		st.stack = st.stack[:len(st.stack)-1]
	}
}

func (w *walker) policy(c *Chain) result {
	if c.Policy == nfDrop {
		return result{v: VerdictFiltered, rule: w.ref(c, nil)}
	}
	return result{v: VerdictOpen}
}

func (w *walker) unknown(st state, r *Rule, why string) result {
	return result{v: VerdictUnknown, rule: w.ref(st.stack[len(st.stack)-1].c, r), reason: why}
}

// exprs evaluates the rule r from its expression i on.
func (w *walker) exprs(st state, r *Rule, i int, g *regs) result {
	c := st.stack[len(st.stack)-1].c
	for ; i < len(r.Exprs); i++ {
		if w.steps++; w.steps > maxSteps {
			return w.unknown(st, r, "ruleset too large to evaluate")
		}
		e := r.Exprs[i]
		if e.E == nil {
			// The rule may or may not match; its remaining expressions
			// say what happens when it does.
			// Whatever it loaded is unknown too.
			why := "expression " + e.Name + " not understood (" + w.ref(c, r).String() + ")"
			u := cloneRegs(g)
			for j := range u.o {
				u.o[j] = &origin{kind: oUnknown, desc: e.Name, why: why}
			}
			return w.either(why, w.exprs(st.clone(), r, i+1, u), w.cont(st))
		}
		switch x := e.E.(type) {
		case *expr.Counter, *expr.Log, *expr.Notrack, *expr.SecMark, *expr.Dup, *expr.Masq:
		case *expr.Meta:
			if x.SourceRegister {
				continue // meta set: does not change what this packet is
			}
			b, o := w.p.meta(x.Key)
			g.load(x.Register, b, o)
		case *expr.Ct:
			if x.SourceRegister {
				continue
			}
			b, o := w.p.ct(x.Key)
			g.load(x.Register, b, o)
		case *expr.Payload:
			if x.OperationType != expr.PayloadLoad {
				continue
			}
			if x.Len > uint32(len(g.b)) {
				// The kernel refuses such a rule; a malformed dump must
				// not make header() allocate gigabytes (FuzzDecode).
				return w.unknown(st, r, "payload load longer than the registers")
			}
			b, o := w.p.header(x.Base, int(x.Offset), int(x.Len))
			g.load(x.DestRegister, b, o)
		case *expr.Immediate:
			g.load(x.Register, x.Data, nil)
		case *expr.Bitwise:
			b, o, ok := g.read(x.SourceRegister, int(x.Len))
			if !ok || len(x.Mask) < len(b) || len(x.Xor) < len(b) {
				return w.unknown(st, r, "bitwise on a bad register")
			}
			out := make([]byte, len(b))
			oo := make([]*origin, len(b))
			for j := range b {
				out[j] = b[j]&x.Mask[j] ^ x.Xor[j]
				if o[j] != nil && x.Mask[j] != 0 {
					m := *o[j]
					m.mask = x.Mask[:len(b)]
					oo[j] = &m
				}
			}
			g.load(x.DestRegister, out, oo)
		case *expr.Byteorder:
			b, o, ok := g.read(x.SourceRegister, int(x.Len))
			if !ok {
				return w.unknown(st, r, "byteorder on a bad register")
			}
			out := slices.Clone(b)
			if x.Size > 1 {
				for j := 0; j+int(x.Size) <= len(out); j += int(x.Size) {
					slices.Reverse(out[j : j+int(x.Size)])
				}
			}
			g.load(x.DestRegister, out, slices.Clone(o))
		case *expr.Cmp:
			b, o, ok := g.read(x.Register, len(x.Data))
			if !ok {
				return w.unknown(st, r, "cmp on a bad register")
			}
			return w.test(st, r, i, g, b, o, x.Data, func(v []byte) bool { return cmpOp(x.Op, v, x.Data) }, x.Op)
		case *expr.Range:
			b, o, ok := g.read(x.Register, len(x.FromData))
			if !ok {
				return w.unknown(st, r, "range on a bad register")
			}
			in := func(v []byte) bool {
				ok := bytes.Compare(v, x.FromData) >= 0 && bytes.Compare(v, x.ToData) <= 0
				return ok == (x.Op == expr.CmpOpEq)
			}
			return w.test(st, r, i, g, b, o, x.FromData, in, x.Op)
		case *expr.Lookup:
			return w.lookup(st, r, i, g, x)
		case *expr.Fib:
			if x.ResultADDRTYPE && x.FlagDADDR && !x.FlagSADDR {
				if w.p.daddr.IsValid() && !w.p.local(w.p.daddr) {
					g.load(x.Register, binary.NativeEndian.AppendUint32(nil, unix.RTN_UNICAST), nil)
				} else {
					g.load(x.Register, binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL), nil)
				}
				continue
			}
			if x.FlagSADDR {
				g.loadOrigin(x.Register, 16, &origin{kind: oSource, desc: "fib saddr"})
				continue
			}
			g.loadOrigin(x.Register, 16, unknownField("fib"))
		case *expr.Limit, *expr.Quota, *expr.Connlimit, *expr.Dynset:
			why := "rate limit (" + w.ref(c, r).String() + ")"
			return w.either(why, w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st))
		case *expr.Objref:
			if x.Type == unix.NFT_OBJECT_LIMIT || x.Type == unix.NFT_OBJECT_QUOTA || x.Type == unix.NFT_OBJECT_CONNLIMIT {
				why := "rate limit (" + w.ref(c, r).String() + ")"
				return w.either(why, w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st))
			}
		case *expr.Numgen, *expr.Hash:
			var reg uint32
			if n, ok := x.(*expr.Numgen); ok {
				reg = n.Register
			} else {
				reg = x.(*expr.Hash).DestRegister
			}
			g.loadOrigin(reg, 4, unknownField("random"))
		case *expr.Verdict:
			return w.verdict(st, r, x.Kind, x.Chain)
		case *expr.Reject:
			return result{v: VerdictFiltered, rule: w.ref(c, r)}
		case *expr.Queue:
			return w.unknown(st, r, "queued to userspace ("+w.ref(c, r).String()+")")
		case *expr.NAT:
			if x.Type == expr.NATTypeDestNAT && w.p.pubMode {
				return w.dnatNative(st, r, g, x)
			}
			return result{v: VerdictOpen} // NAT statements end the rule with accept
		case *expr.Redir:
			return result{v: VerdictOpen}
		case *expr.Match:
			res, done := w.xtMatch(st, r, i, g, x)
			if done {
				return res
			}
		case *expr.Target:
			return w.xtTarget(st, r, x)
		default:
			// Exthdr, Socket, Rt, Synproxy...: a match on what the
			// evaluator does not model.
			why := "expression " + e.Name + " not modelled (" + w.ref(c, r).String() + ")"
			return w.either(why, w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st))
		}
	}
	return w.cont(st)
}

func cloneRegs(g *regs) *regs { c := *g; return &c }

func cmpOp(op expr.CmpOp, v, d []byte) bool {
	c := bytes.Compare(v, d)
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

// test decides a comparison: known bytes decide it; a source or interface
// makes it a condition; an unmodelled value makes it unknown.
func (w *walker) test(st state, r *Rule, i int, g *regs, b []byte, o []*origin, data []byte, f func([]byte) bool, op expr.CmpOp) result {
	c := st.stack[len(st.stack)-1].c
	org := firstOrigin(o)
	if org != nil && (op == expr.CmpOpEq || op == expr.CmpOpNeq) {
		// Known bytes that differ decide an equality whatever the
		// unknown ones hold (iptables-nft loads sport and dport as one).
		for j := range b {
			if o[j] == nil && j < len(data) && b[j] != data[j] {
				if op == expr.CmpOpNeq {
					return w.exprs(st, r, i+1, g)
				}
				return w.cont(st)
			}
		}
	}
	if org == nil {
		if f(b) {
			return w.exprs(st, r, i+1, g)
		}
		return w.cont(st)
	}
	switch org.kind {
	case oIface:
		for _, not := range [][]byte{org.lo, org.not} {
			if not != nil && (op == expr.CmpOpEq || op == expr.CmpOpNeq) && len(data) <= len(not) &&
				bytes.Equal(data, not[:len(data)]) && (len(data) == len(not) || data[len(data)-1] == 0) {
				// Exactly lo (or the interface towards the
				// destination): the packet comes in on another one.
				if op == expr.CmpOpNeq {
					return w.exprs(st, r, i+1, g)
				}
				return w.cont(st)
			}
		}
		fallthrough
	case oSource:
		desc := describe(org, op, data)
		yes := st.clone()
		yes.conds = append(yes.conds, desc)
		return condMerge(w.exprs(yes, r, i+1, cloneRegs(g)), w.cont(st), strings.Join(yes.conds, " "))
	case oDaddr:
		if op == expr.CmpOpEq && len(data) == w.daddrLen() {
			a, _ := netip.AddrFromSlice(data)
			yes := st.clone()
			yes.daddr = a
			return union(w.exprs(yes, r, i+1, cloneRegs(g)), w.cont(st))
		}
		return union(w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st))
	}
	why := org.why
	if why == "" {
		why = "match on " + org.desc + " (" + w.ref(c, r).String() + ")"
	}
	return w.either(why, w.exprs(st.clone(), r, i+1, cloneRegs(g)), w.cont(st))
}

func (w *walker) daddrLen() int {
	if w.p.family == unix.NFPROTO_IPV4 {
		return 4
	}
	return 16
}

// verdict applies a verdict of rule r.
func (w *walker) verdict(st state, r *Rule, k expr.VerdictKind, chain string) result {
	top := st.stack[len(st.stack)-1].c
	switch k {
	case expr.VerdictAccept:
		return result{v: VerdictOpen, rule: w.ref(top, r)}
	case expr.VerdictDrop:
		return result{v: VerdictFiltered, rule: w.ref(top, r)}
	case expr.VerdictContinue:
		return w.cont(st)
	case expr.VerdictReturn:
		if len(st.stack) == 1 {
			return w.policy(top)
		}
		st.stack = st.stack[:len(st.stack)-1]
		return w.cont(st)
	case expr.VerdictJump, expr.VerdictGoto:
		to := w.rs.Chain(ChainID{Family: top.Family, Table: top.Table, Name: chain})
		if to == nil {
			return w.unknown(st, r, "jump to missing chain "+chain)
		}
		if len(st.stack) > 16 {
			return w.unknown(st, r, "jumps nested too deep")
		}
		if st.hops++; st.hops > maxHops {
			return w.unknown(st, r, "jumps and gotos loop")
		}
		if k == expr.VerdictGoto {
			st.stack[len(st.stack)-1] = frame{c: to}
		} else {
			st.stack = append(st.stack, frame{c: to})
		}
		return w.cont(st)
	case expr.VerdictQueue:
		return w.unknown(st, r, "queued to userspace")
	case expr.VerdictStolen:
		return w.unknown(st, r, "stolen")
	}
	return w.unknown(st, r, "verdict "+strconv.Itoa(int(k)))
}

// lookup decides a set or map lookup.
func (w *walker) lookup(st state, r *Rule, i int, g *regs, x *expr.Lookup) result {
	c := st.stack[len(st.stack)-1].c
	set := w.rs.Sets[SetID{Family: c.Family, Table: c.Table, Name: x.SetName}]
	if set == nil {
		return w.unknown(st, r, "lookup in missing set "+x.SetName)
	}
	b, o, ok := g.read(x.SourceRegister, int(set.KeyLen))
	if !ok {
		return w.unknown(st, r, "lookup on a bad register")
	}
	isVmap := x.IsDestRegSet && x.DestRegister == unix.NFT_REG_VERDICT
	// then continues the path with element e (nil: no element matched).
	then := func(st state, e *Element, g *regs) result {
		if e == nil {
			if x.Invert {
				return w.exprs(st, r, i+1, g)
			}
			return w.cont(st)
		}
		switch {
		case x.Invert:
			return w.cont(st)
		case isVmap:
			if e.Verdict == nil {
				return w.unknown(st, r, "verdict map element without a verdict")
			}
			return w.verdict(st, r, e.Verdict.Kind, e.Verdict.Chain)
		case x.IsDestRegSet:
			g.load(x.DestRegister, e.Data, nil)
		}
		return w.exprs(st, r, i+1, g)
	}
	org := firstOrigin(o)
	if org == nil {
		return then(st, set.find(b), g)
	}
	// Not a known key: every element is a branch, and so is no match.
	var res *result
	add := func(x result) {
		if res == nil {
			res = &x
			return
		}
		switch org.kind {
		case oSource, oIface:
			m := condMerge(x, *res, "")
			res = &m
		case oDaddr:
			m := union(*res, x)
			res = &m
		default:
			m := w.either("lookup on "+org.desc+" in @"+set.Name, *res, x)
			res = &m
		}
	}
	add(then(st.clone(), nil, cloneRegs(g)))
	for k := range set.Elements {
		e := &set.Elements[k]
		if e.IntervalEnd {
			continue
		}
		yes, ok := st.clone(), true
		for j := range b {
			if o[j] == nil && j < len(e.Key) && e.Key[j] != b[j] && e.KeyEnd == nil && set.Flags&unix.NFT_SET_INTERVAL == 0 {
				ok = false // the known part of the key differs
			}
		}
		if !ok {
			continue
		}
		switch org.kind {
		case oSource, oIface:
			yes.conds = append(yes.conds, org.desc+" @"+set.Name)
		case oDaddr:
			if a, ok := w.keyAddr(e.Key, o); ok {
				yes.daddr = a
			}
		}
		rr := then(yes, e, cloneRegs(g))
		if org.kind == oSource || org.kind == oIface {
			rr = condMerge(rr, result{v: VerdictFiltered}, strings.Join(yes.conds, " "))
		}
		add(rr)
	}
	return *res
}

// keyAddr takes the destination address out of a set key, where the key's
// bytes come from freeDaddr.
func (w *walker) keyAddr(key []byte, o []*origin) (netip.Addr, bool) {
	var b []byte
	for j, x := range o {
		if x == freeDaddr && j < len(key) {
			b = append(b, key[j])
		}
	}
	return netip.AddrFromSlice(b)
}

// find returns the element that key matches, or nil.
func (s *Set) find(key []byte) *Element {
	if s.Flags&unix.NFT_SET_INTERVAL == 0 {
		for k := range s.Elements {
			if bytes.Equal(s.Elements[k].Key, key) {
				return &s.Elements[k]
			}
		}
		return nil
	}
	var best *Element
	for k := range s.Elements {
		e := &s.Elements[k]
		if e.KeyEnd != nil {
			if bytes.Compare(key, e.Key) >= 0 && bytes.Compare(key, e.KeyEnd) <= 0 {
				return e
			}
			continue
		}
		if bytes.Compare(e.Key, key) <= 0 && (best == nil || bytes.Compare(e.Key, best.Key) > 0) {
			best = e
		}
	}
	if best == nil || best.IntervalEnd {
		return nil
	}
	return best
}

// condMerge joins the path where a condition on source or interface held
// (yes) with the one where it did not (no).
func condMerge(yes, no result, cond string) result {
	pubs := append(slices.Clip(no.pubs), yes.pubs...)
	switch no.v {
	case VerdictOpen, VerdictUnknown:
		no.pubs = pubs
		return no
	}
	switch yes.v {
	case VerdictOpen:
		if cond != "" {
			no.to = append(slices.Clip(no.to), cond)
		}
		no.to = append(no.to, yes.to...)
		no.v, no.rule = VerdictRestricted, yes.rule
	case VerdictRestricted, VerdictUnknown:
		no.to = append(slices.Clip(no.to), yes.to...)
		if yes.v == VerdictUnknown && cond != "" {
			no.to = append(no.to, cond)
			no.reason = yes.reason
		}
		if len(no.to) > 0 {
			no.v = VerdictRestricted
			if no.rule == nil || yes.rule != nil {
				no.rule = yes.rule
			}
		}
	}
	no.pubs = pubs
	return no
}

// either joins two paths of which the evaluator cannot tell which is taken.
func (w *walker) either(why string, a, b result) result {
	pubs := append(slices.Clip(a.pubs), b.pubs...)
	switch {
	case a.v == VerdictUnknown:
	case b.v == VerdictUnknown:
		a = b
	case a.v == b.v:
		a.to = append(slices.Clip(a.to), b.to...)
	default:
		a = result{v: VerdictUnknown, reason: why} // the reason names the rule
	}
	a.pubs = pubs
	return a
}

// union joins paths of the publication search: every DNAT on either.
func union(a, b result) result {
	a.pubs = append(slices.Clip(a.pubs), b.pubs...)
	return a
}

// sortChains orders base chains by hook (prerouting first) and priority.
func sortChains(cs []*Chain) {
	sort.SliceStable(cs, func(i, j int) bool {
		hi, hj := hookOrder(*cs[i].Hook), hookOrder(*cs[j].Hook)
		if hi != hj {
			return hi < hj
		}
		return cs[i].Priority < cs[j].Priority
	})
}

func hookOrder(h uint32) int {
	if h == unix.NF_INET_PRE_ROUTING {
		return 0
	}
	return 1
}
