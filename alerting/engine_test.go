package alerting

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/notify"
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
	d := policy.Decision{Listener: l, Verdict: policy.Unexpected, Reason: "engNo rule allows it", Severity: policy.SeverityWarning}
	// As the real policy: a high-risk flag (here exe_gone or
	// exe_in_writable_dir) makes an unexpected listener critical.
	for _, pr := range l.Processes {
		if slices.Contains(pr.Flags, watcher.FlagExeGone) || slices.Contains(pr.Flags, watcher.FlagExeInWritableDir) {
			d.Severity = policy.SeverityCritical
		}
	}
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
	// As the real policy's rules that name no flags: a high-risk flag
	// (here exe_gone or exe_in_writable_dir) is never allowed.
	for _, pr := range l.Processes {
		if slices.Contains(pr.Flags, watcher.FlagExeGone) || slices.Contains(pr.Flags, watcher.FlagExeInWritableDir) {
			d.Rule, d.Severity = fmt.Sprintf("port-%d", l.Port), policy.SeverityCritical
			return d
		}
	}
	d.Verdict, d.Rule, d.Reason, d.Severity = policy.Allowed, fmt.Sprintf("port-%d", l.Port), "test", policy.SeverityInfo
	return d
}

var (
	procSSHD  = watcher.Process{PID: 100, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	procSSHD2 = watcher.Process{PID: 101, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root"}
	// procEvil once its executable was deleted under it.
	procEvilGone = watcher.Process{PID: 200, Comm: "sshd", Exe: "/tmp/x", User: "nobody",
		Flags: []watcher.Flag{watcher.FlagExeGone}}
	// procSSHD once its directory was made writable by others.
	procSSHDWritable = watcher.Process{PID: 100, Comm: "sshd", Exe: "/usr/sbin/sshd", User: "root",
		Flags: []watcher.Flag{watcher.FlagExeInWritableDir}}
	procHelper = watcher.Process{PID: 102, Comm: "helper", Exe: "/usr/lib/helper", User: "root"}
	procEvil   = watcher.Process{PID: 200, Comm: "sshd", Exe: "/tmp/x", User: "nobody"}
	procEvil2  = watcher.Process{PID: 201, Comm: "x", Exe: "/tmp/y", User: "nobody"}
	// Two holders with the same owners (exe and user), in different units.
	procGood  = watcher.Process{PID: 300, Comm: "python3", Exe: "/usr/bin/python3", User: "www", Unit: "good.service"}
	procScope = watcher.Process{PID: 301, Comm: "python3", Exe: "/usr/bin/python3", User: "www", Unit: "session-3.scope"}
)

// expiredBetween is policy.Config.ExpiredBetween for p.
func (p engPolicy) expiredBetween(from, to time.Time) bool {
	for _, e := range p.expires {
		if e.After(from) && !e.After(to) {
			return true
		}
	}
	return false
}

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

// engLNI builds a listener on 0.0.0.0:port in namespace netns of inode ino.
func engLNI(netns string, ino uint64, proto string, port uint16, holders ...watcher.Process) watcher.Listener {
	l := engLN(netns, proto, port, holders...)
	l.NetnsInode = ino
	return l
}

// engS builds a snapshot where every namespace named by a listener, and host,
// was inspected. Its listeners are in the watcher's order: by namespace
// name, protocol, port and address.
func engS(ls ...watcher.Listener) *watcher.Snapshot {
	s := &watcher.Snapshot{Listeners: ls}
	nss := []watcher.Namespace{{Name: watcher.HostNetns, Inspected: true}}
	for _, l := range ls {
		if !slices.ContainsFunc(nss, func(ns watcher.Namespace) bool { return ns.Name == l.Netns }) {
			nss = append(nss, watcher.Namespace{Name: l.Netns, Inode: l.NetnsInode, Inspected: true})
		}
	}
	slices.SortFunc(nss, func(a, b watcher.Namespace) int { return strings.Compare(a.Name, b.Name) })
	s.Namespaces = nss
	slices.SortFunc(s.Listeners, func(a, b watcher.Listener) int {
		return watcher.Key{Netns: a.Netns, Protocol: a.Protocol, Address: a.Address, Port: a.Port}.Compare(
			watcher.Key{Netns: b.Netns, Protocol: b.Protocol, Address: b.Address, Port: b.Port})
	})
	return s
}

// engBlind marks namespace name as not inspected in s.
func engBlind(s *watcher.Snapshot, name string) *watcher.Snapshot {
	return engBlindNS(s, name, 0)
}

// engBlindNS marks namespace name, of inode ino, as not inspected in s.
func engBlindNS(s *watcher.Snapshot, name string, ino uint64) *watcher.Snapshot {
	s.Namespaces = append(s.Namespaces, watcher.Namespace{Name: name, Inode: ino, Err: "gone mid-snapshot"})
	return s
}

// engSummarize renders emissions as one line each, for readable diffs.
func engSummarize(em []Emission) []string {
	var out []string
	for _, e := range em {
		s := fmt.Sprintf("%s %s %s [%s]", strings.TrimPrefix(e.Type, "listener."), e.Decision.Verdict, describeListener(e.Decision.Listener), engExes(e.Decision))
		if e.NowJudged != nil {
			s += " msg=" + notify.NewEvent(e.Type, e.Decision, "h", engT0, notify.WithNowJudged(*e.NowJudged, e.Why)).Message
		}
		if e.Note != "" {
			s += " note=" + e.Note
		}
		if e.Previous != nil {
			s += " prev=[" + engExes(*e.Previous) + "]"
		}
		out = append(out, s)
	}
	return out
}

// engExes lists the executables of d's holders, comma-separated.
func engExes(d policy.Decision) string {
	var exes []string
	for _, p := range d.Processes {
		exes = append(exes, p.Exe)
	}
	return strings.Join(exes, ",")
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

// engineCase is one case of a rule's table: the settings and the policy
// in force, and the steps.
type engineCase struct {
	name     string
	settings policy.Settings
	policy   engPolicy
	// byExpiry gives the engine the policy's expiries
	// (Config.ExpiredBetween) instead of a full evaluation every minute.
	byExpiry bool
	steps    []engineStep
}

// engFlap30 are settings with a 30 s flap window.
var engFlap30 = policy.Settings{FlapWindow: 30 * time.Second}

// allow22 allows sshd on port 22 and nothing else.
var allow22 = engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}}

// runEngineCases runs each case on a new engine, checking every step. Each
// case runs twice: with every snapshot's list built anew, and with a list
// equal to the last Step's handed out again as that same slice, as the
// watcher does when nothing changed (watcher.SameListeners). A rule must
// not depend on which.
func runEngineCases(t *testing.T, tests []engineCase) {
	t.Helper()
	for _, tt := range tests {
		for _, reuse := range []bool{false, true} {
			name := tt.name
			if reuse {
				name += " (lists handed out again)"
			}
			t.Run(name, func(t *testing.T) { runEngineCase(t, tt, reuse) })
		}
	}
}

func runEngineCase(t *testing.T, tt engineCase, reuse bool) {
	t.Helper()
	e := New(nil)
	cfg := Config{Settings: tt.settings, Evaluator: tt.policy}
	if tt.byExpiry {
		cfg.ExpiredBetween = tt.policy.expiredBetween
	}
	var last []watcher.Listener
	for i, st := range tt.steps {
		now := engT0.Add(st.at)
		var r Result
		switch {
		case st.restart:
			e = engRestart(t, e)
		case st.reload != nil:
			cfg.Evaluator = *st.reload
			if st.settings != nil {
				cfg.Settings = *st.settings
			}
			r = e.Reload(cfg, now)
		default:
			snap := st.snap
			if reuse && last != nil && reflect.DeepEqual(snap.Listeners, last) {
				c := *snap
				c.Listeners = last
				snap = &c
			}
			last = snap.Listeners
			r = e.Step(snap, cfg, now)
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
}

// engRestart saves e's state and returns a new engine loaded from it, as
// a restart of the daemon does.
func engRestart(t *testing.T, e *Engine) *Engine {
	t.Helper()
	dir := t.TempDir()
	if err := e.SaveState(dir); err != nil {
		t.Fatal(err)
	}
	alerts, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return New(alerts)
}

var engT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestStatsCountListenersHeldForAttribution(t *testing.T) {
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

// BenchmarkEngineStep is the engine's share of a steady-state tick: 1,000
// listeners, nothing changed. "same" is the watcher's list handed out again
// (the engine is settled: nothing to observe); "rebuilt" is an equal list
// built anew (a snapshot after something else in the namespace changed):
// every key is observed.
func BenchmarkEngineStep(b *testing.B) {
	var ls []watcher.Listener
	for i := range 1000 {
		ls = append(ls, engL("tcp", uint16(10000+i), watcher.Process{PID: 1000 + i%100, Exe: fmt.Sprintf("/usr/bin/app%d", i%100), User: "app"}))
	}
	for _, rebuilt := range []bool{false, true} {
		name := "same"
		if rebuilt {
			name = "rebuilt"
		}
		b.Run(name, func(b *testing.B) {
			snap := engS(ls...)
			e := New(nil)
			cfg := Config{Evaluator: engPolicy{}}
			now := engT0
			e.Step(snap, cfg, now)
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Millisecond) // stays clear of the minute's full evaluation
				if rebuilt {
					b.StopTimer()
					snap = engS(ls...)
					b.StartTimer()
				}
				e.Step(snap, cfg, now)
			}
		})
	}
}

// engEphTicks is how many snapshots the watcher may show an ephemeral UDP
// listener with no holder.
func engEphTicks() int {
	l := engEph(engL("udp", 40000))
	return watcher.AttributionTicks(&l)
}

// describeListener names a listener in one line for the tables: protocol,
// address:port, and the namespace when it is not the host's.
func describeListener(l watcher.Listener) string {
	s := l.Protocol + " " + netip.AddrPortFrom(l.Address, l.Port).String()
	if l.Netns != "" && l.Netns != watcher.HostNetns {
		s += " in netns " + l.Netns
	}
	return s
}
