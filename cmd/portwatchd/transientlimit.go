package main

import (
	"slices"
	"time"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
)

// A program that opens and closes listeners in a loop (a scanner, a fuzzer,
// a storm of 10,000 in 5 s) would otherwise give one alert per listener:
// journald and every receiver flooded, and the unsent events capped at
// maxUnsent, so that facts would be lost without a word. So the unexpected
// transient listeners of one program are alerted one by one up to
// transient_alerts_per_minute (default transientBurst) per transientWindow; the rest are counted, and once the
// window is over one event says how many there were, on which ports, and
// the last of them ("9950 more unexpected transient listeners ... opened by
// /tmp/x (pid 812, ...) on tcp port 4440-4449 ..."). Nothing is dropped
// unsaid; a receiver gets at most transientBurst+1 events a minute from one
// program.
const (
	transientBurst  = policy.DefaultTransientAlertsPerMinute
	transientWindow = time.Minute
)

// transientProgram is what the limit counts by: the program (its exe, or
// comm when the process was gone before it could be read), its user and its
// network namespace. Not the pid, lest a program that forks a child per
// listener escape it.
type transientProgram struct {
	exe   string
	uid   uint32
	netns uint64
}

// transientTally is one program's count in its current window.
type transientTally struct {
	since   time.Time // when the window began: its first listener's open
	alerted int       // listeners alerted one by one in the window
	// The listeners counted instead of alerted.
	more     int
	lo, hi   uint16
	first    time.Time // when the first of them opened
	last     policy.Decision
	lastLife notify.Transient
}

// transientLimit is the daemon's per-program count of unexpected transient
// listeners.
type transientLimit map[transientProgram]*transientTally

// programOf is the key of the program that held l.
func programOf(g goneEvent, dec policy.Decision) transientProgram {
	k := transientProgram{exe: g.Comm, uid: g.UID, netns: g.NetnsInode}
	if ps := dec.Listener.Processes; len(ps) > 0 && ps[0].Exe != "" {
		k.exe = ps[0].Exe
	}
	return k
}

// admit says whether the unexpected transient listener dec, which opened at
// at, is alerted on its own, burst being the most a window alerts so; if
// not, it is counted in its program's summary.
func (tl transientLimit) admit(k transientProgram, dec policy.Decision, life notify.Transient, at time.Time, burst int) bool {
	t := tl[k]
	if t == nil {
		t = &transientTally{since: at}
		tl[k] = t
	}
	if t.alerted < burst && t.more == 0 {
		t.alerted++
		return true
	}
	p := dec.Listener.Port
	if t.more == 0 {
		t.lo, t.hi, t.first = p, p, at
	}
	t.more++
	t.lo, t.hi = min(t.lo, p), max(t.hi, p)
	t.last, t.lastLife = dec, life
	return false
}

// summaries returns one event for each program whose window ended by now
// (every program's, when all is set: at shutdown) and listeners were
// counted in it, and starts those programs afresh.
func (tl transientLimit) summaries(now time.Time, all bool, host string) []notify.Event {
	var evs []notify.Event
	for k, t := range tl {
		if !all && now.Sub(t.since) < transientWindow {
			continue
		}
		delete(tl, k)
		if t.more == 0 {
			continue
		}
		life := t.lastLife
		life.Summary = &notify.TransientSummary{Count: t.more, PortLow: t.lo, PortHigh: t.hi, Since: t.first, Alerted: t.alerted}
		evs = append(evs, notify.NewEvent(notify.TypeOpened, t.last, host, now, notify.WithTransient(life)))
	}
	// In a stable order: by the first listener summarised.
	slices.SortFunc(evs, func(a, b notify.Event) int {
		return a.Transient.Summary.Since.Compare(b.Transient.Summary.Since)
	})
	return evs
}
