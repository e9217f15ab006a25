package ebpf

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// TestCapabilities opens the probe in a child whose capabilities setpriv
// limits, to measure what the programs need: CAP_BPF, CAP_PERFMON and
// CAP_NET_ADMIN (the cgroup programs are a networking type), or CAP_SYS_ADMIN
// alone. Any one of the three missing gives ErrPermission naming it.
func TestCapabilities(t *testing.T) {
	openProbe(t) // skips where no probe can load at all
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	tests := []struct {
		caps string // for setpriv --bounding-set
		want string // the helper's first line: ok, or the reason
	}{
		{"+bpf,+perfmon,+net_admin", "ok"},
		{"+sys_admin", "ok"},
		{"+bpf,+perfmon", ErrPermission.Error()},
		{"+bpf,+net_admin", ErrPermission.Error()},
		{"+perfmon,+net_admin", ErrPermission.Error()},
		{"", ErrPermission.Error()},
	}
	for _, tt := range tests {
		t.Run("caps "+tt.caps, func(t *testing.T) {
			bounding := "-all"
			if tt.caps != "" {
				bounding += "," + tt.caps
			}
			// As root, exec gives the bounding set as permitted and
			// effective capabilities.
			cmd := exec.Command(setpriv, "--bounding-set="+bounding, "--inh-caps=-all", "--", os.Args[0])
			cmd.Env = append(os.Environ(), helperEnv+"=open")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %v", cmd, err)
			}
			first, _, _ := strings.Cut(string(out), "\n")
			if first != tt.want {
				t.Errorf("Open with %s: %q, want %q", bounding, first, tt.want)
			}
		})
	}
}

// TestKilledDetaches kills a process that holds the probe: the kernel must
// detach its cgroup programs, which see every bind on the host.
func TestKilledDetaches(t *testing.T) {
	openProbe(t)
	root, err := os.Open(cgroup2(t))
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	attached := func() int {
		t.Helper()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(root.Fd()), Attach: ebpf.AttachCGroupInet4PostBind})
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Programs)
	}
	before := attached()

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=open", helperEnv+"_HOLD=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ok\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	if n := attached(); n != before+1 {
		t.Errorf("with the helper's probe: %d post_bind4 programs, want %d", n, before+1)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // killed
	// The links are released when the dead process's files are, before
	// wait returns.
	if n := attached(); n != before {
		t.Errorf("after the helper was killed: %d post_bind4 programs, want %d", n, before)
	}
}
