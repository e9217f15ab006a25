// Package systest holds the system tests of the installed product: the
// hardened unit checked by systemd-analyze (unit_test.go, part of the normal
// test run) and, behind the systest build tag, the Debian package installed
// and run under a real systemd booted as PID 1 in a throwaway sandbox
// (sandbox_test.go, run as root by "make systest").
package systest
