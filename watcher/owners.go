package watcher

import (
	"iter"
	"slices"
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
			u = userName(nil, p.UID)
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

// ByKey yields one listener per key of ls, in the order of
// Snapshot.Listeners, with the number of sockets it stands for. Several
// sockets may share one key (SO_REUSEPORT servers open one socket per worker
// on the same address and port): they are merged into one listener whose
// Processes is the union of theirs, by pid, in the order first seen; its other
// fields come from the first socket. ls is expected sorted, as a Snapshot's
// listeners are; if it is not, a sorted copy is walked. In the usual case
// (sorted, no shared keys) nothing is allocated.
//
// Sockets are grouped by namespace name, not by Key's netns: within one
// snapshot a namespace has one name and a name one namespace, so the two
// group alike, and the name needs no string built per socket.
func ByKey(ls []Listener) iter.Seq2[Listener, int] {
	return func(yield func(Listener, int) bool) {
		ls := sortedListeners(ls)
		for i := 0; i < len(ls); {
			l, next := group(ls, i)
			if !yield(l, next-i) {
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
