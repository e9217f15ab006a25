package main

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// The kernel programs (package watcher/ebpf) as the daemon uses them.
//
// Events are triggers, the snapshot is the truth: a goroutine reads the
// events, keeps those that open a listener, and signals the loop through a
// channel of one (signals while one is pending fold into it). The loop then
// takes a snapshot at once and runs the engine as on a tick. The snapshot is
// of the whole host: a dump of the event's namespace alone would be cheaper,
// but the watcher's steady snapshot costs about a millisecond, and one code
// path for every look keeps the engine's view whole.
//
// A listener that an event announced and that the snapshot does not hold,
// even a few milliseconds later (the listen tracepoint fires before the port
// is hashed), is transient: it closed before anyone could look. It is judged
// from the event (transient.go).

// ebpfActive is the mode shown while the programs run.
const ebpfActive = "active"

// maxPending bounds the events kept between two looks; more count as drops.
const maxPending = 4096

// kernelEvents is the reader of the probe's events.
type kernelEvents struct {
	probe *ebpf.Probe
	// readProcess reads a process as the watcher does (its dpkg index,
	// for the flags); watcher.ReadProcess until the watcher exists.
	readProcess func(pid int) (watcher.Process, error)
	trig        chan struct{} // a look is wanted
	failed      chan error    // Read failed for good; the reader has stopped
	done        chan struct{} // the reader has returned

	// records counts the records read. The ring buffer can only drop
	// events when it is full, that is when it holds records this reader
	// will read: checkDrops reads the drop counter only after new ones.
	records atomic.Uint64

	mu       sync.Mutex
	pending  []kernelEvent
	execs    []int32 // the holders that exec'd
	overflow uint64  // events not kept since the last take
	// foreign are the network namespaces that a look triggered by their
	// events did not inspect: the daemon cannot see into them (it runs in
	// a PID namespace of its own, as in the benchmark's scene, or they are
	// gone). Their events are not kept (nothing could settle them) and
	// trigger no look until the next periodic snapshot forgets them:
	// otherwise every listener opened there would cost a full snapshot.
	foreign map[uint64]bool
}

// kernelEvent is an event with what was read about its process at once,
// while the process may still live.
type kernelEvent struct {
	ebpf.Event
	proc watcher.Process // read from /proc; zero (PID 0) when it could not be
}

// openProbe loads the kernel programs as the config's mode says. It returns
// the reader (nil when not loaded) and the mode in force for STATUS: active,
// off, or unavailable with the reason. With ebpf: on, failing to load is an
// error.
func openProbe(mode policy.EBPFMode, log logrus.FieldLogger) (*kernelEvents, string, error) {
	if mode == policy.EBPFOff {
		return nil, string(policy.EBPFOff), nil
	}
	p, err := ebpf.Open(ebpf.Options{})
	if err != nil {
		if mode == policy.EBPFOn {
			return nil, "", fmt.Errorf("ebpf: on: %w", err)
		}
		reason := err.Error()
		var ue *ebpf.UnavailableError
		if errors.As(err, &ue) {
			reason = ue.Reason.Error()
		}
		log.WithError(err).Warn("eBPF unavailable; polling every interval")
		return nil, "unavailable: " + reason, nil
	}
	if err := p.ListenExit(); err != nil {
		log.WithError(err).Debug("listen events come from the state tracepoint, before the port is hashed")
	}
	return &kernelEvents{
		probe:       p,
		readProcess: watcher.ReadProcess,
		trig:        make(chan struct{}, 1),
		failed:      make(chan error, 1),
		done:        make(chan struct{}),
	}, ebpfActive, nil
}

// read runs until ctx ends or the probe closes or fails.
func (k *kernelEvents) read(ctx context.Context, log logrus.FieldLogger) {
	defer close(k.done)
	for {
		ev, err := k.probe.Read(ctx)
		k.records.Add(1)
		switch {
		case err == nil:
		case ctx.Err() != nil || errors.Is(err, ebpf.ErrClosed):
			return
		case errors.Is(err, ebpf.ErrParse):
			log.WithError(err).Debug("ebpf: record skipped")
			continue
		default:
			k.failed <- err
			return
		}
		if ev.Kind == ebpf.KindExec {
			// Of a holder the daemon sees, whatever its namespace; the
			// pid is all the look needs (execs.go).
			keep(k, &k.execs, ev.Pid)
			continue
		}
		if k.isForeign(ev.NetnsInode) {
			continue
		}
		ke := kernelEvent{Event: ev}
		if opens(ev) {
			// Now, before the process can exit: its exe, unit and
			// container, which the event does not carry.
			if p, err := k.readProcess(int(ev.Pid)); err == nil {
				ke.proc = p
			}
		}
		keep(k, &k.pending, ke)
	}
}

