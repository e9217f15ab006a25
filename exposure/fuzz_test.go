package exposure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var fixtureNames = []string{"ufw", "firewalld", "docker-iptables", "nftables-native", "unknown-expression", "legacy"}

// Fuzz modes, in the top bits of FuzzDecode's which argument: what the
// fuzzed bytes replace in a recorded ruleset.
const (
	modeExprData = iota // the NFTA_EXPR_DATA of one expression of one rule
	modeRule            // one whole NFT_MSG_NEWRULE payload
	modeChain           // one whole NFT_MSG_NEWCHAIN payload
	modeSet             // one whole NFT_MSG_NEWSET payload
	modeElems           // one NFT_MSG_NEWSETELEM payload of a set
	nModes
)

// FuzzDecode feeds arbitrary bytes, in place of part of a recorded ruleset,
// to Decode, Evaluate and Publications: none may panic, and an expression
// the decoder cannot decode must make a verdict unknown, never decide it
// another way than a decodable expression in its place does (see
// checkPoison).
func FuzzDecode(f *testing.F) {
	raws := make([]*Raw, len(fixtureNames))
	for i, n := range fixtureNames {
		raws[i] = loadFixture(f, n)
	}
	for fi, raw := range raws {
		for ri, rb := range raw.Rules {
			f.Add(uint8(fi), uint16(modeRule<<13|ri), rb)
			for ei, d := range exprDatas(rb) {
				f.Add(uint8(fi), uint16(modeExprData<<13|ri<<6|ei), d)
			}
		}
		for ci, cb := range raw.Chains {
			f.Add(uint8(fi), uint16(modeChain<<13|ci), cb)
		}
		for si, sb := range raw.Sets {
			f.Add(uint8(fi), uint16(modeSet<<13|si), sb)
		}
		for _, k := range sortedKeys(raw.Elements) {
			for _, eb := range raw.Elements[k] {
				f.Add(uint8(fi), uint16(modeElems<<13), eb)
			}
		}
	}
	f.Fuzz(func(t *testing.T, fix uint8, which uint16, data []byte) {
		raw := cloneRaw(raws[int(fix)%len(raws)])
		mode, n := int(which>>13)%nModes, int(which&(1<<13-1))
		var ri, ei int
		switch mode {
		case modeExprData:
			ri, ei = n>>6, n&(1<<6-1)
			if len(raw.Rules) == 0 {
				return
			}
			ri %= len(raw.Rules)
			b, ok := setExprData(raw.Rules[ri], ei, data)
			if !ok {
				return
			}
			raw.Rules[ri] = b
		case modeRule:
			replaceAt(raw.Rules, n, data)
		case modeChain:
			replaceAt(raw.Chains, n, data)
		case modeSet:
			replaceAt(raw.Sets, n, data)
		case modeElems:
			keys := sortedKeys(raw.Elements)
			if len(keys) == 0 {
				return
			}
			k := keys[n%len(keys)]
			raw.Elements[k] = append(slices.Clone(raw.Elements[k]), data)
		}
		rs, err := Decode(raw)
		if err != nil {
			return
		}
		verdicts(t, rs)
		Publications(rs)
		if mode == modeExprData {
			checkPoison(t, raws[int(fix)%len(raws)], raw, ri, ei)
		}
	})
}

