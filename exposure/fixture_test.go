package exposure

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The rulesets of the live scenario tests, recorded by them with -update
// (testdata/*.json), evaluated without root: the same expectations as the
// live tests, with the handles the recorded rules have.
var fixtureCases = []struct {
	fixture string
	evals   []evalCase
	pubs    []Publication
}{
	{
		fixture: "ufw", // TestUfwStyle
		evals: []evalCase{
			{"ssh open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
			{"postgres filtered", Facts{"tcp", ap("0.0.0.0"), 5432},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered, Deciding: &RuleRef{"ip", "filter", "INPUT", 0}}},
			{"udp 22 filtered", Facts{"udp", ap("192.0.2.10"), 22},
				Exposure{Scope: ScopeSpecific, Verdict: VerdictFiltered, Deciding: &RuleRef{"ip", "filter", "INPUT", 0}}},
			{"8443 restricted to 10/8", Facts{"tcp", ap("0.0.0.0"), 8443},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictRestricted, RestrictedTo: []string{"ip saddr 10.0.0.0/8"},
					Deciding: &RuleRef{"ip", "filter", "ufw-user-input", 18}}},
			{"loopback bind, filtered from outside", Facts{"tcp", ap("127.0.0.1"), 5432},
				Exposure{Scope: ScopeLoopback, Verdict: VerdictFiltered, Deciding: &RuleRef{"ip", "filter", "INPUT", 0}}},
			{"ipv6: no ip6 chain", Facts{"tcp", ap("::"), 5432},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen, Reason: "no filter chain"}},
		},
	},
	{
		fixture: "firewalld", // TestFirewalldStyle
		evals: []evalCase{
			{"ssh service open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
			{"postgres only in the internal zone", Facts{"tcp", ap("0.0.0.0"), 5432},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictRestricted, RestrictedTo: []string{`iifname "eth1"`},
					Deciding: &RuleRef{"inet", "firewalld", "filter_IN_internal", 24}}},
			{"other port rejected", Facts{"tcp", ap("192.0.2.10"), 8080},
				Exposure{Scope: ScopeSpecific, Verdict: VerdictFiltered, Deciding: &RuleRef{"inet", "firewalld", "filter_INPUT", 12}}},
			{"inet chain sees ipv6 too", Facts{"udp", ap("::"), 53},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered, Deciding: &RuleRef{"inet", "firewalld", "filter_INPUT", 12}}},
		},
	},
	{
		fixture: "docker-iptables", // TestDockerIptablesPublish: the ufw bypass
		evals: []evalCase{
			{"host socket on 8080 filtered", Facts{"tcp", ap("0.0.0.0"), 8080},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered, Deciding: &RuleRef{"ip", "filter", "INPUT", 0}}},
			{"ssh open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
		},
		pubs: []Publication{{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 8080, ToAddr: ap("172.17.0.2"), ToPort: 80,
			Owner: OwnerDocker, Rule: RuleRef{"ip", "nat", "DOCKER", 5}, Verdict: VerdictOpen}},
	},
	{
		fixture: "nftables-native", // TestNftablesNativeDNAT: docker-bridges and a kube-proxy NodePort map
		evals: []evalCase{
			{"no input chain", Facts{"tcp", ap("0.0.0.0"), 8080},
				Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen, Reason: "no filter chain"}},
		},
		pubs: []Publication{
			{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 8080, ToAddr: ap("172.17.0.2"), ToPort: 80, Owner: OwnerDocker,
				Rule: RuleRef{"ip", "docker-bridges", "nat-bridges", 6}, Verdict: VerdictOpen},
			{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 30080, ToAddr: ap("10.244.1.7"), ToPort: 8000, Owner: OwnerKubeProxy,
				Rule: RuleRef{"ip", "kube-proxy", "endpoint-b", 12}, Verdict: VerdictUnknown,
				Reason: "match on oifname (ip docker-bridges filter-forward handle 8)"},
			{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 30080, ToAddr: ap("172.17.0.2"), ToPort: 8000, Owner: OwnerKubeProxy,
				Rule: RuleRef{"ip", "kube-proxy", "endpoint-a", 11}, Verdict: VerdictFiltered,
				Deciding: &RuleRef{"ip", "docker-bridges", "filter-forward-in__docker0", 10}},
		},
	},
	{
		fixture: "unknown-expression", // TestUnknownExpression
		evals: []evalCase{
			{"osf", Facts{"tcp", ap("0.0.0.0"), 6000}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
				Reason: "expression osf not understood (inet f input handle 2)"}},
			{"rate limit", Facts{"tcp", ap("0.0.0.0"), 7000}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
				Reason: "rate limit (inet f input handle 4)"}},
			{"plain rule still open", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictOpen}},
			{"other port filtered", Facts{"tcp", ap("0.0.0.0"), 23}, Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered,
				Deciding: &RuleRef{"inet", "f", "input", 0}}},
		},
	},
	{
		fixture: "legacy", // TestLegacyTables
		evals: []evalCase{
			{"open becomes unknown", Facts{"tcp", ap("0.0.0.0"), 22}, Exposure{Scope: ScopeWildcard, Verdict: VerdictUnknown,
				Reason: "iptables-legacy tables present (ip filter)"}},
			{"filtered stays", Facts{"tcp", ap("0.0.0.0"), 23}, Exposure{Scope: ScopeWildcard, Verdict: VerdictFiltered,
				Deciding: &RuleRef{"inet", "f", "input", 0}}},
		},
	},
}

func TestFixtures(t *testing.T) {
	for _, fc := range fixtureCases {
		t.Run(fc.fixture, func(t *testing.T) {
			rs, err := Decode(loadFixture(t, fc.fixture))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkEval(t, rs, fc.evals)
			if d := cmp.Diff(fc.pubs, Publications(rs), cmpAddr); d != "" {
				t.Errorf("Publications (-want +got):\n%s", d)
			}
		})
	}
}
