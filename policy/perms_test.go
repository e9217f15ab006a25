package policy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/internal/filetest"
)

// TestPermissions checks the StrictModes rules. It needs root: only root
// can create files owned by someone else.
func TestPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root can create files owned by someone else")
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
				filetest.Mkdir(t, evil, 0o777)
				chmod(t, evil, 0o777)
				p := filepath.Join(dir, "conf/portwatch.yaml")
				filetest.Rename(t, p, filepath.Join(evil, "portwatch.yaml"))
				filetest.Symlink(t, filepath.Join(evil, "portwatch.yaml"), p)
			},
			want: "/evil is writable by group or others (mode 0777)",
		},
		{
			// conf/portwatch.yaml -> evil/mid -> safe/portwatch.yaml: the
			// real path and the given path both run through safe
			// directories, but whoever owns evil can repoint mid.
			name: "symlink in the middle of a chain in an unsafe directory",
			setup: func(t *testing.T, dir string) {
				for _, d := range []string{"evil", "safe"} {
					filetest.Mkdir(t, filepath.Join(dir, d), 0o755)
				}
				chmod(t, filepath.Join(dir, "evil"), 0o777)
				p := filepath.Join(dir, "conf/portwatch.yaml")
				filetest.Rename(t, p, filepath.Join(dir, "safe/portwatch.yaml"))
				filetest.Symlink(t, "../safe/portwatch.yaml", filepath.Join(dir, "evil/mid"))
				filetest.Symlink(t, filepath.Join(dir, "evil/mid"), p)
			},
			want: "/evil is writable by group or others (mode 0777)",
		},
		{
			name: "symlink to a directory through a safe chain is fine",
			setup: func(t *testing.T, dir string) {
				filetest.Rename(t, filepath.Join(dir, "conf"), filepath.Join(dir, "real"))
				filetest.Symlink(t, "real", filepath.Join(dir, "conf"))
			},
		},
		{
			name: "symlink not owned by root",
			setup: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "conf/portwatch.yaml")
				filetest.Rename(t, p, filepath.Join(dir, "conf/real.yaml"))
				filetest.Symlink(t, "real.yaml", p)
				chown(t, p, 1000)
			},
			want: "/conf/portwatch.yaml is owned by uid 1000, not root",
		},
		{
			name: "symlink loop",
			setup: func(t *testing.T, dir string) {
				p := filepath.Join(dir, "conf/portwatch.yaml")
				filetest.Remove(t, p)
				filetest.Symlink(t, "portwatch.yaml", p)
			},
			want: "conf/portwatch.yaml: cannot read: too many levels of symbolic links",
		},
		{
			name: "url_file writable by others",
			setup: func(t *testing.T, dir string) {
				filetest.Write(t, dir, map[string]string{"conf/portwatch.d/20-hook.yaml": "notify:\n  webhooks:\n    - name: h\n      format: slack\n      url_file: ../hook.url\n"})
				chmod(t, filepath.Join(dir, "conf/hook.url"), 0o666)
			},
			want: "url_file: refusing: " + dir0 + "/conf/hook.url is writable by group or others (mode 0666)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			filetest.Write(t, dir, map[string]string{
				"conf/portwatch.yaml":        "allow:\n  - name: ssh\n    port: 22\n",
				"conf/portwatch.d/10-a.yaml": "allow:\n  - name: a\n    port: 23\n",
				"conf/hook.url":              "https://example.com/SECRETTOKEN\n",
			})
			chmod(t, filepath.Join(dir, "conf/hook.url"), 0o600)
			tt.setup(t, dir)
			// The system's services file: the loader's
			// StrictModes checks would judge the checkout's
			// testdata directories.
			_, err := LoadWith(filepath.Join(dir, "conf/portwatch.yaml"), LoadOptions{Strict: true})
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
	filetest.Write(t, dir, map[string]string{
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

// childEnv makes the test binary load one config and print the outcome
// instead of running tests: TestStrictAsNonRoot runs it as another uid.
const childEnv = "PORTWATCH_TEST_LOAD_CHILD"

// TestLoadChild is the child side of TestStrictAsNonRoot.
func TestLoadChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("run by TestStrictAsNonRoot")
	}
	mode, path, _ := strings.Cut(spec, ":")
	var err error
	if mode == "creds-ro" || mode == "creds-rw" {
		if err := credentialsMount(filepath.Join(filepath.Dir(path), "creds"), mode == "creds-ro"); err != nil {
			t.Fatal(err)
		}
		mode = "strict"
	}
	switch mode {
	case "strict":
		_, err = LoadWith(path, LoadOptions{Strict: true})
	case "default":
		_, err = Load(path)
	}
	fmt.Printf("euid=%d\n", os.Geteuid())
	if err != nil {
		fmt.Printf("error: %v\n", err)
	} else {
		fmt.Println("loaded")
	}
}

