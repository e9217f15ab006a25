package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// portwatchd run: the always-on watch.
//
// Life of the process:
//   - start: load the config (an invalid one is fatal here, exit 2), lock the
//     state directory, read the alert state (state.json), build the watcher
//     and the notify dispatcher, start delivering spooled events, and start
//     watching the config's directories;
//   - every interval: snapshot, run the alert engine (package alerting), send its
//     events (journald now, webhooks through their spools), save the state
//     when the alerted set changed, and update STATUS=;
//   - after the first snapshot: one summary log line, READY=1, and the
//     watchdog pinger when WATCHDOG_USEC is set;
//   - SIGHUP or a change in the config's directories (configwatch.go): reload;
//   - SIGTERM or SIGINT: STOPPING=1, send what is left, give webhook
//     deliveries shutdown_grace, save the state, exit 0.
//
// Signals are handled here and only here. The daemon opens no listening
// socket of its own.

func init() {
	commands["run"] = command{"watch in the foreground, as the systemd service does (the default command)", runDaemon}
}

// stallFileEnv names the test hook for a hung snapshot: when the variable
// names a file that exists, each tick blocks before its snapshot, checking
// every 100 ms, until the file is removed. The daemon's end-to-end test and
// the packaging system test (under a real systemd) use it to prove that a
// stuck snapshot loop stops the watchdog pings, so that systemd restarts the
// daemon. Unset, it costs nothing; set, one stat per tick. SIGTERM still ends
// a stalled daemon.
const stallFileEnv = "PORTWATCHD_TEST_STALL_FILE"

// maxUnsent bounds the events kept for another Send attempt when Send fails
// (journald restarting, a full disk under the spool).
const maxUnsent = 1000

// daemonOptions are the flags of `portwatchd run`.
type daemonOptions struct {
	configPath string // -c/--config; "" = the default path or the embedded default
	stateDir   string // --state-dir; "" = state_dir from the config
	logFormat  string
	logLevel   string
}

// runDaemon is `portwatchd run`.
func runDaemon(args []string, stdout, stderr io.Writer) int {
	// SIGHUP's default action kills the process: catch it before anything
	// else, so that a reload sent during startup is not fatal. A channel of
	// one, filled without blocking by the signal package: reloads asked for
	// while one is pending fold into it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := newFlagSet("run", stderr)
	var o daemonOptions
	cfgPath := configFlag(fs)
	fs.StringVar(&o.stateDir, "state-dir", "", "`directory` for the alert state and webhook spools (default: state_dir from the config, $STATE_DIRECTORY or /var/lib/portwatch)")
	fs.StringVar(&o.logFormat, "log-format", "text", "operational log format: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "operational log level: debug, info, warning or error")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	o.configPath = *cfgPath
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd run: %v\n", err)
		return exitError
	}
	d, err := startDaemon(o, log, stderr)
	if err != nil {
		log.Error(oneLine(err.Error()))
		return exitError
	}
	return d.run(ctx, hup)
}

// daemon is the running `portwatchd run`. Everything but the watchdog pinger
// and the config file watcher runs in the goroutine of run, so the engine,
// the config and the state need no lock.
type daemon struct {
	opts     daemonOptions
	log      *logrus.Logger
	host     string
	stateDir string
	lock     *os.File

	cfg       *policy.Config
	reloadErr string // last reload error, "" when the config in force is the latest
	w         *watcher.Watcher
	disp      *notify.Dispatcher
	dispStop  context.CancelFunc
	dispDone  chan struct{}
	eng       *alerting.Engine
	files     *configWatcher // nil when file watching could not start
	unsent    []notify.Event
	// stateDirty says the alert state changed since it was last saved; it
	// is saved once nothing is unsent.
	stateDirty bool
	// firingGiven says the dispatcher has the alerts in force (SetFiring).
	firingGiven bool
	emitFails   bool            // the last Send or state save failed
	emitErrAt   time.Time       // when such a failure was last logged
	expired     map[string]bool // expired rules already reported, by file:line
	lastCheck   time.Time       // last check for expired rules

	met   *daemonMetrics // the fleet view (metrics.go)
	gc    *gcPacer       // from the first look on (gcpace.go)
	procs procLimit      // processors for the goroutines (procs.go)

	kern       kernelState   // the kernel programs (kernel.go)
	expo       exposureState // the rulesets and the exposure of each listener (exposure.go)
	clk        *loopClock    // the loop's periodic clock (clock.go)
	snapErr    string        // last snapshot error, "" when the last snapshot worked
	snapErrAt  time.Time     // when snapErr was last logged
	ready      bool
	status     string
	stallFile  string
	progress   atomic.Int64  // unix nanoseconds of the last tick the loop completed
	intervalNS atomic.Int64  // the loop's period in force (setPeriod), for the watchdog
	wdOn       atomic.Bool   // the watchdog is watched (sdnotify.go): from READY=1, with WATCHDOG_USEC
	wdPinged   atomic.Int64  // unix nanoseconds of the last WATCHDOG=1
	wdStalled  atomic.Bool   // the watchdog goroutine found the loop stuck
	wd         time.Duration // systemd's watchdog timeout; 0 when off
}

