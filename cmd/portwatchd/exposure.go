package main

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// Exposure in the daemon: whether each listener is reachable from outside
// (package exposure). The rulesets are read at start, when a namespace
// with listeners is first seen, and when exposure.Watch says a ruleset
// changed (debounced), never per tick. Each look (exposureObserve) assesses
// the snapshot again only when it has keys with no exposure yet, or after
// a ruleset was read; a listener whose exposure changed is judged again at
// once (alerting.Engine.Rejudge). Publications with no socket behind them
// become listeners of their own kind in the snapshot the engine sees.

// exposureDebounce is how long a burst of ruleset changes (one `nft -f`,
// one iptables-restore: many netlink messages) must be quiet before the
// rulesets are read again.
const exposureDebounce = 200 * time.Millisecond

// maxExposureNetns caps the container namespaces whose ruleset is read and
// watched: each costs a dump on every change and a netlink socket. Beyond
// it, listeners are `unknown (too many namespaces)`.
const maxExposureNetns = 64

// exposureNote is the note of the events of a change of exposure.
const exposureNote = "exposure changed"

// exposureState is what the daemon knows of the rulesets. It belongs to the
// daemon's loop, but for the watchers' signals (mu).
type exposureState struct {
	on     bool   // exposure: auto, and the host's ruleset could be read or refused
	noCap  string // ReasonNoCapNetAdmin when the host's ruleset was refused; else ""
	ctx    context.Context
	selfNS uint64 // the daemon's own netns inode: read with "" (no setns, no CAP_SYS_ADMIN)

	rulesets map[string]*exposure.Ruleset // by namespace name
	failed   map[string]string            // namespace name -> why its ruleset is not known
	inodes   map[string]uint64            // namespace name -> inode, of those read or failed
	watches  map[string]context.CancelFunc
	byKey    map[watcher.Key]*exposure.Exposure
	joined   []exposure.Joined
	last     *watcher.Snapshot // the snapshot as the watcher gave it
	stale    bool              // rulesets read since the last Assess
	// gen counts the assessments: byKey and joined change only with it.
	gen uint64
	// seen is the last list observed, every key of which had an
	// exposure, and pubOut that list with the published ports, made at
	// assessment pubGen: a list the watcher hands out again is observed
	// and published at no cost.
	seen   []watcher.Listener
	pubGen uint64
	pubOut []watcher.Listener

	changed chan struct{} // capacity one: some ruleset changed
	mu      sync.Mutex
	dirty   map[string]bool // namespaces whose ruleset changed, by name
}

// startExposure prepares the exposure: the rulesets are read by the first
// look, which knows the host's namespace (the watcher's host, PID 1's; the
// daemon's own in production). With exposure: off it does nothing: every
// listener's exposure stays nil (unknown).
func (d *daemon) startExposure(ctx context.Context) {
	x := &d.expo
	x.ctx, x.changed = ctx, make(chan struct{}, 1)
	x.rulesets, x.failed, x.inodes = map[string]*exposure.Ruleset{}, map[string]string{}, map[string]uint64{}
	x.watches, x.dirty, x.byKey = map[string]context.CancelFunc{}, map[string]bool{}, map[watcher.Key]*exposure.Exposure{}
	if d.cfg.Exposure == policy.ExposureOff {
		d.log.Info("exposure: off; every listener's exposure is unknown")
		return
	}
	x.on = true
	if fi, err := os.Stat("/proc/thread-self/ns/net"); err == nil {
		x.selfNS = inodeOf(fi)
	}
}

// readHost reads the host's ruleset, and says once in the log when it
// cannot.
func (d *daemon) readHost(ino uint64) {
	x := &d.expo
	err := d.readRuleset(watcher.HostNetns, "/proc/1/ns/net", ino)
	switch {
	case errors.Is(err, exposure.ErrNoCapNetAdmin):
		if x.noCap == "" {
			d.log.Warn("exposure: reading the nftables ruleset needs CAP_NET_ADMIN; every listener's exposure is unknown (no CAP_NET_ADMIN)")
		}
		x.noCap = exposure.ReasonNoCapNetAdmin
	case err != nil:
		d.log.WithError(err).Warn("exposure: cannot read the host's nftables ruleset; its listeners' exposure is unknown")
	default:
		if x.noCap != "" {
			d.log.Info("exposure: the nftables ruleset can be read again")
		}
		x.noCap = ""
	}
}

