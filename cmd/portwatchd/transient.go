package main

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// hashRetries are how long the daemon waits, one after the other, before
// it looks again for a listener that an event announced and the snapshot
// does not hold: the listen tracepoint fires before the kernel hashes the
// socket, which usually takes microseconds (a look at once often finds it
// already), rarely longer on a busy host.
var hashRetries = [...]time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}

// liveOpen is a listener that an event announced and a look found open:
// its key and when it opened, by the kernel's clock.
type liveOpen struct {
	key watcher.Key
	ev  kernelEvent // the open
}

// maxLive bounds the listeners remembered as opened while the daemon ran;
// beyond it, those no longer open are forgotten (their close event was
// lost).
const maxLive = 4096

// sockKey is what an event and a snapshot's listener have in common.
type sockKey struct {
	netns uint64
	proto string
	addr  netip.Addr
	port  uint16
}

// eventKey is the key of ev's socket; an IPv4-mapped address is IPv4, as
// the watcher gives it.
func eventKey(ev ebpf.Event) sockKey {
	return sockKey{ev.NetnsInode, ev.Proto, ev.Addr.Unmap(), ev.Port}
}

// snapIndex says which sockets a snapshot holds and which namespaces it
// inspected.
type snapIndex struct {
	socks map[sockKey]watcher.Key
	ns    map[uint64]string // inspected namespaces' names, by inode

	// What was indexed: a list handed out again with the same namespaces
	// is not indexed again (indexSnapshotInto).
	list       []watcher.Listener
	namespaces []watcher.Namespace
}

func indexSnapshot(snap *watcher.Snapshot) snapIndex {
	return indexSnapshotInto(snap, snapIndex{})
}

// indexSnapshotInto indexes snap into old's maps, cleared: a periodic look
// then allocates nothing for its index (rebuilding it was a sixth of the
// idle daemon's CPU). When old indexed the same list (the watcher handed it
// out again) and the same namespaces, old is snap's index already.
func indexSnapshotInto(snap *watcher.Snapshot, old snapIndex) snapIndex {
	if old.socks != nil && watcher.SameListeners(snap.Listeners, old.list) && slices.Equal(snap.Namespaces, old.namespaces) {
		return old
	}
	ix := old
	if ix.socks == nil {
		ix = snapIndex{socks: make(map[sockKey]watcher.Key, len(snap.Listeners)), ns: map[uint64]string{}}
	}
	clear(ix.socks)
	clear(ix.ns)
	for i := range snap.Listeners {
		l := &snap.Listeners[i]
		ix.socks[sockKey{l.NetnsInode, l.Protocol, l.Address.Unmap(), l.Port}] = l.Key()
	}
	for _, n := range snap.Namespaces {
		if n.Inspected {
			ix.ns[n.Inode] = n.Name
		}
	}
	ix.list, ix.namespaces = snap.Listeners, append(ix.namespaces[:0], snap.Namespaces...)
	return ix
}

// holds says whether the snapshot holds a listener at k.
func (ix snapIndex) holds(k sockKey) bool {
	_, ok := ix.socks[k]
	return ok
}

// goneEvent is an event's listener that no snapshot held.
type goneEvent struct {
	kernelEvent
	netns string
	life  notify.Transient
}

// sortOpens takes the events read since the last look, in the order read,
// and the index of the snapshot taken after they were read. It returns the
// listeners known gone, whose close event came in evs too, and those the
// snapshot does not hold although no close was seen (look again, and they
// are gone too). Events the snapshot cannot settle are left out: a TCP
// listen whose port was not chosen yet (port 0: a listen without bind, whose
// close event has the port), a namespace the snapshot could not inspect, a
// failed listen.
func sortOpens(evs []kernelEvent, ix snapIndex) (gone []goneEvent, missing []kernelEvent) {
	// closedBy[i] is the first close after the open evs[i] of its socket,
	// or -1: found in one pass from the end, not by a search per open (a
	// storm brings thousands of events to one look).
	closedBy := make([]int, len(evs))
	var nextClose map[sockKey]int
	for i := len(evs) - 1; i >= 0; i-- {
		closedBy[i] = -1
		ev := evs[i].Event
		switch {
		case ev.Kind == ebpf.KindClose:
			if nextClose == nil {
				nextClose = map[sockKey]int{}
			}
			nextClose[eventKey(ev)] = i
		case opens(ev) && nextClose != nil:
			if j, ok := nextClose[eventKey(ev)]; ok {
				closedBy[i] = j
			}
		}
	}
	for i, ev := range evs {
		if !opens(ev.Event) || ev.Port == 0 {
			continue
		}
		name, ok := ix.ns[ev.NetnsInode]
		if !ok {
			continue
		}
		switch closed := closedBy[i]; {
		case closed >= 0:
			gone = append(gone, goneEvent{ev, name, notify.Transient{Lifetime: evs[closed].Time - ev.Time}})
		case !ix.holds(eventKey(ev.Event)):
			missing = append(missing, ev)
		}
	}
	return gone, missing
}

