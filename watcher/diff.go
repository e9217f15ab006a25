package watcher

import (
	"slices"
	"strconv"
)

// Owners is who holds a listener, as far as an alert is concerned: the set of
// executables and the set of users behind it. The comm and the cmdline are
// left out on purpose: a process may rename itself at will, and a listener
// whose real executable and user stay the same has not changed hands.
type Owners struct {
	Exes  []string // sorted, without duplicates; empty exes (unreadable) left out
	Users []string // sorted, without duplicates; the user name, or the uid when it has none
	// Known is false for an unattributed listener (no holder found). Its
	// owners are unknown, not empty: the caller must not read a change into it.
	Known bool
}

// OwnersOf returns the owners of l.
func OwnersOf(l *Listener) Owners {
	o := Owners{Known: len(l.Processes) > 0}
	for _, p := range l.Processes {
		if p.Exe != "" {
			o.Exes = append(o.Exes, p.Exe)
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

// Equal reports whether o and p name the same executables and users, and are
// both known or both unknown.
func (o Owners) Equal(p Owners) bool {
	return o.Known == p.Known && slices.Equal(o.Exes, p.Exes) && slices.Equal(o.Users, p.Users)
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

// Index returns the listeners of ls by key. Several sockets may share one key
// (SO_REUSEPORT servers open one socket per worker on the same address and
// port): they are merged into one listener whose Processes is the union of
// theirs, by pid, in the order first seen. The other fields come from the
// first socket of the key.
func Index(ls []Listener) map[Key]Listener {
	m := make(map[Key]Listener, len(ls))
	for _, l := range ls {
		k := l.Key()
		have, ok := m[k]
		if !ok {
			m[k] = l
			continue
		}
		procs := slices.Clone(have.Processes)
		for _, p := range l.Processes {
			if !slices.ContainsFunc(procs, func(q Process) bool { return q.PID == p.PID }) {
				procs = append(procs, p)
			}
		}
		have.Processes = procs
		m[k] = have
	}
	return m
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
	switch {
	case a.Netns != b.Netns:
		if a.Netns < b.Netns {
			return -1
		}
		return 1
	case a.Protocol != b.Protocol:
		if a.Protocol < b.Protocol {
			return -1
		}
		return 1
	case a.Port != b.Port:
		return int(a.Port) - int(b.Port)
	}
	return a.Address.Compare(b.Address)
}

// Diff returns what changed from prev to next. Either may be nil, which means
// no listeners. The slices of the result are in the order of
// Snapshot.Listeners. Listeners sharing a key are merged as by Index.
//
// An owner change is reported only when both snapshots know the owners: a
// listener whose holder was not found this time (its process exited during the
// scan, or the fd scan has not caught up with it yet) has unknown owners, not
// new ones. Callers that must not act on a change seen once should also wait
// for the next snapshot to agree; Diff is stateless and leaves that to them.
func Diff(prev, next *Snapshot) Delta {
	var p, n map[Key]Listener
	if prev != nil {
		p = Index(prev.Listeners)
	}
	if next != nil {
		n = Index(next.Listeners)
	}
	var d Delta
	for _, l := range n {
		old, ok := p[l.Key()]
		if !ok {
			d.Opened = append(d.Opened, l)
			continue
		}
		oo, no := OwnersOf(&old), OwnersOf(&l)
		if oo.Known && no.Known && !oo.Equal(no) {
			d.Changed = append(d.Changed, Change{Old: old, New: l})
		}
	}
	for _, l := range p {
		if _, ok := n[l.Key()]; !ok {
			d.Closed = append(d.Closed, l)
		}
	}
	slices.SortFunc(d.Opened, compareListeners)
	slices.SortFunc(d.Closed, compareListeners)
	slices.SortFunc(d.Changed, func(a, b Change) int { return compareListeners(a.New, b.New) })
	return d
}
