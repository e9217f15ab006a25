package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The notifier keeps its socket, and connects anew when systemd made its
// socket again (a daemon-reexec) or NOTIFY_SOCKET names another one.
func TestNotifierReconnects(t *testing.T) {
	dir := t.TempDir()
	listen := func(path string) *net.UnixConn {
		os.Remove(path)
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	read := func(c *net.UnixConn) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 256)
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(b[:n])
	}
	var n sdNotifier
	a := filepath.Join(dir, "a")
	ca := listen(a)
	for _, msg := range []string{"READY=1", "WATCHDOG=1"} {
		if err := n.send(a, msg); err != nil {
			t.Fatal(err)
		}
		if got := read(ca); got != msg {
			t.Errorf("got %q, want %q", got, msg)
		}
	}
	// The socket made again at the same path: the old connection is
	// refused, and one reconnect delivers the message.
	ca.Close()
	ca = listen(a)
	if err := n.send(a, "STATUS=again"); err != nil {
		t.Fatal(err)
	}
	if got := read(ca); got != "STATUS=again" {
		t.Errorf("after the socket was made again: got %q", got)
	}
	// Another path.
	b := filepath.Join(dir, "b")
	cb := listen(b)
	if err := n.send(b, "STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(cb); got != "STOPPING=1" {
		t.Errorf("another socket: got %q", got)
	}
	// None at all: nothing sent, no error.
	if err := n.send("", "READY=1"); err != nil {
		t.Errorf("no NOTIFY_SOCKET: %v", err)
	}
	// A path with no socket: an error, and the daemon goes on.
	if err := n.send(filepath.Join(dir, "missing"), "READY=1"); err == nil {
		t.Error("no error for a missing socket")
	}
}

// The binary does not check the cgroup for GOMAXPROCS every second (main.go):
// the //go:debug line must reach the build.
func TestBuildGodebug(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.DefaultGODEBUG}}", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "updatemaxprocs=0") {
		t.Errorf("DefaultGODEBUG %q, want updatemaxprocs=0", strings.TrimSpace(string(out)))
	}
}