// inodeOf returns the inode of a namespace file.
func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// readRuleset reads the ruleset of the namespace name at path, whose inode
// must be ino (0: any), and watches it when it is new. A failure is kept as
// the reason of its listeners' unknown exposure.
func (d *daemon) readRuleset(name, path string, ino uint64) error {
	x := &d.expo
	x.inodes[name], x.stale = ino, true
	rs, err := readNetnsRuleset(x.ctx, path, ino, x.selfNS)
	if err != nil {
		delete(x.rulesets, name)
		x.failed[name] = "ruleset not read: " + err.Error()
		if errors.Is(err, exposure.ErrNoCapNetAdmin) {
			x.failed[name] = exposure.ReasonNoCapNetAdmin
		}
		return err
	}
	delete(x.failed, name)
	x.rulesets[name] = rs
	if _, ok := x.watches[name]; !ok {
		d.watchRuleset(name, path, ino)
	}
	return nil
}

// readNetnsRuleset reads the ruleset of the namespace at path, checking
// that it is still the one of inode ino. The daemon's own namespace is read
// without entering it: setns(2) needs CAP_SYS_ADMIN, which the unit lacks.
func readNetnsRuleset(ctx context.Context, path string, ino, self uint64) (*exposure.Ruleset, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ino != 0 && ino == self {
		return exposure.Read(ctx, "")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if ino != 0 && inodeOf(fi) != ino {
		return nil, errors.New("the namespace's process left it")
	}
	return exposure.Read(ctx, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())))
}

// watchRuleset starts exposure.Watch on a namespace: its signals mark it
// dirty and wake the loop.
func (d *daemon) watchRuleset(name, path string, ino uint64) {
	x := &d.expo
	if ino != 0 && ino == x.selfNS {
		path = ""
	}
	ctx, cancel := context.WithCancel(x.ctx)
	ch, err := exposure.Watch(ctx, path, exposureDebounce)
	if err != nil {
		cancel()
		d.log.WithError(err).WithField("netns", name).Warn("exposure: cannot watch the ruleset for changes; it is read again only when the namespace is seen anew")
		return
	}
	x.watches[name] = cancel
	go func() {
		for range ch {
			x.mu.Lock()
			x.dirty[name] = true
			x.mu.Unlock()
			select {
			case x.changed <- struct{}{}:
			default:
			}
		}
	}()
}

// rulesetChanged reads again the rulesets that changed, and judges again
// the listeners whose exposure changed with them. It is the loop's answer
// to x.changed.
func (d *daemon) rulesetChanged() {
	x := &d.expo
	x.mu.Lock()
	dirty := x.dirty
	x.dirty = map[string]bool{}
	x.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(dirty)) {
		if name == watcher.HostNetns {
			d.readHost(x.inodes[name])
			continue
		}
		if err := d.readRuleset(name, d.netnsPathOf(name), x.inodes[name]); err != nil {
			d.log.WithError(err).WithField("netns", name).Debug("exposure: ruleset read failed")
		}
	}
	if x.last != nil {
		d.assessExposure(time.Now())
	}
}

