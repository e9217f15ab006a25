package exposure

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/portwatchd/portwatchd/watcher"
)

var ap = netip.MustParseAddr

// withAddr gives the namespace an interface (one end of a veth pair; this
// kernel has no dummy module) with an address.
func (ns *testNetns) withAddr(dev, prefix string) {
	ns.Exec("ip", "link", "add", dev, "type", "veth", "peer", "name", dev+"p")
	ns.Exec("ip", "link", "set", dev+"p", "up")
	ns.Exec("ip", "addr", "add", prefix, "dev", dev)
	ns.Exec("ip", "link", "set", dev, "up")
}

type evalCase struct {
	name  string
	facts Facts
	want  Exposure
}

func checkEval(t *testing.T, rs *Ruleset, cases []evalCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Evaluate(rs, tc.facts)
			if d := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("Evaluate(%+v) (-want +got):\n%s", tc.facts, d)
			}
		})
	}
}

// A ufw-style ruleset as iptables-nft writes it: input policy DROP, the
// ufw-before-input chain with its conntrack, loopback, not-local and
// rate-limited log rules, and ufw-user-input accepting 22 (and 8443 from
// 10.0.0.0/8 only).
func TestUfwStyle(t *testing.T) {
	needRoot(t, "iptables")
	ns := newNetns(t)
	ns.withAddr("eth0", "192.0.2.10/24")
	ns.Sh(`
iptables -P INPUT DROP
iptables -N ufw-before-input
iptables -N ufw-user-input
iptables -N ufw-after-input
iptables -N ufw-not-local
iptables -A INPUT -j ufw-before-input
iptables -A INPUT -j ufw-after-input
iptables -A ufw-before-input -i lo -j ACCEPT
iptables -A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables -A ufw-before-input -m conntrack --ctstate INVALID -j DROP
iptables -A ufw-before-input -p udp --sport 67 --dport 68 -j ACCEPT
iptables -A ufw-before-input -j ufw-not-local
iptables -A ufw-before-input -j ufw-user-input
iptables -A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN
iptables -A ufw-not-local -m limit --limit 3/min -j LOG
iptables -A ufw-not-local -j DROP
iptables -A ufw-user-input -p tcp --dport 22 -j ACCEPT
iptables -A ufw-user-input -p tcp -s 10.0.0.0/8 --dport 8443 -j ACCEPT
iptables -A ufw-after-input -m limit --limit 3/min -j LOG
`)
	ns.Record("ufw")
	rs := ns.Read()
	policy := &RuleRef{Family: "ip", Table: "filter", Chain: "INPUT"}
	checkEval(t, rs, []evalCase{
		{"ssh open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
		{"postgres filtered", Facts{"tcp", ap("0.0.0.0"), 5432},
			Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered, Deciding: policy}},
		{"udp 22 filtered", Facts{"udp", ap("192.0.2.10"), 22},
			Exposure{Scope: ScopeSpecific, Verdict: VerdictFiltered, Deciding: policy}},
		{"restricted to 10/8", Facts{"tcp", ap("0.0.0.0"), 8443},
			Exposure{Scope: ScopeWildcard, Verdict: VerdictRestricted, RestrictedTo: []string{"ip saddr 10.0.0.0/8"},
				Deciding: &RuleRef{Family: "ip", Table: "filter", Chain: "ufw-user-input", Handle: ruleHandle(t, rs, "ip", "filter", "ufw-user-input", 1)}}},
		{"loopback", Facts{"tcp", ap("127.0.0.1"), 5432},
			Exposure{Scope: ScopeLoopback, Verdict: VerdictFiltered, Deciding: policy}},
	})
}

// ruleHandle returns the handle of the n-th rule of a chain.
func ruleHandle(t *testing.T, rs *Ruleset, fam, table, chain string, n int) uint64 {
	t.Helper()
	for _, c := range rs.Chains {
		if familyName(c.Family) == fam && c.Table == table && c.Name == chain && n < len(c.Rules) {
			return c.Rules[n].Handle
		}
	}
	t.Fatalf("no rule %d in %s %s %s", n, fam, table, chain)
	return 0
}

