// Package proctest ends the child processes that tests start: a daemon
// under test, or a real journald or Alertmanager beside it.
package proctest

import (
	"os"
	"syscall"
	"time"
)

// Terminate asks p to exit with SIGTERM, as systemd would, and kills it if
// it has not exited within grace: a child that hangs on shutdown must not
// outlive the test. exited is the channel that the goroutine waiting for p
// sends on or closes when p exits; Terminate returns once it has, so p is
// reaped.
func Terminate[T any](p *os.Process, exited <-chan T, grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = p.Kill()
		<-exited
	}
}
