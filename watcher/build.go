package watcher

import (
	"cmp"
	"slices"
	"time"
)

// snapshotCache holds this tick's sockets, and the last snapshot's
// Listeners and what they were built from, so that a tick where nothing
// changed hands them out again (see build).
type snapshotCache struct {
	socks []sockEntry
	order []int32 // indexes of socks in the order of Snapshot.Listeners

	lastSocks     []sockEntry
	sameSocks     bool // socks is lastSocks again (Snapshot compares them)
	lastListeners []Listener
	lastHolders   []*procInfo // the holders of each listener, in turn
	lastHolderEnd []int32     // per listener, the end of its holders in lastHolders
	// The holderCache.gen and holderDetails.gen lastHolders were read at.
	lastHoldersGen, lastDetailsGen uint64
}

// build turns the sockets of this tick into a sorted Snapshot.
//
// In the steady state nothing changed since the last tick, and build costs
// little: the order of the sockets is that of the last tick when it is still
// sorted (checked in one pass, instead of a sort), and when every socket and
// the attribution of every one is as it was, the last snapshot's Listeners
// are handed out again instead of being built anew (see Snapshot on why
// sharing them is safe).
func (w *Watcher) build(now time.Time) *Snapshot {
	snap := &Snapshot{Time: now}
	socks := w.snap.socks
	same := w.snap.sameSocks
	if !same || len(w.snap.order) != len(socks) {
		w.snap.sortSocks()
	}
	if same && w.snap.lastListeners != nil && w.sameListeners() {
		snap.Listeners = w.snap.lastListeners
	} else {
		snap.Listeners = w.buildListeners()
	}
	w.snap.lastSocks = append(w.snap.lastSocks[:0], socks...)
	w.snap.lastListeners = snap.Listeners
	for _, ns := range w.ns.byInode {
		snap.Namespaces = append(snap.Namespaces, Namespace{Name: ns.name, Inode: ns.inode, Inspected: ns.err == "", Err: ns.err})
	}
	slices.SortFunc(snap.Namespaces, func(a, b Namespace) int { return cmp.Compare(a.Name, b.Name) })
	return snap
}

// sortSocks sets c.order to the indexes of c.socks in the order of
// Snapshot.Listeners. The last tick's order is kept when it is still sorted:
// compareEntries is a total order (the inode comes last), so a permutation
// that is sorted is the one sorted order, and checking it costs one compare
// per socket where a sort costs a dozen.
func (c *snapshotCache) sortSocks() {
	socks := c.socks
	less := func(i, j int32) int { return compareEntries(&socks[i], &socks[j]) }
	if len(c.order) == len(socks) && slices.IsSortedFunc(c.order, less) {
		return
	}
	order := c.order[:0]
	for i := range socks {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, less)
	c.order = order
}

// sameListeners reports whether w.snap.lastListeners is what buildListeners would
// build now, given that w.snap.socks is as it was then (same sockets, same
// namespaces, in the same order). What may have changed meanwhile is what
// buildListeners reads besides the sockets: the namespace's name and port
// range, interface names, and the holders and their details. A holder's
// details are compared by their *procInfo, which is never changed once in
// w.details.byPid (it is replaced instead: see refreshUsers).
func (w *Watcher) sameListeners() bool {
	prev := w.snap.lastListeners
	if len(prev) != len(w.snap.order) {
		return false
	}
	// Neither the holders nor their details changed since lastHolders
	// was recorded: with the same sockets, each listener has the same
	// holders, and the steady tick skips two map lookups a listener.
	sameHolders := w.holders.gen == w.snap.lastHoldersGen && w.details.gen == w.snap.lastDetailsGen
	j := 0
	for k, i := range w.snap.order {
		e, l := &w.snap.socks[i], &prev[k]
		if l.Inode != e.inode || l.Netns != e.ns.name || l.Ephemeral != (!e.tcp && e.ns.ports.contains(e.port)) {
			return false
		}
		if e.ifindex != 0 && l.Interface != w.ifName(e.ns, e.ifindex) {
			return false
		}
		if sameHolders {
			continue
		}
		end := int(w.snap.lastHolderEnd[k])
		for _, pid := range w.holders.byInode[e.inode] {
			pi := w.details.byPid[pid]
			if pi == nil {
				continue
			}
			if j >= end || w.snap.lastHolders[j] != pi {
				return false
			}
			j++
		}
		if j != end {
			return false
		}
	}
	// The same as read at these: the next tick may skip the holders.
	w.snap.lastHoldersGen, w.snap.lastDetailsGen = w.holders.gen, w.details.gen
	return true
}