// keep queues v in q, one of k's queues, for the next look, and asks for
// it; a full queue counts v as not kept.
func keep[T any](k *kernelEvents, q *[]T, v T) {
	k.mu.Lock()
	if len(*q) < maxPending {
		*q = append(*q, v)
	} else {
		k.overflow++
	}
	k.mu.Unlock()
	k.trigger()
}

// trigger asks the loop for a look (one pending at most: more fold in).
func (k *kernelEvents) trigger() {
	select {
	case k.trig <- struct{}{}:
	default:
	}
}

// isForeign says whether events of the namespace netns are left out.
func (k *kernelEvents) isForeign(netns uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.foreign[netns]
}

// markForeign records the namespaces of evs that ix, the snapshot taken
// for them, did not inspect.
func (k *kernelEvents) markForeign(evs []kernelEvent, ix snapIndex) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ev := range evs {
		if _, ok := ix.ns[ev.NetnsInode]; ok {
			continue
		}
		if k.foreign == nil {
			k.foreign = map[uint64]bool{}
		}
		k.foreign[ev.NetnsInode] = true
	}
}

// maxForeign bounds the namespaces left out: they come and go with
// containers the daemon cannot see, and a periodic snapshot only removes
// those it inspected.
const maxForeign = 4096

// forgetForeign is called after each periodic snapshot, whose index is ix:
// a namespace that it inspected is watched again. Those it did not inspect
// stay left out: forgetting them too would cost one useless look per
// reconcile_interval for each namespace the daemon cannot see (another PID
// namespace's, bench/idle), which was most of the idle daemon's CPU.
func (k *kernelEvents) forgetForeign(ix snapIndex) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.foreign) > maxForeign {
		k.foreign = nil
		return
	}
	for netns := range k.foreign {
		if _, ok := ix.ns[netns]; ok {
			delete(k.foreign, netns)
		}
	}
}

// take returns the listener events and the pids of the execs kept since
// the last take, and how many events were not kept.
func (k *kernelEvents) take() ([]kernelEvent, []int32, uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	evs, execs, n := k.pending, k.execs, k.overflow
	k.pending, k.execs, k.overflow = nil, nil, 0
	return evs, execs, n
}

// close stops the reader and unloads the programs.
func (k *kernelEvents) close() error {
	err := k.probe.Close()
	<-k.done
	return err
}

// opens says whether ev reports a listener that opened.
func opens(ev ebpf.Event) bool {
	return ev.Kind == ebpf.KindBind || ev.Kind == ebpf.KindListen && ev.Ret == 0
}

// kernelState is the daemon's side of the probe.
type kernelState struct {
	ev       *kernelEvents // nil when not loaded, or after it failed
	mode     string        // active, off, unavailable: <reason>, failed: <error>
	lastFull time.Time     // the last snapshot taken (full: of every namespace)
	drops    uint64        // the probe's drop counter at the last look
	dropsAt  uint64        // kernelEvents.records when drops was read
	lost     uint64        // events lost (ring buffer full, or too many pending) not yet logged
	lostAt   time.Time     // when lost events were last logged
	users    map[uint32]string
	// prev indexes the last look's snapshot (what the engine has judged)
	// while the probe runs; prev.socks is nil before the first.
	prev snapIndex
	// alive is the listeners events announced and a look found open, until
	// their close event (closeTransients).
	alive map[sockKey]liveOpen
	// unexpected counts the unexpected transient listeners seen, for
	// STATUS.
	unexpected int
	// limit counts the unexpected transient listeners of each program,
	// which are alerted one by one only up to a rate (transientlimit.go).
	limit transientLimit
	// holders are the pids given to the probe for their execs, from the
	// listeners holdersFrom (execs.go); holdersErr is the last refusal
	// logged, rereadAt when lost events last had them all read again.
	holders     []int32
	holdersFrom []watcher.Listener
	holdersErr  string
	rereadAt    time.Time
}

