package watcher

import (
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The flag tests run real executables holding a real listener (inherited
// as fd 3, as bench/scene does with sleep) and read their flags from a
// real snapshot. The listener is on a port above 1024 and the holders run
// as root: root_unprivileged_port is always among their flags.

// holderCmd describes a process to start holding the listener.
type holderCmd struct {
	path string
	args []string // after argv[0]
	env  []string
	attr *syscall.SysProcAttr // default: a new session, no terminal
	in   *os.File
}

// startHolder starts c with the listener f as fd 3, and kills it by its
// pid at the end of the test.
func startHolder(t *testing.T, f *os.File, c holderCmd) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(c.path, c.args...)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(os.Environ(), c.env...)
	cmd.SysProcAttr = c.attr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	cmd.Stdin = c.in
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// holderFlags takes a snapshot with a new watcher on o and returns the
// flags of pid as a holder of the listener inode, waiting (up to 5 s)
// for pid to hold it: an exec'd program holds it once exec is done.
func holderFlags(t *testing.T, o Options, inode uint64, pid int) Process {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _ := newWatcher(t, o)
		s := snapshot(t, w)
		w.Close()
		if l := byInode(s, inode); l != nil {
			for _, p := range l.Processes {
				if p.PID == pid {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not found holding socket %d", pid, inode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyExe copies the executable src to dst (created 0755, in a directory
// made for it).
func copyExe(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// optDir makes a throwaway directory under /opt (root's, 0755, as an
// in-house package's would be).
func optDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/opt", "portwatch-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// tmpDir makes a throwaway directory under /tmp, whatever TMPDIR says.
func tmpDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "portwatch-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func md5Line(t *testing.T, path, name string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x  %s\n", md5.Sum(b), strings.TrimPrefix(name, "/"))
}

func flagsOf(fs ...Flag) []Flag {
	out := []Flag{}
	for _, f := range AllFlags {
		if slices.Contains(fs, f) {
			out = append(out, f)
		}
	}
	return out
}

func TestFlagsExecutable(t *testing.T) {
	requireRoot(t)
	requireDpkg(t)
	f, sock := listenFile(t)
	opt, tmp := optDir(t), tmpDir(t)
	copyExe(t, "/bin/sleep", filepath.Join(opt, "sleep"))
	copyExe(t, "/bin/sleep", filepath.Join(tmp, "sleep"))
	// An in-house package in a throwaway database: its sleep as shipped,
	// and one changed in place after it was installed.
	good, bad := filepath.Join(opt, "pkg/bin/sleep"), filepath.Join(opt, "pkg2/bin/sleep")
	copyExe(t, "/bin/sleep", good)
	copyExe(t, "/bin/sleep", bad)
	db := copyDpkg(t,
		map[string]string{"inhouse": good + "\n", "inhouse2:amd64": bad + "\n"},
		map[string]string{"inhouse": md5Line(t, good, good), "inhouse2:amd64": md5Line(t, bad, bad)})
	fh, err := os.OpenFile(bad, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.Write([]byte("changed")) // trailing bytes: the ELF still runs
	fh.Close()

	root := FlagRootUnprivilegedPort
	tests := []struct {
		name        string
		exe         string
		dpkg        string
		want        []Flag
		wantUnknown []Flag
	}{
		// /proc/PID/exe says /usr/bin/sleep; coreutils lists /bin/sleep.
		{"packaged, merged /usr", "/bin/sleep", "", flagsOf(root), nil},
		{"copy under /opt", filepath.Join(opt, "sleep"), "", flagsOf(FlagExeUnpackaged, root), nil},
		{"copy under /tmp", filepath.Join(tmp, "sleep"), "", flagsOf(FlagExeInWritableDir, FlagExeUnpackaged, root), nil},
		{"packaged as shipped", good, db, flagsOf(root), nil},
		{"changed in place", bad, db, flagsOf(FlagExeModified, root), nil},
		{"no dpkg", "/bin/sleep", t.TempDir(), flagsOf(root), []Flag{FlagExeUnpackaged, FlagExeModified}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := startHolder(t, f, holderCmd{path: tt.exe, args: []string{"300"}})
			p := holderFlags(t, Options{DpkgDir: tt.dpkg}, sock.inode, cmd.Process.Pid)
			if diff := cmp.Diff(tt.want, p.Flags); diff != "" {
				t.Errorf("%s: flags (-want +got):\n%s", p.Exe, diff)
			}
			if diff := cmp.Diff(tt.wantUnknown, p.FlagsUnknown); diff != "" {
				t.Errorf("%s: unknown flags (-want +got):\n%s", p.Exe, diff)
			}
		})
	}
}

func TestFlagsDeleted(t *testing.T) {
	requireRoot(t)
	f, sock := listenFile(t)
	opt := optDir(t)
	owned := filepath.Join(opt, "pkg/bin/sleepd")
	db := copyDpkg(t, map[string]string{"sleepd": owned + "\n"}, nil)
	tests := []struct {
		name    string
		exe     string
		replace bool
		want    []Flag
	}{
		{"deleted", filepath.Join(opt, "gone/sleepd"), false, flagsOf(FlagExeGone, FlagRootUnprivilegedPort)},
		{"upgraded", owned, true, flagsOf(FlagExeReplaced, FlagRootUnprivilegedPort)},
		{"replaced by an unowned file", filepath.Join(opt, "other/sleepd"), true, flagsOf(FlagExeGone, FlagRootUnprivilegedPort)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			copyExe(t, "/bin/sleep", tt.exe)
			cmd := startHolder(t, f, holderCmd{path: tt.exe, args: []string{"300"}})
			holderFlags(t, Options{DpkgDir: db}, sock.inode, cmd.Process.Pid) // running
			if err := os.Remove(tt.exe); err != nil {
				t.Fatal(err)
			}
			if tt.replace {
				// As dpkg unpacks: the new file beside, renamed over.
				copyExe(t, "/bin/sleep", tt.exe+".dpkg-new")
				if err := os.Rename(tt.exe+".dpkg-new", tt.exe); err != nil {
					t.Fatal(err)
				}
			}
			p := holderFlags(t, Options{DpkgDir: db}, sock.inode, cmd.Process.Pid)
			if !p.ExeDeleted {
				t.Errorf("%s: not deleted", p.Exe)
			}
			if diff := cmp.Diff(tt.want, p.Flags); diff != "" {
				t.Errorf("%s: flags (-want +got):\n%s", p.Exe, diff)
			}
		})
	}
}

// memfdExecHelper copies PW_EXE into a memfd and runs it from there with
// the arguments in PW_ARGS, as a fileless backdoor does.
func memfdExecHelper() int {
	b, err := os.ReadFile(os.Getenv("PW_EXE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	fd, err := unix.MemfdCreate("payload", 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if _, err := unix.Write(fd, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	argv := append([]string{"payload"}, strings.Fields(os.Getenv("PW_ARGS"))...)
	err = syscall.Exec(fmt.Sprintf("/proc/self/fd/%d", fd), argv, os.Environ())
	fmt.Fprintln(os.Stderr, err)
	return 3
}

func TestFlagsMemfd(t *testing.T) {
	requireRoot(t)
	f, sock := listenFile(t)
	cmd := startHolder(t, f, holderCmd{path: testBinary(t), args: []string{"-test.run=^$"},
		env: []string{helperEnv + "=memfdexec", "PW_EXE=/bin/sleep", "PW_ARGS=300"}})
	var p Process
	deadline := time.Now().Add(5 * time.Second)
	for {
		p = holderFlags(t, Options{}, sock.inode, cmd.Process.Pid)
		if strings.HasPrefix(p.Exe, "/memfd:") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // not exec'd yet
	}
	want := flagsOf(FlagExeMemfd, FlagRootUnprivilegedPort)
	if diff := cmp.Diff(want, p.Flags); diff != "" {
		t.Errorf("%s (comm %q): flags (-want +got):\n%s", p.Exe, p.Comm, diff)
	}
}

// openPty returns the two ends of a new pseudo-terminal.
func openPty(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no pseudo-terminals:", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestFlagsSession(t *testing.T) {
	requireRoot(t)
	f, sock := listenFile(t)
	t.Run("controlling terminal", func(t *testing.T) {
		_, pts := openPty(t)
		cmd := startHolder(t, f, holderCmd{path: "/bin/sleep", args: []string{"300"}, in: pts,
			attr: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}})
		p := holderFlags(t, Options{}, sock.inode, cmd.Process.Pid)
		if !slices.Contains(p.Flags, FlagSessionLaunched) {
			t.Errorf("flags %v, want session_launched", p.Flags)
		}
	})
	t.Run("from a shell", func(t *testing.T) {
		// "; :" keeps dash from exec'ing sleep in its own place.
		cmd := startHolder(t, f, holderCmd{path: "/bin/sh", args: []string{"-c", "/bin/sleep 300; :"}})
		shell := holderFlags(t, Options{}, sock.inode, cmd.Process.Pid)
		if !slices.Contains(shell.Flags, FlagInterpreter) {
			t.Errorf("shell %s: flags %v, want interpreter", shell.Exe, shell.Flags)
		}
		var child int
		deadline := time.Now().Add(5 * time.Second)
		for child == 0 && time.Now().Before(deadline) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			fmt.Sscan(string(b), &child)
			time.Sleep(20 * time.Millisecond)
		}
		if child == 0 {
			t.Fatal("the shell started no child")
		}
		t.Cleanup(func() { unix.Kill(child, unix.SIGKILL) }) // the shell's child, which we started through it
		p := holderFlags(t, Options{}, sock.inode, child)
		if diff := cmp.Diff(flagsOf(FlagParentShell, FlagRootUnprivilegedPort), p.Flags); diff != "" {
			t.Errorf("sleep under sh: flags (-want +got):\n%s", diff)
		}
	})
}

func TestFlagsCommMismatch(t *testing.T) {
	requireRoot(t)
	plain := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0"})
	renamed := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:0", rename: "sshd"})
	for _, tt := range []struct {
		h    *helper
		want bool
	}{{plain, false}, {renamed, true}} {
		p := holderFlags(t, Options{}, tt.h.socks[0].inode, tt.h.pid())
		if got := slices.Contains(p.Flags, FlagCommMismatch); got != tt.want {
			t.Errorf("comm %q, exe %s: comm_mismatch %v, want %v (flags %v)", p.Comm, p.Exe, got, tt.want, p.Flags)
		}
	}
	// An alternative: comm is the name of a symlink to the executable.
	dir := optDir(t)
	copyExe(t, "/bin/sleep", filepath.Join(dir, "sleep.real"))
	if err := os.Symlink("sleep.real", filepath.Join(dir, "nap")); err != nil {
		t.Fatal(err)
	}
	f, sock := listenFile(t)
	cmd := startHolder(t, f, holderCmd{path: filepath.Join(dir, "nap"), args: []string{"300"}})
	p := holderFlags(t, Options{}, sock.inode, cmd.Process.Pid)
	if p.Comm != "nap" || slices.Contains(p.Flags, FlagCommMismatch) {
		t.Errorf("run through a symlink: comm %q, exe %s, flags %v; want comm nap, no comm_mismatch", p.Comm, p.Exe, p.Flags)
	}
}

func TestFlagsRootUnprivilegedPort(t *testing.T) {
	requireRoot(t)
	// Namespaces of their own, where 80 and 8080 are free.
	def := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:8080 tcp4=127.0.0.1:80", netns: true})
	zero := startHelper(t, helperOpts{socks: "tcp4=127.0.0.1:8080", netns: true})
	err := inNetns(fmt.Sprintf("/proc/%d/ns/net", zero.pid()), 0, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_unprivileged_port_start", []byte("0"), 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		h    *helper
		sock int
		want bool
	}{
		{"8080", def, 0, true},
		{"80", def, 1, false},
		{"8080 where ip_unprivileged_port_start is 0", zero, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := holderFlags(t, Options{}, tt.h.socks[tt.sock].inode, tt.h.pid())
			if got := slices.Contains(p.Flags, FlagRootUnprivilegedPort); got != tt.want {
				t.Errorf("root_unprivileged_port %v, want %v (flags %v)", got, tt.want, p.Flags)
			}
		})
	}
}

// TestFlagsCached: a steady tick reads nothing of a known holder again,
// so its Process (and flags) is the one of the last snapshot.
func TestFlagsCached(t *testing.T) {
	requireRoot(t)
	f, sock := listenFile(t)
	cmd := startHolder(t, f, holderCmd{path: "/bin/sleep", args: []string{"300"}})
	holderFlags(t, Options{}, sock.inode, cmd.Process.Pid)
	w, _ := newWatcher(t, Options{})
	a := snapshot(t, w)
	b := snapshot(t, w)
	la, lb := byInode(a, sock.inode), byInode(b, sock.inode)
	if la == nil || lb == nil || len(la.Processes) == 0 {
		t.Fatal("listener not found")
	}
	if &la.Processes[0] != &lb.Processes[0] {
		t.Error("the second snapshot built its listeners again")
	}
}
