package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestFiguresAgree: the daemon's figures (STATUS and the start line) and
// check's count listeners alike: one listening socket, one row of
// `portwatchd list`, each. Two SO_REUSEPORT sockets on one port are two
// listeners, although the engine alerts them as one.
func TestFiguresAgree(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
			return err
		}
		return serr
	}}
	a, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	port := a.Addr().(*net.TCPAddr).Port
	b, err := lc.Listen(context.Background(), "tcp4", a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	snap, err := takeSnapshot("test", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, l := range snap.Listeners {
		if l.Netns == watcher.HostNetns && l.Protocol == watcher.TCP && int(l.Port) == port {
			rows++
		}
	}
	if rows != 2 {
		t.Fatalf("the snapshot shows %d sockets on port %d, want the 2 opened", rows, port)
	}

	cfg := &policy.Config{} // no rules: every listener is unexpected
	var out bytes.Buffer
	reportCheck(&out, io.Discard, cfg, snap, true)
	var checked checkOutput
	if err := json.Unmarshal(out.Bytes(), &checked); err != nil {
		t.Fatalf("check --json: %v\n%s", err, out.String())
	}
	eng := alerting.New(nil)
	eng.Step(snap, alerting.Config{Evaluator: cfg}, time.Now())
	daemon := eng.Stats()
	check := alerting.Stats{Listeners: checked.Listeners, Unexpected: checked.Unexpected + checked.Unknown, Namespaces: daemon.Namespaces}
	if daemon != check || daemon.Listeners != len(snap.Listeners) {
		t.Errorf("figures disagree on %d sockets: the daemon's %+v, check's %+v", len(snap.Listeners), daemon, check)
	}
}
