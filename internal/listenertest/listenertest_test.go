package listenertest

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

const childEnv = "PORTWATCHD_LISTENERTEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := Serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// inUse reports whether address is taken: by the child, since this process
// holds nothing.
func inUse(t *testing.T, network, address string) bool {
	t.Helper()
	l, _, err := Listen(network, address)
	if err != nil {
		return true
	}
	l.Close()
	return false
}

// TestOpenClose opens each kind of listener in the child, checks that the
// port it reports is taken, closes it and checks that the port is free.
func TestOpenClose(t *testing.T) {
	c := Start(t, Options{Env: []string{childEnv + "=1"}})
	for _, tc := range []struct {
		name, network, host string
	}{
		{"tcp4", "tcp4", "127.0.0.1"},
		{"tcp6", "tcp6", "[::1]"},
		{"udp4", "udp4", "127.0.0.1"},
		{"udp6", "udp6", "[::1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port, err := c.TryOpen(t, tc.network, tc.host+":0")
			if err != nil && strings.HasSuffix(tc.network, "6") {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			addr := fmt.Sprintf("%s:%d", tc.host, port)
			if port == 0 || !inUse(t, tc.network, addr) {
				t.Fatalf("child said port %d, but %s is free", port, addr)
			}
			c.CloseListener(t, port)
			if inUse(t, tc.network, addr) {
				t.Errorf("%s still taken after close", addr)
			}
		})
	}
}

// TestErrors checks that bad commands get an error line and leave the
// child serving.
func TestErrors(t *testing.T) {
	c := Start(t, Options{Env: []string{childEnv + "=1"}})
	if _, err := c.TryOpen(t, "unix", "/nowhere"); err == nil || !strings.Contains(err.Error(), `unsupported network "unix"`) {
		t.Errorf("open unix: %v, want unsupported network", err)
	}
	// A port the child holds already.
	port := c.Open(t, "tcp4", "127.0.0.1:0")
	if _, err := c.TryOpen(t, "tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("open a taken port: %v, want address already in use", err)
	}
	for _, tc := range []struct{ name, line, want string }{
		{"close unknown", "close 1", "error no listener on port 1"},
		{"unknown command", "listen", `error unknown command "listen"`},
	} {
		if got := c.Send(t, tc.line); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestStop checks that Stop reaps the child, and that the child's
// listeners go with it.
func TestStop(t *testing.T) {
	c := Start(t, Options{Env: []string{childEnv + "=1"}})
	port := c.Open(t, "tcp4", "127.0.0.1:0")
	c.Stop()
	if c.Cmd.ProcessState == nil || !c.Cmd.ProcessState.Success() {
		t.Errorf("after Stop: %v, want exited with status 0", c.Cmd.ProcessState)
	}
	if inUse(t, "tcp4", fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("port %d still taken after Stop", port)
	}
	c.Stop() // a second time does nothing
}

// TestStopKills checks that Stop kills a child that does not exit on EOF.
func TestStopKills(t *testing.T) {
	c := Start(t, Options{Path: "/bin/sleep", Args: []string{"60"}})
	c.KillOnStop = true
	c.Stop()
	if c.Cmd.ProcessState == nil || c.Cmd.ProcessState.Success() {
		t.Errorf("after Stop: %v, want killed", c.Cmd.ProcessState)
	}
}
