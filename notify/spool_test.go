package notify

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
)

func evs(names ...string) []Event {
	var out []Event
	for _, n := range names {
		out = append(out, Event{ID: n, Type: TypeOpened, Severity: policy.SeverityWarning})
	}
	return out
}

// mustOpenSpool opens the spool in dir, as a start of the daemon does.
func mustOpenSpool(t *testing.T, dir string, max int) *spool {
	t.Helper()
	s, err := openSpool(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func drainSpool(t *testing.T, s *spool) [][]string {
	t.Helper()
	var got [][]string
	for {
		b, err := s.peek()
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			return got
		}
		got = append(got, ids(b.Events))
		if err := s.remove(b.seq); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpool(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		appends [][]string
		want    [][]string
		dropped uint64
	}{
		{name: "fifo", max: 10, appends: [][]string{{"a", "b"}, {"c"}, {"d"}}, want: [][]string{{"a", "b"}, {"c"}, {"d"}}},
		{name: "full drops oldest events", max: 3, appends: [][]string{{"a", "b"}, {"c"}, {"d"}}, want: [][]string{{"b"}, {"c"}, {"d"}}, dropped: 1},
		{name: "full drops whole oldest batches", max: 3, appends: [][]string{{"a"}, {"b"}, {"c"}, {"d", "e"}}, want: [][]string{{"c"}, {"d", "e"}}, dropped: 2},
		{name: "huge batch keeps its newest", max: 2, appends: [][]string{{"a"}, {"b", "c", "d"}}, want: [][]string{{"c", "d"}}, dropped: 2},
		{name: "empty batch is ignored", max: 5, appends: [][]string{{}, {"a"}}, want: [][]string{{"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpenSpool(t, dir, tt.max)
			for _, a := range tt.appends {
				if err := s.append(evs(a...)); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := s.takeDropped(); got != tt.dropped || err != nil {
				t.Errorf("dropped %d, %v; want %d, nil", got, err, tt.dropped)
			}
			// A fresh open (a restart) sees the same queue.
			s2 := mustOpenSpool(t, dir, tt.max)
			if diff := cmp.Diff(tt.want, drainSpool(t, s2)); diff != "" {
				t.Errorf("after reopen (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([][]string(nil), drainSpool(t, s)); diff != "" {
				t.Errorf("original after reopen drained (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSpoolRecovery: leftovers of a crash mid-write are cleaned up, a corrupt
// batch is set aside, and sequence numbers continue after the highest one.
func TestSpoolRecovery(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenSpool(t, dir, 100)
	for _, id := range []string{"a", "b"} {
		if err := s.append(evs(id)); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(".tmp-123", `{"events":[{"id":"half`)
	mustWrite("00000000000000000001.json.bak", "x")
	mustWrite("00000000000000000009.json", `{"events": [`)
	s = mustOpenSpool(t, dir, 100)
	if err := s.append(evs("c")); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]string{{"a"}, {"b"}, {"c"}}, drainSpool(t, s)); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Errorf("temporary file not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "00000000000000000009.json.corrupt")); err != nil {
		t.Errorf("corrupt batch not set aside: %v", err)
	}
	if n, err := pendingEvents(dir); err != nil || n != 0 {
		t.Errorf("pendingEvents = %d, %v; want 0", n, err)
	}
}

// TestSpoolBound: a spool that is never delivered keeps exactly the newest
// max events whatever the sizes of its batches, dropping the oldest ones
// one by one (the oldest batch is rewritten without them) and counting each.
func TestSpoolBound(t *testing.T) {
	tests := []struct {
		name  string
		max   int
		sizes []int // events per append
	}{
		{name: "two batches over half", max: 50, sizes: []int{26, 26}},
		{name: "varying sizes", max: 50, sizes: []int{10, 30, 20, 7, 45, 1, 3, 50, 2}},
		{name: "one over", max: 50, sizes: []int{49, 2}},
		{name: "full then one", max: 50, sizes: []int{50, 1, 1, 1}},
		{name: "huge batch after small ones", max: 50, sizes: []int{3, 4, 60, 5}},
		{name: "tiny spool", max: 1, sizes: []int{1, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpenSpool(t, dir, tt.max)
			var all []string
			var dropped uint64
			for i, n := range tt.sizes {
				var names []string
				for j := range n {
					names = append(names, fmt.Sprintf("b%d-e%d", i, j))
				}
				all = append(all, names...)
				if err := s.append(evs(names...)); err != nil {
					t.Fatal(err)
				}
				d, err := s.takeDropped()
				if err != nil {
					t.Fatal(err)
				}
				dropped += d
				if _, got := s.len(); got != min(len(all), tt.max) {
					t.Errorf("after append %d: %d events pending, want %d", i, got, min(len(all), tt.max))
				}
			}
			want := all[max(0, len(all)-tt.max):]
			if got := uint64(len(all) - len(want)); dropped != got {
				t.Errorf("dropped %d events, want %d", dropped, got)
			}
			// Reopened (a restart), the spool holds the same events.
			s2 := mustOpenSpool(t, dir, tt.max)
			if _, n := s2.len(); n != len(want) {
				t.Errorf("after reopen: %d events pending, want %d", n, len(want))
			}
			var got []string
			for _, b := range drainSpool(t, s2) {
				got = append(got, b...)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events kept (-want +got):\n%s", diff)
			}
		})
	}
}
