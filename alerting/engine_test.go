package alerting

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// engPolicy judges listeners for the engine tests: a port is allowed when
// it is in allow and, if an exe is given, some holder runs it.
type engPolicy struct {
	allow   map[uint16]string    // port -> required exe ("" = any, unattributed too)
	units   map[uint16]string    // port -> required unit, besides allow's exe
	ignore  map[uint16]bool      // ports judged ignored (ephemeral UDP)
	expires map[uint16]time.Time // port -> end of its rule
}

func (p engPolicy) Evaluate(l watcher.Listener, now time.Time) policy.Decision {
	d := policy.Decision{Listener: l, Verdict: policy.Unexpected, Reason: "engNo rule allows it"}
	if p.ignore[l.Port] {
		d.Verdict, d.Reason = policy.Ignored, "ephemeral"
		return d
	}
	exe, ok := p.allow[l.Port]
	if !ok {
		return d
	}
	if end, ok := p.expires[l.Port]; ok && !now.Before(end) {
		return d
	}
	unit := p.units[l.Port]
	if (exe != "" || unit != "") && !slices.ContainsFunc(l.Processes, func(pr watcher.Process) bool {
		return (exe == "" || pr.Exe == exe) && (unit == "" || pr.Unit == unit)
	}) {
		d.Rule = fmt.Sprintf("port-%d", l.Port)
		return d
	}
	d.Verdict, d.Rule, d.Reason = policy.Allowed, fmt.Sprintf("port-%d", l.Port), "test"
	return d
}

