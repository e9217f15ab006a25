package main

import (
	"context"
	"os"
	"time"

	"github.com/sirupsen/logrus"
)

// The loop's looks: the periodic tick, and the look the kernel's events
// trigger.

// tick is the periodic snapshot: every interval, or with the kernel
// programs every reconcile_interval (and at once when events were lost). A
// tick that takes none still counts as progress for the watchdog: the loop
// is alive.
func (d *daemon) tick(ctx context.Context) {
	d.stall(ctx)
	if ctx.Err() != nil {
		return
	}
	if !d.snapshotDue(time.Now()) {
		d.writeMetrics(time.Now()) // at least every metrics.WriteEvery, snapshot or not
		d.fed(time.Now())
		return
	}
	d.look(ctx, nil)
	if d.kern.ev != nil {
		d.kern.ev.forgetForeign(d.kern.prev)
	}
}

// triggered looks at once at what the kernel's events announced.
func (d *daemon) triggered(ctx context.Context) {
	d.stall(ctx)
	if ctx.Err() != nil || d.kern.ev == nil {
		return
	}
	evs, execs, overflow := d.kern.ev.take()
	d.checkDrops(overflow, time.Now())
	d.execed(execs) // execs.go
	// The processes that opened listeners: one that entered a namespace
	// without a new pid is found in it by this look.
	pids := make([]int32, 0, len(evs))
	for i := range evs {
		if opens(evs[i].Event) {
			pids = append(pids, int32(evs[i].Pid))
		}
	}
	d.w.Recheck(pids)
	// Only when the look took a snapshot: one that failed says nothing
	// of what the daemon can see.
	if d.look(ctx, evs) && d.kern.ev != nil {
		d.kern.ev.markForeign(evs, d.kern.prev)
	}
}

// look takes one snapshot and acts on it, and reports the transient
// listeners among those evs announced. It says whether the snapshot
// worked.
func (d *daemon) look(ctx context.Context, evs []kernelEvent) bool {
	snap, err := d.w.Snapshot(ctx)
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			// Once a minute, or when the error changes: a host where
			// snapshots keep failing must not flood the journal.
			if msg := err.Error(); msg != d.snapErr || now.Sub(d.snapErrAt) >= time.Minute {
				d.log.WithError(err).Error("snapshot failed")
				d.snapErr, d.snapErrAt = msg, now
			}
			d.setStatus("snapshot failed: " + oneLine(err.Error()))
		}
		// The loop is alive, only blind: systemd restarting it would not
		// help, so the watchdog keeps being fed.
		d.fed(now)
		return false
	}
	if d.snapErr != "" {
		d.log.Info("snapshots work again")
		d.snapErr = ""
	}
	var gone []goneEvent
	var ix snapIndex
	switch {
	case len(evs) > 0:
		snap, ix, gone = d.transients(ctx, evs, snap)
	case d.kern.ev != nil:
		// For the next triggered look; without the probe there is none.
		// The last index is no longer needed: its maps are reused.
		ix = indexSnapshotInto(snap, d.kern.prev)
	}
	d.kern.lastFull, d.kern.prev = now, ix
	d.syncHolders(snap)                 // execs.go
	snap = d.exposureObserve(snap, now) // exposure.go: adds the published ports with no socket
	r := d.eng.Step(snap, d.engineConfig(), now)
	if len(evs) > 0 {
		var unjudged []goneEvent
		r, unjudged = d.closeTransients(evs, ix, r, now)
		gone = append(gone, unjudged...)
	}
	d.reportTransients(gone, now)
	d.emit(r, now)
	d.metricsLook(snap, now)
	if d.cfg.ExpiredBetween(d.lastCheck, now) {
		d.logExpired(now)
	}
	d.fed(time.Now())
	if !d.ready {
		d.ready = true
		d.gc = newGCPacer()
		d.procs = newProcLimit()
		d.setProcs()
		s := d.eng.Stats()
		d.log.WithFields(logrus.Fields{
			"config":     d.cfg.Source,
			"listeners":  s.Listeners,
			"unexpected": s.Unexpected,
			"namespaces": s.Namespaces,
			"state_dir":  d.stateDir,
			"ebpf":       d.kern.mode,
			"version":    version,
		}).Info("portwatchd started")
		d.updateStatus()
		sdNotify(d.log, "READY=1")
		if d.wd > 0 {
			d.startWatchdog()
		}
		return true
	}
	d.updateStatus()
	d.gc.check()
	return true
}

// stall is the test hook named by stallFileEnv.
func (d *daemon) stall(ctx context.Context) {
	if d.stallFile == "" {
		return
	}
	logged := false
	for ctx.Err() == nil {
		if _, err := os.Stat(d.stallFile); err != nil {
			return
		}
		if !logged {
			d.log.WithField("file", d.stallFile).Warn("test hook: snapshot loop stalled until the file is removed")
			logged = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