// startDaemon does everything before the first snapshot: config, state,
// watcher, dispatcher.
func startDaemon(o daemonOptions, log *logrus.Logger, stderr io.Writer) (_ *daemon, err error) {
	d := &daemon{opts: o, log: log, expired: map[string]bool{}, stallFile: os.Getenv(stallFileEnv)}
	cfg, err := loadStrictConfig(o.configPath, stderr)
	if err != nil {
		var list policy.ErrorList
		if errors.As(err, &list) {
			// One entry per problem, each with its file:line:col.
			for _, e := range list {
				log.WithField("config", e.File).Error(e.Error())
			}
			return nil, fmt.Errorf("config invalid: %s", plural(list.Total(), "error"))
		}
		return nil, fmt.Errorf("load config: %w", err)
	}
	d.cfg = cfg
	d.logConfigWarnings(time.Now())
	// Before the state and the first snapshot: ebpf: on fails early, and
	// what opens during the first snapshot is seen.
	d.kern.limit = transientLimit{}
	if d.kern.ev, d.kern.mode, err = openProbe(cfg.EBPF, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.closeKernel()
		}
	}()

	d.host, err = os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	d.stateDir = o.stateDir
	if d.stateDir == "" {
		d.stateDir = cfg.StateDir
	}
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		// `go run ./cmd/portwatchd` as an ordinary user cannot write
		// /var/lib; rather than refuse, keep the state in the user's
		// own state directory, and say so.
		alt, ok := userStateDir()
		if o.stateDir != "" || os.Geteuid() == 0 || !errors.Is(err, fs.ErrPermission) || !ok {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		if err := os.MkdirAll(alt, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		log.WithFields(logrus.Fields{"wanted": d.stateDir, "using": alt}).Warn("state dir not writable by this user; using the user's own")
		d.stateDir = alt
	}
	if d.lock, err = lockStateDir(d.stateDir); err != nil {
		return nil, err
	}
	alerts, err := alerting.LoadState(d.stateDir)
	if err != nil {
		// A damaged state costs at most a repeat of past alerts: better
		// than not watching at all. Keep the bad file for a post-mortem.
		bad := filepath.Join(d.stateDir, alerting.StateFileName)
		log.WithError(err).Errorf("alert state unreadable; starting afresh (kept as %s.bad)", bad)
		_ = os.Rename(bad, bad+".bad")
		alerts = nil
	}
	d.eng = alerting.New(alerts)

	d.w, err = watcher.New(watcher.Options{Warn: func(msg string) { log.Warn(errLine(msg)) }})
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	if d.kern.ev != nil {
		// Before the reader starts (run): it reads the process behind
		// each listen and bind with the watcher's dpkg index.
		d.kern.ev.readProcess = d.w.ReadProcess
	}
	d.startMetrics()
	d.disp, err = notify.New(cfg.Notify, notify.Options{StateDir: d.stateDir, Log: log, Stderr: stderr,
		Observe: d.observeDelivery})
	if err != nil {
		d.w.Close()
		return nil, fmt.Errorf("notify: %w", err)
	}
	return d, nil
}

