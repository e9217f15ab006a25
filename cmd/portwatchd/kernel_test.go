package main

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/policy"

	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// TestForeignNamespaces: the namespaces of a look's events that its
// snapshot did not inspect are left out until a full snapshot inspects
// them; inspected ones never are.
func TestForeignNamespaces(t *testing.T) {
	ev := func(netns uint64) kernelEvent { return kernelEvent{Event: ebpf.Event{NetnsInode: netns}} }
	ix := snapIndex{ns: map[uint64]string{1: "host", 2: "vpn"}}
	tests := []struct {
		name  string
		evs   []kernelEvent
		full  *snapIndex // then a full snapshot with this index
		check map[uint64]bool
	}{
		{name: "inspected namespaces stay watched", evs: []kernelEvent{ev(1), ev(2)}, check: map[uint64]bool{1: false, 2: false, 3: false}},
		{name: "one the look did not inspect is left out", evs: []kernelEvent{ev(1), ev(3)}, check: map[uint64]bool{1: false, 3: true, 4: false}},
		{name: "until a full snapshot inspects them", evs: []kernelEvent{ev(3), ev(4)}, full: &snapIndex{ns: map[uint64]string{1: "host", 3: "new"}},
			check: map[uint64]bool{3: false, 4: true}},
		{name: "a full snapshot that inspects none", evs: []kernelEvent{ev(3)}, full: &ix, check: map[uint64]bool{3: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &kernelEvents{}
			k.markForeign(tt.evs, ix)
			if tt.full != nil {
				k.forgetForeign(*tt.full)
			}
			for netns, want := range tt.check {
				if got := k.isForeign(netns); got != want {
					t.Errorf("isForeign(%d) = %v, want %v", netns, got, want)
				}
			}
		})
	}
}

// The loop's period: interval, or reconcile_interval with the probe, and
// at most half the watchdog timeout (the loop's ticks ping and check it).
func TestSetPeriod(t *testing.T) {
	for _, tt := range []struct {
		name                    string
		probe                   bool
		interval, reconcile, wd time.Duration
		want                    time.Duration
	}{
		{"polling", false, time.Second, 10 * time.Second, 0, time.Second},
		{"polling with a watchdog", false, time.Second, 10 * time.Second, 30 * time.Second, time.Second},
		{"polling slower than half the watchdog: ticks at half the timeout", false, 20 * time.Second, 0, 30 * time.Second, 15 * time.Second},
		{"eBPF", true, time.Second, 10 * time.Second, 0, 10 * time.Second},
		{"eBPF, the shipped watchdog (30s)", true, time.Second, 10 * time.Second, 30 * time.Second, 10 * time.Second},
		{"eBPF, reconcile hourly", true, time.Second, time.Hour, 30 * time.Second, 15 * time.Second},
		{"eBPF, a watchdog under two intervals", true, 5 * time.Second, time.Hour, 6 * time.Second, 3 * time.Second},
	} {
		d := &daemon{cfg: &policy.Config{Settings: policy.Settings{Interval: tt.interval, ReconcileInterval: tt.reconcile}}, wd: tt.wd}
		if tt.probe {
			d.kern.ev = &kernelEvents{}
		}
		if got := d.setPeriod(); got != tt.want {
			t.Errorf("%s: period %v, want %v", tt.name, got, tt.want)
		}
		if got := time.Duration(d.intervalNS.Load()); got != tt.want {
			t.Errorf("%s: intervalNS %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A tick takes a snapshot when one is due: every interval (every
// reconcile_interval with the probe), counted from the last look, to the
// nearest tick when the watchdog has the loop tick more often.
func TestSnapshotDue(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name                    string
		probe                   bool
		interval, reconcile, wd time.Duration
		since                   time.Duration // since the last look
		want                    bool
	}{
		{"polling, the next tick", false, time.Second, 10 * time.Second, 0, time.Second, true},
		{"polling, a tick a little early", false, time.Second, 10 * time.Second, 0, 900 * time.Millisecond, true},
		{"polling at 20s, ticking at 15s for the watchdog: the first tick", false, 20 * time.Second, 0, 30 * time.Second, 15 * time.Second, true},
		{"polling at 60s, ticking at 15s: not yet", false, time.Minute, 0, 30 * time.Second, 45 * time.Second, false},
		{"polling at 60s, ticking at 15s: the fourth tick", false, time.Minute, 0, 30 * time.Second, time.Minute, true},
		{"eBPF, a tick before the reconcile", true, time.Second, 10 * time.Second, 30 * time.Second, 3 * time.Second, false},
		{"eBPF, the reconcile tick", true, time.Second, 10 * time.Second, 30 * time.Second, 10 * time.Second, true},
	} {
		d := &daemon{cfg: &policy.Config{Settings: policy.Settings{Interval: tt.interval, ReconcileInterval: tt.reconcile}}, wd: tt.wd}
		if tt.probe {
			d.kern.ev = &kernelEvents{}
		}
		d.setPeriod()
		d.kern.lastFull = t0
		if got := d.snapshotDue(t0.Add(tt.since)); got != tt.want {
			t.Errorf("%s: due %v, want %v", tt.name, got, tt.want)
		}
	}
}

// When the kernel programs fail mid-run, the daemon polls every interval
// from then on, with every processor again, and says so.
func TestKernelFailed(t *testing.T) {
	requireEBPF(t)
	full := severalProcs(t)

	p, err := ebpf.Open(ebpf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	close(done) // no reader started
	cfg := &policy.Config{Settings: policy.Settings{Interval: time.Second, ReconcileInterval: 10 * time.Second}}
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := &daemon{cfg: cfg, eng: alerting.New(nil), log: log, kern: kernelState{ev: &kernelEvents{probe: p, done: done}, mode: "active"}}
	d.clk = newLoopClock(t.Context(), d.setPeriod())
	t.Cleanup(d.clk.Stop)
	d.procs = newProcLimit()
	d.setProcs()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("eBPF active: %d processors, want 1", got)
	}

	d.kernelFailed(errors.New("ring buffer: bad file descriptor"))
	if d.kern.ev != nil {
		t.Error("the failed programs are still in use")
	}
	if want := "failed: ring buffer: bad file descriptor"; d.kern.mode != want {
		t.Errorf("mode %q, want %q", d.kern.mode, want)
	}
	if got := runtime.GOMAXPROCS(0); got != full {
		t.Errorf("polling after the failure: %d processors, want %d", got, full)
	}
	if got := time.Duration(d.intervalNS.Load()); got != time.Second {
		t.Errorf("period after the failure %v, want the interval (1s)", got)
	}
	if !strings.Contains(d.status, "ebpf: failed: ring buffer") {
		t.Errorf("status %q does not say eBPF failed", d.status)
	}
}