// stillMissing returns the events of missing whose listener ix does not
// hold either, as gone listeners that lived at most until mono (the kernel's
// clock when the snapshot of ix began).
func stillMissing(missing []kernelEvent, ix snapIndex, mono time.Duration) []goneEvent {
	var gone []goneEvent
	for _, ev := range stillAbsent(missing, ix) {
		gone = append(gone, goneEvent{ev, ix.ns[ev.NetnsInode], notify.Transient{Lifetime: max(mono-ev.Time, 0), AtMost: true}})
	}
	return gone
}

// transients finds the listeners that evs announced and that had closed by
// the time snap was taken, looking again after each of hashRetries, while
// some may not have been hashed yet. It returns the snapshot to give the
// engine, the last one taken, and its index.
func (d *daemon) transients(ctx context.Context, evs []kernelEvent, snap *watcher.Snapshot) (*watcher.Snapshot, snapIndex, []goneEvent) {
	ix := indexSnapshot(snap)
	gone, missing := sortOpens(evs, ix)
	for i := 0; len(missing) > 0; i++ {
		select {
		case <-ctx.Done():
			return snap, ix, nil
		case <-time.After(hashRetries[i]):
		}
		mono := ebpf.MonotonicNow()
		again, err := d.w.Snapshot(ctx)
		if err != nil {
			break
		}
		snap, ix = again, indexSnapshot(again)
		if i == len(hashRetries)-1 {
			gone = append(gone, stillMissing(missing, ix, mono)...)
			break
		}
		missing = stillAbsent(missing, ix)
	}
	if len(gone) == 0 || d.kern.prev.socks == nil {
		return snap, ix, gone
	}
	// A listener the previous look saw (it opened while that snapshot was
	// taken) was judged by the engine, which resolves it as it does any
	// other: not transient.
	kept := gone[:0]
	for _, g := range gone {
		if !d.kern.prev.holds(eventKey(g.Event)) {
			kept = append(kept, g)
		}
	}
	return snap, ix, kept
}

// stillAbsent returns the events of missing whose listener ix does not hold
// and whose namespace it inspected.
func stillAbsent(missing []kernelEvent, ix snapIndex) []kernelEvent {
	var out []kernelEvent
	for _, ev := range missing {
		if _, ok := ix.ns[ev.NetnsInode]; ok && !ix.holds(eventKey(ev.Event)) {
			out = append(out, ev)
		}
	}
	return out
}

// transientListener is the listener g reported, as a snapshot would have
// shown it: the process read when the event was, or what the event says.
func (d *daemon) transientListener(g goneEvent) watcher.Listener {
	p := g.proc
	if p.PID == 0 { // not read: made from the event
		p = watcher.Process{PID: int(g.Pid), Comm: g.Comm, UID: g.UID, Cmdline: []string{}, ExeUnverified: true}
	}
	if p.User == "" || p.User == strconv.FormatUint(uint64(p.UID), 10) {
		p.User = d.userName(p.UID)
	}
	addr := g.Addr.Unmap()
	family := watcher.IPv4
	if addr.Is6() {
		family = watcher.IPv6
	}
	l := watcher.Listener{
		Protocol:   g.Proto,
		Family:     family,
		Address:    addr,
		Port:       g.Port,
		Netns:      g.netns,
		NetnsInode: g.NetnsInode,
		UID:        g.UID,
		Processes:  []watcher.Process{p},
	}
	if l.Protocol == watcher.UDP {
		l.Ephemeral = ephemeralPort(l.Port)
	}
	return l
}

