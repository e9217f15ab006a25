package watcher

import (
	"iter"
	"slices"
	"strconv"
)

// Owners is who holds a listener, as far as an alert is concerned: the set of
// executables and the set of users behind it. The comm and the cmdline are
// left out on purpose: a process may rename itself at will, and a listener
// whose real executable and user stay the same has not changed hands.
//
// An executable that is deleted, or whose path does not name the file run
// (Process.ExeUnverified), is another owner than the genuine file at that
// path: it is recorded as "PATH (deleted)" or "PATH (unverified)", so that a
// holder replaced by a spoof of the same path counts as a change.
type Owners struct {
	Exes  []string // sorted, without duplicates; empty exes (unreadable) left out; see ownerExe
	Users []string // sorted, without duplicates; the user name, or the uid when it has none
	// Known is false for an unattributed listener (no holder found). Its
	// owners are unknown, not empty: the caller must not read a change into it.
	Known bool
}

// OwnersOf returns the owners of l.
func OwnersOf(l *Listener) Owners {
	o := Owners{Known: len(l.Processes) > 0}
	for i := range l.Processes {
		p := &l.Processes[i]
		if p.Exe != "" {
			o.Exes = append(o.Exes, ownerExe(p))
		}
		u := p.User
		if u == "" {
			u = strconv.FormatUint(uint64(p.UID), 10)
		}
		o.Users = append(o.Users, u)
	}
	slices.Sort(o.Exes)
	o.Exes = slices.Compact(o.Exes)
	slices.Sort(o.Users)
	o.Users = slices.Compact(o.Users)
	return o
}

// ownerExe is p's executable as an owner: the path, marked when the file
// behind it is deleted or not the one the path names.
func ownerExe(p *Process) string {
	switch {
	case p.ExeDeleted:
		return p.Exe + " (deleted)"
	case p.ExeUnverified:
		return p.Exe + " (unverified)"
	}
	return p.Exe
}

// Equal reports whether o and p name the same executables and users, and are
// both known or both unknown.
func (o Owners) Equal(p Owners) bool {
	return o.Known == p.Known && slices.Equal(o.Exes, p.Exes) && slices.Equal(o.Users, p.Users)
}

// AttributionTicks returns for how many consecutive snapshots, at most, a
// new listener may show no holder although a process the watcher can read
// holds it: the snapshot that saw it open can miss a process that started,
// or opened it, while the snapshot was being taken (found by the next one);
// and unknown ephemeral UDP sockets alone are searched for only every
// ephemeralSearchEvery snapshots, so that clients' short-lived sockets do not
// cost a search of every process each tick. A listener still unattributed
// after that many snapshots is held by the kernel, by a process the watcher
// may not read, or by one that exited. Callers that would alert on an
// unattributed listener wait that long before they judge it.
func AttributionTicks(l *Listener) int {
	if l.Protocol == UDP && l.Ephemeral {
		return ephemeralSearchEvery
	}
	return 1
}

// Change is a listener whose owners changed between two snapshots.
type Change struct {
	Old, New Listener
}

// Delta is what changed between two snapshots, keyed on Key.
type Delta struct {
	Opened  []Listener // keys only in the new snapshot
	Closed  []Listener // keys only in the old snapshot
	Changed []Change   // keys in both whose Owners differ, both sides being known
}

// Empty reports whether nothing changed.
func (d Delta) Empty() bool {
	return len(d.Opened) == 0 && len(d.Closed) == 0 && len(d.Changed) == 0
}

// Index returns the listeners of ls by key, merged as by ByKey.
func Index(ls []Listener) map[Key]Listener {
	m := make(map[Key]Listener, len(ls))
	for l := range ByKey(ls) {
		m[l.Key()] = l
	}
	return m
}

// ByKey yields one listener per key of ls, in the order of
// Snapshot.Listeners. Several sockets may share one key (SO_REUSEPORT servers
// open one socket per worker on the same address and port): they are merged
// into one listener whose Processes is the union of theirs, by pid, in the
// order first seen; its other fields come from the first socket. ls is
// expected sorted, as a Snapshot's listeners are; if it is not, a sorted copy
// is walked. In the usual case (sorted, no shared keys) nothing is allocated.
func ByKey(ls []Listener) iter.Seq[Listener] {
	return func(yield func(Listener) bool) {
		ls := sortedListeners(ls)
		for i := 0; i < len(ls); {
			l, next := group(ls, i)
			if !yield(l) {
				return
			}
			i = next
		}
	}
}

// sortedListeners returns ls if it is in snapshot order, else a sorted copy.
func sortedListeners(ls []Listener) []Listener {
	if slices.IsSortedFunc(ls, compareListeners) {
		return ls
	}
	ls = slices.Clone(ls)
	slices.SortStableFunc(ls, compareListeners)
	return ls
}

