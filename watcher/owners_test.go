package watcher

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// lst builds a listener for the owner and key tests, held by holders; none
// means unattributed.
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

var listenerOpts = cmp.Options{cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.EquateEmpty()}

// TestOwnersEqual: who holds a listener, as an alert sees it, is its set of
// executables and users: other pids, comms or cmdlines are the same owners.
func TestOwnersEqual(t *testing.T) {
	sshd := proc(100, "/usr/sbin/sshd", "root")
	sshdWorker := proc(101, "/usr/sbin/sshd", "root")
	evil := proc(200, "/tmp/x", "root")
	evilNobody := proc(201, "/usr/sbin/sshd", "nobody")
	renamed := Process{PID: 100, Comm: "nginx", Exe: "/usr/sbin/sshd", User: "root", Cmdline: []string{"nginx"}}
	noExe := proc(100, "", "root")
	sshdUnverified := Process{PID: 100, Exe: "/usr/sbin/sshd", User: "root", ExeUnverified: true}
	sshdDeleted := Process{PID: 100, Exe: "/usr/sbin/sshd", User: "root", ExeUnverified: true, ExeDeleted: true}
	tests := []struct {
		name string
		a, b []Process
		want bool
	}{
		{name: "the same holder", a: []Process{sshd}, b: []Process{sshd}, want: true},
		{name: "exe changed", a: []Process{sshd}, b: []Process{evil}},
		{name: "user changed", a: []Process{sshd}, b: []Process{evilNobody}},
		{name: "a second holder with another exe", a: []Process{sshd}, b: []Process{sshd, evil}},
		{
			name: "another pid with the same exe and user (pre-fork worker, restart)",
			a:    []Process{sshd}, b: []Process{sshdWorker, proc(102, "/usr/sbin/sshd", "root")}, want: true,
		},
		{name: "a renamed process", a: []Process{sshd}, b: []Process{renamed}, want: true},
		{name: "unattributed is unknown, not equal to known owners", a: []Process{sshd}, b: nil},
		{name: "both unattributed", a: nil, b: nil, want: true},
		{name: "an unreadable exe is left out of the exes", a: []Process{sshd, noExe}, b: []Process{sshd}, want: true},
		{name: "same pid and path, exe now unverified (a spoof through a mount namespace)", a: []Process{sshd}, b: []Process{sshdUnverified}},
		{name: "same pid and path, exe now deleted", a: []Process{sshd}, b: []Process{sshdDeleted}},
		{name: "unverified to deleted at the same path", a: []Process{sshdUnverified}, b: []Process{sshdDeleted}},
		{name: "an unverified holder that stays unverified", a: []Process{sshdUnverified}, b: []Process{sshdUnverified}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := lst("host", TCP, "0.0.0.0", 22, tt.a...), lst("host", TCP, "0.0.0.0", 22, tt.b...)
			if got := OwnersOf(&a).Equal(OwnersOf(&b)); got != tt.want {
				t.Errorf("OwnersOf(%v).Equal(OwnersOf(%v)) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

// keyed is one item ByKey yields.
type keyed struct {
	L       Listener
	Sockets int
}

func collectByKey(ls []Listener) []keyed {
	var out []keyed
	for l, n := range ByKey(ls) {
		out = append(out, keyed{l, n})
	}
	return out
}

func TestByKey(t *testing.T) {
	sshd := proc(100, "/usr/sbin/sshd", "root")
	worker := proc(101, "/usr/sbin/sshd", "root")
	evil := proc(200, "/tmp/x", "root")
	tests := []struct {
		name string
		ls   []Listener
		want []keyed
	}{
		{name: "none"},
		{
			name: "one socket per key",
			ls:   []Listener{lst("host", TCP, "0.0.0.0", 22, sshd), lst("host", TCP, "0.0.0.0", 80, evil)},
			want: []keyed{{lst("host", TCP, "0.0.0.0", 22, sshd), 1}, {lst("host", TCP, "0.0.0.0", 80, evil), 1}},
		},
		{
			name: "reuseport sockets sharing a key are one listener with every holder, once",
			ls: []Listener{
				lst("host", TCP, "0.0.0.0", 80, sshd, worker), lst("host", TCP, "0.0.0.0", 80, worker, evil),
				lst("host", UDP, "0.0.0.0", 80, evil),
			},
			want: []keyed{{lst("host", TCP, "0.0.0.0", 80, sshd, worker, evil), 2}, {lst("host", UDP, "0.0.0.0", 80, evil), 1}},
		},
		{
			name: "the same port in another protocol, address or namespace is another key",
			ls: []Listener{
				lst("container:abc", TCP, "0.0.0.0", 53, sshd), lst("host", TCP, "0.0.0.0", 53, sshd),
				lst("host", TCP, "127.0.0.1", 53, sshd), lst("host", UDP, "0.0.0.0", 53, sshd),
			},
			want: []keyed{
				{lst("container:abc", TCP, "0.0.0.0", 53, sshd), 1}, {lst("host", TCP, "0.0.0.0", 53, sshd), 1},
				{lst("host", TCP, "127.0.0.1", 53, sshd), 1}, {lst("host", UDP, "0.0.0.0", 53, sshd), 1},
			},
		},
		{
			name: "unsorted input is walked sorted",
			ls:   []Listener{lst("host", TCP, "0.0.0.0", 80, evil), lst("host", TCP, "0.0.0.0", 22, sshd), lst("host", TCP, "0.0.0.0", 80, worker)},
			want: []keyed{{lst("host", TCP, "0.0.0.0", 22, sshd), 1}, {lst("host", TCP, "0.0.0.0", 80, evil, worker), 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, collectByKey(tt.ls), listenerOpts); diff != "" {
				t.Errorf("ByKey() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestByKeySteadyStateAllocatesNothing(t *testing.T) {
	var ls []Listener
	for i := range 100 {
		ls = append(ls, lst("host", TCP, "0.0.0.0", uint16(1000+i), proc(i, "/usr/bin/x", "root")))
	}
	n := 0
	if allocs := testing.AllocsPerRun(10, func() {
		for _, s := range ByKey(ls) {
			n += s
		}
	}); allocs != 0 {
		t.Errorf("ByKey over sorted listeners with no shared key: %v allocations, want 0", allocs)
	}
}

func TestOwnersOf(t *testing.T) {
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

// TestNamespaceKeyNetns: the namespace of a listener's key is that of its
// namespace, so that what a snapshot could not inspect is known by key.
func TestNamespaceKeyNetns(t *testing.T) {
	for _, ns := range []Namespace{{Name: HostNetns, Inode: 1}, {Name: "container:abc", Inode: 2}, {Name: "pid:100", Inode: 3}, {Name: "pid:100@4", Inode: 4}} {
		l := lst(ns.Name, TCP, "0.0.0.0", 80)
		l.NetnsInode = ns.Inode
		if got, want := ns.KeyNetns(), l.Key().Netns; got != want {
			t.Errorf("Namespace{%q, %d}.KeyNetns() = %q, want its listeners' %q", ns.Name, ns.Inode, got, want)
		}
	}
}
