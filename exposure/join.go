package exposure

import (
	"context"
	"net/netip"
	"os"

	"github.com/portwatchd/portwatchd/watcher"
)

// Joined is a publication joined to the listener it reaches.
type Joined struct {
	Publication
	// Listener is the key of the listener behind the publication, or nil:
	// then the publication is a listener of its own kind on the host
	// (no socket behind it in any namespace seen).
	Listener *watcher.Key `json:"listener,omitempty"`
	// Netns names the namespace that holds ToAddr, when one does.
	Netns string `json:"netns,omitempty"`
	// ForwardedTo is set ("172.18.0.5:80") when no namespace seen holds
	// ToAddr: the traffic leaves the host.
	ForwardedTo string `json:"forwarded_to,omitempty"`
}

// Join joins publications to the listeners of snap. A namespace holds an
// address when addrs (by namespace name, from ReadLinks or
// Ruleset.Addrs) lists it, or when one of its listeners is bound to it. A
// listener is behind a publication when its namespace holds ToAddr, and it
// listens on the publication's protocol and ToPort, on ToAddr or a wildcard
// of that family (an IPv6 wildcard without IPV6_V6ONLY takes IPv4 too).
func Join(pubs []Publication, snap *watcher.Snapshot, addrs map[string][]netip.Addr) []Joined {
	holds := map[netip.Addr]string{}
	for ns, as := range addrs {
		for _, a := range as {
			holds[a.Unmap()] = ns
		}
	}
	if snap != nil {
		for _, l := range snap.Listeners {
			if a := l.Address.Unmap(); !a.IsUnspecified() && !a.IsLoopback() {
				if _, ok := holds[a]; !ok {
					holds[a] = l.Netns
				}
			}
		}
	}
	out := make([]Joined, 0, len(pubs))
	for _, p := range pubs {
		j := Joined{Publication: p}
		ns, ok := holds[p.ToAddr.Unmap()]
		if !ok {
			j.ForwardedTo = netip.AddrPortFrom(p.ToAddr, p.ToPort).String()
			out = append(out, j)
			continue
		}
		j.Netns = ns
		if snap != nil {
			for i := range snap.Listeners {
				l := &snap.Listeners[i]
				if l.Netns != ns || l.Protocol != p.Proto || l.Port != p.ToPort {
					continue
				}
				a := l.Address.Unmap()
				to := p.ToAddr.Unmap()
				if a == to || (a.IsUnspecified() && (a.Is4() == to.Is4() || (l.DualStack && to.Is4()))) {
					k := l.Key()
					j.Listener = &k
					break
				}
			}
		}
		out = append(out, j)
	}
	return out
}

// Assess computes the exposure of every listener of snap: the verdict of
// the ruleset of its namespace (rulesets by namespace name; a namespace
// with none gets unknown with reason, ReasonNoCapNetAdmin when given as
// noCap), and the publications of the host's ruleset joined to it. It also
// returns every joined publication; those with no Listener are listeners of
// their own kind for `list` and the policy.
func Assess(snap *watcher.Snapshot, rulesets map[string]*Ruleset, addrs map[string][]netip.Addr, reason string) (map[watcher.Key]Exposure, []Joined) {
	out := map[watcher.Key]Exposure{}
	var joined []Joined
	if host := rulesets[watcher.HostNetns]; host != nil {
		if addrs == nil {
			addrs = map[string][]netip.Addr{}
		}
		if _, ok := addrs[watcher.HostNetns]; !ok {
			addrs[watcher.HostNetns] = host.Addrs()
		}
		joined = Join(Publications(host), snap, addrs)
	}
	for _, l := range snap.Listeners {
		var ex Exposure
		if rs := rulesets[l.Netns]; rs != nil {
			ex = Evaluate(rs, Facts{Protocol: l.Protocol, Address: l.Address, Port: l.Port})
		} else {
			ex = Exposure{Scope: ScopeOf(l.Address), Verdict: VerdictUnknown, Reason: reason}
			if reason == "" {
				ex.Reason = "ruleset not read"
			}
		}
		k := l.Key()
		for _, j := range joined {
			if j.Listener != nil && *j.Listener == k {
				ex.Published = append(ex.Published, j.Publication)
			}
		}
		out[k] = ex
	}
	return out, joined
}

// Addrs returns the addresses of the namespace's interfaces.
func (rs *Ruleset) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, l := range rs.Links {
		for _, s := range l.Addrs {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Addr())
			}
		}
	}
	return out
}

// ReadLinks reads the interfaces and addresses of the namespace at nsPath
// ("" for the caller's), for Join, without reading its ruleset: it needs
// no CAP_NET_ADMIN.
func ReadLinks(ctx context.Context, nsPath string) ([]Link, error) {
	fd := 0
	if nsPath != "" {
		f, err := os.Open(nsPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		fd = int(f.Fd())
	}
	return dumpLinks(ctx, fd)
}
