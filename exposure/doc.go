// Package exposure says whether a listener is reachable from outside its
// network namespace: its bind scope, the DNAT rules that publish it
// (Docker, Podman, CNI, kube-proxy, hand-written), and the verdict of the
// namespace's nftables ruleset for a new connection from an unknown source
// on a non-loopback interface: open, filtered, restricted (to some sources or
// interfaces) or unknown, never broader than the rules are.
//
// Kernel I/O is apart from evaluation: ReadRaw dumps the ruleset over
// nf_tables netlink (tables, chains, sets and their elements, rules) with
// interfaces, addresses, XDP and tc ingress from rtnetlink and the
// iptables-legacy tables from /proc/net; Decode turns that into a Ruleset
// (Read does both). Rules are dumped and decoded here, with
// github.com/google/nftables' expression types, because its GetRules drops
// any expression type it does not know without a trace: an undecodable
// expression is kept as Expr{E: nil} and a path through it is unknown.
// Evaluate, Publications, Join and Assess are pure.
//
// Wiring, for the daemon: Watch signals a ruleset change (debounced); on it,
// Read the host's ruleset (and the namespaces' that matter), then Assess a
// snapshot to get an Exposure per listener Key, and the joined publications,
// of which those with no Listener are listeners of their own kind. An error
// wrapping ErrNoCapNetAdmin means `unknown (no CAP_NET_ADMIN)`: pass
// ReasonNoCapNetAdmin to Assess. Exposure.Classes gives the values of the
// policy's `exposure:` field; comparing two Exposures (cmp or reflect) tells
// a change for listener.changed.
//
// Not seen, and said as unknown where it matters: iptables-legacy tables,
// netdev/bridge/ingress chains, XDP programs and tc ingress qdiscs (each
// can only drop more, so filtered stands); rate limits, quotas, random
// numbers; xt matches other than tcp, udp, conntrack, addrtype and comment.
// Not detected at all: tcx eBPF links attached without a qdisc, cgroup eBPF
// socket filters, and anything outside the host (cloud security groups,
// upstream firewalls). nat-type chains are not read as filters; DNATs to a
// port range are not listed as publications.
//
// One concern per file: types.go (the facts), read.go (kernel I/O),
// decode.go (parsing), packet.go (the synthetic packet), walk.go (the chain
// walk), evaluate.go (the input verdict), publish.go (DNAT publications and
// their forward verdict), join.go (publications to listeners), monitor.go
// (ruleset changes).
package exposure