// run is the daemon's life from the first snapshot to the exit code.
func (d *daemon) run(ctx context.Context, hup <-chan os.Signal) int {
	dispCtx, dispStop := context.WithCancel(context.Background())
	d.dispStop, d.dispDone = dispStop, make(chan struct{})
	go func() {
		defer close(d.dispDone)
		d.disp.Run(dispCtx)
	}()

	// Watch the config before the first snapshot, so that an edit made
	// while starting is not missed.
	var fileChanged <-chan struct{}
	if cw, err := newConfigWatcher(d.configPathForWatch(), d.cfg.Files, d.log); err != nil {
		d.log.WithError(err).Warn("cannot watch the config files for changes; reload with SIGHUP")
	} else {
		d.files = cw
		fileChanged = cw.changed
	}

	if d.kern.ev != nil {
		go d.kern.ev.read(ctx, d.log)
	}
	d.startExposure(ctx)
	d.wd, _ = watchdogInterval(d.log)
	d.clk = newLoopClock(ctx, d.setPeriod())
	defer d.clk.Stop()
	ticks := make(chan time.Time, 1)
	go d.clock(ticks)
	d.tick(ctx)
	for {
		var trig <-chan struct{}
		var failed <-chan error
		if d.kern.ev != nil {
			trig, failed = d.kern.ev.trig, d.kern.ev.failed
		}
		select {
		case <-ctx.Done():
			return d.shutdown()
		case <-ticks:
			d.tick(ctx)
		case <-trig:
			d.triggered(ctx)
		case <-d.expo.changed:
			d.rulesetChanged()
		case err := <-failed:
			d.kernelFailed(err)
		case <-hup:
			d.reload("SIGHUP")
		case <-fileChanged:
			d.reload("file change")
		}
	}
}

func (d *daemon) engineConfig() alerting.Config {
	return alerting.Config{Settings: d.cfg.Settings, Evaluator: d.evaluator(), ExpiredBetween: d.cfg.ExpiredBetween}
}

// emit sends what the engine produced and saves the state when it changed.
//
// Send is idempotent per sink: when some sink fails, the same events go
// again with the next tick and only the sinks that failed get them. The
// alert state is saved only once every event is in every sink (journal
// written, webhook spools fsynced): saved earlier, a crash would leave an
// alert recorded as sent that some sink never got. A crash while events are
// unsent therefore repeats those alerts after the restart (the same
// listeners, new ids) rather than losing them.
func (d *daemon) emit(r alerting.Result, now time.Time) {
	// The summaries of transient listeners whose minute is over: at most
	// a look (reconcile_interval) late.
	d.unsent = append(d.unsent, d.kern.limit.summaries(now, false, d.host)...)
	for _, em := range r.Emit {
		at := now
		if !em.ClosedAt.IsZero() {
			at = em.ClosedAt // a resolve after flap_window: the listener closed then
		}
		// EventID, when set, is the id Firing reports with the alert.
		opts := []notify.EventOption{notify.WithID(em.EventID), notify.WithPrevious(em.Previous), notify.WithNote(em.Note)}
		if em.NowJudged != nil {
			opts = append(opts, notify.WithNowJudged(*em.NowJudged, em.Why))
		}
		if em.Transient != nil {
			opts = append(opts, notify.WithTransient(*em.Transient))
		}
		if em.SeverityChanged {
			opts = append(opts, notify.WithSeverityBefore(em.SeverityBefore))
		}
		if em.ExposureChanged {
			opts = append(opts, notify.WithExposureBefore(em.ExposureBefore))
		}
		d.unsent = append(d.unsent, notify.NewEvent(em.Type, em.Decision, d.host, at, opts...))
	}
	// The alerts in force change only with the state (and are given once at
	// start, for those persisted). Before Send, which takes out of the
	// firing set what its events resolve.
	if r.StateChanged || !d.firingGiven {
		d.disp.SetFiring(d.firing())
		d.firingGiven = true
	}
	if r.StateChanged {
		d.stateDirty = true
	}
	if len(d.unsent) > 0 {
		if err := d.disp.Send(d.unsent); err != nil {
			if d.emitFailed(now) {
				d.log.WithError(err).WithField("events", len(d.unsent)).Error("send events; retrying the failed sinks with the next snapshot")
			}
			if n := len(d.unsent) - maxUnsent; n > 0 {
				d.log.WithField("dropped", n).Error("too many unsent events; dropping the oldest")
				d.unsent = append([]notify.Event(nil), d.unsent[n:]...)
			}
			return
		}
		d.metricsSent(d.unsent)
		d.unsent = d.unsent[:0]
	}
	if d.stateDirty {
		if err := d.eng.SaveState(d.stateDir); err != nil {
			if d.emitFailed(now) {
				d.log.WithError(err).Error("save alert state; retrying with the next snapshot")
			}
			return
		}
		d.stateDirty = false
	}
	if d.emitFails {
		d.log.Info("events sent and alert state saved again")
		d.emitFails = false
	}
}

