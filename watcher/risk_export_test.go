package watcher

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RiskScene is two real listeners for the policy's tests of risk flags
// (risk_policy_test.go, in package watcher_test, which may import policy):
// one held by a program run from a memfd, one by a program whose executable
// was deleted. Each is held by that process alone.
type RiskScene struct {
	Memfd, Gone Listener
}

// NewRiskScene starts both holders and takes a snapshot of them.
func NewRiskScene(t *testing.T) *RiskScene {
	t.Helper()
	requireRoot(t)
	fm, sm := listenFile(t)
	startHolder(t, fm, holderCmd{path: testBinary(t), args: []string{"-test.run=^$"},
		env: []string{helperEnv + "=memfdexec", "PW_EXE=/bin/sleep", "PW_ARGS=300"}})
	fg, sg := listenFile(t)
	exe := filepath.Join(optDir(t), "gone/sleepd")
	copyExe(t, "/bin/sleep", exe)
	gone := startHolder(t, fg, holderCmd{path: exe, args: []string{"300"}})
	// The children hold the sockets: the test's own descriptors would make
	// the test binary (run from /tmp) a holder too.
	holderFlags(t, Options{}, sg.inode, gone.Process.Pid)
	fm.Close()
	fg.Close()
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _ := newWatcher(t, Options{})
		s := snapshot(t, w)
		w.Close()
		m, g := byInode(s, sm.inode), byInode(s, sg.inode)
		if m != nil && g != nil && len(m.Processes) == 1 && strings.HasPrefix(m.Processes[0].Exe, "/memfd:") &&
			len(g.Processes) == 1 && g.Processes[0].ExeDeleted {
			return &RiskScene{Memfd: *m, Gone: *g}
		}
		if time.Now().After(deadline) {
			t.Fatalf("holders not ready: memfd %+v, gone %+v", m, g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