// exposureObserve is the look's hook, before the engine's Step: it reads
// the rulesets of namespaces seen for the first time, assesses the snapshot
// when it has keys with no exposure yet, judges again the listeners whose
// exposure changed, and returns the snapshot the engine sees: snap with the
// publications that have no socket behind them as listeners of their own.
func (d *daemon) exposureObserve(snap *watcher.Snapshot, now time.Time) *watcher.Snapshot {
	x := &d.expo
	if !x.on {
		return snap
	}
	x.last = snap
	fresh := x.stale || !watcher.SameListeners(snap.Listeners, x.seen)
	if fresh {
		d.readNewNamespaces(snap)
		need := x.stale
		for i := 0; i < len(snap.Listeners) && !need; i++ {
			_, ok := x.byKey[snap.Listeners[i].Key()]
			need = !ok
		}
		if need {
			d.assessExposure(now)
		}
		x.seen = snap.Listeners
	}
	// The published ports that no socket holds, made again only when the
	// list or the assessment changed.
	if fresh || x.pubGen != x.gen || x.pubOut == nil {
		x.pubGen, x.pubOut = x.gen, withPublished(snap, x.joined).Listeners
	}
	s := *snap
	s.Listeners = x.pubOut
	return &s
}

// readNewNamespaces reads the ruleset of every namespace with listeners
// not read yet (up to maxExposureNetns), and forgets those gone.
func (d *daemon) readNewNamespaces(snap *watcher.Snapshot) {
	x := &d.expo
	seen := map[string]bool{watcher.HostNetns: true}
	paths := map[string]string{}
	for i := range snap.Listeners {
		l := &snap.Listeners[i]
		if l.Netns == watcher.HostNetns || paths[l.Netns] != "" {
			continue
		}
		seen[l.Netns] = true
		if len(l.Processes) > 0 {
			paths[l.Netns] = "/proc/" + strconv.Itoa(l.Processes[0].PID) + "/ns/net"
		}
	}
	for name, cancel := range x.watches {
		if !seen[name] {
			cancel()
			delete(x.watches, name)
		}
	}
	for name := range x.inodes {
		if !seen[name] {
			delete(x.inodes, name)
			delete(x.rulesets, name)
			delete(x.failed, name)
		}
	}
	for _, ns := range snap.Namespaces {
		if !seen[ns.Name] {
			continue
		}
		if ino, ok := x.inodes[ns.Name]; ok && ino == ns.Inode {
			continue
		}
		if ns.Name == watcher.HostNetns {
			d.readHost(ns.Inode)
			continue
		}
		if len(x.inodes) > maxExposureNetns {
			x.failed[ns.Name] = "too many namespaces (" + strconv.Itoa(maxExposureNetns) + " read)"
			continue
		}
		path := paths[ns.Name]
		if path == "" {
			path = d.netnsPathOf(ns.Name)
		}
		if path == "" {
			x.inodes[ns.Name], x.stale = ns.Inode, true
			x.failed[ns.Name] = "no process of the namespace to enter it through"
			continue
		}
		if err := d.readRuleset(ns.Name, path, ns.Inode); err != nil {
			d.log.WithError(err).WithField("netns", ns.Name).Debug("exposure: ruleset read failed")
		}
	}
}

