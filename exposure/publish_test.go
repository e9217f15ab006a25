package exposure

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/portwatchd/portwatchd/watcher"
)

// dockerPair makes a host namespace and a container namespace joined by a
// veth pair: docker0 (172.17.0.1/16) on the host side, eth0 (172.17.0.2/16)
// in the container; the host also has eth1 (192.0.2.10/24) to the outside.
func dockerPair(t *testing.T) (host, ctr *testNetns) {
	host, ctr = newNetns(t), newNetns(t)
	host.withAddr("eth1", "192.0.2.10/24")
	host.Exec("ip", "link", "add", "docker0", "type", "veth", "peer", "name", "eth0", "netns", ctr.Name)
	host.Exec("ip", "addr", "add", "172.17.0.1/16", "dev", "docker0")
	host.Exec("ip", "link", "set", "docker0", "up")
	ctr.Exec("ip", "addr", "add", "172.17.0.2/16", "dev", "eth0")
	ctr.Exec("ip", "link", "set", "eth0", "up")
	return host, ctr
}

var cmpAddr = cmpopts.EquateComparable(netip.Addr{})

// Docker's iptables-nft publish of -p 8080:80, with an input chain that
// drops 8080 (ufw's view): the port is published and reaches the container's
// listener, and the input verdict for a host socket on 8080 is filtered.
func TestDockerIptablesPublish(t *testing.T) {
	needRoot(t, "iptables")
	host, ctr := dockerPair(t)
	host.Sh(`
iptables -P INPUT DROP
iptables -A INPUT -p tcp --dport 22 -j ACCEPT
iptables -P FORWARD DROP
iptables -t nat -N DOCKER
iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
iptables -t nat -A DOCKER -i docker0 -j RETURN
iptables -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
iptables -N DOCKER
iptables -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables -A FORWARD -o docker0 -j DOCKER
iptables -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
`)
	host.Record("docker-iptables")
	rs := host.Read()
	pubs := Publications(rs)
	dnat := RuleRef{Family: "ip", Table: "nat", Chain: "DOCKER", Handle: ruleHandle(t, rs, "ip", "nat", "DOCKER", 1)}
	want := []Publication{{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 8080, ToAddr: ap("172.17.0.2"), ToPort: 80,
		Owner: OwnerDocker, Rule: dnat, Verdict: VerdictOpen}}
	if d := cmp.Diff(want, pubs, cmpAddr); d != "" {
		t.Fatalf("Publications (-want +got):\n%s", d)
	}
	if got := want[0].String(); got != "host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker)" {
		t.Errorf("String() = %q", got)
	}
	// The container's nginx on 0.0.0.0:80, in its namespace.
	ctrAddrs := map[string][]netip.Addr{ctr.Name: {ap("172.17.0.2")}}
	nginx := watcher.Listener{Protocol: "tcp", Family: "ipv4", Address: ap("0.0.0.0"), Port: 80, Netns: ctr.Name}
	snap := &watcher.Snapshot{Listeners: []watcher.Listener{nginx}}
	key := nginx.Key()
	joined := Join(pubs, snap, ctrAddrs)
	if d := cmp.Diff([]Joined{{Publication: want[0], Listener: &key, Netns: ctr.Name}}, joined, cmpAddr); d != "" {
		t.Errorf("Join (-want +got):\n%s", d)
	}
	// With the userland proxy off there is no host socket: the same
	// publication, and a host socket on 8080 would be filtered.
	ex := Evaluate(rs, Facts{"tcp", ap("0.0.0.0"), 8080})
	if ex.Verdict != VerdictFiltered {
		t.Errorf("input verdict for 8080: %+v, want filtered", ex)
	}
	// Nothing in any namespace holds the address: forwarded.
	gone := Join(pubs, &watcher.Snapshot{}, nil)
	if len(gone) != 1 || gone[0].ForwardedTo != "172.17.0.2:80" || gone[0].Listener != nil {
		t.Errorf("Join with no namespace holding 172.17.0.2: %+v", gone)
	}
	// Assess joins it to the listener for the lead's wiring.
	rulesets := map[string]*Ruleset{watcher.HostNetns: rs}
	exp, _ := Assess(snap, rulesets, ctrAddrs, "")
	if got := exp[key]; len(got.Published) != 1 || got.Verdict != VerdictUnknown || got.Classes()[1] != "published" {
		t.Errorf("Assess: %+v", got)
	}
}

// Docker's nftables backend shape (table ip docker-bridges, a dnat in a
// per-bridge chain reached through a vmap on the input interface), and a
// kube-proxy-style NodePort verdict map keyed by protocol and port.
func TestNftablesNativeDNAT(t *testing.T) {
	needRoot(t, "nft")
	host, _ := dockerPair(t)
	host.Nft(`
table ip docker-bridges {
	chain nat-prerouting-and-output {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local counter jump nat-bridges
	}
	chain nat-bridges {
		iifname != "docker0" tcp dport 8080 counter dnat to 172.17.0.2:80 comment "DNAT"
	}
	chain filter-forward {
		type filter hook forward priority filter; policy accept;
		oifname "docker0" ct state established,related accept
		oifname "docker0" jump filter-forward-in__docker0
	}
	chain filter-forward-in__docker0 {
		ct status dnat ip daddr 172.17.0.2 tcp dport 80 accept
		drop
	}
}
table ip kube-proxy {
	map service-nodeports {
		type inet_proto . inet_service : verdict
		elements = { tcp . 30080 : goto external-web }
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
	}
	chain external-web {
		jump endpoints-web
	}
	chain endpoints-web {
		numgen random mod 2 vmap { 0 : goto endpoint-a, 1 : goto endpoint-b }
	}
	chain endpoint-a {
		meta l4proto tcp dnat to 172.17.0.2:8000
	}
	chain endpoint-b {
		meta l4proto tcp dnat to 10.244.1.7:8000
	}
}
`)
	host.Record("nftables-native")
	rs := host.Read()
	pubs := Publications(rs)
	ref := func(table, chain string, n int) RuleRef {
		return RuleRef{Family: "ip", Table: table, Chain: chain, Handle: ruleHandle(t, rs, "ip", table, chain, n)}
	}
	want := []Publication{
		{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 8080, ToAddr: ap("172.17.0.2"), ToPort: 80, Owner: OwnerDocker,
			Rule: ref("docker-bridges", "nat-bridges", 0), Verdict: VerdictOpen},
		{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 30080, ToAddr: ap("10.244.1.7"), ToPort: 8000, Owner: OwnerKubeProxy,
			Rule: ref("kube-proxy", "endpoint-b", 0), Verdict: VerdictUnknown, Reason: "match on oifname (ip docker-bridges filter-forward handle " + itoaU(ruleHandle(t, rs, "ip", "docker-bridges", "filter-forward", 1)) + ")"},
		{Proto: "tcp", HostAddr: ap("0.0.0.0"), HostPort: 30080, ToAddr: ap("172.17.0.2"), ToPort: 8000, Owner: OwnerKubeProxy,
			Rule: ref("kube-proxy", "endpoint-a", 0), Verdict: VerdictFiltered, Deciding: ptr(ref("docker-bridges", "filter-forward-in__docker0", 1))},
	}
	if d := cmp.Diff(want, pubs, cmpAddr); d != "" {
		t.Errorf("Publications (-want +got):\n%s", d)
	}
}

func ptr[T any](v T) *T { return &v }
