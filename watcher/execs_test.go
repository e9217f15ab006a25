package watcher

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// With exec events, a holder's exec told by Exec is read again at the next
// snapshot: what it still holds and who it is now. Both cases here are ones
// the rolling re-checks find late or never.
func TestSnapshotExec(t *testing.T) {
	requireRoot(t)
	w, _ := newWatcher(t, Options{})
	w.SetExecEvents(true)

	// waitExec waits until h runs exe with argument arg.
	waitExec := func(t *testing.T, h *helper, exe, arg string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.pid()))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", h.pid()))
			if got == exe && slices.Contains(splitNul(cmdline), arg) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("helper did not exec %s %s", exe, arg)
			}
		}
	}

	t.Run("its copy of the socket closed on exec", func(t *testing.T) {
		// A launcher that execs the service, its copy of the listening
		// socket close-on-exec: the socket stays (this process holds
		// it), the launcher's pid no longer holds it.
		h, sock := startSharer(t, w)
		if got := h.Send(t, "cloexec"); got != "cloexec" {
			t.Fatalf("helper said %q", got)
		}
		h.KillOnStop = true
		h.Tell(t, "exec "+testBinary(t)+" -test.run=^$ launched")
		waitExec(t, h, testBinary(t), "launched")
		w.Exec([]int32{int32(h.pid())})
		if diff := cmp.Diff([]int{os.Getpid()}, pidsOf(byInode(snapshot(t, w), sock.inode))); diff != "" {
			t.Errorf("after exec, holders (-want +got):\n%s", diff)
		}
	})

	t.Run("the same program again, other arguments", func(t *testing.T) {
		// Same executable, same file: the rolling re-check, which
		// compares executables, never sees this exec.
		f, sock := listenFile(t)
		h := startHelper(t, helperOpts{hold: f})
		f.Close()
		snapshot(t, w)
		h.KillOnStop = true
		h.Tell(t, "exec "+testBinary(t)+" -test.run=^$ again")
		waitExec(t, h, testBinary(t), "again")
		w.Exec([]int32{int32(h.pid())})
		l := byInode(snapshot(t, w), sock.inode)
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("after exec: %+v", l)
		}
		if got := l.Processes[0].Cmdline; !slices.Contains(got, "again") {
			t.Errorf("after exec, cmdline %q, want the new one (with %q)", got, "again")
		}
	})
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := slices.Index(b, 0)
		if i < 0 {
			i = len(b)
		}
		out = append(out, string(b[:i]))
		b = b[min(i+1, len(b)):]
	}
	return out
}
