// Command scene builds a benchmark scene for portwatchd in a network, PID and
// mount namespace of its own, and optionally runs one command inside it.
//
//	scene -size large -timeout 5m -- measure ...
//	scene -size small -ready /tmp/ready          # hold; nsenter -t PID -n -p -m
//
// The scene is bounded and loopback only: its sockets live in a fresh network
// namespace whose only interface is lo. It stops by itself: PID 1 of the scene
// exits when the timeout (at most 5 minutes) is reached, and the kernel then
// kills every process in the PID namespace; the outer process also kills PID
// 1 by its PID a few seconds later in case it hangs.
//
// Inside, /proc is a fresh procfs for the scene's PID namespace and /run/netns
// is an empty tmpfs, both in a private mount namespace. So a command run in
// the scene, ss and portwatchd alike, sees exactly the scene's processes and
// the scene's network namespace, and nothing else on the machine.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// initArg, as the first argument, makes the re-executed binary run as PID 1
// of the scene.
const initArg = "__scene_init"

// maxTimeout bounds every scene, whatever the flags say.
const maxTimeout = 5 * time.Minute

// killGrace is how long the outer process waits past the timeout before it
// kills PID 1 of the scene itself.
const killGrace = 5 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == initArg {
		os.Exit(runInit(os.Args[2:]))
	}
	os.Exit(runOuter(os.Args[1:]))
}

type options struct {
	size    string
	timeout time.Duration
	ready   string
	command []string
}

func parseFlags(name string, args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&o.size, "size", "small", "scene: small, large, large-gaps, large-stray or large-wide")
	fs.DurationVar(&o.timeout, "timeout", maxTimeout, "stop the scene after this long (at most 5m)")
	fs.StringVar(&o.ready, "ready", "", "write READY and the PID of the scene's init to this file once the scene is built")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags] [-- command [args...]]\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.command = fs.Args()
	if _, ok := sizes[o.size]; !ok {
		return o, fmt.Errorf("unknown scene %q (want small, large, large-gaps, large-stray or large-wide)", o.size)
	}
	if o.timeout <= 0 || o.timeout > maxTimeout {
		o.timeout = maxTimeout
	}
	return o, nil
}

// runOuter starts PID 1 of the scene in new namespaces, relays its readiness
// and waits for it, killing it by PID when the deadline has passed.
func runOuter(args []string) int {
	o, err := parseFlags("scene", args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "scene:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "scene: must run as root (it creates network, PID and mount namespaces)")
		return 2
	}

	readyR, readyW, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scene: pipe:", err)
		return 2
	}
	initArgs := []string{initArg, "-size", o.size, "-timeout", o.timeout.String(), "--"}
	cmd := exec.Command("/proc/self/exe", append(initArgs, o.command...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{readyW} // fd 3 in the scene's init
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		// If this process dies, the scene dies with it: PID 1 gets SIGKILL
		// and the kernel kills the rest of its PID namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "scene: start:", err)
		return 2
	}
	readyW.Close()
	pid := cmd.Process.Pid

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	deadline := time.NewTimer(o.timeout + killGrace)
	defer deadline.Stop()

	go func() {
		sc := bufio.NewScanner(readyR)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "READY") {
				continue
			}
			fmt.Fprintf(os.Stderr, "scene: %s pid=%d\n", line, pid)
			if o.ready != "" {
				if err := os.WriteFile(o.ready, []byte(fmt.Sprintf("READY pid=%d\n", pid)), 0o644); err != nil {
					fmt.Fprintln(os.Stderr, "scene: write ready file:", err)
				}
			}
		}
		readyR.Close()
	}()

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			if o.ready != "" {
				os.Remove(o.ready)
			}
			return exitCode(err)
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "scene: %v: stopping the scene (pid %d)\n", s, pid)
			cmd.Process.Kill()
		case <-deadline.C:
			fmt.Fprintf(os.Stderr, "scene: deadline passed: killing the scene (pid %d)\n", pid)
			cmd.Process.Kill()
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintln(os.Stderr, "scene:", err)
	return 2
}

// runInit is PID 1 of the scene. When it returns, the kernel kills every
// other process of the scene.
func runInit(args []string) int {
	o, err := parseFlags("scene init", args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scene:", err)
		return 2
	}
	ready := os.NewFile(3, "ready")
	// Descriptors this process inherited without close-on-exec (from
	// whatever started the benchmark) would otherwise leak into every
	// holder and add to what the fd scans read.
	if err := unix.CloseRange(4, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "scene: close_range:", err)
		return 2
	}

	// The hard deadline: whatever else happens, PID 1 exits, and with it the
	// whole scene.
	time.AfterFunc(o.timeout, func() {
		fmt.Fprintf(os.Stderr, "scene: %v timeout reached: stopping\n", o.timeout)
		os.Exit(124)
	})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	if err := setupNamespaces(); err != nil {
		fmt.Fprintln(os.Stderr, "scene:", err)
		return 2
	}
	start := time.Now()
	sc, err := build(sizes[o.size], o.timeout+time.Minute)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scene: build:", err)
		return 2
	}
	setup := fmt.Sprintf("%s built_in=%v", sc.summary(), time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(ready, "READY scene=%s %s\n", o.size, setup)
	ready.Close()

	if len(o.command) == 0 {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "scene: %v: stopping\n", s)
		return 0
	}
	cmd := exec.Command(o.command[0], o.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "PORTWATCH_BENCH_SCENE="+o.size, "PORTWATCH_BENCH_SETUP="+setup)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "scene:", err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err)
	case s := <-sigs:
		fmt.Fprintf(os.Stderr, "scene: %v: stopping\n", s)
		return 128 + int(s.(syscall.Signal))
	}
}
