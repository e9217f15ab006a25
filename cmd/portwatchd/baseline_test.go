package main

import (
	"bytes"
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
