// Command launch runs one command and writes its wall time, CPU time and
// peak RSS to fd 3 as "wall_ns cpu_ns maxrss_kib exit_status". bench/measure
// runs every measured command through it.
//
// It exists for ru_maxrss. At execve the kernel folds the peak RSS of the
// address space being replaced into the new program's ru_maxrss, and Go
// starts children with vfork, so a child of bench/measure would report at
// least measure's own peak RSS. This program is kept tiny (syscall, no
// os/exec, no encoding) so that the floor it puts under its child's figure
// is under 2 MiB, below any command measured here.
//
//	launch [-nice N] command [args...]
//
// -nice runs the command at that nice value (as root, -20 lets it preempt
// most other work on a shared machine, so that wall times mean something).
package main

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	argv := os.Args[1:]
	nice := 0
	if len(argv) >= 2 && argv[0] == "-nice" {
		n, err := strconv.Atoi(argv[1])
		if err != nil {
			os.Stderr.WriteString("launch: -nice: " + err.Error() + "\n")
			return 2
		}
		nice, argv = n, argv[2:]
	}
	if len(argv) < 1 {
		os.Stderr.WriteString("usage: launch [-nice N] command [args...]\n")
		return 2
	}
	if nice != 0 {
		if err := renice(nice); err != nil {
			os.Stderr.WriteString("launch: " + err.Error() + "\n")
			return 2
		}
	}
	if len(argv[0]) > 0 && argv[0][0] != '/' {
		argv[0] = lookPath(argv[0])
	}
	t0 := time.Now()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		os.Stderr.WriteString("launch: " + argv[0] + ": " + err.Error() + "\n")
		return 2
	}
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	for {
		_, err = syscall.Wait4(pid, &ws, 0, &ru)
		if err != syscall.EINTR {
			break
		}
	}
	wall := time.Since(t0)
	if err != nil {
		os.Stderr.WriteString("launch: wait: " + err.Error() + "\n")
		return 2
	}
	cpu := ru.Utime.Nano() + ru.Stime.Nano()
	status := ws.ExitStatus()
	if ws.Signaled() {
		status = 128 + int(ws.Signal())
	}
	line := strconv.FormatInt(int64(wall), 10) + " " + strconv.FormatInt(cpu, 10) + " " +
		strconv.FormatInt(ru.Maxrss, 10) + " " + strconv.Itoa(status) + "\n"
	// Without fd 3 (the caller wants only the nice value) there is nowhere
	// to report to, which is fine.
	if _, err := os.NewFile(3, "result").WriteString(line); err != nil && !errors.Is(err, syscall.EBADF) {
		os.Stderr.WriteString("launch: write result: " + err.Error() + "\n")
		return 2
	}
	return 0
}

// renice gives the command to be forked the nice value n. With scheduler
// autogroups (the default), nice only weighs a task against others of its
// session, and CPU time is first shared fairly between sessions: so the
// launcher starts a session of its own and gives its autogroup the nice
// value too. Linux keeps the nice value per thread, and a child inherits the
// one of the thread that forked it: set it on the thread that will.
func renice(n int) error {
	runtime.LockOSThread()
	if _, err := syscall.Setsid(); err != nil {
		return errors.New("setsid: " + err.Error())
	}
	if err := os.WriteFile("/proc/self/autogroup", []byte(strconv.Itoa(n)), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.New("autogroup nice: " + err.Error())
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, n); err != nil {
		return errors.New("setpriority: " + err.Error())
	}
	return nil
}

// lookPath finds a command without a slash in $PATH.
func lookPath(name string) string {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}
