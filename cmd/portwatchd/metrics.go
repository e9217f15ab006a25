package main

import (
	"errors"
	"io/fs"
	"log"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/metrics"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// The daemon's side of the fleet view (package metrics): what each look,
// event, reload and delivery tells the metrics, the textfile written after
// a look that changed something (at least every metrics.WriteEvery), and
// the metrics.listen endpoint. The daemon's other files call these at the
// points where those things happen, one line each.

// daemonMetrics is the daemon's metrics state. Everything but the delivery
// callback runs in the daemon's loop.
type daemonMetrics struct {
	m   *metrics.Metrics
	srv *metrics.Server // nil without metrics.listen

	cfg      *policy.Config // the config last reported
	reloadOK bool           // the reload state last reported
	expiring int            // rules expiring within 7 days, last reported
	rulesAt  time.Time      // when expiring was last counted

	// The decisions of the last look, kept while the look hands out the
	// same list (the watcher hands it out again when nothing changed)
	// under the same config and exposure assessment, and no rule expired.
	decisions []policy.Decision
	evalList  []watcher.Listener
	evalCfg   *policy.Config
	evalExpo  uint64
	evalAt    time.Time

	loadedAt   time.Time // when the config in force was loaded
	writeErrAt time.Time // when a failed write was last logged
}

// exposureLabel is the exposure label of a listener in the metrics: one of
// the policy's exposure: values, published first (it says most about
// reachability), unknown when none is known (exposure: off, or not read).
func exposureLabel(d *policy.Decision) string {
	if d.Exposure == nil {
		return "unknown"
	}
	if len(d.Exposure.Published) > 0 {
		return "published"
	}
	return d.Exposure.Classes()[0]
}

// startMetrics builds the metrics and opens metrics.listen. A listen that
// fails is logged, not fatal: the watch matters more than its metrics.
func (d *daemon) startMetrics() {
	mc := d.cfg.Metrics
	d.met = &daemonMetrics{loadedAt: time.Now(), m: metrics.New(metrics.Options{
		Textfile:          mc.Textfile,
		MaxListenerSeries: mc.MaxListenerSeries,
		Version:           version,
		Exposure:          exposureLabel,
	})}
	if mc.Listen == "" {
		return
	}
	errLog := log.New(d.log.WriterLevel(logrus.WarnLevel), "metrics endpoint: ", 0)
	srv, err := metrics.Listen(mc.Listen, mc.ListenNonLoopback, d.met.m, errLog)
	if err != nil {
		d.log.WithError(err).Error("metrics endpoint not started; the textfile, if set, is still written")
		return
	}
	d.met.srv = srv
	d.log.WithField("address", srv.Addr().String()).Info("metrics endpoint listening")
}

// observeDelivery is notify's Options.Observe.
func (d *daemon) observeDelivery(sink, result string, events int) {
	m := d.met.m
	switch result {
	case notify.DeliveryOverflow:
		m.SpoolDropped(sink, events)
	case notify.DeliveryRefused:
		m.Notification(sink, metrics.ResultRefused)
		m.SpoolDropped(sink, events)
	case notify.DeliveryFailed:
		m.Notification(sink, metrics.ResultFailed)
	default:
		m.Notification(sink, metrics.ResultOK)
	}
}

// metricsLook feeds the metrics one look's snapshot, the spools and the
// kernel programs' state, and writes the textfile when due.
func (d *daemon) metricsLook(snap *watcher.Snapshot, now time.Time) {
	dm := d.met
	if dm == nil {
		return // a daemon built by a test without startDaemon
	}
	if !watcher.SameListeners(snap.Listeners, dm.evalList) || d.cfg != dm.evalCfg || d.expo.gen != dm.evalExpo ||
		d.cfg.ExpiredBetween(dm.evalAt, now) {
		dm.decisions = dm.decisions[:0]
		for _, l := range snap.Listeners {
			dm.decisions = append(dm.decisions, d.evaluator().Evaluate(l, now))
		}
		dm.evalList, dm.evalCfg, dm.evalExpo, dm.evalAt = snap.Listeners, d.cfg, d.expo.gen, now
		dm.m.Snapshot(dm.decisions, now.Sub(snap.Time), now)
	} else {
		dm.m.SnapshotSame(now.Sub(snap.Time), now)
	}
	for sink, n := range d.disp.Pending() {
		dm.m.Spool(sink, n)
	}
	dm.m.EBPF(d.kern.mode == string(policy.EBPFOff), d.kern.ev != nil, d.kern.drops)
	d.metricsConfig(now)
	d.writeMetrics(now)
}

// metricsSent counts the events every sink took.
func (d *daemon) metricsSent(events []notify.Event) {
	if d.met == nil {
		return
	}
	for i := range events {
		if events[i].Type != notify.TypeTest {
			d.met.m.Event(events[i].Type, events[i].Listener.Verdict)
		}
	}
}

// metricsTransient counts one transient listener judged v.
func (d *daemon) metricsTransient(v policy.Verdict) {
	if d.met != nil {
		d.met.m.Transient(v)
	}
}

// metricsConfig reports the config's health when it changed: a new config
// in force (start or reload), a reload failing or no longer failing, a
// rule coming within 7 days of its expiry.
func (d *daemon) metricsConfig(now time.Time) {
	dm := d.met
	if dm == nil {
		return
	}
	ok := d.reloadErr == ""
	changed := d.cfg != dm.cfg || ok != dm.reloadOK
	if d.cfg != dm.cfg || now.Sub(dm.rulesAt) >= time.Minute {
		n := d.cfg.Expiring(now, now.Add(7*24*time.Hour))
		changed = changed || n != dm.expiring
		dm.expiring, dm.rulesAt = n, now
	}
	if !changed {
		return
	}
	if d.cfg != dm.cfg {
		if dm.cfg != nil {
			dm.loaded(d, now)
		}
		dm.m.SetOptions(d.cfg.Metrics.Textfile, d.cfg.Metrics.MaxListenerSeries)
		dm.cfg = d.cfg
		dm.rulesAt = now
	}
	dm.reloadOK = ok
	dm.m.Config(ok, dm.loadedAt, rulesByFile(d.cfg), dm.expiring)
	d.writeMetrics(now)
}

// loaded notes a reloaded config: metrics.listen takes effect at the next
// start (the endpoint is not moved under a running daemon).
func (dm *daemonMetrics) loaded(d *daemon, now time.Time) {
	if old := dm.cfg.Metrics; old.Listen != d.cfg.Metrics.Listen || old.ListenNonLoopback != d.cfg.Metrics.ListenNonLoopback {
		d.log.WithFields(logrus.Fields{"listen": d.cfg.Metrics.Listen, "in_force": old.Listen}).
			Warn("metrics.listen changed; it takes effect at the next start")
	}
	dm.loadedAt = now
}

// writeMetrics writes the textfile when due, logging a failure at most
// once a minute.
func (d *daemon) writeMetrics(now time.Time) {
	if d.met == nil {
		return
	}
	if _, err := d.met.m.Write(now); err != nil && now.Sub(d.met.writeErrAt) >= time.Minute {
		d.met.writeErrAt = now
		l := d.log.WithError(err)
		if errors.Is(err, fs.ErrPermission) {
			// The packaged unit's dynamic user may write only its runtime
			// directory; the package links node_exporter's file there.
			l = l.WithField("hint", "ln -s /run/portwatchd/portwatch.prom "+d.cfg.Metrics.Textfile+" (README: Fleet view)")
		}
		l.Error("metrics textfile not written; retrying after the next snapshot")
	}
}

// stopMetrics closes the endpoint at exit. The textfile stays: its age
// tells Prometheus that the daemon stopped.
func (d *daemon) stopMetrics() {
	if d.met != nil && d.met.srv != nil {
		if err := d.met.srv.Close(); err != nil {
			d.log.WithError(err).Debug("metrics endpoint: close")
		}
	}
}

// rulesByFile counts the allow and deny rules written in each file; the
// built-in rule of metrics.listen is not one of them.
func rulesByFile(c *policy.Config) map[string]int {
	m := map[string]int{}
	for _, f := range c.Files {
		m[f] = 0
	}
	for _, list := range [][]policy.Rule{c.Rules, c.Deny} {
		for _, r := range list {
			if r.Builtin {
				continue
			}
			f := r.File
			if i := strings.LastIndexByte(f, ':'); i > 0 {
				f = f[:i]
			}
			m[f]++
		}
	}
	return m
}
