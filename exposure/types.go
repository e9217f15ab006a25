package exposure

import (
	"errors"
	"net/netip"
	"strconv"
)

// Scope is where a socket's bind address lets packets come from.
type Scope string

// Scopes, from narrowest to widest.
const (
	ScopeLoopback  Scope = "loopback"   // 127.0.0.0/8, ::1: only the namespace itself
	ScopeLinkLocal Scope = "link-local" // 169.254.0.0/16, fe80::/10: the attached links only
	ScopeSpecific  Scope = "specific"   // one address of the namespace
	ScopeWildcard  Scope = "wildcard"   // 0.0.0.0 or ::: every address of the namespace
)

// Verdict is what the packet filter does with a new connection from outside.
type Verdict string

// Verdicts. Unknown is the answer whenever the evaluator cannot be sure: it
// never reads a rule as broader than it is.
const (
	VerdictOpen       Verdict = "open"       // nothing on the path filters it
	VerdictFiltered   Verdict = "filtered"   // dropped or rejected (Exposure.Rule says where)
	VerdictRestricted Verdict = "restricted" // accepted only for some sources or interfaces (Exposure.RestrictedTo)
	VerdictUnknown    Verdict = "unknown"    // Exposure.Reason says why
)

// Owner names who made a DNAT rule, from the table and chain it sits in.
type Owner string

// Owners of publications.
const (
	OwnerDocker    Owner = "docker"     // iptables-nft nat DOCKER chain, or the docker-bridges nftables tables
	OwnerPodman    Owner = "podman"     // netavark: table inet netavark, or its NETAVARK-* iptables chains
	OwnerCNI       Owner = "cni"        // CNI portmap: CNI-DN-* chains
	OwnerKubeProxy Owner = "kube-proxy" // table ip/ip6 kube-proxy, or KUBE-* iptables chains
	OwnerDNAT      Owner = "dnat"       // any other DNAT rule (hand-written)
)

// RuleRef names one rule (or, with Handle 0, a chain's policy) in a ruleset.
type RuleRef struct {
	Family string `json:"family"` // ip, ip6, inet, arp, bridge, netdev
	Table  string `json:"table"`
	Chain  string `json:"chain"`
	Handle uint64 `json:"handle,omitempty"` // 0: the chain's policy
}

// String is "inet filter input handle 7", or "... policy" for a policy.
func (r RuleRef) String() string {
	s := r.Family + " " + r.Table + " " + r.Chain
	if r.Handle == 0 {
		return s + " policy"
	}
	return s + " handle " + strconv.FormatUint(r.Handle, 10)
}

// Publication is a DNAT rule that sends a host port to an address and port,
// usually a container's.
type Publication struct {
	Proto    string     `json:"proto"`     // tcp or udp
	HostAddr netip.Addr `json:"host_addr"` // 0.0.0.0 or :: when any local address of the host matches
	HostPort uint16     `json:"host_port"`
	ToAddr   netip.Addr `json:"to_addr"`
	ToPort   uint16     `json:"to_port"` // HostPort when the rule keeps the port
	Owner    Owner      `json:"owner"`
	Rule     RuleRef    `json:"rule"` // the rule holding the DNAT
	// Verdict is the forward hook's verdict for a new connection to
	// ToAddr:ToPort after the DNAT; Reason, Deciding and RestrictedTo
	// explain it as in Exposure.
	Verdict      Verdict  `json:"verdict"`
	Reason       string   `json:"reason,omitempty"`
	Deciding     *RuleRef `json:"deciding,omitempty"`
	RestrictedTo []string `json:"restricted_to,omitempty"`
}

// String is "host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker)".
func (p Publication) String() string {
	return "host " + netip.AddrPortFrom(p.HostAddr, p.HostPort).String() + "/" + p.Proto + " → " +
		netip.AddrPortFrom(p.ToAddr, p.ToPort).String() + " (" + string(p.Owner) + ")"
}

// Exposure is the three facts about one listener: its bind scope, the
// packet filter's verdict for a new connection from outside, and the DNAT
// rules that publish it.
type Exposure struct {
	Scope   Scope   `json:"scope"`
	Verdict Verdict `json:"verdict"`
	// Reason says in a few words why the verdict is what it is: the reason
	// for unknown, or what decided it.
	Reason string `json:"reason,omitempty"`
	// Deciding is the rule (or policy) that dropped the packet, or that
	// accepted it when only some sources are accepted.
	Deciding *RuleRef `json:"deciding,omitempty"`
	// RestrictedTo lists, for VerdictRestricted, the conditions under which
	// the packet is accepted, in nft syntax: `ip saddr 10.0.0.0/8`,
	// `iifname "eth1"`, `ip saddr @allowed`.
	RestrictedTo []string `json:"restricted_to,omitempty"`
	// Published lists the DNAT rules that send a host port to this listener.
	Published []Publication `json:"published,omitempty"`
}

// Reachable reports whether a new connection from outside may reach the
// listener: published, or not loopback and open or restricted.
func (e Exposure) Reachable() bool {
	if len(e.Published) > 0 {
		return true
	}
	return e.Scope != ScopeLoopback && (e.Verdict == VerdictOpen || e.Verdict == VerdictRestricted)
}

// Classes returns the values of the policy's `exposure:` match field that
// describe e: "loopback" for a loopback bind, "published" when published, and
// the verdict otherwise (open, filtered, restricted, unknown).
func (e Exposure) Classes() []string {
	var c []string
	if e.Scope == ScopeLoopback {
		c = append(c, "loopback")
	} else {
		c = append(c, string(e.Verdict))
	}
	if len(e.Published) > 0 {
		c = append(c, "published")
	}
	return c
}

// ErrNoCapNetAdmin is returned (wrapped) when reading the ruleset was refused
// for want of CAP_NET_ADMIN; the daemon shows `unknown (no CAP_NET_ADMIN)`.
var ErrNoCapNetAdmin = errors.New("no CAP_NET_ADMIN")

// ReasonNoCapNetAdmin is the Reason of every exposure computed without a
// ruleset because reading it needs CAP_NET_ADMIN.
const ReasonNoCapNetAdmin = "no CAP_NET_ADMIN"

// ScopeOf returns the bind scope of an address.
func ScopeOf(a netip.Addr) Scope {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return ScopeLoopback
	case a.IsUnspecified():
		return ScopeWildcard
	case a.IsLinkLocalUnicast():
		return ScopeLinkLocal
	}
	return ScopeSpecific
}