// netnsPathOf finds a path to the namespace name of the last snapshot:
// /proc/PID/ns/net of one of its listeners' holders, or its /run/netns file.
func (d *daemon) netnsPathOf(name string) string {
	if x := d.expo.last; x != nil {
		for i := range x.Listeners {
			if l := &x.Listeners[i]; l.Netns == name && len(l.Processes) > 0 {
				return "/proc/" + strconv.Itoa(l.Processes[0].PID) + "/ns/net"
			}
		}
	}
	if p := "/run/netns/" + name; name != "" && !slices.Contains([]byte(name), '/') {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// assessExposure computes the exposure of every listener of the last
// snapshot, and judges again, at once, those whose exposure changed.
func (d *daemon) assessExposure(now time.Time) {
	x := &d.expo
	x.stale = false
	reason := x.noCap
	ex, joined := exposure.Assess(x.last, x.rulesets, nil, reason)
	byKey := make(map[watcher.Key]*exposure.Exposure, len(ex)+len(joined))
	for i := range x.last.Listeners {
		l := &x.last.Listeners[i]
		k := l.Key()
		e, ok := ex[k]
		if !ok {
			continue
		}
		if x.rulesets[l.Netns] == nil && reason == "" && x.failed[l.Netns] != "" {
			e.Reason = x.failed[l.Netns]
		}
		byKey[k] = &e
	}
	for _, p := range publishedListeners(x.last, joined) {
		byKey[p.l.Key()] = publishedExposure(&p)
	}
	var changed []watcher.Key
	for k, e := range byKey {
		if old, ok := x.byKey[k]; ok && !reflect.DeepEqual(old, e) {
			changed = append(changed, k)
		}
	}
	x.byKey, x.joined = byKey, joined
	x.gen++
	if len(changed) > 0 && d.ready {
		d.log.WithField("listeners", len(changed)).Debug("exposure changed; judging them again")
		d.emit(d.eng.Rejudge(changed, exposureNote, d.engineConfig(), now), now)
	}
}

// exposedEvaluator is the policy with the daemon's exposure: it looks the
// listener's exposure up by key.
type exposedEvaluator struct {
	cfg   *policy.Config
	byKey map[watcher.Key]*exposure.Exposure // nil: exposure off
}

// Evaluate implements alerting.Evaluator.
func (e exposedEvaluator) Evaluate(l watcher.Listener, now time.Time) policy.Decision {
	if e.byKey == nil {
		return e.cfg.Evaluate(l, now)
	}
	return e.cfg.EvaluateExposed(l, e.byKey[l.Key()], now)
}

// evaluator is the policy in force, with the exposure when it is on.
func (d *daemon) evaluator() exposedEvaluator {
	if !d.expo.on {
		return exposedEvaluator{cfg: d.cfg}
	}
	return exposedEvaluator{cfg: d.cfg, byKey: d.expo.byKey}
}

// publishedListeners returns the publications of joined with no socket
// behind them as listeners of their own kind on the host: the host address
// and port, the container listener's holders when one is joined (none
// when it is forwarded out of the host, or its socket was not found), and
// Published saying where it leads. A publication whose host port has a
// socket of the host (docker-proxy) is left out: that socket is the
// listener.
func publishedListeners(snap *watcher.Snapshot, joined []exposure.Joined) []pubListener {
	var out []pubListener
	for _, j := range joined {
		if j.Listener != nil && j.Listener.Netns == watcher.HostNetns {
			continue // a DNAT to a socket of the host itself
		}
		l := watcher.Listener{
			Protocol: j.Proto, Family: watcher.IPv4, Address: j.HostAddr, Port: j.HostPort,
			Netns: watcher.HostNetns, Processes: []watcher.Process{},
		}
		if j.HostAddr.Is6() && !j.HostAddr.Is4In6() {
			l.Family = watcher.IPv6
		}
		if hostSocket(snap, &l) || slices.ContainsFunc(out, func(o pubListener) bool { return o.l.Key() == l.Key() }) {
			continue
		}
		switch {
		case j.ForwardedTo != "":
			l.Published = "forwarded to " + j.ForwardedTo
		case j.Listener != nil:
			l.Published = "published → " + j.Listener.Netns + " " + netip.AddrPortFrom(j.Listener.Address, j.Listener.Port).String()
			for i := range snap.Listeners {
				if c := &snap.Listeners[i]; c.Key() == *j.Listener {
					l.Processes = c.Processes
					break
				}
			}
		default:
			l.Published = "published → " + netip.AddrPortFrom(j.ToAddr, j.ToPort).String() + " in " + j.Netns + " (no socket)"
		}
		out = append(out, pubListener{l, j})
	}
	return out
}

// pubListener is a publication as a listener of its own kind.
type pubListener struct {
	l watcher.Listener
	j exposure.Joined
}

// hostSocket reports whether the host has a socket that takes l's
// connections: the same protocol and port, on l's address or a wildcard.
func hostSocket(snap *watcher.Snapshot, l *watcher.Listener) bool {
	for i := range snap.Listeners {
		h := &snap.Listeners[i]
		if h.Netns == watcher.HostNetns && h.Protocol == l.Protocol && h.Port == l.Port && h.Published == "" &&
			(h.Address == l.Address || h.Address.IsUnspecified() || l.Address.IsUnspecified()) {
			return true
		}
	}
	return false
}

// publishedExposure is the exposure of a published listener: the forward
// hook's verdict on its publication, which it lists.
func publishedExposure(p *pubListener) *exposure.Exposure {
	return &exposure.Exposure{
		Scope: exposure.ScopeOf(p.l.Address), Verdict: p.j.Verdict, Reason: p.j.Reason,
		Deciding: p.j.Deciding, RestrictedTo: p.j.RestrictedTo, Published: []exposure.Publication{p.j.Publication},
	}
}

// withPublished returns snap with the publications that have no socket
// behind them added as listeners, in the watcher's order; snap itself
// when there is none. snap is not changed: the watcher may hand it out
// again.
func withPublished(snap *watcher.Snapshot, joined []exposure.Joined) *watcher.Snapshot {
	pub := publishedListeners(snap, joined)
	if len(pub) == 0 {
		return snap
	}
	s := *snap
	s.Listeners = slices.Clone(snap.Listeners)
	for _, p := range pub {
		s.Listeners = append(s.Listeners, p.l)
	}
	slices.SortStableFunc(s.Listeners, func(a, b watcher.Listener) int { return a.Key().Compare(b.Key()) })
	return &s
}

// exposureStatus is the part of STATUS= about exposure: "" when all is
// well or off.
func (d *daemon) exposureStatus() string {
	if d.expo.noCap != "" {
		return "; exposure: unknown (no CAP_NET_ADMIN)"
	}
	return ""
}

// assessOnce reads the rulesets of the host and of the namespaces of snap's
// listeners, once, and assesses snap: `portwatchd list`. It returns the
// exposure by key, snap with the published ports with no socket behind
// them, and a warning to show when the exposure is not known.
func assessOnce(ctx context.Context, snap *watcher.Snapshot) (map[watcher.Key]*exposure.Exposure, *watcher.Snapshot, string) {
	var self uint64
	if fi, err := os.Stat("/proc/thread-self/ns/net"); err == nil {
		self = inodeOf(fi)
	}
	rulesets := map[string]*exposure.Ruleset{}
	failed := map[string]string{}
	note, reason := "", ""
	read := func(name, path string, ino uint64) {
		rs, err := readNetnsRuleset(ctx, path, ino, self)
		switch {
		case errors.Is(err, exposure.ErrNoCapNetAdmin):
			failed[name] = exposure.ReasonNoCapNetAdmin
		case err != nil:
			failed[name] = "ruleset not read: " + err.Error()
		default:
			rulesets[name] = rs
		}
	}
	inodes := map[string]uint64{}
	for _, ns := range snap.Namespaces {
		inodes[ns.Name] = ns.Inode
	}
	read(watcher.HostNetns, "/proc/1/ns/net", inodes[watcher.HostNetns])
	if failed[watcher.HostNetns] == exposure.ReasonNoCapNetAdmin {
		reason = exposure.ReasonNoCapNetAdmin
		note = "exposure unknown (no CAP_NET_ADMIN): reading the nftables ruleset needs it"
	} else {
		for i := range snap.Listeners {
			l := &snap.Listeners[i]
			if _, done := rulesets[l.Netns]; done || failed[l.Netns] != "" || len(l.Processes) == 0 || len(rulesets)+len(failed) > maxExposureNetns {
				continue
			}
			read(l.Netns, "/proc/"+strconv.Itoa(l.Processes[0].PID)+"/ns/net", inodes[l.Netns])
		}
	}
	ex, joined := exposure.Assess(snap, rulesets, nil, reason)
	byKey := make(map[watcher.Key]*exposure.Exposure, len(ex))
	for i := range snap.Listeners {
		l := &snap.Listeners[i]
		e, ok := ex[l.Key()]
		if !ok {
			continue
		}
		if rulesets[l.Netns] == nil && reason == "" && failed[l.Netns] != "" {
			e.Reason = failed[l.Netns]
		}
		byKey[l.Key()] = &e
	}
	for _, p := range publishedListeners(snap, joined) {
		byKey[p.l.Key()] = publishedExposure(&p)
	}
	return byKey, withPublished(snap, joined), note
}
