package filetest

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWrite(t *testing.T) {
	// The usual umask, whatever the caller's, so that the modes are known.
	defer syscall.Umask(syscall.Umask(0o022))
	dir := t.TempDir()
	Write(t, dir, map[string]string{"a.yaml": "a\n", "d/e/b.yaml": "b\n"})
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
		if !d.IsDir() {
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
