package main

import (
	"time"

	"github.com/portwatchd/portwatchd/watcher"
)

// The execs of holders, told by the kernel (ebpf.KindExec). An exec keeps
// the pid and the descriptors that are not close-on-exec, so a listener's
// holder may become another program without any socket event: a service
// exploited into a shell that keeps its port. The daemon gives the probe
// the holders of every snapshot (syncHolders); an exec of one triggers a
// look that reads it again (watcher.Exec) and judges its listeners anew.

// execRereadEvery bounds how often lost events have every holder read
// again: in a storm the ring buffer may overflow at every look.
const execRereadEvery = time.Minute

// syncHolders gives the probe the holders of snap's listeners when they
// may have changed (a list the watcher handed out again has the same
// holders), and tells the watcher whether their execs are told.
func (d *daemon) syncHolders(snap *watcher.Snapshot) {
	k := &d.kern
	if k.ev == nil || k.ev.probe.Execs() != nil {
		return
	}
	if k.holdersFrom != nil && watcher.SameListeners(snap.Listeners, k.holdersFrom) {
		return
	}
	k.holders = k.holders[:0]
	for i := range snap.Listeners {
		for _, p := range snap.Listeners[i].Processes {
			k.holders = append(k.holders, int32(p.PID))
		}
	}
	err := k.ev.probe.SetHolders(k.holders)
	msg := ""
	if err != nil {
		if msg = err.Error(); msg != k.holdersErr {
			d.log.WithError(err).Warn("ebpf: holders' execs are found by the rolling re-check only")
		}
	}
	k.holdersErr, k.holdersFrom = msg, snap.Listeners
	d.w.SetExecEvents(err == nil)
}

// execed has the watcher read again the holders that exec'd, pids. The
// loop then looks once more at once: the engine takes a change of owners
// when two snapshots agree, and no other snapshot may be due for
// reconcile_interval.
func (d *daemon) execed(pids []int32) {
	if len(pids) == 0 {
		return
	}
	d.log.WithField("pids", pids).Debug("ebpf: holders exec'd; reading them again")
	d.w.Exec(pids)
	d.kern.ev.trigger()
}

// execsLost has every holder read again after events were lost, at most
// every execRereadEvery: an exec among them would otherwise wait for the
// rolling re-check.
func (d *daemon) execsLost(now time.Time) {
	k := &d.kern
	if k.ev == nil || now.Sub(k.rereadAt) < execRereadEvery {
		return
	}
	k.rereadAt = now
	d.w.Exec(k.holders)
}
