package main

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestWithPublished: a publication with no socket of the host on its port
// is a listener of its own kind on the host, with the holders of the
// container's socket; one forwarded out of the host says so; one whose
// host port has a socket (docker-proxy) adds nothing; the snapshot given
// is not changed.
func TestWithPublished(t *testing.T) {
	nginx := watcher.Process{PID: 4000, Comm: "nginx", Exe: "/usr/sbin/nginx", Container: "3f2a00000000"}
	ctr := watcher.Listener{Protocol: "tcp", Family: watcher.IPv4, Address: netip.IPv4Unspecified(), Port: 80, Netns: "container:3f2a00000000", Processes: []watcher.Process{nginx}}
	proxy := watcher.Listener{Protocol: "tcp", Family: watcher.IPv4, Address: netip.IPv4Unspecified(), Port: 9090, Netns: watcher.HostNetns, Processes: []watcher.Process{}}
	snap := &watcher.Snapshot{Listeners: []watcher.Listener{ctr, proxy}}
	ck := ctr.Key()
	pub := func(port uint16, to string) exposure.Publication {
		return exposure.Publication{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: port, ToAddr: netip.MustParseAddr(to), ToPort: 80,
			Owner: exposure.OwnerDocker, Verdict: exposure.VerdictOpen}
	}
	joined := []exposure.Joined{
		{Publication: pub(8080, "172.17.0.2"), Listener: &ck, Netns: ctr.Netns},
		{Publication: pub(8081, "10.9.9.9"), ForwardedTo: "10.9.9.9:80"},
		{Publication: pub(9090, "172.17.0.2"), Listener: &ck, Netns: ctr.Netns},
	}
	got := withPublished(snap, joined)
	if len(snap.Listeners) != 2 {
		t.Fatalf("the watcher's snapshot was changed: %d listeners", len(snap.Listeners))
	}
	type row struct {
		Netns     string
		Port      uint16
		Published string
		PIDs      []int
	}
	var rows []row
	for _, l := range got.Listeners {
		r := row{Netns: l.Netns, Port: l.Port, Published: l.Published}
		for _, p := range l.Processes {
			r.PIDs = append(r.PIDs, p.PID)
		}
		rows = append(rows, r)
	}
	want := []row{
		{Netns: "container:3f2a00000000", Port: 80, PIDs: []int{4000}},
		{Netns: "host", Port: 8080, Published: "published → container:3f2a00000000 0.0.0.0:80", PIDs: []int{4000}},
		{Netns: "host", Port: 8081, Published: "forwarded to 10.9.9.9:80"},
		{Netns: "host", Port: 9090},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
	p := publishedListeners(snap, joined)[0]
	e := publishedExposure(&p)
	if cls := e.Classes(); !cmp.Equal(cls, []string{"open", "published"}) {
		t.Errorf("published listener's classes = %v, want open, published", cls)
	}
}