// A firewalld-style ruleset: table inet firewalld, zone dispatch by input
// interface with a default zone, services accepted, and a final reject.
func TestFirewalldStyle(t *testing.T) {
	needRoot(t, "nft")
	ns := newNetns(t)
	ns.withAddr("eth0", "192.0.2.10/24")
	ns.Nft(`
table inet firewalld {
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		ct state { established, related } accept
		ct status dnat accept
		iifname "lo" accept
		jump filter_INPUT_ZONES
		ct state { invalid } drop
		reject with icmpx admin-prohibited
	}
	chain filter_INPUT_ZONES {
		iifname "eth1" goto filter_IN_internal
		goto filter_IN_public
	}
	chain filter_IN_public {
		jump filter_IN_public_allow
		meta l4proto { icmp, ipv6-icmp } accept
	}
	chain filter_IN_public_allow {
		tcp dport 22 ct state { new, untracked } accept
		ip6 daddr fe80::/64 udp dport 546 ct state { new, untracked } accept
	}
	chain filter_IN_internal {
		jump filter_IN_public_allow
		tcp dport 5432 ct state { new, untracked } accept
	}
}
`)
	ns.Record("firewalld")
	rs := ns.Read()
	reject := &RuleRef{Family: "inet", Table: "firewalld", Chain: "filter_INPUT", Handle: ruleHandle(t, rs, "inet", "firewalld", "filter_INPUT", 5)}
	checkEval(t, rs, []evalCase{
		{"ssh service open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
		{"postgres only in the internal zone", Facts{"tcp", ap("0.0.0.0"), 5432},
			Exposure{Scope: ScopeWildcard, Verdict: VerdictRestricted, RestrictedTo: []string{`iifname "eth1"`},
				Deciding: &RuleRef{Family: "inet", Table: "firewalld", Chain: "filter_IN_internal", Handle: ruleHandle(t, rs, "inet", "firewalld", "filter_IN_internal", 1)}}},
		{"other port rejected", Facts{"tcp", ap("192.0.2.10"), 8080},
			Exposure{Scope: ScopeSpecific, Verdict: VerdictFiltered, Deciding: reject}},
	})
}

// A rule with an expression the decoder does not know (osf) must not be read
// as `tcp dport 6000 accept`, which github.com/google/nftables would make
// of it.
func TestUnknownExpression(t *testing.T) {
	needRoot(t, "nft")
	ns := newNetns(t)
	ns.withAddr("eth0", "192.0.2.10/24")
	ns.Nft(`
table inet f {
	chain input {
		type filter hook input priority 0; policy drop;
		tcp dport 6000 osf name "Linux" accept
		tcp dport 22 accept
		tcp dport 7000 limit rate 5/second accept
	}
}
`)
	ns.Record("unknown-expression")
	rs := ns.Read()
	osf := &RuleRef{Family: "inet", Table: "f", Chain: "input", Handle: ruleHandle(t, rs, "inet", "f", "input", 0)}
	lim := &RuleRef{Family: "inet", Table: "f", Chain: "input", Handle: ruleHandle(t, rs, "inet", "f", "input", 2)}
	checkEval(t, rs, []evalCase{
		{"osf", Facts{"tcp", ap("0.0.0.0"), 6000}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
			Reason: "expression osf not understood (" + osf.String() + ")"}},
		{"rate limit", Facts{"tcp", ap("0.0.0.0"), 7000}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
			Reason: "rate limit (" + lim.String() + ")"}},
		{"plain rule still open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
	})
}

// iptables-legacy tables are invisible to nftables netlink: open becomes
// unknown, filtered stays filtered.
func TestLegacyTables(t *testing.T) {
	needRoot(t, "nft", "iptables-legacy")
	ns := newNetns(t)
	ns.withAddr("eth0", "192.0.2.10/24")
	ns.Nft(`
table inet f {
	chain input {
		type filter hook input priority 0; policy drop;
		tcp dport 22 accept
	}
}
`)
	ns.Exec("iptables-legacy", "-t", "filter", "-L")
	ns.Record("legacy")
	rs := ns.Read()
	checkEval(t, rs, []evalCase{
		{"open becomes unknown", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
			Reason: "iptables-legacy tables present (ip filter)"}},
		{"filtered stays", Facts{"tcp", ap("0.0.0.0"), 23}, Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered,
			Deciding: &RuleRef{Family: "inet", Table: "f", Chain: "input"}}},
	})
}

var _ = watcher.HostNetns

func itoaU(u uint64) string { return fmtU(u) }

func fmtU(u uint64) string {
	if u == 0 {
		return "0"
	}
	var b []byte
	for ; u > 0; u /= 10 {
		b = append([]byte{byte('0' + u%10)}, b...)
	}
	return string(b)
}