// group returns the listener of the key that starts at ls[i], merged over
// every socket of that key, and the index of the next key.
func group(ls []Listener, i int) (Listener, int) {
	j := i + 1
	for j < len(ls) && compareListeners(ls[i], ls[j]) == 0 {
		j++
	}
	if j == i+1 {
		return ls[i], j
	}
	merged := ls[i]
	procs := slices.Clone(merged.Processes)
	for _, l := range ls[i+1 : j] {
		for _, p := range l.Processes {
			if !slices.ContainsFunc(procs, func(q Process) bool { return q.PID == p.PID }) {
				procs = append(procs, p)
			}
		}
	}
	merged.Processes = procs
	return merged, j
}

// SameOwners reports whether a and b have equal Owners. It answers without
// allocating when both hold the same processes, the steady state.
func SameOwners(a, b *Listener) bool {
	if len(a.Processes) == len(b.Processes) {
		same := true
		for i := range a.Processes {
			p, q := &a.Processes[i], &b.Processes[i]
			if p.PID != q.PID || p.Exe != q.Exe || p.ExeDeleted != q.ExeDeleted || p.ExeUnverified != q.ExeUnverified ||
				p.User != q.User || p.UID != q.UID {
				same = false
				break
			}
		}
		if same {
			return true
		}
	}
	return OwnersOf(a).Equal(OwnersOf(b))
}

// Carry returns next with the listeners of prev added back for every
// namespace that next lists as not inspected. A namespace that could not be
// read this time (its only process exited while the snapshot was being taken,
// say) tells nothing about its listeners: dropping them would report every one
// closed, and then opened again on the next snapshot. A namespace missing from
// next altogether is gone, and so are its listeners. prev may be nil. The
// result shares no slices with next that it modifies; next is not changed.
func Carry(prev, next *Snapshot) *Snapshot {
	if prev == nil {
		return next
	}
	blind := map[string]bool{}
	for _, ns := range next.Namespaces {
		if !ns.Inspected {
			blind[ns.Name] = true
		}
	}
	if len(blind) == 0 {
		return next
	}
	out := *next
	out.Listeners = slices.Clone(next.Listeners)
	for _, l := range prev.Listeners {
		if blind[l.Netns] {
			out.Listeners = append(out.Listeners, l)
		}
	}
	slices.SortStableFunc(out.Listeners, compareListeners)
	return &out
}

// compareListeners orders listeners by netns, protocol, port and address, the
// order of Snapshot.Listeners.
func compareListeners(a, b Listener) int {
	return nameKey(a).Compare(nameKey(b))
}

// nameKey is l's Key with the netns name as it is, not Key's netns:<inode>
// form: the order of Snapshot.Listeners.
func nameKey(l Listener) Key {
	return Key{Netns: l.Netns, Protocol: l.Protocol, Address: l.Address, Port: l.Port}
}

// Diff returns what changed from prev to next. Either may be nil, which means
// no listeners. The slices of the result are in the order of
// Snapshot.Listeners. Listeners sharing a key are merged as by ByKey. It walks
// both sorted lists side by side: when nothing changed it allocates nothing.
//
// An owner change is reported only when both snapshots know the owners: a
// listener whose holder was not found this time (its process exited during the
// scan, or the fd scan has not caught up with it yet) has unknown owners, not
// new ones. Callers that must not act on a change seen once should also wait
// for the next snapshot to agree; Diff is stateless and leaves that to them.
func Diff(prev, next *Snapshot) Delta {
	var pl, nl []Listener
	if prev != nil {
		pl = sortedListeners(prev.Listeners)
	}
	if next != nil {
		nl = sortedListeners(next.Listeners)
	}
	var d Delta
	i, j := 0, 0
	for i < len(pl) || j < len(nl) {
		c := 0
		switch {
		case j >= len(nl):
			c = -1
		case i >= len(pl):
			c = 1
		default:
			c = compareListeners(pl[i], nl[j])
		}
		switch {
		case c < 0:
			old, ni := group(pl, i)
			d.Closed = append(d.Closed, old)
			i = ni
		case c > 0:
			l, nj := group(nl, j)
			d.Opened = append(d.Opened, l)
			j = nj
		default:
			old, ni := group(pl, i)
			l, nj := group(nl, j)
			if len(old.Processes) > 0 && len(l.Processes) > 0 && !SameOwners(&old, &l) {
				d.Changed = append(d.Changed, Change{Old: old, New: l})
			}
			i, j = ni, nj
		}
	}
	return d
}
