package main

import (
	"context"
	"time"

	sdd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// sdNotify sends state to systemd's notification socket. Outside systemd
// (no NOTIFY_SOCKET) it does nothing. A failure is logged at debug level
// only: the daemon's work does not depend on it.
func sdNotify(log logrus.FieldLogger, state string) {
	if _, err := sdd.SdNotify(false, state); err != nil {
		log.WithError(err).Debug("sd_notify")
	}
}

// monotonicUsec is the MONOTONIC_USEC= field that systemd 253 and later
// want with RELOADING=1 for Type=notify-reload; older systemd, and
// Type=notify, ignore it.
func monotonicUsec() string {
	return sdd.SdNotifyMonotonicUsec()
}

// watchdogInterval returns the watchdog timeout systemd set (WATCHDOG_USEC,
// for this pid), if any.
func watchdogInterval(log logrus.FieldLogger) (time.Duration, bool) {
	wd, err := sdd.SdWatchdogEnabled(false)
	if err != nil {
		log.WithError(err).Warn("watchdog disabled")
		return 0, false
	}
	return wd, wd > 0
}

// watchdog pings systemd at half the watchdog timeout, but only while the
// snapshot loop makes progress: a loop stuck in a snapshot (or anywhere else)
// stops the pings, and systemd restarts the daemon. Progress is recent when
// the last completed tick is at most one snapshot interval plus half the
// watchdog timeout old, so a healthy loop whose interval is longer than the
// watchdog timeout still gets its pings.
func (d *daemon) watchdog(ctx context.Context, wd time.Duration) {
	t := time.NewTicker(wd / 2)
	defer t.Stop()
	stalled := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		since := time.Since(time.Unix(0, d.progress.Load()))
		if since <= time.Duration(d.intervalNS.Load())+wd/2 {
			if stalled {
				d.log.Info("snapshot loop making progress again; watchdog pings resumed")
				stalled = false
			}
			sdNotify(d.log, "WATCHDOG=1")
			continue
		}
		if !stalled {
			d.log.WithField("since_last_tick", since.Round(time.Millisecond)).
				Error("snapshot loop stuck; withholding watchdog pings so that systemd restarts the daemon")
			stalled = true
		}
	}
}
