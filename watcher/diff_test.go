package watcher

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// lst builds a listener for the diff tests. holders are "exe:user:pid"
// triples given as separate values; none means unattributed.
func lst(netns, proto, addr string, port uint16, holders ...Process) Listener {
	if holders == nil {
		holders = []Process{}
	}
	return Listener{
		Protocol:  proto,
		Family:    IPv4,
		Address:   netip.MustParseAddr(addr),
		Port:      port,
		Netns:     netns,
		Processes: holders,
	}
}

func proc(pid int, exe, user string) Process {
	return Process{PID: pid, Exe: exe, User: user}
}

func snap(ls ...Listener) *Snapshot {
	return &Snapshot{Listeners: ls, Namespaces: []Namespace{{Name: HostNetns, Inspected: true}}}
}

var diffOpts = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.EquateEmpty()}

func TestDiff(t *testing.T) {
	sshd := proc(100, "/usr/sbin/sshd", "root")
	sshdWorker := proc(101, "/usr/sbin/sshd", "root")
	evil := proc(200, "/tmp/x", "root")
	evilNobody := proc(201, "/usr/sbin/sshd", "nobody")
	renamed := Process{PID: 100, Comm: "nginx", Exe: "/usr/sbin/sshd", User: "root", Cmdline: []string{"nginx"}}
	noExe := proc(100, "", "root")
	sshdUnverified := Process{PID: 100, Exe: "/usr/sbin/sshd", User: "root", ExeUnverified: true}
	sshdDeleted := Process{PID: 100, Exe: "/usr/sbin/sshd", User: "root", ExeUnverified: true, ExeDeleted: true}
	// ssh is the host's tcp 0.0.0.0:22 listener held by holders.
	ssh := func(holders ...Process) Listener { return lst("host", TCP, "0.0.0.0", 22, holders...) }
	changed := func(from, to Listener) Delta { return Delta{Changed: []Change{{Old: from, New: to}}} }

	tests := []struct {
		name       string
		prev, next *Snapshot
		want       Delta
	}{
		{
			name: "both nil",
		},
		{
			name: "first snapshot opens everything",
			next: snap(ssh(sshd), lst("host", UDP, "0.0.0.0", 53)),
			want: Delta{Opened: []Listener{ssh(sshd), lst("host", UDP, "0.0.0.0", 53)}},
		},
		{
			name: "nothing changed",
			prev: snap(ssh(sshd)),
			next: snap(ssh(sshd)),
		},
		{
			name: "opened and closed",
			prev: snap(ssh(sshd), lst("host", TCP, "0.0.0.0", 80, evil)),
			next: snap(ssh(sshd), lst("host", TCP, "0.0.0.0", 8080, evil)),
			want: Delta{
				Opened: []Listener{lst("host", TCP, "0.0.0.0", 8080, evil)},
				Closed: []Listener{lst("host", TCP, "0.0.0.0", 80, evil)},
			},
		},
		{
			name: "all closed",
			prev: snap(ssh(sshd)),
			next: snap(),
			want: Delta{Closed: []Listener{ssh(sshd)}},
		},
		{
			name: "same port in another protocol, address or namespace is another key",
			prev: snap(lst("host", TCP, "0.0.0.0", 53, sshd)),
			next: snap(
				lst("container:abc", TCP, "0.0.0.0", 53, sshd),
				lst("host", TCP, "127.0.0.1", 53, sshd),
				lst("host", UDP, "0.0.0.0", 53, sshd),
			),
			want: Delta{
				Opened: []Listener{
					lst("container:abc", TCP, "0.0.0.0", 53, sshd),
					lst("host", TCP, "127.0.0.1", 53, sshd),
					lst("host", UDP, "0.0.0.0", 53, sshd),
				},
				Closed: []Listener{lst("host", TCP, "0.0.0.0", 53, sshd)},
			},
		},
		{
			name: "exe changed",
			prev: snap(ssh(sshd)),
			next: snap(ssh(evil)),
			want: changed(ssh(sshd), ssh(evil)),
		},
		{
			name: "user changed",
			prev: snap(ssh(sshd)),
			next: snap(ssh(evilNobody)),
			want: changed(ssh(sshd), ssh(evilNobody)),
		},
		{
			name: "a second holder with another exe is a change",
			prev: snap(ssh(sshd)),
			next: snap(ssh(sshd, evil)),
			want: changed(ssh(sshd), ssh(sshd, evil)),
		},
		{
			name: "another pid with the same exe and user is no change (pre-fork worker, restart)",
			prev: snap(ssh(sshd)),
			next: snap(ssh(sshdWorker, proc(102, "/usr/sbin/sshd", "root"))),
		},
		{
			name: "a renamed process is no change",
			prev: snap(ssh(sshd)),
			next: snap(ssh(renamed)),
		},
		{
			name: "unattributed now is unknown, not a change",
			prev: snap(ssh(sshd)),
			next: snap(ssh()),
		},
		{
			name: "attributed after being unattributed is not a change",
			prev: snap(ssh()),
			next: snap(ssh(evil)),
		},
		{
			name: "an unreadable exe is left out of the exes",
			prev: snap(ssh(sshd, noExe)),
			next: snap(ssh(sshd)),
		},
		{
			name: "same pid and path, exe now unverified (a spoof through a mount namespace) is a change",
			prev: snap(ssh(sshd)),
			next: snap(ssh(sshdUnverified)),
			want: changed(ssh(sshd), ssh(sshdUnverified)),
		},
		{
			name: "same pid and path, exe now deleted is a change",
			prev: snap(ssh(sshd)),
			next: snap(ssh(sshdDeleted)),
			want: changed(ssh(sshd), ssh(sshdDeleted)),
		},
		{
			name: "unverified to deleted at the same path is a change",
			prev: snap(ssh(sshdUnverified)),
			next: snap(ssh(sshdDeleted)),
			want: changed(ssh(sshdUnverified), ssh(sshdDeleted)),
		},
		{
			name: "an unverified holder that stays unverified is no change",
			prev: snap(ssh(sshdUnverified)),
			next: snap(ssh(sshdUnverified)),
		},
		{
			name: "reuseport sockets sharing a key are one listener",
			prev: snap(lst("host", TCP, "0.0.0.0", 80, sshd), lst("host", TCP, "0.0.0.0", 80, sshdWorker)),
			next: snap(lst("host", TCP, "0.0.0.0", 80, sshdWorker), lst("host", TCP, "0.0.0.0", 80, evil)),
			want: Delta{Changed: []Change{{
				Old: lst("host", TCP, "0.0.0.0", 80, sshd, sshdWorker),
				New: lst("host", TCP, "0.0.0.0", 80, sshdWorker, evil),
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.prev, tt.next)
			if diff := cmp.Diff(tt.want, got, diffOpts); diff != "" {
				t.Errorf("Diff() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiffCarry(t *testing.T) {
	sshd := proc(100, "/usr/sbin/sshd", "root")
	web := proc(300, "/usr/sbin/nginx", "www-data")
	prev := &Snapshot{
		Listeners: []Listener{
			lst("container:abc", TCP, "0.0.0.0", 80, web),
			lst("container:gone", TCP, "0.0.0.0", 81, web),
			lst("host", TCP, "0.0.0.0", 22, sshd),
		},
		Namespaces: []Namespace{
			{Name: "container:abc", Inspected: true},
			{Name: "container:gone", Inspected: true},
			{Name: HostNetns, Inspected: true},
		},
	}
	tests := []struct {
		name string
		next *Snapshot
		want Delta
	}{
		{
			name: "a namespace not inspected this time keeps its listeners",
			next: &Snapshot{
				Listeners: []Listener{lst("host", TCP, "0.0.0.0", 22, sshd)},
				Namespaces: []Namespace{
					{Name: "container:abc", Inspected: false, Err: "no process left to read"},
					{Name: HostNetns, Inspected: true},
				},
			},
			want: Delta{Closed: []Listener{lst("container:gone", TCP, "0.0.0.0", 81, web)}},
		},
		{
			name: "an inspected namespace without the listener closes it",
			next: &Snapshot{
				Listeners: []Listener{lst("host", TCP, "0.0.0.0", 22, sshd)},
				Namespaces: []Namespace{
					{Name: "container:abc", Inspected: true},
					{Name: HostNetns, Inspected: true},
				},
			},
			want: Delta{Closed: []Listener{
				lst("container:abc", TCP, "0.0.0.0", 80, web),
				lst("container:gone", TCP, "0.0.0.0", 81, web),
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eff := Carry(prev, tt.next)
			got := Diff(prev, eff)
			if diff := cmp.Diff(tt.want, got, diffOpts); diff != "" {
				t.Errorf("Diff(prev, Carry(prev, next)) mismatch (-want +got):\n%s", diff)
			}
			// The carried listener must still be closed once its namespace
			// is read again without it.
			again := &Snapshot{Listeners: []Listener{lst("host", TCP, "0.0.0.0", 22, sshd)}, Namespaces: []Namespace{{Name: HostNetns, Inspected: true}}}
			got = Diff(eff, Carry(eff, again))
			for _, l := range got.Closed {
				if l.Netns == HostNetns {
					t.Errorf("host listener closed: %+v", l)
				}
			}
			carried := lst("container:abc", TCP, "0.0.0.0", 80)
			if _, ok := Index(eff.Listeners)[carried.Key()]; ok && len(got.Closed) == 0 {
				t.Errorf("carried listener never closed")
			}
		})
	}
	if got := Carry(nil, prev); got != prev {
		t.Errorf("Carry(nil, next) = %p, want next %p", got, prev)
	}
}

func TestDiffOwnersOf(t *testing.T) {
	tests := []struct {
		name string
		l    Listener
		want Owners
	}{
		{name: "unattributed", l: lst("host", TCP, "0.0.0.0", 1), want: Owners{}},
		{
			name: "sorted and deduplicated",
			l: lst("host", TCP, "0.0.0.0", 1,
				proc(3, "/b", "root"), proc(1, "/a", "root"), proc(2, "/b", "www"), Process{PID: 4, UID: 1234}),
			want: Owners{Known: true, Exes: []string{"/a", "/b"}, Users: []string{"1234", "root", "www"}},
		},
		{
			name: "deleted and unverified exes are owners of their own",
			l: lst("host", TCP, "0.0.0.0", 1,
				proc(1, "/a", "root"),
				Process{PID: 2, Exe: "/a", User: "root", ExeUnverified: true},
				Process{PID: 3, Exe: "/a", User: "root", ExeUnverified: true, ExeDeleted: true},
				Process{PID: 4, Exe: "/b", User: "root", ExeDeleted: true}),
			want: Owners{Known: true, Exes: []string{"/a", "/a (deleted)", "/a (unverified)", "/b (deleted)"}, Users: []string{"root"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, OwnersOf(&tt.l), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("OwnersOf() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiffUnsortedInput(t *testing.T) {
	a, b := lst("host", TCP, "0.0.0.0", 80, proc(1, "/a", "root")), lst("host", TCP, "0.0.0.0", 22, proc(2, "/b", "root"))
	got := Diff(&Snapshot{Listeners: []Listener{a, b}}, &Snapshot{Listeners: []Listener{b}})
	want := Delta{Closed: []Listener{a}}
	if diff := cmp.Diff(want, got, diffOpts); diff != "" {
		t.Errorf("Diff() of unsorted snapshots mismatch (-want +got):\n%s", diff)
	}
}

func TestDiffSteadyStateAllocatesNothing(t *testing.T) {
	var ls []Listener
	for i := range 100 {
		ls = append(ls, lst("host", TCP, "0.0.0.0", uint16(1000+i), proc(i, "/usr/bin/x", "root")))
	}
	prev, next := snap(ls...), snap(slices.Clone(ls)...)
	if n := testing.AllocsPerRun(10, func() { Diff(prev, next) }); n != 0 {
		t.Errorf("Diff of equal snapshots: %v allocations, want 0", n)
	}
}

func TestAttributionTicks(t *testing.T) {
	ephemeral := lst("host", UDP, "0.0.0.0", 40000)
	ephemeral.Ephemeral = true
	tests := []struct {
		name string
		l    Listener
		want int
	}{
		{name: "tcp: searched for at once, found by the next snapshot", l: lst("host", TCP, "0.0.0.0", 22), want: 1},
		{name: "udp outside the ephemeral range: searched for at once", l: lst("host", UDP, "0.0.0.0", 53), want: 1},
		{name: "ephemeral udp: searched for every ephemeralSearchEvery ticks", l: ephemeral, want: ephemeralSearchEvery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, AttributionTicks(&tt.l)); diff != "" {
				t.Errorf("AttributionTicks() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
