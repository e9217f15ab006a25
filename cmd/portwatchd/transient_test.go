package main

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
	"github.com/portwatchd/portwatchd/watcher/ebpf"
)

// TestSortOpens: which listeners announced by events are gone, which the
// snapshot must be asked for again, and which it cannot settle.
func TestSortOpens(t *testing.T) {
	const host, other, unseen = 4026531840, 4026532000, 4026532999
	ev := func(kind ebpf.Kind, netns uint64, proto, addr string, port uint16, at time.Duration) kernelEvent {
		return kernelEvent{Event: ebpf.Event{Kind: kind, NetnsInode: netns, Proto: proto, Addr: netip.MustParseAddr(addr), Port: port, Time: at}}
	}
	snap := &watcher.Snapshot{
		Listeners: []watcher.Listener{
			{Protocol: "tcp", Address: netip.MustParseAddr("0.0.0.0"), Port: 80, NetnsInode: host},
			{Protocol: "udp", Address: netip.MustParseAddr("::"), Port: 53, NetnsInode: other},
		},
		Namespaces: []watcher.Namespace{
			{Name: "host", Inode: host, Inspected: true},
			{Name: "vpn", Inode: other, Inspected: true},
			{Name: "locked", Inode: unseen},
		},
	}
	type result struct {
		Gone    []string
		Missing []uint16
	}
	tests := []struct {
		name string
		evs  []kernelEvent
		want result
	}{
		{name: "open and in the snapshot", evs: []kernelEvent{ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 80, 1)}},
		{name: "opened and closed before the look", evs: []kernelEvent{
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 4444, 1000),
			ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 4444, 13000),
		}, want: result{Gone: []string{"host tcp 4444 12µs"}}},
		{name: "close of another port", evs: []kernelEvent{
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 4444, 1000),
			ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 4445, 2000),
		}, want: result{Missing: []uint16{4444}}},
		{name: "close before the open is another socket's", evs: []kernelEvent{
			ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 4444, 500),
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 4444, 1000),
		}, want: result{Missing: []uint16{4444}}},
		{name: "reopened after its close, in the snapshot", evs: []kernelEvent{
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 80, 1000),
			ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 80, 3000),
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 80, 5000),
		}, want: result{Gone: []string{"host tcp 80 2µs"}}},
		{name: "IPv4-mapped address matches the IPv4 listener", evs: []kernelEvent{
			ev(ebpf.KindListen, host, "tcp", "::ffff:0.0.0.0", 80, 1),
		}},
		{name: "udp bind in another namespace, in the snapshot", evs: []kernelEvent{ev(ebpf.KindBind, other, "udp", "::", 53, 1)}},
		{name: "udp bind not in the snapshot", evs: []kernelEvent{ev(ebpf.KindBind, other, "udp", "::", 5353, 1)},
			want: result{Missing: []uint16{5353}}},
		{name: "namespace not inspected", evs: []kernelEvent{ev(ebpf.KindBind, unseen, "udp", "::", 5353, 1)}},
		{name: "namespace unknown", evs: []kernelEvent{ev(ebpf.KindBind, 7, "udp", "::", 5353, 1)}},
		{name: "port not chosen yet", evs: []kernelEvent{
			ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 0, 1),
			ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 38000, 2),
		}},
		{name: "failed listen", evs: []kernelEvent{func() kernelEvent {
			e := ev(ebpf.KindListen, host, "tcp", "0.0.0.0", 4444, 1)
			e.Ret = -98
			return e
		}()}},
		{name: "close alone", evs: []kernelEvent{ev(ebpf.KindClose, host, "tcp", "0.0.0.0", 4444, 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone, missing := sortOpens(tt.evs, indexSnapshot(snap))
			var got result
			for _, g := range gone {
				got.Gone = append(got.Gone, g.netns+" "+g.Proto+" "+itoa(g.Port)+" "+g.life.String())
			}
			for _, m := range missing {
				got.Missing = append(got.Missing, m.Port)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestStillMissing: a listener the second snapshot does not hold either
// is gone, with its lifetime an upper bound; one it holds was only not
// hashed yet at the first look.
func TestStillMissing(t *testing.T) {
	const host = 4026531840
	missing := []kernelEvent{
		{Event: ebpf.Event{Kind: ebpf.KindListen, NetnsInode: host, Proto: "tcp", Addr: netip.MustParseAddr("0.0.0.0"), Port: 4444, Time: time.Second}},
		{Event: ebpf.Event{Kind: ebpf.KindListen, NetnsInode: host, Proto: "tcp", Addr: netip.MustParseAddr("0.0.0.0"), Port: 4445, Time: time.Second}},
	}
	ix := indexSnapshot(&watcher.Snapshot{
		Listeners:  []watcher.Listener{{Protocol: "tcp", Address: netip.MustParseAddr("0.0.0.0"), Port: 4445, NetnsInode: host}},
		Namespaces: []watcher.Namespace{{Name: "host", Inode: host, Inspected: true}},
	})
	gone := stillMissing(missing, ix, time.Second+3*time.Millisecond)
	var got []string
	for _, g := range gone {
		got = append(got, itoa(g.Port)+" "+g.life.String())
	}
	if diff := cmp.Diff([]string{"4444 at most 3ms"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

// TestCloseTransients: a close event resolves at once the alert on a
// listener an earlier look saw open, only when the snapshot taken on the
// close no longer holds it: not for one socket of an SO_REUSEPORT group,
// not for a socket of the same port in another namespace; and not for a
// listener that lived an interval or longer.
func TestCloseTransients(t *testing.T) {
	const host, other = 4026531840, 4026532000
	cfg, err := policy.Parse("p.yaml", []byte("version: 1\ninterval: 1s\nallow: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	evil := watcher.Process{PID: 812, Comm: "x", Exe: "/tmp/x", User: "nobody"}
	lst := func(netns uint64, name string) watcher.Listener {
		return watcher.Listener{Protocol: "tcp", Family: watcher.IPv4, Address: netip.MustParseAddr("0.0.0.0"), Port: 4444,
			Netns: name, NetnsInode: netns, Processes: []watcher.Process{evil}}
	}
	snap := func(ls ...watcher.Listener) *watcher.Snapshot {
		return &watcher.Snapshot{Listeners: ls, Namespaces: []watcher.Namespace{
			{Name: "host", Inode: host, Inspected: true}, {Name: "vpn", Inode: other, Inspected: true}}}
	}
	ev := func(kind ebpf.Kind, netns uint64, at time.Duration) kernelEvent {
		return kernelEvent{Event: ebpf.Event{Kind: kind, NetnsInode: netns, Proto: "tcp", Addr: netip.MustParseAddr("0.0.0.0"), Port: 4444, Time: at}}
	}
	tests := []struct {
		name  string
		close kernelEvent
		after *watcher.Snapshot // the snapshot of the close's look
		want  []string
	}{
		{name: "closed", close: ev(ebpf.KindClose, host, 13*time.Millisecond), after: snap(),
			want: []string{"listener.closed 12ms"}},
		{name: "another socket of the group still listens", close: ev(ebpf.KindClose, host, 13*time.Millisecond), after: snap(lst(host, "host"))},
		{name: "the same port closed in another namespace", close: ev(ebpf.KindClose, other, 13*time.Millisecond), after: snap(lst(host, "host"))},
		{name: "lived an interval", close: ev(ebpf.KindClose, host, time.Second+time.Millisecond), after: snap()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemon{cfg: cfg, eng: alerting.New(nil)}
			now := time.Now()
			first := snap(lst(host, "host"))
			r := d.eng.Step(first, d.engineConfig(), now)
			r, _ = d.closeTransients([]kernelEvent{ev(ebpf.KindListen, host, time.Millisecond)}, indexSnapshot(first), r, now)
			if len(r.Emit) != 1 || r.Emit[0].Type != notify.TypeOpened {
				t.Fatalf("first look: %+v, want one opened", r.Emit)
			}
			r = d.eng.Step(tt.after, d.engineConfig(), now)
			r, gone := d.closeTransients([]kernelEvent{tt.close}, indexSnapshot(tt.after), r, now)
			var got []string
			for _, em := range r.Emit {
				s := em.Type
				if em.Transient != nil {
					s += " " + em.Transient.String()
				}
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" || len(gone) != 0 {
				t.Errorf("close's look (-want +got):\n%s\nreported from the event: %d", diff, len(gone))
			}
		})
	}
}
