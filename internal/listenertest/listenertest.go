// Package listenertest runs the test binary again as a helper child process
// that opens real listening sockets on command, for tests that need
// listeners held by a process other than their own.
//
// The parent side is Start: it runs the test binary (or another executable)
// with extra environment, descriptors and SysProcAttr, talks to it a line at
// a time over its stdin and stdout, and ends it on t.Cleanup: it closes the
// child's stdin, and kills the child by its pid if it has not exited 10
// seconds later.
//
// The child side is Serve, reached from the test binary's TestMain (or a
// helper test) when an environment switch chosen by the caller is set. It
// answers this line protocol until its input ends:
//
//	open NETWORK ADDRESS  ->  "port N", or "error MESSAGE"
//	close N               ->  "closed", or "error MESSAGE"
//
// NETWORK is tcp, tcp4, tcp6, udp, udp4 or udp6. Child.Open and
// Child.TryOpen are the parent's end of it. Helpers with needs of their own
// (a new name, a new namespace, another program) do those first, and then
// serve this protocol or one of their own through Start.
package listenertest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options say how Start runs the child. The zero value runs the test binary
// with no tests selected, so that only its TestMain's helper switch runs.
type Options struct {
	Path        string               // executable; default: the test binary
	Args        []string             // arguments; default: -test.run=^$
	Env         []string             // added to this process's environment
	ExtraFiles  []*os.File           // descriptors 3, 4, ... in the child
	SysProcAttr *syscall.SysProcAttr // e.g. Pdeathsig, Unshareflags
}

// Child is a running helper child.
type Child struct {
	Cmd *exec.Cmd
	// KillOnStop makes Stop kill the child first, for one that became a
	// program that does not exit when its stdin closes.
	KillOnStop bool

	stdin io.WriteCloser
	out   *bufio.Scanner
	once  sync.Once
}

// stopWait is how long Stop waits for the child to exit by itself.
const stopWait = 10 * time.Second

// Start starts the child described by o, with its stdin and stdout piped to
// this process and its stderr shared, and stops it on tb.Cleanup.
func Start(tb testing.TB, o Options) *Child {
	tb.Helper()
	path := o.Path
	if path == "" {
		p, err := os.Executable()
		if err != nil {
			tb.Fatal(err)
		}
		path = p
	}
	args := o.Args
	if args == nil {
		args = []string{"-test.run=^$"}
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.ExtraFiles = o.ExtraFiles
	cmd.SysProcAttr = o.SysProcAttr
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &Child{Cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	tb.Cleanup(c.Stop)
	return c
}

// PID returns the child's process id.
func (c *Child) PID() int { return c.Cmd.Process.Pid }

// Line returns the child's next line of output. It fails the test if the
// child's output ends first.
func (c *Child) Line(tb testing.TB) string {
	tb.Helper()
	if !c.out.Scan() {
		tb.Fatalf("helper %d exited early: %v", c.PID(), c.out.Err())
	}
	return c.out.Text()
}

// Tell writes line to the child's stdin.
func (c *Child) Tell(tb testing.TB, line string) {
	tb.Helper()
	if _, err := fmt.Fprintln(c.stdin, line); err != nil {
		tb.Fatal(err)
	}
}

// Send writes line to the child and returns its answer.
func (c *Child) Send(tb testing.TB, line string) string {
	tb.Helper()
	c.Tell(tb, line)
	return c.Line(tb)
}

// TryOpen asks a child running Serve to open a listener, and returns its
// port, or the child's error.
func (c *Child) TryOpen(tb testing.TB, network, address string) (int, error) {
	tb.Helper()
	got := c.Send(tb, "open "+network+" "+address)
	return parseAnswer(tb, got, "port ")
}

// Open is TryOpen that fails the test on an error.
func (c *Child) Open(tb testing.TB, network, address string) int {
	tb.Helper()
	port, err := c.TryOpen(tb, network, address)
	if err != nil {
		tb.Fatalf("helper %d: open %s %s: %v", c.PID(), network, address, err)
	}
	return port
}

// CloseListener asks a child running Serve to close its listener on port.
func (c *Child) CloseListener(tb testing.TB, port int) {
	tb.Helper()
	if got := c.Send(tb, "close "+strconv.Itoa(port)); got != "closed" {
		tb.Fatalf("helper %d: close %d: %q", c.PID(), port, got)
	}
}

func parseAnswer(tb testing.TB, line, prefix string) (int, error) {
	tb.Helper()
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return 0, errors.New(msg)
	}
	rest, ok := strings.CutPrefix(line, prefix)
	n, err := strconv.Atoi(rest)
	if !ok || err != nil {
		tb.Fatalf("helper said %q, want %q and a number", line, prefix)
	}
	return n, nil
}

// Stop ends the child and reaps it: it closes the child's stdin, and kills
// it by its pid if it has not exited within 10 seconds (at once with
// KillOnStop). It can be called more than once.
func (c *Child) Stop() {
	c.once.Do(func() {
		c.stdin.Close()
		if c.KillOnStop {
			c.Cmd.Process.Kill()
		}
		done := make(chan struct{})
		go func() { c.Cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopWait):
			c.Cmd.Process.Kill()
			<-done
		}
	})
}

// Serve is the child side of the protocol: it answers the commands on in
// until in ends, and then closes its listeners. It returns the error that
// ended in or the write to out, if any.
func Serve(in io.Reader, out io.Writer) error {
	open := map[int]io.Closer{}
	defer func() {
		for _, l := range open {
			l.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var answer string
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 3 && f[0] == "open":
			l, port, err := Listen(f[1], f[2])
			if err != nil {
				answer = "error " + err.Error()
				break
			}
			open[port] = l
			answer = "port " + strconv.Itoa(port)
		case len(f) == 2 && f[0] == "close":
			port, _ := strconv.Atoi(f[1])
			if l, ok := open[port]; ok {
				delete(open, port)
				l.Close()
				answer = "closed"
			} else {
				answer = "error no listener on port " + f[1]
			}
		default:
			answer = fmt.Sprintf("error unknown command %q", sc.Text())
		}
		if _, err := fmt.Fprintln(out, answer); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Listen opens a TCP listener or a UDP socket on address and returns it
// with its port.
func Listen(network, address string) (io.Closer, int, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, 0, err
		}
		return ln, ln.Addr().(*net.TCPAddr).Port, nil
	case "udp", "udp4", "udp6":
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			return nil, 0, err
		}
		return pc, pc.LocalAddr().(*net.UDPAddr).Port, nil
	}
	return nil, 0, fmt.Errorf("unsupported network %q", network)
}