// firing returns the alerts in force as the events that raised them, which
// the dispatcher re-sends to Alertmanager every resend_interval.
func (d *daemon) firing() []notify.Event {
	fs := d.eng.Firing()
	evs := make([]notify.Event, 0, len(fs))
	for _, f := range fs {
		evs = append(evs, notify.NewEvent(notify.TypeOpened, f.Decision, d.host, f.AlertedAt, notify.WithID(f.EventID)))
	}
	return evs
}

// emitFailed records a failure and says whether to log it: at the first
// failure, then once a minute, so that a full disk does not flood the
// journal every tick. (The error text is no key: it names a random
// temporary file.)
func (d *daemon) emitFailed(now time.Time) bool {
	if d.emitFails && now.Sub(d.emitErrAt) < time.Minute {
		return false
	}
	d.emitFails, d.emitErrAt = true, now
	return true
}

// reload loads the config again and, when it changed and is good, swaps it
// in. Everything that can fail happens before the swap.
func (d *daemon) reload(trigger string) {
	cfg, err := loadStrictConfig(d.opts.configPath, io.Discard)
	if err != nil {
		d.reloadFailed(trigger, err)
		return
	}
	if cfg.Hash == d.cfg.Hash {
		lvl := logrus.InfoLevel
		if trigger != "SIGHUP" {
			// Editors and config management touch files without
			// changing them; that is not news.
			lvl = logrus.DebugLevel
		}
		d.log.WithField("trigger", trigger).Log(lvl, "config unchanged; reload skipped")
		if d.reloadErr != "" {
			d.log.Info("config is back to the one in force; the failed reload no longer applies")
			d.reloadErr = ""
			d.updateStatus()
		}
		return
	}
	sdNotify(d.log, "RELOADING=1\n"+monotonicUsec())
	if err := d.disp.Reload(cfg.Notify); err != nil {
		d.reloadFailed(trigger, fmt.Errorf("notify: %w", err))
		sdNotify(d.log, "READY=1")
		return
	}
	old := d.cfg
	d.cfg, d.reloadErr = cfg, ""
	d.log.WithFields(logrus.Fields{
		"trigger": trigger,
		"config":  cfg.Source,
		"rules":   len(cfg.Rules),
		"files":   len(cfg.Files),
	}).Info("config reloaded")
	d.logConfigWarnings(time.Now())
	if d.files != nil {
		d.files.sync(cfg.Files)
	}
	if d.ready {
		now := time.Now()
		d.emit(d.eng.Reload(d.engineConfig(), now), now)
	}
	if cfg.StateDir != old.StateDir && d.opts.stateDir == "" {
		// The state and the spools cannot move under a running daemon.
		d.log.WithFields(logrus.Fields{"state_dir": cfg.StateDir, "in_use": d.stateDir}).
			Warn("state_dir changed; it takes effect at the next start")
	}
	if cfg.EBPF != old.EBPF {
		d.log.WithFields(logrus.Fields{"ebpf": cfg.EBPF, "in_force": d.kern.mode}).
			Warn("ebpf changed; it takes effect at the next start")
	}
	if cfg.Interval != old.Interval || cfg.ReconcileInterval != old.ReconcileInterval {
		d.resetClock()
		d.log.WithFields(logrus.Fields{"interval": cfg.Interval, "reconcile_interval": cfg.ReconcileInterval}).
			Info("snapshot interval changed")
	}
	sdNotify(d.log, "READY=1")
	d.updateStatus()
}

