package watcher

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// moveFDs moves fds[i] to the descriptor number in the i-th field of nums
// ("-" leaves it where it is), and records the new number in fds.
func moveFDs(fds []int, nums string) error {
	for i, f := range strings.Fields(nums) {
		if f == "-" || i >= len(fds) {
			continue
		}
		to, err := strconv.Atoi(f)
		if err != nil {
			return fmt.Errorf("PW_FDNUMS: %w", err)
		}
		if err := unix.Dup3(fds[i], to, unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("move fd %d to %d: %w", fds[i], to, err)
		}
		unix.Close(fds[i])
		fds[i] = to
	}
	return nil
}

// maxFDReads is how many descriptor reads a scan of a table of open
// descriptors may make: each once, plus the misses the probe may pay before
// it lists the rest (see probeFDs), plus one for a descriptor opened
// meanwhile.
func maxFDReads(open int) int { return open + 3 + open/8 }

// TestScanSparseTables checks that the scan of a process whose descriptor
// table is not dense from 0 (gaps, one stray high descriptor, as children of
// shells, flock and supervisors have) finds every socket, and reads each
// descriptor about once: not probing up to twice the table and then reading
// every link again from a listing.
func TestScanSparseTables(t *testing.T) {
	p, err := openProc("/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w, _ := newWatcher(t, Options{})
	for _, tt := range []struct {
		name   string
		fdnums string
	}{
		// As the test runner leaves the table: dense, or with strays
		// inherited from the shell.
		{name: "as started", fdnums: ""},
		{name: "stray high", fdnums: "- - - 1000"},
		{name: "gaps", fdnums: "20 40 60 80"},
		{name: "gaps and strays", fdnums: "10 30 500 5000"},
		{name: "all high", fdnums: "3000 3001 3002 3003"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startHelper(t, helperOpts{
				socks:  "tcp4=127.0.0.1:0 tcp4=127.0.0.1:0 udp4=127.0.0.1:0 tcp6only=[::1]:0",
				fdnums: tt.fdnums,
			})
			pid := int32(h.pid())
			open := openFDs(t, pid)
			want := map[uint64]bool{}
			for _, s := range h.socks {
				want[s.inode] = true
			}
			s := new(scratch)
			refs, err := p.scanFDs(s, pid, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got, wantRefs []sockRef
			for _, r := range refs {
				if want[r.inode] {
					got = append(got, r)
				}
			}
			fds := strings.Fields(tt.fdnums)
			for i, sock := range h.socks {
				fd := -1
				if i < len(fds) && fds[i] != "-" {
					fd, _ = strconv.Atoi(fds[i])
				} else {
					fd = fdOf(t, pid, sock.inode)
				}
				wantRefs = append(wantRefs, sockRef{inode: sock.inode, pid: pid, fd: int32(fd)})
			}
			less := func(a, b sockRef) int { return int(a.fd) - int(b.fd) }
			slices.SortFunc(got, less)
			slices.SortFunc(wantRefs, less)
			if diff := cmp.Diff(wantRefs, got, cmp.AllowUnexported(sockRef{})); diff != "" {
				t.Errorf("sockets found (-want +got):\n%s", diff)
			}
			t.Logf("%d descriptors read and %d listings for %d open descriptors", s.fdReads, s.fdLists, open)
			if s.fdReads > maxFDReads(open) || s.fdLists > 1 {
				t.Errorf("%d descriptors read and %d listings for %d open descriptors, want at most %d and 1",
					s.fdReads, s.fdLists, open, maxFDReads(open))
			}

			snap, err := w.Snapshot(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			held := map[uint64]bool{}
			for _, l := range snap.Listeners {
				for _, pr := range l.Processes {
					if pr.PID == int(pid) {
						held[l.Inode] = true
					}
				}
			}
			if diff := cmp.Diff(want, held); diff != "" {
				t.Errorf("listeners attributed to the helper (-want +got):\n%s", diff)
			}
		})
	}
}

// openFDs returns how many descriptors pid has open.
func openFDs(t *testing.T, pid int32) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fdOf returns the descriptor through which pid holds socket inode.
func fdOf(t *testing.T, pid int32, inode uint64) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil && link == fmt.Sprintf("socket:[%d]", inode) {
			fd, _ := strconv.Atoi(e.Name())
			return fd
		}
	}
	t.Fatalf("pid %d holds no socket %d", pid, inode)
	return -1
}

