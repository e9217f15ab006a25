package notify

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func evs(names ...string) []Event {
	var out []Event
	for _, n := range names {
		out = append(out, Event{ID: n, Type: TypeOpened, Severity: SeverityWarning})
	}
	return out
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
		{name: "full drops oldest batches", max: 3, appends: [][]string{{"a", "b"}, {"c"}, {"d"}}, want: [][]string{{"c"}, {"d"}}, dropped: 2},
		{name: "huge batch keeps its newest", max: 2, appends: [][]string{{"a"}, {"b", "c", "d"}}, want: [][]string{{"c", "d"}}, dropped: 2},
		{name: "empty batch is ignored", max: 5, appends: [][]string{{}, {"a"}}, want: [][]string{{"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openSpool(dir, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.appends {
				if err := s.append(evs(a...)); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := s.takeDropped(); got != tt.dropped || err != nil {
				t.Errorf("dropped %d, %v; want %d, nil", got, err, tt.dropped)
			}
			// A fresh open (a restart) sees the same queue.
			s2, err := openSpool(dir, tt.max)
			if err != nil {
				t.Fatal(err)
			}
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
	s, err := openSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
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
	s, err = openSpool(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
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