// reloadFailed keeps the old config, logs every problem with its position,
// and shows the failure in the systemd status until a good reload.
func (d *daemon) reloadFailed(trigger string, err error) {
	msg := err.Error()
	lines := strings.Split(msg, "\n")
	lvl := logrus.ErrorLevel
	if msg == d.reloadErr && trigger != "SIGHUP" {
		lvl = logrus.DebugLevel // the same broken file seen again
	}
	for _, l := range lines {
		d.log.WithField("trigger", trigger).Logf(lvl, "config reload failed, keeping the config in force: %s", l)
	}
	d.reloadErr = msg
	d.updateStatus()
}

// logConfigWarnings logs the config's warnings and the rules expired at now.
func (d *daemon) logConfigWarnings(now time.Time) {
	for _, w := range d.cfg.Warnings {
		d.log.Warn(w)
	}
	d.logExpired(now)
}

// logExpired reports each expired rule once.
func (d *daemon) logExpired(now time.Time) {
	d.lastCheck = now
	for _, r := range d.cfg.Expired(now) {
		if d.expired[r.File+"\x00"+r.Name] {
			continue
		}
		d.expired[r.File+"\x00"+r.Name] = true
		d.log.WithFields(logrus.Fields{"rule": r.Name, "file": r.File, "expires": r.ExpiresText}).
			Warnf("%s: rule %q expired after %s and allows nothing", r.File, r.Name, r.ExpiresText)
	}
}

// updateStatus sets the systemd STATUS= to the live figures, or to the
// reload failure while one stands.
func (d *daemon) updateStatus() {
	d.metricsConfig(time.Now())
	s := d.eng.Stats()
	st := fmt.Sprintf("watching %s in %s, %d unexpected; ebpf: %s",
		plural(s.Listeners, "listener"), plural(s.Namespaces, "namespace"), s.Unexpected, d.kern.mode)
	if n := d.kern.unexpected; n > 0 {
		st += fmt.Sprintf(", %d unexpected transient", n)
	}
	st += d.exposureStatus()
	if d.reloadErr != "" {
		first, _, more := strings.Cut(d.reloadErr, "\n")
		if more {
			first += fmt.Sprintf(" (and %d more)", strings.Count(d.reloadErr, "\n"))
		}
		st = "config reload failed: " + first + "; " + st + " with the previous config"
	}
	d.setStatus(st)
}

func (d *daemon) setStatus(st string) {
	st = oneLine(st)
	if st == d.status {
		return
	}
	d.status = st
	sdNotify(d.log, "STATUS="+st)
}

// configPathForWatch is the main config file to watch: the one given, or the
// default path (which, when missing, may appear later).
func (d *daemon) configPathForWatch() string {
	if d.opts.configPath != "" {
		return d.opts.configPath
	}
	return policy.DefaultPath
}

// shutdown stops polling, gives pending deliveries their grace, saves the
// state and says goodbye.
func (d *daemon) shutdown() int {
	sdNotify(d.log, "STOPPING=1")
	d.log.Info("stopping")
	if d.files != nil {
		d.files.close()
	}
	// What the transient listeners' summaries have counted so far.
	d.unsent = append(d.unsent, d.kern.limit.summaries(time.Now(), true, d.host)...)
	if len(d.unsent) > 0 {
		if err := d.disp.Send(d.unsent); err != nil {
			d.log.WithError(err).WithField("events", len(d.unsent)).Error("send events at shutdown")
		} else {
			d.unsent = nil
		}
	}
	d.disp.Drain(d.cfg.ShutdownGrace)
	d.dispStop()
	<-d.dispDone
	if len(d.unsent) > 0 {
		// Keep the state of the last complete send: the next start alerts
		// again about what some sink never got.
		d.log.WithField("events", len(d.unsent)).Error("alert state not saved: some sinks did not take every event; the next start repeats those alerts")
	} else if err := d.eng.SaveState(d.stateDir); err != nil {
		d.log.WithError(err).Error("save alert state")
	}
	d.closeKernel()
	d.stopMetrics()
	d.w.Close()
	pending := 0
	for _, n := range d.disp.Pending() {
		pending += n
	}
	d.log.WithField("pending", pending).Info("stopped")
	d.lock.Close()
	return exitOK
}
