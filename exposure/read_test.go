package exposure

import (
	"testing"
)

func TestReadSmoke(t *testing.T) {
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
	for _, c := range rs.Chains {
		t.Logf("chain %+v", *c)
		for _, r := range c.Rules {
			for _, e := range r.Exprs {
				t.Logf("  %d %s %#v", r.Handle, e.Name, e.E)
			}
		}
	}
	for id, s := range rs.Sets {
		t.Logf("set %v %+v", id, s)
	}
	t.Logf("links %+v legacy %v", rs.Links, rs.Legacy)
}
