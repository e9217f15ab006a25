package filetest

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// tree lists what is under dir: each path's mode, and a file's content or
// a link's target.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data := ""
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "-> " + target
			return nil
		case !d.IsDir():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			data = " " + string(b)
		}
		got[rel] = info.Mode().String() + data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestWrite(t *testing.T) {
	// The usual umask, whatever the caller's, so that the modes are known.
	defer syscall.Umask(syscall.Umask(0o022))
	dir := t.TempDir()
	Write(t, dir, map[string]string{"a.yaml": "a\n", "d/e/b.yaml": "b\n"})
	got := tree(t, dir)
	want := map[string]string{
		"a.yaml":     "-rw-r--r-- a\n",
		"d":          "drwxr-xr-x",
		"d/e":        "drwxr-xr-x",
		"d/e/b.yaml": "-rw-r--r-- b\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree mismatch (-want +got):\n%s", diff)
	}
}

func TestOps(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o022))
	dir := t.TempDir()
	Mkdir(t, filepath.Join(dir, "x/y"), 0o700)
	Write(t, dir, map[string]string{"x/y/f": "f\n", "gone/g": "g\n"})
	Rename(t, filepath.Join(dir, "x/y/f"), filepath.Join(dir, "x/f"))
	Symlink(t, "x/f", filepath.Join(dir, "link"))
	Remove(t, filepath.Join(dir, "gone"))
	want := map[string]string{
		"link": "-> x/f",
		"x":    "drwx------",
		"x/f":  "-rw-r--r-- f\n",
		"x/y":  "drwx------",
	}
	if diff := cmp.Diff(want, tree(t, dir)); diff != "" {
		t.Errorf("tree mismatch (-want +got):\n%s", diff)
	}
}