// TestStrictAsNonRoot loads configs in a child process running as nobody,
// as the daemon runs under DynamicUser=: LoadOptions{Strict: true} refuses
// an unsafe file whatever the uid, while Load keeps its root-only checks.
func TestStrictAsNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: to run the child as another uid, and to own the files as root")
	}
	const nobody = 65534
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Everything the child needs must be reachable by nobody: t.TempDir's
	// parents are mode 0700.
	dir, err := os.MkdirTemp("", "portwatch-strict-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	chmod(t, dir, 0o755)
	bin := filepath.Join(dir, "policy.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, dir, map[string]string{
		"safe/portwatch.yaml":   "include: []\nallow:\n  - name: ssh\n    port: 22\n",
		"unsafe/portwatch.yaml": "include: []\nallow:\n  - name: ssh\n    port: 22\n",
	})
	chmod(t, filepath.Join(dir, "unsafe/portwatch.yaml"), 0o666)

	tests := []struct {
		name string
		spec string
		want string
	}{
		{name: "strict, safe file", spec: "strict:" + dir + "/safe/portwatch.yaml", want: "loaded"},
		{
			name: "strict, unsafe file",
			spec: "strict:" + dir + "/unsafe/portwatch.yaml",
			want: "error: " + dir + "/unsafe/portwatch.yaml: refusing: " + dir + "/unsafe/portwatch.yaml is writable by group or others (mode 0666)",
		},
		{name: "Load as non-root does not check", spec: "default:" + dir + "/unsafe/portwatch.yaml", want: "loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-test.run=^TestLoadChild$", "-test.v")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), childEnv+"="+tt.spec)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), fmt.Sprintf("euid=%d\n", nobody)) {
				t.Fatalf("child did not run as uid %d:\n%s", nobody, out)
			}
			if !strings.Contains(string(out), tt.want+"\n") {
				t.Errorf("child output:\n%s\nwant a line %q", out, tt.want)
			}
		})
	}
}

// credentialsMount does what systemd does for LoadCredential= on ramfs, in
// the child's own mount namespace: a fresh file system at dir holding
// hook.url, file and directory owned by the service's uid, then (with ro)
// remounted read-only.
func credentialsMount(dir string, ro bool) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=0700"); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	p := filepath.Join(dir, "hook.url")
	if err := os.WriteFile(p, []byte("http://127.0.0.1:9/hook\n"), 0o400); err != nil {
		return err
	}
	for _, q := range []string{p, dir} {
		if err := os.Chown(q, 65534, 65534); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		return err
	}
	if ro {
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("remount read-only: %w", err)
		}
	}
	return nil
}

// TestStrictCredentials loads a url_file from a systemd-style credentials
// directory owned by the service's uid: accepted on a read-only mount (as
// systemd leaves it), refused on a writable one. The mount happens in a
// child process's own mount namespace, so that nothing is left behind.
func TestStrictCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: to mount a file system in a new mount namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml": "include: []\nnotify:\n  webhooks:\n    - name: h\n      format: generic\n      url_file: ${CREDENTIALS_DIRECTORY}/hook.url\n",
	})
	if err := os.Mkdir(filepath.Join(dir, "creds"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "portwatch.yaml")
	tests := []struct {
		name string
		mode string
		want string
	}{
		{name: "read-only mount, owned by the service", mode: "creds-ro", want: "loaded"},
		{
			name: "writable mount, owned by the service",
			mode: "creds-rw",
			want: "error: " + main + ":6:17: url_file: refusing: " + dir + "/creds is owned by uid 65534, not root, and is not on a read-only mount",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe, "-test.run=^TestLoadChild$", "-test.v")
			cmd.Env = append(os.Environ(), childEnv+"="+tt.mode+":"+main, "CREDENTIALS_DIRECTORY="+filepath.Join(dir, "creds"))
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.want+"\n") {
				t.Errorf("child output:\n%s\nwant a line %q", out, tt.want)
			}
		})
	}
	// The parent's view is untouched.
	if entries, err := os.ReadDir(filepath.Join(dir, "creds")); err != nil || len(entries) != 0 {
		t.Errorf("creds in the parent's mount namespace: %v, %v; want empty", entries, err)
	}
}