// checkDrops says whether events were lost since the last call, reading the
// probe's per-CPU counter (one map lookup) when records were read since the
// last reading (see kernelEvents.records: an idle daemon makes no system
// call for it), and logs the count at most once a minute.
func (d *daemon) checkDrops(extra uint64, now time.Time) bool {
	k := &d.kern
	n := extra
	if k.ev != nil {
		if r := k.ev.records.Load(); r != k.dropsAt {
			if total, err := k.ev.probe.Dropped(); err == nil {
				k.dropsAt = r
				if total > k.drops {
					n += total - k.drops
					k.drops = total
				}
			}
		}
	}
	k.lost += n
	if n > 0 {
		d.execsLost(now)
	}
	if k.lost > 0 && now.Sub(k.lostAt) >= time.Minute {
		d.log.WithField("events", k.lost).Warn("eBPF events lost (ring buffer full); full snapshot taken")
		k.lost, k.lostAt = 0, now
	}
	return n > 0
}

// setPeriod sets and returns the loop's tick period. Without the probe it
// is interval. With it, the loop wakes only when a periodic snapshot is due
// (reconcile_interval): a daemon that wakes every second to do nothing
// costs more than all its reconcile snapshots together (bench/idle). Either
// way it wakes at least every half watchdog timeout, since its ticks are
// what ping and check the watchdog (sdnotify.go); a tick then takes a
// snapshot only when one is due (snapshotDue).
func (d *daemon) setPeriod() time.Duration {
	p := d.cfg.Interval
	if d.kern.ev != nil {
		p = d.cfg.ReconcileInterval
	}
	if d.wd > 0 && d.wd/2 < p {
		p = d.wd / 2
	}
	d.intervalNS.Store(int64(p))
	if d.w != nil {
		// The events hint the watcher (triggered): its rolling re-check
		// of every process's namespace may go slower. Execs are told
		// once the probe has the holders (syncHolders).
		d.w.SetEventDriven(d.kern.ev != nil)
		if d.kern.ev == nil {
			d.w.SetExecEvents(false)
			d.kern.holdersFrom = nil
		}
	}
	return p
}

// snapshotDue says whether the tick at now must take a snapshot: every
// interval without the probe; with it, every reconcile_interval or when
// events were lost. The look records its time after the snapshot, a little after the
// tick that took it, so a tick counts as due half a period early: otherwise
// a ticker at reconcile_interval would find it not quite due every other
// time and snapshot every two intervals.
func (d *daemon) snapshotDue(now time.Time) bool {
	slack := time.Duration(d.intervalNS.Load()) / 2
	if d.kern.ev == nil {
		// interval, or the tick nearest to it when the watchdog has
		// the loop tick more often.
		return now.Sub(d.kern.lastFull) >= d.cfg.Interval-slack
	}
	lost := d.checkDrops(0, now)
	return lost || now.Sub(d.kern.lastFull) >= d.cfg.ReconcileInterval-slack
}

// kernelFailed falls back to polling when the probe fails mid-run. It is
// not loaded again: a kernel that refused once would refuse in a loop.
func (d *daemon) kernelFailed(err error) {
	d.log.WithError(err).Warn("eBPF events failed; polling every interval from now on")
	if cerr := d.kern.ev.close(); cerr != nil {
		d.log.WithError(cerr).Debug("ebpf: close")
	}
	d.kern.ev = nil
	d.kern.mode = "failed: " + oneLine(err.Error())
	d.setProcs()
	d.resetClock()
	d.updateStatus()
}

// closeKernel unloads the programs at exit.
func (d *daemon) closeKernel() {
	if d.kern.ev == nil {
		return
	}
	if err := d.kern.ev.close(); err != nil {
		d.log.WithError(err).Warn("ebpf: close")
	}
	d.kern.ev = nil
}

// userName names uid for a transient listener's process, as the watcher
// names holders: the name from the passwd database, or the number.
func (d *daemon) userName(uid uint32) string {
	if n, ok := d.kern.users[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	if d.kern.users == nil || len(d.kern.users) > 1000 {
		d.kern.users = map[uint32]string{}
	}
	d.kern.users[uid] = n
	return n
}