// checkPoison holds the decoder to its promise on an undecodable
// expression. The walker reads Expr{E: nil} as a match it cannot decide:
// the rule may or may not match, and if it does its remaining expressions
// apply, with every register unknown. The original ruleset and the fuzzed
// one (when its expression decoded) are two ways that expression can be;
// so, with the expression at (ri, ei) made undecodable, each fact's verdict
// must be unknown or agree with the verdict of each of them that is not
// unknown itself. It is checked where the expression (original or fuzzed)
// is a match or a load, not a statement with a verdict of its own (accept,
// drop, jump, reject, nat, a verdict map, an xt target): the walker's
// reading of an undecodable expression assumes one that can only pass or
// stop its rule, which is what the kernel's unknown-to-the-library matches
// (osf, xfrm, tunnel, inner, last) are.
func checkPoison(t *testing.T, orig, fuzzed *Raw, ri, ei int) {
	rsO, err := Decode(orig)
	if err != nil {
		t.Fatalf("Decode of the fixture: %v", err)
	}
	rsM, _ := Decode(fuzzed)
	rsP, _ := Decode(fuzzed)
	eo, em, ep := exprAt(rsO, orig.Rules[ri], ei), exprAt(rsM, fuzzed.Rules[ri], ei), exprAt(rsP, fuzzed.Rules[ri], ei)
	if eo == nil || em == nil || ep == nil || terminal(eo.E) {
		return
	}
	ep.E = nil
	vo, vm, vp := verdicts(t, rsO), verdicts(t, rsM), verdicts(t, rsP)
	for i, f := range evalFacts {
		if !consistent(vp[i], vo[i]) {
			t.Errorf("%+v: with expression %d (%s) of rule %d undecodable: %s (%s); the fixture's: %s",
				f, ei, eo.Name, ri, vp[i].Verdict, vp[i].Reason, vo[i].Verdict)
		}
		if em.E != nil && !terminal(em.E) && !consistent(vp[i], vm[i]) {
			t.Errorf("%+v: with expression %d (%s) of rule %d undecodable: %s (%s); decoded as %#v: %s",
				f, ei, em.Name, ri, vp[i].Verdict, vp[i].Reason, em.E, vm[i].Verdict)
		}
	}
}

// consistent reports whether p, the verdict with an undecodable expression,
// and x, the verdict with one way that expression can be, can both be
// right: whether some verdict is among those each allows.
func consistent(p, x Exposure) bool {
	for _, v := range allows(p) {
		if slices.Contains(allows(x), v) {
			return true
		}
	}
	return false
}

// allows lists the verdicts an answer leaves possible: any for unknown;
// restricted or filtered for a restricted one with a reason, which is an
// accept that depends both on a source or interface and on something
// undecidable ("at most from there", from condMerge); else the verdict.
func allows(e Exposure) []Verdict {
	switch {
	case e.Verdict == VerdictUnknown:
		return []Verdict{VerdictOpen, VerdictFiltered, VerdictRestricted, VerdictUnknown}
	case e.Verdict == VerdictRestricted && e.Reason != "":
		return []Verdict{VerdictRestricted, VerdictFiltered}
	}
	return []Verdict{e.Verdict}
}

// terminal reports whether an expression gives a verdict or otherwise ends
// the rule's evaluation, rather than matching or loading.
func terminal(e expr.Any) bool {
	switch x := e.(type) {
	case *expr.Verdict, *expr.Reject, *expr.Target, *expr.NAT, *expr.Redir, *expr.Queue, *expr.Masq:
		return true
	case *expr.Immediate:
		return x.Register == unix.NFT_REG_VERDICT
	case *expr.Lookup:
		return x.IsDestRegSet && x.DestRegister == unix.NFT_REG_VERDICT
	}
	return false
}

// evalFacts are the listeners FuzzDecode evaluates: the ports the
// fixtures' rules name and a few others, on each kind of address.
var evalFacts = func() []Facts {
	var out []Facts
	for _, proto := range []string{"tcp", "udp"} {
		for _, a := range []string{"0.0.0.0", "192.0.2.10", "127.0.0.1", "::"} {
			for _, p := range []uint16{22, 23, 68, 80, 5432, 6000, 7000, 8080, 8443, 30080} {
				out = append(out, Facts{proto, netip.MustParseAddr(a), p})
			}
		}
	}
	return out
}()

func verdicts(t *testing.T, rs *Ruleset) []Exposure {
	out := make([]Exposure, len(evalFacts))
	for i, f := range evalFacts {
		out[i] = Evaluate(rs, f)
		switch out[i].Verdict {
		case VerdictOpen, VerdictFiltered, VerdictRestricted:
		case VerdictUnknown:
			if out[i].Reason == "" {
				t.Errorf("%+v: unknown without a reason", f)
			}
		default:
			t.Errorf("%+v: verdict %q", f, out[i].Verdict)
		}
	}
	return out
}

// exprAt returns expression ei of the decoded rule whose message is rb.
func exprAt(rs *Ruleset, rb []byte, ei int) *Expr {
	id, r, err := decodeRule(rb)
	if err != nil || rs == nil {
		return nil
	}
	c := rs.Chain(id)
	if c == nil {
		return nil
	}
	for _, cr := range c.Rules {
		if cr.Handle == r.Handle && ei < len(cr.Exprs) {
			return &cr.Exprs[ei]
		}
	}
	return nil
}

