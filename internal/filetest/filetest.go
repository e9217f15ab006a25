// Package filetest writes trees of small files for tests: a config with its
// drop-ins, or a fixture a loader reads.
package filetest

import (
	"os"
	"path/filepath"
	"testing"
)

// Write creates each file of files (a path relative to dir: its content)
// under dir, making the directories between. Directories are made with mode
// 0755 and files with 0644 (less the umask): what a root-owned /etc holds,
// so that a loader's permission checks pass.
func Write(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Mkdir makes the directory p, and its parents, with mode (less the umask).
func Mkdir(t testing.TB, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(p, mode); err != nil {
		t.Fatal(err)
	}
}

// Rename renames from to to, as a tool that replaces files atomically does.
func Rename(t testing.TB, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// Symlink makes link point at target.
func Symlink(t testing.TB, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// Remove removes p: a file, a link, or a directory and all it holds.
func Remove(t testing.TB, p string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
}
