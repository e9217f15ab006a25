package procstatus

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte("Name:\tx\nVmRSS:\t   17812 kB\nThreads:\t7\nBad:\tx kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type got struct {
		N  int64
		OK bool
	}
	tests := []struct {
		name, path, key string
		want            got
	}{
		{name: "kB", path: path, key: "VmRSS", want: got{17812, true}},
		{name: "count", path: path, key: "Threads", want: got{7, true}},
		{name: "prefix of another key", path: path, key: "VmRS", want: got{0, false}},
		{name: "not a number", path: path, key: "Bad", want: got{0, false}},
		{name: "missing", path: path, key: "VmHWM", want: got{0, false}},
		{name: "no file", path: path + ".none", key: "VmRSS", want: got{0, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := Field(tt.path, tt.key)
			if diff := cmp.Diff(tt.want, got{n, ok}); diff != "" {
				t.Errorf("Field(%q) mismatch (-want +got):\n%s", tt.key, diff)
			}
		})
	}
}