func replaceAt(msgs [][]byte, n int, data []byte) {
	if len(msgs) > 0 {
		msgs[n%len(msgs)] = data
	}
}

func cloneRaw(r *Raw) *Raw {
	c := *r
	c.Tables, c.Chains, c.Sets, c.Rules = slices.Clone(r.Tables), slices.Clone(r.Chains), slices.Clone(r.Sets), slices.Clone(r.Rules)
	c.Elements = make(map[string][][]byte, len(r.Elements))
	for k, v := range r.Elements {
		c.Elements[k] = slices.Clone(v)
	}
	return &c
}

func sortedKeys(m map[string][][]byte) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// nlattr is one netlink attribute, its type with the flag bits.
type nlattr struct {
	typ  uint16
	data []byte
}

// Netlink attribute headers are in host byte order, whatever the payload's.
func parseNlattrs(b []byte) ([]nlattr, error) {
	var out []nlattr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("short attribute")
		}
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("attribute length %d", l)
		}
		out = append(out, nlattr{binary.NativeEndian.Uint16(b[2:]), b[4:l]})
		b = b[min(len(b), (l+3)&^3):]
	}
	return out, nil
}

func marshalNlattrs(as []nlattr) []byte {
	var b []byte
	for _, a := range as {
		b = binary.NativeEndian.AppendUint16(b, uint16(4+len(a.data)))
		b = binary.NativeEndian.AppendUint16(b, a.typ)
		b = append(b, a.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

const nlaTypeMask = 0x3fff

// exprList returns the attributes of a rule message and the index of its
// NFTA_RULE_EXPRESSIONS, with the list's elements.
func exprList(rb []byte) (top []nlattr, at int, elems []nlattr, ok bool) {
	if len(rb) < 4 {
		return nil, 0, nil, false
	}
	top, err := parseNlattrs(rb[4:])
	if err != nil {
		return nil, 0, nil, false
	}
	for i, a := range top {
		if a.typ&nlaTypeMask == unix.NFTA_RULE_EXPRESSIONS {
			elems, err := parseNlattrs(a.data)
			return top, i, elems, err == nil
		}
	}
	return nil, 0, nil, false
}

// exprDatas returns the NFTA_EXPR_DATA of each expression of a rule.
func exprDatas(rb []byte) [][]byte {
	_, _, elems, ok := exprList(rb)
	if !ok {
		return nil
	}
	out := make([][]byte, len(elems))
	for i, e := range elems {
		as, _ := parseNlattrs(e.data)
		for _, a := range as {
			if a.typ&nlaTypeMask == unix.NFTA_EXPR_DATA {
				out[i] = a.data
			}
		}
	}
	return out
}

// setExprData returns the rule message rb with the NFTA_EXPR_DATA of its
// expression ei replaced by data.
func setExprData(rb []byte, ei int, data []byte) ([]byte, bool) {
	top, at, elems, ok := exprList(rb)
	if !ok || ei >= len(elems) {
		return nil, false
	}
	as, err := parseNlattrs(elems[ei].data)
	if err != nil {
		return nil, false
	}
	// In place, with the type's flag bits as the kernel sent them.
	i := slices.IndexFunc(as, func(a nlattr) bool { return a.typ&nlaTypeMask == unix.NFTA_EXPR_DATA })
	if i < 0 {
		as, i = append(as, nlattr{typ: unix.NFTA_EXPR_DATA}), len(as)
	}
	as = slices.Clone(as)
	as[i].data = data
	elems = slices.Clone(elems)
	elems[ei].data = marshalNlattrs(as)
	top = slices.Clone(top)
	top[at].data = marshalNlattrs(elems)
	return append(slices.Clone(rb[:4]), marshalNlattrs(top)...), true
}

// The rewriting of expression data is itself tested: putting each
// expression's own data back gives the same message, byte for byte.
func TestSetExprDataRoundTrip(t *testing.T) {
	for _, n := range fixtureNames {
		raw := loadFixture(t, n)
		for ri, rb := range raw.Rules {
			for ei, d := range exprDatas(rb) {
				got, ok := setExprData(rb, ei, d)
				if !ok {
					t.Fatalf("%s rule %d expr %d: not rewritten", n, ri, ei)
				}
				if !bytes.Equal(got, rb) {
					t.Errorf("%s rule %d expr %d: rewritten with its own data:\n%x\nwant\n%x", n, ri, ei, got, rb)
				}
			}
		}
	}
}
