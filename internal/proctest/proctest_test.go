package proctest

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTerminate(t *testing.T) {
	tests := []struct {
		name   string
		script string // says "ready" once the signal may come
		want   syscall.Signal
	}{
		{name: "exits on SIGTERM", script: "echo ready; exec sleep 60", want: syscall.SIGTERM},
		// The ignored SIGTERM stays ignored across exec.
		{name: "ignores SIGTERM, killed", script: `trap "" TERM; echo ready; exec sleep 60`, want: syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", tt.script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no ready line: %v", err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			Terminate(cmd.Process, exited, 500*time.Millisecond)
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if diff := cmp.Diff(tt.want, ws.Signal()); diff != "" || !ws.Signaled() {
				t.Errorf("exit %v: signal mismatch (-want +got):\n%s", ws, diff)
			}
		})
	}
}
