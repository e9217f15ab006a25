package alerting

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	e := New(nil)
	cfg := Config{Evaluator: engPolicy{}}
	e.Step(engS(engL("tcp", 4444, procEvil)), cfg, engT0)
	if err := e.SaveState(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e.alerts, got, cmp.AllowUnexported(Alert{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("state round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestStateFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{name: "not JSON", content: "{", wantErr: "parse state"},
		{name: "future version", content: `{"version": 2, "alerts": []}`, wantErr: "unsupported version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadState(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadState() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	// A missing file is an empty state, not an error.
	if got, err := LoadState(t.TempDir()); err != nil || len(got) != 0 {
		t.Errorf("LoadState(empty dir) = %v, %v; want empty, nil", got, err)
	}
}
