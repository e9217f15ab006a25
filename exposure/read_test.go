package exposure

import (
	"testing"
)

func TestReadRuleset(t *testing.T) {
	needRoot(t, "nft")
	ns := newNetns(t)
	ns.Nft(`
table inet f {
	set allowed {
		type ipv4_addr; flags interval
		elements = { 10.0.0.0/8 }
	}
	chain input {
		type filter hook input priority 0; policy drop
		ct state established,related accept
		tcp dport 22 accept
		ip saddr @allowed tcp dport 5432 accept
		tcp dport 6000 osf name "Linux" accept
		tcp dport { 80, 443 } accept
	}
}
`)
	rs := ns.Read()
	c := rs.Chain(ChainID{Family: 1, Table: "f", Name: "input"}) // NFPROTO_INET
	if c == nil || c.Hook == nil || *c.Hook != 1 || c.Policy != nfDrop || len(c.Rules) != 5 {
		t.Fatalf("chain input: %+v", c)
	}
	// The osf expression is kept, undecoded, in its place.
	var names []string
	for _, e := range c.Rules[3].Exprs {
		if e.E == nil {
			names = append(names, e.Name)
		}
	}
	if len(names) != 1 || names[0] != "osf" {
		t.Errorf("undecoded expressions of the osf rule: %v, want [osf]", names)
	}
	s := rs.Sets[SetID{Family: 1, Table: "f", Name: "allowed"}]
	if s == nil || s.find([]byte{10, 1, 2, 3}) == nil || s.find([]byte{11, 0, 0, 0}) != nil {
		t.Errorf("interval set allowed: %+v", s)
	}
}
