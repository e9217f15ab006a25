package main

import (
	"testing"

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
