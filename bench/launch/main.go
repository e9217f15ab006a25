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
package main

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: launch command [args...]\n")
		return 2
	}
	argv := os.Args[1:]
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
	if _, err := os.NewFile(3, "result").WriteString(line); err != nil {
		os.Stderr.WriteString("launch: write result: " + err.Error() + "\n")
		return 2
	}
	return 0
}
