package watcher

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestListenerKey(t *testing.T) {
	addr := netip.MustParseAddr("0.0.0.0")
	tests := []struct {
		name string
		l    Listener
		want Key
	}{
		{
			name: "host",
			l:    Listener{Netns: "host", NetnsInode: 4026531840, Protocol: TCP, Address: addr, Port: 22},
			want: Key{Netns: "host", Protocol: TCP, Address: addr, Port: 22},
		},
		{
			name: "named",
			l:    Listener{Netns: "blue", NetnsInode: 4026532000, Protocol: UDP, Address: addr, Port: 53},
			want: Key{Netns: "blue", Protocol: UDP, Address: addr, Port: 53},
		},
		{
			name: "container",
			l:    Listener{Netns: "container:0123456789ab", NetnsInode: 4026532001, Protocol: TCP, Address: addr, Port: 80},
			want: Key{Netns: "container:0123456789ab", Protocol: TCP, Address: addr, Port: 80},
		},
		{
			// The lowest pid inside may exit and the name change; the key
			// must not, or the daemon would report a close and an open.
			name: "pid named",
			l:    Listener{Netns: "pid:4242", NetnsInode: 4026532002, Protocol: TCP, Address: addr, Port: 8080},
			want: Key{Netns: "netns:4026532002", Protocol: TCP, Address: addr, Port: 8080},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.l.Key(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Key() mismatch (-want +got):\n%s", diff)
			}
		})
	}
	renamed := Listener{Netns: "pid:4300", NetnsInode: 4026532002, Protocol: TCP, Address: addr, Port: 8080}
	orig := tests[3].l
	if orig.Key() != renamed.Key() {
		t.Errorf("key changed when the namespace was renamed from %s to %s", orig.Netns, renamed.Netns)
	}
}
