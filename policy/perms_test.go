package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPermissions checks the StrictModes rules. It needs root: only root
// can create files owned by someone else, and the checks only run as root.
func TestPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the StrictModes checks apply only when running as root")
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // dir holds conf/portwatch.yaml
		want  string                         // substring of the error; "" = loads
	}{
		{name: "safe", setup: func(t *testing.T, dir string) {}},
		{
			name:  "file group-writable",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "conf/portwatch.yaml"), 0o664) },
			want:  "conf/portwatch.yaml: refusing: " + dir0 + "/conf/portwatch.yaml is writable by group or others (mode 0664)",
		},
		{
			name:  "file not owned by root",
			setup: func(t *testing.T, dir string) { chown(t, filepath.Join(dir, "conf/portwatch.yaml"), 65534) },
			want:  "/conf/portwatch.yaml is owned by uid 65534, not root",
		},
		{
			name:  "directory world-writable",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "conf"), 0o777) },
			want:  "/conf is writable by group or others (mode 0777)",
		},
		{
			name:  "directory above not owned by root",
			setup: func(t *testing.T, dir string) { chown(t, dir, 1000) },
			want:  " is owned by uid 1000, not root",
		},
		{
			name:  "sticky root directory is fine",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "conf"), 0o1777) },
		},
		{
			name:  "drop-in group-writable",
			setup: func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "conf/portwatch.d/10-a.yaml"), 0o666) },
			want:  "/conf/portwatch.d/10-a.yaml is writable by group or others (mode 0666)",
		},
		{
			name:  "drop-in directory not owned by root",
			setup: func(t *testing.T, dir string) { chown(t, filepath.Join(dir, "conf/portwatch.d"), 1000) },
			want:  "/conf/portwatch.d is owned by uid 1000, not root",
		},
		{
			name: "symlink target in an unsafe directory",
			setup: func(t *testing.T, dir string) {
				evil := filepath.Join(dir, "evil")
				if err := os.Mkdir(evil, 0o777); err != nil {
					t.Fatal(err)
				}
				chmod(t, evil, 0o777)
				p := filepath.Join(dir, "conf/portwatch.yaml")
				if err := os.Rename(p, filepath.Join(evil, "portwatch.yaml")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(evil, "portwatch.yaml"), p); err != nil {
					t.Fatal(err)
				}
			},
			want: "/evil is writable by group or others (mode 0777)",
		},
		{
			name: "url_file writable by others",
			setup: func(t *testing.T, dir string) {
				writeFiles(t, dir, map[string]string{"conf/portwatch.d/20-hook.yaml": "notify:\n  webhooks:\n    - name: h\n      format: slack\n      url_file: ../hook.url\n"})
				chmod(t, filepath.Join(dir, "conf/hook.url"), 0o666)
			},
			want: "url_file: refusing: " + dir0 + "/conf/hook.url is writable by group or others (mode 0666)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{
				"conf/portwatch.yaml":        "allow:\n  - name: ssh\n    port: 22\n",
				"conf/portwatch.d/10-a.yaml": "allow:\n  - name: a\n    port: 23\n",
				"conf/hook.url":              "https://example.com/SECRETTOKEN\n",
			})
			chmod(t, filepath.Join(dir, "conf/hook.url"), 0o600)
			tt.setup(t, dir)
			l := testLoader(nil)
			l.checkPerms = true
			_, err := l.load(filepath.Join(dir, "conf/portwatch.yaml"))
			want := strings.ReplaceAll(tt.want, dir0, dir)
			switch {
			case want == "" && err != nil:
				t.Fatalf("Load: %v, want success", err)
			case want != "" && err == nil:
				t.Fatalf("Load succeeded, want an error containing %q", want)
			case want != "" && !strings.Contains(err.Error(), want):
				t.Fatalf("Load error:\n%v\nwant it to contain %q", err, want)
			}
			if err != nil && strings.Contains(err.Error(), "SECRETTOKEN") {
				t.Errorf("error leaks the URL: %v", err)
			}
		})
	}
}

// dir0 stands for the test's directory in expected messages.
const dir0 = "$DIR"

func TestSecretFileReadableWarns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the StrictModes checks apply only when running as root")
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"portwatch.yaml": "include: []\nnotify:\n  webhooks:\n    - name: g\n      format: generic\n      url: https://example.com/x\n      secret_file: hook.secret\n",
		"hook.secret":    "whsec_c2VjcmV0\n",
	})
	l := testLoader(nil)
	l.checkPerms = true
	c, err := l.load(filepath.Join(dir, "portwatch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "portwatch.yaml") + ":7:20: secret_file: " + filepath.Join(dir, "hook.secret") + " is readable by group or others (mode 0644); it holds a secret: chmod 600 it"}
	if len(c.Warnings) != 1 || c.Warnings[0] != want[0] {
		t.Errorf("warnings = %q, want %q", c.Warnings, want)
	}
}

func chmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if mode&0o1000 != 0 {
		if err := os.Chmod(p, mode.Perm()|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
	}
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Lchown(p, uid, -1); err != nil {
		t.Fatal(err)
	}
}
