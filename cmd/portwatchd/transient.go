package main

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// hashRetry is how long the daemon waits before it looks again for a
// listener that an event announced and the snapshot does not hold: the
// listen tracepoint fires before the kernel hashes the socket.
const hashRetry = 5 * time.Millisecond

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
	socks map[sockKey]bool
	ns    map[uint64]string // inspected namespaces' names, by inode
}

func indexSnapshot(snap *watcher.Snapshot) snapIndex {
	ix := snapIndex{socks: make(map[sockKey]bool, len(snap.Listeners)), ns: map[uint64]string{}}
	for _, l := range snap.Listeners {
		ix.socks[sockKey{l.NetnsInode, l.Protocol, l.Address.Unmap(), l.Port}] = true
	}
	for _, n := range snap.Namespaces {
		if n.Inspected {
			ix.ns[n.Inode] = n.Name
		}
	}
	return ix
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
	for i, ev := range evs {
		if !opens(ev.Event) || ev.Port == 0 {
			continue
		}
		name, ok := ix.ns[ev.NetnsInode]
		if !ok {
			continue
		}
		k := eventKey(ev.Event)
		closed := -1
		for j := i + 1; j < len(evs); j++ {
			if evs[j].Kind == ebpf.KindClose && eventKey(evs[j].Event) == k {
				closed = j
				break
			}
		}
		switch {
		case closed >= 0:
			gone = append(gone, goneEvent{ev, name, notify.Transient{Lifetime: evs[closed].Time - ev.Time}})
		case !ix.socks[k]:
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
	for _, ev := range missing {
		name, ok := ix.ns[ev.NetnsInode]
		if !ok || ix.socks[eventKey(ev.Event)] {
			continue
		}
		gone = append(gone, goneEvent{ev, name, notify.Transient{Lifetime: max(mono-ev.Time, 0), AtMost: true}})
	}
	return gone
}

// transients finds the listeners that evs announced and that had closed by
// the time snap was taken, looking once more after hashRetry for those that
// may not have been hashed yet. It returns the snapshot to give the engine:
// the second one when it was taken.
func (d *daemon) transients(ctx context.Context, evs []kernelEvent, snap *watcher.Snapshot) (*watcher.Snapshot, []goneEvent) {
	gone, missing := sortOpens(evs, indexSnapshot(snap))
	if len(missing) > 0 {
		select {
		case <-ctx.Done():
			return snap, nil
		case <-time.After(hashRetry):
		}
		mono := ebpf.MonotonicNow()
		if again, err := d.w.Snapshot(ctx); err == nil {
			snap = again
			gone = append(gone, stillMissing(missing, indexSnapshot(again), mono)...)
		}
	}
	if len(gone) == 0 || d.kern.prevSnap == nil {
		return snap, gone
	}
	// A listener the previous look saw (it opened while that snapshot was
	// taken) was judged by the engine, which resolves it as it does any
	// other: not transient.
	prev := indexSnapshot(d.kern.prevSnap)
	kept := gone[:0]
	for _, g := range gone {
		if !prev.socks[eventKey(g.Event)] {
			kept = append(kept, g)
		}
	}
	return snap, kept
}

// transientListener is the listener g reported, as a snapshot would have
// shown it: the process read when the event was, or what the event says.
func (d *daemon) transientListener(g goneEvent) watcher.Listener {
	p := g.proc
	if !g.hasProc {
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
// stays in force (it is already gone); an allowed one is counted, and logged
// with log_allowed.
func (d *daemon) reportTransients(gone []goneEvent, now time.Time) {
	mono := ebpf.MonotonicNow()
	for _, g := range gone {
		dec := d.cfg.Evaluate(d.transientListener(g), now)
		d.kern.transients[dec.Verdict]++
		if dec.Verdict == policy.Unexpected || dec.Verdict == policy.Allowed && d.cfg.LogAllowed {
			at := now.Add(g.Time - mono) // when it opened
			if dec.Verdict == policy.Unexpected && !d.kern.limit.admit(programOf(g, dec), dec, g.life, at) {
				continue // counted in its program's summary (transientlimit.go)
			}
			d.unsent = append(d.unsent, notify.NewEvent(notify.TypeOpened, dec, d.host, at, notify.WithTransient(g.life)))
		}
	}
}