// ephemeralPort says whether port is in the host's ip_local_port_range: the
// range of the namespace a transient UDP socket was in cannot be read once
// it is gone, and namespaces rarely change it.
func ephemeralPort(port uint16) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	return err1 == nil && err2 == nil && lo <= int(port) && int(port) <= hi
}

// reportTransients judges each gone listener as any other: an unexpected one
// gives one opened event marked transient, with its lifetime, and no alert
// stays in force (it is already gone); an allowed one is logged with
// log_allowed.
func (d *daemon) reportTransients(gone []goneEvent, now time.Time) {
	if len(gone) == 0 {
		return
	}
	mono := ebpf.MonotonicNow()
	for _, g := range gone {
		dec := d.cfg.Evaluate(d.transientListener(g), now)
		d.metricsTransient(dec.Verdict)
		unexpected := dec.Verdict == policy.Unexpected
		if !unexpected && !(dec.Verdict == policy.Allowed && d.cfg.LogAllowed) {
			continue
		}
		at := now.Add(g.Time - mono) // when it opened
		if unexpected {
			d.kern.unexpected++
			if !d.kern.limit.admit(programOf(g, dec), dec, g.life, at, d.cfg.TransientAlertsPerMinute) {
				continue // counted in its program's summary (transientlimit.go)
			}
		}
		d.unsent = append(d.unsent, notify.NewEvent(notify.TypeOpened, dec, d.host, at, notify.WithTransient(g.life)))
	}
}

// closeTransients resolves at once the alerts on listeners that the kernel
// saw open and close within one interval, as r's Step left them: closed,
// waiting out flap_window. It remembers, from evs, which listeners opened
// and were found open by snap (the look's snapshot), and when. A listener
// the engine had not alerted on, although unexpected, closed while it was
// still waiting for its holder to be found (attribution): it is returned,
// to be reported from its open event as one gone before the look. ix
// indexes snap.
//
// The snapshot is the truth: a close event resolves nothing while snap
// still holds the listener (another socket of an SO_REUSEPORT group, or a
// socket that was never hashed), and the engine resolves only an alert its
// Step just found closed. A listener that lived an interval or longer waits
// out flap_window as polling would have it: a restart looks the same.
func (d *daemon) closeTransients(evs []kernelEvent, ix snapIndex, r alerting.Result, now time.Time) (alerting.Result, []goneEvent) {
	var unjudged []goneEvent
	if d.kern.alive == nil {
		d.kern.alive = map[sockKey]liveOpen{}
	}
	mono := ebpf.MonotonicNow()
	for _, ev := range evs {
		k := eventKey(ev.Event)
		switch {
		case opens(ev.Event):
			if key, ok := ix.socks[k]; ok {
				if _, seen := d.kern.alive[k]; !seen {
					d.kern.alive[k] = liveOpen{key, ev}
				}
			}
		case ev.Kind == ebpf.KindClose:
			o, ok := d.kern.alive[k]
			if _, inspected := ix.ns[k.netns]; !ok || !inspected || ix.holds(k) {
				continue
			}
			delete(d.kern.alive, k)
			life := ev.Time - o.ev.Time
			if life < 0 || life >= d.cfg.Interval {
				continue
			}
			rr := d.eng.ResolveClosed(o.key, now.Add(ev.Time-mono), notify.Transient{Lifetime: life})
			r.Emit = append(r.Emit, rr.Emit...)
			r.StateChanged = r.StateChanged || rr.StateChanged
			if len(rr.Emit) > 0 {
				continue
			}
			g := goneEvent{o.ev, ix.ns[k.netns], notify.Transient{Lifetime: life}}
			if d.cfg.Evaluate(d.transientListener(g), now).Verdict == policy.Unexpected {
				unjudged = append(unjudged, g)
			}
		}
	}
	if len(d.kern.alive) > maxLive {
		maps.DeleteFunc(d.kern.alive, func(k sockKey, _ liveOpen) bool { return !ix.holds(k) })
	}
	return r, unjudged
}