// buildListeners builds the Listeners of w.snap.socks in w.snap.order, and records in
// w.snap.lastHolders what each was built from, for sameListeners.
func (w *Watcher) buildListeners() []Listener {
	out := make([]Listener, 0, len(w.snap.socks))
	w.snap.lastHolders = w.snap.lastHolders[:0]
	w.snap.lastHolderEnd = w.snap.lastHolderEnd[:0]
	w.snap.lastHoldersGen, w.snap.lastDetailsGen = w.holders.gen, w.details.gen
	// The /proc/net fallback cannot see IPV6_V6ONLY. An IPv6 wildcard cannot
	// be dual stack when an IPv4 socket holds the same port.
	type v4key struct {
		ns   *nsState
		tcp  bool
		port uint16
	}
	var v4 map[v4key]bool
	for i := range w.snap.socks {
		if w.snap.socks[i].v6only < 0 && w.snap.socks[i].v6 {
			v4 = make(map[v4key]bool)
			for j := range w.snap.socks {
				if e := &w.snap.socks[j]; !e.v6 {
					v4[v4key{e.ns, e.tcp, e.port}] = true
				}
			}
			break
		}
	}
	for _, i := range w.snap.order {
		e := &w.snap.socks[i]
		l := Listener{
			Protocol:   UDP,
			Family:     IPv4,
			Address:    e.addr,
			Port:       e.port,
			DualStack:  e.dualStack() && !(e.v6only < 0 && v4[v4key{e.ns, e.tcp, e.port}]),
			Netns:      e.ns.name,
			NetnsInode: e.ns.inode,
			Inode:      e.inode,
			UID:        e.uid,
			Processes:  []Process{},
		}
		if e.tcp {
			l.Protocol = TCP
		} else {
			l.Ephemeral = e.ns.ports.contains(e.port)
		}
		if e.v6 {
			l.Family = IPv6
		}
		l.Service = w.services[serviceKey{e.tcp, e.port}]
		if e.ifindex != 0 {
			l.Interface = w.ifName(e.ns, e.ifindex)
		}
		if h := w.holders.byInode[e.inode]; len(h) > 0 {
			l.Processes = make([]Process, 0, len(h))
			for _, pid := range h {
				if pi := w.details.byPid[pid]; pi != nil {
					p := pi.p
					// Per listener: the holder's other sockets may be
					// below the namespace's unprivileged start. An
					// ephemeral UDP port is a client's, not chosen. A
					// namespace whose start is 0 (Docker's default) has
					// no privileged port: there the flag would only say
					// "root", on every container's process.
					if pi.rootFlags != nil && !l.Ephemeral && e.ns.unprivStart != 0 && e.port >= e.ns.unprivStart {
						p.Flags = pi.rootFlags
					}
					l.Processes = append(l.Processes, p)
					w.snap.lastHolders = append(w.snap.lastHolders, pi)
				}
			}
		}
		w.snap.lastHolderEnd = append(w.snap.lastHolderEnd, int32(len(w.snap.lastHolders)))
		out = append(out, l)
	}
	return out
}

// compareEntries orders raw sockets as Snapshot.Listeners are ordered
// (compareListeners in owners.go: netns, protocol, port, address), with the
// inode last so that SO_REUSEPORT groups come out in a stable order.
func compareEntries(a, b *sockEntry) int {
	if a.ns != b.ns {
		if c := cmp.Compare(a.ns.name, b.ns.name); c != 0 {
			return c
		}
	}
	if a.tcp != b.tcp {
		if a.tcp { // "tcp" < "udp"
			return -1
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(a.port, b.port),
		a.addr.Compare(b.addr),
		cmp.Compare(a.inode, b.inode),
	)
}
