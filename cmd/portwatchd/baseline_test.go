package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteNewFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "portwatch.yaml")
	if err := writeNewFile(p, []byte("one\n"), false); err != nil {
		t.Fatal(err)
	}
	err := writeNewFile(p, []byte("two\n"), false)
	if err == nil || err.Error() != p+" exists; use --force to replace it" {
		t.Errorf("second write without replace: %v, want a refusal", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "one\n" {
		t.Errorf("file clobbered: %q", got)
	}
	if err := writeNewFile(p, []byte("three\n"), true); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "three\n" {
		t.Errorf("replace: file = %q, want three", got)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{"portwatch.yaml"}, names); diff != "" {
		t.Errorf("temporary files left behind (-want +got):\n%s", diff)
	}
}

func TestBaselineNoClobber(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{"seed.yaml": "include: []\n", "out.yaml": "# mine\n"})
	out := filepath.Join(dir, "out.yaml")
	var stdout, stderr bytes.Buffer
	code := run([]string{"baseline", "-c", filepath.Join(dir, "seed.yaml"), "-o", out}, &stdout, &stderr)
	if code != exitError {
		t.Errorf("exit code = %d, want %d", code, exitError)
	}
	if want := "portwatchd baseline: " + out + " exists; use --force to replace it\n"; stderr.String() != want {
		t.Errorf("stderr = %q, want %q", &stderr, want)
	}
	if got, _ := os.ReadFile(out); string(got) != "# mine\n" {
		t.Errorf("file clobbered: %q", got)
	}
}

// TestBaselineStdout writes a baseline of the real host to stdout; it
// validates as is.
func TestBaselineStdout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: attribution reads the descriptors of every process")
	}
	dir := writePolicyFiles(t, map[string]string{"seed.yaml": "include: []\n"})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"baseline", "-c", filepath.Join(dir, "seed.yaml")}, &stdout, &stderr); code != exitOK {
		t.Fatalf("baseline: exit %d\n%s", code, &stderr)
	}
	if !strings.HasPrefix(stdout.String(), "# portwatchd baseline: ") || !strings.Contains(stdout.String(), "\nversion: 1\n") {
		t.Errorf("baseline output:\n%s", &stdout)
	}
	p := filepath.Join(dir, "portwatch.yaml")
	if err := os.WriteFile(p, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run([]string{"validate", "-c", p}, &stdout, &stderr); code != exitOK {
		t.Errorf("validate baseline: exit %d\n%s", code, &stderr)
	}
}

// TestReservedNames checks which loaded rule names a baseline must avoid:
// those of every file but the one it replaces.
func TestReservedNames(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{
		"portwatch.yaml":          "version: 1\nallow:\n  - name: main\n    port: 1\n",
		"portwatch.d/10-ssh.yaml": "allow:\n  - name: ssh\n    port: 22\n",
	})
	main := filepath.Join(dir, "portwatch.yaml")
	drop := filepath.Join(dir, "portwatch.d/10-ssh.yaml")
	cfg, err := loadConfig(main, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		out  string
		want map[string]string
	}{
		{name: "replacing the main file", out: main, want: map[string]string{"ssh": drop + ":2"}},
		{name: "replacing it by a relative path", out: relTo(t, main), want: map[string]string{"ssh": drop + ":2"}},
		{name: "writing a drop-in", out: drop, want: map[string]string{"main": main + ":3"}},
		{name: "stdout", out: "", want: map[string]string{"main": main + ":3", "ssh": drop + ":2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, reservedNames(cfg, tt.out)); diff != "" {
				t.Errorf("reserved names mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func relTo(t *testing.T, p string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, p)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}