var (
	procSSHD   = watcher.Process{PID: 100, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	procSSHD2  = watcher.Process{PID: 101, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	procHelper = watcher.Process{PID: 102, Comm: "helper", Exe: "/usr/lib/helper", User: "root"}
	procEvil   = watcher.Process{PID: 200, Comm: "sshd", Exe: "/tmp/x", User: "nobody"}
	procEvil2  = watcher.Process{PID: 201, Comm: "x", Exe: "/tmp/y", User: "nobody"}
	// Two holders with the same owners (exe and user), in different units.
	procGood  = watcher.Process{PID: 300, Comm: "python3", Exe: "/usr/bin/python3", User: "www", Unit: "good.service"}
	procScope = watcher.Process{PID: 301, Comm: "python3", Exe: "/usr/bin/python3", User: "www", Unit: "session-3.scope"}
)

// engEph marks l as on an ephemeral port.
func engEph(l watcher.Listener) watcher.Listener {
	l.Ephemeral = true
	return l
}

// engHold returns n steps, one a second from at, each of a snapshot made
// by snap, that must give nothing.
func engHold(at time.Duration, n int, snap func() *watcher.Snapshot) []engineStep {
	var steps []engineStep
	for i := range n {
		steps = append(steps, engineStep{at: at + time.Duration(i)*time.Second, snap: snap()})
	}
	return steps
}

// engL builds a listener on 0.0.0.0:port in the host namespace.
func engL(proto string, port uint16, holders ...watcher.Process) watcher.Listener {
	return engLN(watcher.HostNetns, proto, port, holders...)
}

// engLN builds a listener on 0.0.0.0:port in namespace netns.
func engLN(netns, proto string, port uint16, holders ...watcher.Process) watcher.Listener {
	if holders == nil {
		holders = []watcher.Process{}
	}
	return watcher.Listener{
		Protocol: proto, Family: watcher.IPv4, Address: netip.MustParseAddr("0.0.0.0"), Port: port,
		Netns: netns, Processes: holders,
	}
}

// engS builds a snapshot where every namespace named by a listener, and host,
// was inspected.
func engS(ls ...watcher.Listener) *watcher.Snapshot {
	s := &watcher.Snapshot{Listeners: ls}
	names := []string{watcher.HostNetns}
	for _, l := range ls {
		if !slices.Contains(names, l.Netns) {
			names = append(names, l.Netns)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		s.Namespaces = append(s.Namespaces, watcher.Namespace{Name: n, Inspected: true})
	}
	slices.SortFunc(s.Listeners, func(a, b watcher.Listener) int { return a.Key().Compare(b.Key()) })
	return s
}

// engBlind marks namespace name as not inspected in s.
func engBlind(s *watcher.Snapshot, name string) *watcher.Snapshot {
	s.Namespaces = append(s.Namespaces, watcher.Namespace{Name: name, Err: "gone mid-snapshot"})
	return s
}

// engSummarize renders emissions as one line each, for readable diffs.
func engSummarize(em []Emission) []string {
	var out []string
	for _, e := range em {
		var exes []string
		for _, p := range e.Decision.Processes {
			exes = append(exes, p.Exe)
		}
		s := fmt.Sprintf("%s %s %s [%s]", strings.TrimPrefix(e.Type, "listener."), e.Decision.Verdict, describeListener(e.Decision.Listener), strings.Join(exes, ","))
		if e.Message != "" {
			s += " msg=" + e.Message
		}
		if e.Note != "" {
			s += " note=" + e.Note
		}
		if e.Previous != nil {
			var prev []string
			for _, p := range e.Previous.Processes {
				prev = append(prev, p.Exe)
			}
			s += " prev=[" + strings.Join(prev, ",") + "]"
		}
		out = append(out, s)
	}
	return out
}

// engineStep is one step of an engine test: a snapshot, a reload to a new
// policy, or a restart (the state saved to disk and loaded by a new engine).
type engineStep struct {
	at       time.Duration
	snap     *watcher.Snapshot
	reload   *engPolicy
	settings *policy.Settings // with reload: new settings
	restart  bool
	want     []string
	// wantState, when not nil, is whether the step must report a state
	// change.
	wantState *bool
	// wantStats, when not nil, are the figures after the step.
	wantStats *Stats
}

var (
	engYes = new(true)
	engNo  = new(false)
)

func TestEngine(t *testing.T) {
	base := policy.Settings{FlapWindow: 30 * time.Second}
	allow22 := engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}}
	tests := []struct {
		name     string
		settings policy.Settings
		policy   engPolicy
		steps    []engineStep
	}{
		{
			name:   "first snapshot alerts every unexpected listener, and nothing twice",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected udp 0.0.0.0:53 [/tmp/y]",
				}},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engNo},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engNo},
			},
		},
		{
			name:   "an unexpected listener opening later alerts once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "without a flap window, closing resolves at once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS(), wantState: engYes, want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 2 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:     "the resolve waits out the flap window",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS(), wantState: engYes},
				{at: 30 * time.Second, snap: engS()},
				{at: 31 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 32 * time.Second, snap: engS()},
			},
		},
		{
			name:     "flapping within the window with the same exe: one alert, one resolve",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS()},
				{at: 20 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 21 * time.Second, snap: engS()},
				{at: 50 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 51 * time.Second, snap: engS()},
				{at: 81 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:     "reopening within the window with another exe resolves and alerts again",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil2)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/y]",
				}},
			},
		},
		{
			name:     "reopening after the window alerts again",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 40 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 41 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:     "reopening after the window, before a snapshot saw the window pass",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 60 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}},
			},
		},
		{
			name:     "repeat_interval sends reminders while open",
			settings: policy.Settings{RepeatInterval: 10 * time.Second},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 9 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 10 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x] note=reminder: open since 2026-01-01T00:00:00Z",
				}},
				{at: 15 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 20 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x] note=reminder: open since 2026-01-01T00:00:00Z",
				}},
				{at: 25 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 40 * time.Second, snap: engS()},
			},
		},
		{
			name:   "allowed listeners are silent without log_allowed",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
				{at: 2 * time.Second, snap: engS()},
			},
		},
		{
			name:     "log_allowed gives info events for allowed listeners after the first snapshot",
			settings: policy.Settings{LogAllowed: true},
			policy:   engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 80: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 80, procHelper))},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 80, procHelper)), wantState: engNo, want: []string{"opened allowed tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 80, procHelper)), want: []string{"closed allowed tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 80, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 80, procEvil)), want: []string{"changed allowed tcp 0.0.0.0:80 [/tmp/x]"}},
			},
		},
		{
			name:   "ignored listeners give nothing",
			policy: engPolicy{ignore: map[uint16]bool{40000: true}},
			steps: []engineStep{
				{snap: engS(engL("udp", 40000, procEvil))},
				{at: time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("udp", 40000, procEvil))},
			},
		},
		{
			name:   "a new listener briefly unattributed is judged once attributed",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			// Kernel sockets are real listeners: held back, never dropped.
			name:   "a new listener unattributed for three snapshots is judged as unattributed",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 2049: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 2049), engL("tcp", 22)), wantStats: &Stats{Listeners: 2, Unexpected: 1, Namespaces: 1}},
				{at: time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22)), want: []string{"opened unexpected tcp 0.0.0.0:22 []"}},
				// Attribution that shows an allowed owner resolves the
				// alert once two snapshots agree.
				{at: 3 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22, procSSHD))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22, procSSHD)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (now attributed); alert resolved`,
				}, wantStats: &Stats{Listeners: 2, Namespaces: 1}},
			},
		},
		{
			name:   "an unattributed alert learning its owner is no new alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444))},
				{at: time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444)), want: []string{"opened unexpected tcp 0.0.0.0:4444 []"}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
			},
		},
		{
			name:   "a new unattributed listener that closes at once gives nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS()},
			},
		},
		{
			name:   "an owner change needs two snapshots to agree",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 22, procEvil)), want: []string{"changed unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
				{at: 5 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
			},
		},
		{
			name:   "unknown owners between two agreeing snapshots hold the change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procEvil)), want: []string{"changed unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
			},
		},
		{
			name:   "a holder briefly unattributed is no change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD2))},
			},
		},
		{
			name:   "a process exiting mid-snapshot is no change",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD, procHelper))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD, procHelper))},
			},
		},
		{
			name:   "an alerted listener taken over by an allowed owner is resolved",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [/tmp/x] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (owner changed); alert resolved`,
				}},
				{at: 3 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:   "an alerted listener changing to another unexpected owner alerts the change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444, procEvil2))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil2)), want: []string{"changed unexpected tcp 0.0.0.0:4444 [/tmp/y] prev=[/tmp/x]"}},
				{at: 3 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/y]"}},
			},
		},
		{
			name:   "reload: newly unexpected alerts, unexpected now allowed resolves",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, reload: &engPolicy{allow: map[uint16]string{4444: "/tmp/x"}}, wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:22 [/usr/sbin/sshd] note=config reloaded",
					`closed unexpected tcp 0.0.0.0:4444 [/tmp/x] msg=listener tcp 0.0.0.0:4444 is now allowed by rule "port-4444" (config reloaded); alert resolved`,
				}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, reload: &engPolicy{allow: map[uint16]string{4444: "/tmp/x"}}, wantState: engNo},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"closed unexpected tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
			},
		},
		{
			name:   "reload to an ignoring policy resolves",
			policy: engPolicy{},
			steps: []engineStep{
				{snap: engS(engL("udp", 40000, procEvil)), want: []string{"opened unexpected udp 0.0.0.0:40000 [/tmp/x]"}},
				{at: time.Second, reload: &engPolicy{ignore: map[uint16]bool{40000: true}}, want: []string{
					"closed unexpected udp 0.0.0.0:40000 [/tmp/x] msg=listener udp 0.0.0.0:40000 is now ignored (config reloaded); alert resolved",
				}},
			},
		},
		{
			name:   "reload to a new flap window applies to the next close",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, reload: &allow22, settings: &base},
				{at: 2 * time.Second, snap: engS()},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "an expiring rule alerts at the next full evaluation",
			policy: engPolicy{allow: map[uint16]string{8080: ""}, expires: map[uint16]time.Time{8080: engT0.Add(10 * time.Second)}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8080, procHelper))},
				{at: 30 * time.Second, snap: engS(engL("tcp", 8080, procHelper))},
				{at: 61 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), want: []string{"opened unexpected tcp 0.0.0.0:8080 [/usr/lib/helper] note=policy re-evaluated"}},
				{at: 200 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), wantState: engNo},
			},
		},
		{
			name:   "restart with an alerted listener still open: no second alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 4 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:   "restart with an alerted listener still open but unattributed waits, then keeps the alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:     "restart after the alerted listener closed while down: resolved",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil), engL("tcp", 5555, procEvil2)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:5555 [/tmp/y]",
				}},
				{at: time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 2 * time.Second, restart: true},
				{at: 3 * time.Second, snap: engS(), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"closed unexpected tcp 0.0.0.0:5555 [/tmp/y]",
				}},
				{at: 4 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:     "restart within the flap window of a closed alert, listener back: silent",
			settings: base,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS()},
				{at: 2 * time.Second, restart: true},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "restart with an alerted listener now allowed or changed hands",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procEvil), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:22 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil2)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [/tmp/x] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (since the last run); alert resolved`,
					"changed unexpected tcp 0.0.0.0:4444 [/tmp/y] prev=[/tmp/x]",
				}},
			},
		},
		{
			name:   "a namespace not inspected this time closes nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, snap: engBlind(engS(), "container:abc")},
				{at: 2 * time.Second, snap: engS(engLN("container:abc", "tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
			},
		},
		{
			// Review item 4: rules match the unit too, so a holder swap
			// that keeps exe and user is judged again, not left to the
			// minute's full evaluation.
			name:   "a holder swap with the same owners is judged again once two snapshots agree",
			policy: engPolicy{allow: map[uint16]string{8000: "/usr/bin/python3"}, units: map[uint16]string{8000: "good.service"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8000, procGood)), wantState: engNo},
				{at: 1 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 8000, procScope)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:8000 [/usr/bin/python3] note=holder changed",
				}, wantStats: &Stats{Listeners: 1, Unexpected: 1, Namespaces: 1}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 8000, procScope)), wantState: engNo},
				{at: 4 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
				{at: 5 * time.Second, snap: engS(engL("tcp", 8000, procGood)), want: []string{
					`closed unexpected tcp 0.0.0.0:8000 [/usr/bin/python3] msg=listener tcp 0.0.0.0:8000 is now allowed by rule "port-8000" (holder changed); alert resolved`,
				}},
				{at: 6 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:   "a holder swap seen once, between two agreeing snapshots, is no change",
			policy: engPolicy{allow: map[uint16]string{8000: "/usr/bin/python3"}, units: map[uint16]string{8000: "good.service"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8000, procGood))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
			},
		},
		{
			name:   "a holder swap keeping the verdict is silent",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD2)), wantState: engNo},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD2)), wantState: engNo},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
			},
		},
		{
			// Review item 7: the watcher searches for the holders of
			// unknown ephemeral UDP sockets only every
			// ephemeralSearchEvery snapshots (ignore_ephemeral_udp: false
			// here): the engine waits that long, so no false alert and
			// resolve.
			name:   "an ephemeral udp listener attributed at the watcher's next search gives nothing",
			policy: engPolicy{allow: map[uint16]string{40000: "/usr/lib/helper"}},
			steps: append(append([]engineStep{{snap: engS()}},
				engHold(time.Second, engEphTicks()+attributionMargin, func() *watcher.Snapshot {
					return engS(engEph(engL("udp", 40000)))
				})...),
				engineStep{at: time.Minute, snap: engS(engEph(engL("udp", 40000, procHelper))), wantState: engNo},
				engineStep{at: time.Minute + time.Second, snap: engS(), wantState: engNo},
			),
		},
		{
			name:   "an ephemeral udp listener that stays unattributed is judged after the search period",
			policy: engPolicy{allow: map[uint16]string{40000: "/usr/lib/helper"}},
			steps: append(append([]engineStep{{snap: engS()}},
				engHold(time.Second, engEphTicks()+attributionMargin, func() *watcher.Snapshot {
					return engS(engEph(engL("udp", 40000)))
				})...),
				engineStep{at: 30 * time.Second, snap: engS(engEph(engL("udp", 40000))), want: []string{"opened unexpected udp 0.0.0.0:40000 []"}},
			),
		},
		{
			// Review item 5.
			name:   "restart: an alert raised unattributed, attributed after the restart, is no change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444)), want: []string{"opened unexpected tcp 0.0.0.0:4444 []"}},
				{at: 3 * time.Second, restart: true},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 6 * time.Second, restart: true},
				{at: 7 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 8 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 []"}},
			},
		},
		{
			// The start summary line: the figures of the first snapshot
			// count an unattributed listener as unexpected although its
			// alert waits for the attribution grace.
			name:   "start figures count unattributed listeners held back for attribution",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 111: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}, wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)),
					wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected udp 0.0.0.0:51820 []",
				}, wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
			},
		},
		{
			// A service starting with the daemon (at boot) is found by
			// the next snapshot: no alert, and the figures follow.
			name:   "a listener unattributed at start and attributed next gives nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22)), wantState: engNo, wantStats: &Stats{Listeners: 1, Unexpected: 1, Namespaces: 1}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo, wantStats: &Stats{Listeners: 1, Namespaces: 1}},
			},
		},
		{
			name:     "log_allowed: a listener held back at start is not logged as opened later",
			settings: policy.Settings{LogAllowed: true},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 2222))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 2222, procSSHD2)), want: []string{
					"opened unexpected tcp 0.0.0.0:2222 [/usr/sbin/sshd]",
				}},
			},
		},
		{
			// Review item 10: the daemon's end-to-end flap case runs with
			// a window of minutes, then reloads a short one; the window's
			// expiry is tested here, on the synthetic clock.
			name:     "a long flap window holds the resolve; a reload to a short one lets it go",
			settings: policy.Settings{FlapWindow: 30 * time.Minute},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 5 * time.Minute, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 6 * time.Minute, snap: engS()},
				{at: 35 * time.Minute, snap: engS()},
				{at: 36*time.Minute + time.Second, reload: &allow22, settings: &policy.Settings{FlapWindow: 8 * time.Second}},
				{at: 36*time.Minute + 2*time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:   "reuseport sockets sharing a key are one listener, alerted once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 8080, procEvil), engL("tcp", 8080, watcher.Process{PID: 202, Exe: "/tmp/x", User: "nobody"})), want: []string{
					"opened unexpected tcp 0.0.0.0:8080 [/tmp/x,/tmp/x]",
				}},
				{at: time.Second, snap: engS(engL("tcp", 8080, procEvil))},
			},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			e := New(nil)
			cfg := Config{Settings: tt.settings, Evaluator: tt.policy}
			for i, st := range tt.steps {
				now := engT0.Add(st.at)
				var r Result
				switch {
				case st.restart:
					if err := e.SaveState(dir); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					alerts, err := LoadState(dir)
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					e = New(alerts)
				case st.reload != nil:
					cfg.Evaluator = *st.reload
					if st.settings != nil {
						cfg.Settings = *st.settings
					}
					r = e.Reload(cfg, now)
				default:
					r = e.Step(st.snap, cfg, now)
				}
				if diff := cmp.Diff(st.want, engSummarize(r.Emit)); diff != "" {
					t.Errorf("step %d (at %v): events mismatch (-want +got):\n%s", i, st.at, diff)
				}
				if st.wantState != nil && r.StateChanged != *st.wantState {
					t.Errorf("step %d (at %v): StateChanged = %v, want %v", i, st.at, r.StateChanged, *st.wantState)
				}
				if st.wantStats != nil {
					if diff := cmp.Diff(*st.wantStats, e.Stats()); diff != "" {
						t.Errorf("step %d (at %v): stats mismatch (-want +got):\n%s", i, st.at, diff)
					}
				}
			}
		})
	}
}

var engT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestEngineStats(t *testing.T) {
	e := New(nil)
	cfg := Config{Evaluator: engPolicy{allow: map[uint16]string{22: ""}}}
	s := engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engLN("container:abc", "tcp", 80, procEvil), engL("udp", 9))
	e.Step(s, cfg, engT0)
	// The unattributed udp listener is held back for attribution, and
	// counted: the start summary line must be true.
	want := Stats{Listeners: 4, Unexpected: 3, Namespaces: 2}
	if diff := cmp.Diff(want, e.Stats()); diff != "" {
		t.Errorf("stats after the first snapshot mismatch (-want +got):\n%s", diff)
	}
	e.Step(s, cfg, engT0.Add(time.Second))
	if diff := cmp.Diff(want, e.Stats()); diff != "" {
		t.Errorf("stats after the second snapshot mismatch (-want +got):\n%s", diff)
	}
}

func TestEngineStateFile(t *testing.T) {
	dir := t.TempDir()
	e := New(nil)
	cfg := Config{Evaluator: engPolicy{}}
	e.Step(engS(engL("tcp", 4444, procEvil)), cfg, engT0)
	if err := e.SaveState(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e.alerts, got, cmp.AllowUnexported(Alert{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("state round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestEngineDescribeListener(t *testing.T) {
	tests := []struct {
		name string
		l    watcher.Listener
		want string
	}{
		{name: "host", l: engL("tcp", 22), want: "tcp 0.0.0.0:22"},
		{name: "container", l: engLN("container:0123abcd", "udp", 53), want: "udp 0.0.0.0:53 in netns container:0123abcd"},
		{name: "hostile netns name", l: engLN("x\n<!channel>\x1b[2J", "tcp", 80), want: `tcp 0.0.0.0:80 in netns "x\n<!channel>\x1b[2J"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, describeListener(tt.l)); diff != "" {
				t.Errorf("describeListener() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// BenchmarkEngineStep is the engine's share of a steady-state tick: 1,000
// listeners, nothing changed.
func BenchmarkEngineStep(b *testing.B) {
	var ls []watcher.Listener
	for i := range 1000 {
		ls = append(ls, engL("tcp", uint16(10000+i), watcher.Process{PID: 1000 + i%100, Exe: fmt.Sprintf("/usr/bin/app%d", i%100), User: "app"}))
	}
	snap := engS(ls...)
	e := New(nil)
	cfg := Config{Evaluator: engPolicy{}}
	now := engT0
	e.Step(snap, cfg, now)
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond) // stays clear of the minute's full evaluation
		e.Step(snap, cfg, now)
	}
}

func TestEngineStateFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{name: "not JSON", content: "{", wantErr: "parse state"},
		{name: "future version", content: `{"version": 2, "alerts": []}`, wantErr: "unsupported version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadState(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadState() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// A missing file is an empty state, not an error.
	if got, err := LoadState(t.TempDir()); err != nil || len(got) != 0 {
		t.Errorf("LoadState(empty dir) = %v, %v; want empty, nil", got, err)
	}
}

// engEphTicks is how many snapshots the watcher may show an ephemeral UDP
// listener with no holder.
func engEphTicks() int {
	l := engEph(engL("udp", 40000))
	return watcher.AttributionTicks(&l)
}
