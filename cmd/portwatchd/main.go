// Command portwatchd watches the listening sockets of a host and its
// containers, checks them against an allowlist, and alerts on unexpected ones.

// GOMAXPROCS is set once at start, from the CPUs and the cgroup's CPU limit,
// and not checked again every second: that check (a read of the cgroup's
// cpu.max and of the affinity mask, from sysmon at each wake-up) is a
// share of an idle daemon's CPU, which only wakes every reconcile_interval,
// and a daemon this idle does not need more threads when its unit's
// CPUQuota= changes (a restart applies it).
//
//go:debug updatemaxprocs=0
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