// BenchmarkScanFDs scans one process whose 1,000 descriptors (/dev/null)
// are laid out as in bench/scene, and reports the descriptor reads a scan
// makes (reads/op) beside its time.
func BenchmarkScanFDs(b *testing.B) {
	const n = 1000
	for _, bb := range []struct {
		name string
		slot func(i int) int // descriptor number of the i-th file
	}{
		{"dense", func(i int) int { return 3 + i }},
		{"gaps", func(i int) int { return 3 + i + i/3 + 32*(i/16) }},
		{"stray", func(i int) int {
			if i == n-1 {
				return 4 * n
			}
			return 3 + i
		}},
		{"churned", func(i int) int { return 3 + i + 16*(i/64) }},
		{"high", func(i int) int { return 2*n + i }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			null, err := os.Open(os.DevNull)
			if err != nil {
				b.Fatal(err)
			}
			defer null.Close()
			var extra []*os.File
			for i := range n {
				for len(extra) < bb.slot(i)-3 {
					extra = append(extra, nil)
				}
				extra = append(extra, null)
			}
			cmd := exec.Command("sleep", "60")
			cmd.ExtraFiles = extra
			if err := cmd.Start(); err != nil {
				b.Skip("cannot start sleep:", err)
			}
			defer func() {
				cmd.Process.Kill()
				cmd.Wait()
			}()
			p, err := openProc("/proc")
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			s := new(scratch)
			pid := int32(cmd.Process.Pid)
			for b.Loop() {
				if _, err := p.scanFDs(s, pid, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(s.fdReads)/float64(b.N), "reads/op")
		})
	}
}

// TestScanFDs checks that probing descriptor numbers finds exactly what
// listing /proc/PID/fd finds, with holes in the table and a sparse one,
// reading each descriptor about once.
func TestScanFDs(t *testing.T) {
	var fds []int
	for range 200 {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, p[0], p[1])
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i := 0; i < len(fds); i += 7 { // holes
		unix.Close(fds[i])
	}
	p, err := openProc("/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s := new(scratch)
	pid := int32(os.Getpid())
	compare := func() {
		t.Helper()
		p.probe = true
		*s = scratch{}
		probed, err := p.scanFDs(s, pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		if open := openFDs(t, pid); s.fdReads > maxFDReads(open) || s.fdLists > 1 {
			t.Errorf("%d descriptors read and %d listings for %d open descriptors, want at most %d and 1",
				s.fdReads, s.fdLists, open, maxFDReads(open))
		}
		p.probe = false
		listed, err := p.scanFDs(s, pid, nil)
		if err != nil {
			t.Fatal(err)
		}
		less := func(a, b sockRef) int { return int(a.fd) - int(b.fd) }
		slices.SortFunc(probed, less)
		slices.SortFunc(listed, less)
		if len(listed) < 300 {
			t.Fatalf("listed only %d sockets", len(listed))
		}
		if diff := cmp.Diff(listed, probed, cmp.AllowUnexported(sockRef{})); diff != "" {
			t.Errorf("probe and listing differ (-listed +probed):\n%s", diff)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd", pid), &st); err != nil || st.Size == 0 {
		t.Skip("this kernel does not count descriptors in the size of /proc/PID/fd (Linux < 6.2): nothing to probe")
	}
	compare() // with holes
	high, err := unix.FcntlInt(uintptr(fds[1]), unix.F_DUPFD_CLOEXEC, 5000)
	if err != nil {
		t.Fatal(err)
	}
	fds = append(fds, high)
	compare() // a descriptor far away: probing gives up, the listing finds it
}
