package main

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestTransientLimit: the unexpected transient listeners of one program are
// alerted one by one up to transientBurst a window, the rest counted into one
// summary per program once its window is over (or at shutdown), and a
// program's count starts afresh after its summary.
func TestTransientLimit(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 4, 0, 0, 0, time.UTC)
	dec := func(exe string, port uint16) policy.Decision {
		return policy.Decision{Verdict: policy.Unexpected, Listener: watcher.Listener{
			Protocol: watcher.TCP, Address: netip.MustParseAddr("127.0.0.1"), Port: port, Netns: watcher.HostNetns,
			Processes: []watcher.Process{{PID: 812, Exe: exe, User: "nobody"}},
		}}
	}
	// opens are n listeners of exe, one a millisecond from t0+at, on ports
	// from port up.
	type opens struct {
		exe  string
		port uint16
		at   time.Duration
		n    int
	}
	// summary is what a summary event says.
	type summary struct {
		Exe              string
		Count, Alerted   int
		Lo, Hi, Last     uint16
		Since, Lifetime  time.Duration // after t0
		MessageSaysCount bool
	}
	tests := []struct {
		name    string
		opens   []opens
		at      time.Duration // summaries asked for at t0+at
		all     bool
		alerted int // of every listener opened
		want    []summary
		left    int // programs still counted after
	}{
		{name: "the burst alone", opens: []opens{{"/x", 4000, 0, transientBurst}}, at: 2 * time.Minute,
			alerted: transientBurst},
		{name: "a storm: the burst, then one summary", opens: []opens{{"/x", 4000, 0, 1000}}, at: 2 * time.Minute,
			alerted: transientBurst,
			want:    []summary{{Exe: "/x", Count: 1000 - transientBurst, Alerted: transientBurst, Lo: 4000 + transientBurst, Hi: 4999, Last: 4999, Since: transientBurst * time.Millisecond, Lifetime: 999 * time.Millisecond, MessageSaysCount: true}}},
		{name: "not before the window is over", opens: []opens{{"/x", 4000, 0, 1000}}, at: 59 * time.Second,
			alerted: transientBurst, left: 1},
		{name: "at shutdown, whatever the window", opens: []opens{{"/x", 4000, 0, 100}}, at: time.Second, all: true,
			alerted: transientBurst,
			want:    []summary{{Exe: "/x", Count: 100 - transientBurst, Alerted: transientBurst, Lo: 4000 + transientBurst, Hi: 4099, Last: 4099, Since: transientBurst * time.Millisecond, Lifetime: 99 * time.Millisecond, MessageSaysCount: true}}},
		{name: "each program its own burst and summary", opens: []opens{{"/x", 4000, 0, 30}, {"/y", 5000, time.Second, 30}}, at: 2 * time.Minute,
			alerted: 2 * transientBurst,
			want: []summary{
				{Exe: "/x", Count: 30 - transientBurst, Alerted: transientBurst, Lo: 4000 + transientBurst, Hi: 4029, Last: 4029, Since: transientBurst * time.Millisecond, Lifetime: 29 * time.Millisecond, MessageSaysCount: true},
				{Exe: "/y", Count: 30 - transientBurst, Alerted: transientBurst, Lo: 5000 + transientBurst, Hi: 5029, Last: 5029, Since: time.Second + transientBurst*time.Millisecond, Lifetime: 29 * time.Millisecond, MessageSaysCount: true},
			}},
		{name: "a new window after a minute: a new burst", opens: []opens{{"/x", 4000, 0, transientBurst}, {"/x", 4100, 61 * time.Second, transientBurst}}, at: 3 * time.Minute,
			alerted: 2 * transientBurst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := transientLimit{}
			alerted := 0
			for _, o := range tt.opens {
				for i := range o.n {
					d := dec(o.exe, o.port+uint16(i))
					at := t0.Add(o.at + time.Duration(i)*time.Millisecond)
					// A window is over once a look comes after it: the
					// daemon asks for summaries at every look.
					tl.summaries(at, false, "h")
					if tl.admit(transientProgram{exe: o.exe}, d, notify.Transient{Lifetime: time.Duration(i) * time.Millisecond}, at, transientBurst) {
						alerted++
					}
				}
			}
			var got []summary
			for _, ev := range tl.summaries(t0.Add(tt.at), tt.all, "h") {
				s := ev.Transient.Summary
				got = append(got, summary{
					Exe: ev.Listener.Listener.Processes[0].Exe, Count: s.Count, Alerted: s.Alerted,
					Lo: s.PortLow, Hi: s.PortHigh, Last: ev.Listener.Listener.Port,
					Since: s.Since.Sub(t0), Lifetime: ev.Transient.Lifetime,
					MessageSaysCount: ev.Type == notify.TypeOpened && strings.HasPrefix(ev.Message, strconv.Itoa(s.Count)+" more unexpected transient listeners"),
				})
			}
			if alerted != tt.alerted {
				t.Errorf("%d alerted one by one, want %d", alerted, tt.alerted)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("summaries (-want +got):\n%s", diff)
			}
			if len(tl) != tt.left {
				t.Errorf("%d programs still counted, want %d", len(tl), tt.left)
			}
		})
	}
}
