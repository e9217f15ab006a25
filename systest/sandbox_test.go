//go:build systest

package systest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The sandbox's fixed lifetime. systemd inside powers itself off after
// lifetime; the timeout wrapper outside kills the leader killAfter later.
// Both hold even when the test process dies.
const (
	lifetime  = 270 * time.Second
	killAfter = 30 * time.Second
)

// Paths inside the sandbox.
const (
	stageDir    = "/opt/portwatch-systest"
	listenerExe = stageDir + "/pw-listener"
	stallFile   = "/run/portwatch-stall"
	listenPort  = "4444"
	hostilePort = "4445"
)

// capsDrop is what the sandbox's PID 1, and every command the test runs in
// it, drops from its bounding set (setpriv --bounding-set syntax): the
// capabilities whose effects no namespace confines. See sandbox-init.sh.
const capsDrop = "-sys_module,-sys_time,-sys_rawio,-sys_boot,-syslog,-sys_pacct," +
	"-audit_control,-mac_admin,-mac_override,-wake_alarm,-block_suspend,-mknod"

// capsDropped are the same capabilities as bits of /proc/PID/status.
const capsDropped = 1<<16 | 1<<25 | 1<<17 | 1<<22 | 1<<34 | 1<<20 |
	1<<30 | 1<<33 | 1<<32 | 1<<35 | 1<<36 | 1<<27

// listenEnv makes the test binary a tiny TCP listener instead of a test run:
// the sandbox runs a copy of it as the unexpected listener.
const listenEnv = "PORTWATCH_SYSTEST_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(listenEnv); addr != "" {
		os.Exit(listen(addr))
	}
	os.Exit(m.Run())
}

func listen(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		c.Close()
	}
}

// TestSystem installs the package under a real systemd in a throwaway
// sandbox and runs the service as a user would.
func TestSystem(t *testing.T) {
	deb := needRootAndDeb(t)
	ctx, cancel := context.WithTimeout(context.Background(), lifetime-20*time.Second)
	defer cancel()

	start := time.Now()
	sb := startSandbox(t, ctx, "boot", deb)
	if err := sb.waitBooted(ctx); err != nil {
		t.Fatalf("boot: %v", err)
	}
	t.Logf("systemd booted in the sandbox in %s", time.Since(start).Round(time.Millisecond))

	steps := []struct {
		name string
		run  func(t *testing.T, ctx context.Context, sb *sandbox)
	}{
		{"0_host_kernel_guarded", stepHostKernelGuarded},
		{"1_install", stepInstall},
		{"2_active", stepActive},
		{"3_alert", stepAlert},
		{"4_catalog", stepCatalog},
		{"8_hardening_held", stepHardeningHeld},
		{"upgrade", stepUpgrade},
		{"5_reload", stepReload},
		{"6_watchdog", stepWatchdog},
		{"7_stop_purge", stepStopPurge},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, ctx, sb) }) {
			// Later steps build on earlier ones.
			t.Logf("journal of portwatchd.service:\n%s", sb.outQuiet(ctx, "journalctl", "--no-pager", "-u", "portwatchd", "-n", "80"))
			break
		}
	}
	t.Logf("system test steps took %s", time.Since(start).Round(time.Millisecond))
}

// TestInstallWithoutSystemd installs and purges the package in a sandbox
// where systemd is not running, as in a chroot or an image build.
func TestInstallWithoutSystemd(t *testing.T) {
	deb := needRootAndDeb(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb := startSandbox(t, ctx, "nosystemd", deb)
	if err := sb.wait(ctx); err != nil {
		t.Errorf("sandbox: %v", err)
	}
	out := sb.output()
	if !strings.Contains(out, "NOSYSTEMD-OK") {
		t.Errorf("install and purge without systemd failed:\n%s", out)
	}
}

// stepHostKernelGuarded checks, on the booted sandbox, what keeps it off
// the host's kernel: /proc/sys is read-only, the units that act on kernel
// state did not run, PID 1 lacks the dropped capabilities, and the host's
// binfmt_misc entries and sysctls are still what they were before the
// start (teardown checks them again after the poweroff).
func stepHostKernelGuarded(t *testing.T, ctx context.Context, sb *sandbox) {
	// Writing back the value just read changes nothing if the write
	// wrongly succeeds.
	for _, f := range []string{"/proc/sys/fs/protected_regular", "/proc/sys/kernel/pid_max", "/proc/sys/net/ipv4/ping_group_range"} {
		out, err := sb.run(ctx, "sh", "-c", `v=$(cat "$1") && printf '%s\n' "$v" > "$1"`, "sh", f)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("writing %s in the sandbox: %v %q, want a read-only file system", f, err, out)
		}
	}
	mi, err := sb.run(ctx, "cat", "/proc/1/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mounts := parseMountinfo(mi)
	if o := mounts["/proc/sys"]; !strings.HasPrefix(o, "ro,") {
		t.Errorf("/proc/sys in the sandbox has options %q, want ro", o)
	}
	for _, p := range []string{"/proc/sys/fs/binfmt_misc", "/sys/kernel/debug", "/sys/kernel/tracing", "/sys/kernel/config"} {
		if o, ok := mounts[p]; ok {
			t.Errorf("%s is mounted in the sandbox (%s)", p, o)
		}
	}
	for _, u := range []string{
		"systemd-sysctl.service", "systemd-binfmt.service", "systemd-modules-load.service",
		"proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
		"kmod-static-nodes.service", "systemd-random-seed.service",
	} {
		p := sb.showUnit(ctx, u, "LoadState", "ActiveState")
		if p["LoadState"] != "masked" || p["ActiveState"] != "inactive" {
			t.Errorf("%s: LoadState=%s ActiveState=%s, want masked and inactive", u, p["LoadState"], p["ActiveState"])
		}
	}
	for _, pid := range []string{"1", "self"} {
		status, err := sb.run(ctx, "cat", "/proc/"+pid+"/status")
		if err != nil {
			t.Fatal(err)
		}
		bnd, err := strconv.ParseUint(procStatus(status)["CapBnd"], 16, 64)
		if err != nil || bnd&capsDropped != 0 {
			t.Errorf("CapBnd of %s in the sandbox is %016x (%v), want none of %016x", pid, bnd, err, uint64(capsDropped))
		}
	}
	if diff := cmp.Diff(sb.kernelAt, hostKernelState(t)); diff != "" {
		t.Errorf("host kernel state changed while the sandbox runs (-before +now):\n%s", diff)
	}
}

func stepInstall(t *testing.T, ctx context.Context, sb *sandbox) {
	out, err := sb.run(ctx, "dpkg", "-i", stageDir+"/portwatchd.deb")
	if err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	t.Logf("dpkg -i:\n%s", out)
	for _, p := range []string{
		"/usr/sbin/portwatchd",
		"/usr/lib/systemd/system/portwatchd.service",
		"/usr/lib/systemd/catalog/portwatchd.catalog",
		"/etc/portwatch.yaml",
		"/etc/portwatch.d",
		"/usr/share/man/man8/portwatchd.8.gz",
		"/usr/share/man/man5/portwatch.yaml.5.gz",
		"/usr/share/doc/portwatchd/copyright",
		"/etc/systemd/system/multi-user.target.wants/portwatchd.service",
	} {
		if _, err := sb.run(ctx, "test", "-e", p); err != nil {
			t.Errorf("%s not installed", p)
		}
	}
	out, _ = sb.run(ctx, "dpkg-query", "-W", "-f", "${Conffiles}", "portwatchd")
	if !strings.Contains(out, "/etc/portwatch.yaml") {
		t.Errorf("/etc/portwatch.yaml is not a conffile: %q", out)
	}
	// The installed unit, with its real paths and man pages, verifies. (The
	// man page check needs man-db.)
	man := "--man=yes"
	if _, err := sb.run(ctx, "test", "-x", "/usr/bin/man"); err != nil {
		man = "--man=no"
	}
	out, err = sb.run(ctx, "systemd-analyze", "verify", man, "/usr/lib/systemd/system/portwatchd.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify on the installed unit: %v\n%s", err, out)
	}
}

func stepActive(t *testing.T, ctx context.Context, sb *sandbox) {
	// Type=notify: "active" is only reached after READY=1.
	err := poll(ctx, 60*time.Second, func() error {
		p := sb.show(ctx, "ActiveState", "SubState")
		if p["ActiveState"] != "active" {
			return fmt.Errorf("ActiveState=%s SubState=%s", p["ActiveState"], p["SubState"])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("portwatchd never became active: %v\n%s", err, sb.outQuiet(ctx, "systemctl", "status", "--no-pager", "-l", "portwatchd"))
	}
	out, err := sb.run(ctx, "systemctl", "is-active", "portwatchd")
	if err != nil || strings.TrimSpace(out) != "active" {
		t.Fatalf("systemctl is-active portwatchd = %q, %v", out, err)
	}
	p := sb.show(ctx, "Type", "StatusText", "MainPID", "WatchdogUSec")
	if p["Type"] != "notify" {
		t.Errorf("Type=%s, want notify", p["Type"])
	}
	if p["StatusText"] == "" {
		t.Errorf("no STATUS= text after READY")
	}
	// The hardened unit grants what the kernel programs need.
	if !strings.HasSuffix(p["StatusText"], "; ebpf: active") {
		t.Errorf("STATUS=%q, want the kernel programs active (; ebpf: active)", p["StatusText"])
	}
	t.Logf("READY: MainPID=%s Status=%q Watchdog=%s", p["MainPID"], p["StatusText"], p["WatchdogUSec"])
}

func stepAlert(t *testing.T, ctx context.Context, sb *sandbox) {
	// A listener run by another user than the daemon's, in its own unit.
	out, err := sb.run(ctx, "systemd-run", "--unit=pw-listener", "--uid=nobody",
		"--setenv="+listenEnv+"=0.0.0.0:"+listenPort, listenerExe)
	if err != nil {
		t.Fatalf("systemd-run listener: %v\n%s", err, out)
	}
	var entries []map[string]string
	err = poll(ctx, 60*time.Second, func() error {
		entries = sb.journal(ctx, "-u", "portwatchd", "PORTWATCH_PORT="+listenPort)
		if len(entries) == 0 {
			return errors.New("no journal entry for the listener under -u portwatchd")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nlistener: %s", err, sb.outQuiet(ctx, "systemctl", "status", "--no-pager", "pw-listener"))
	}
	e := entries[0]
	t.Logf("alert: %s", e["MESSAGE"])
	want := map[string]string{
		"SYSLOG_IDENTIFIER":  "portwatchd",
		"PORTWATCH_EVENT":    "opened",
		"PORTWATCH_VERDICT":  "unexpected",
		"PORTWATCH_PROTOCOL": "tcp",
		"PORTWATCH_PORT":     listenPort,
		"_SYSTEMD_UNIT":      "portwatchd.service",
	}
	checkFields(t, e, want)
	if e["MESSAGE_ID"] == "" {
		t.Errorf("alert has no MESSAGE_ID")
	}
	// The query the README gives users.
	byTag := sb.journal(ctx, "-t", "portwatchd", "PORTWATCH_VERDICT=unexpected")
	found := false
	for _, e := range byTag {
		found = found || e["PORTWATCH_PORT"] == listenPort
	}
	if !found {
		t.Errorf("journalctl -t portwatchd PORTWATCH_VERDICT=unexpected does not show port %s (%d entries)", listenPort, len(byTag))
	}
}

func stepCatalog(t *testing.T, ctx context.Context, sb *sandbox) {
	catalog := readCatalog(t)
	entries := sb.journal(ctx, "-t", "portwatchd", "PORTWATCH_VERDICT=unexpected", "PORTWATCH_PORT="+listenPort)
	if len(entries) == 0 {
		t.Fatal("no alert entry")
	}
	id := entries[0]["MESSAGE_ID"]
	tmpl, ok := catalog[id]
	if !ok {
		t.Fatalf("MESSAGE_ID %s of the alert is not in packaging/systemd/portwatchd.catalog", id)
	}
	// journalctl -x fills @FIELD@ from the entry (or leaves the name).
	subject := catalogVarRE.ReplaceAllStringFunc(tmpl, func(v string) string {
		name := strings.Trim(v, "@")
		if val, ok := entries[0][name]; ok {
			return val
		}
		return name
	})
	out, err := sb.run(ctx, "journalctl", "--no-pager", "-x", "-t", "portwatchd", "MESSAGE_ID="+id)
	if err != nil {
		t.Fatalf("journalctl -x: %v\n%s", err, out)
	}
	if !strings.Contains(out, subject) {
		t.Errorf("journalctl -x does not show the catalog subject %q:\n%s", subject, out)
	}

	// A listener whose executable path and name carry terminal escapes:
	// journalctl -x explains its alert without passing one through (the
	// catalog substitutes no such field; the message line is escaped).
	hostile := "/usr/local/bin/pw-\x1b]0;pwned\x07-\x1b[2J"
	if out, err := sb.run(ctx, "cp", listenerExe, hostile); err != nil {
		t.Fatalf("copy the listener: %v\n%s", err, out)
	}
	out, err = sb.run(ctx, "systemd-run", "--unit=pw-hostile", "--uid=nobody",
		"--setenv="+listenEnv+"=0.0.0.0:"+hostilePort, "/bin/sh", "-c", `exec "$0"`, hostile)
	if err != nil {
		t.Fatalf("systemd-run hostile listener: %v\n%s", err, out)
	}
	defer sb.run(ctx, "systemctl", "stop", "pw-hostile")
	// The message line and PORTWATCH_EXE have the path escaped (control
	// characters as Go escapes); PORTWATCH_EXE_RAW keeps its bytes, which
	// journalctl -o json gives as an array of numbers, being unprintable.
	const escapedExe = `/usr/local/bin/pw-\x1b]0;pwned\a-\x1b[2J`
	err = poll(ctx, 60*time.Second, func() error {
		for _, e := range sb.journal(ctx, "-t", "portwatchd", "MESSAGE_ID="+id, "PORTWATCH_PORT="+hostilePort) {
			if strings.Contains(e["MESSAGE"], escapedExe) && e["PORTWATCH_EXE"] == escapedExe {
				return nil
			}
		}
		return errors.New("no alert with the hostile executable escaped in MESSAGE and PORTWATCH_EXE")
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, sb.outQuiet(ctx, "systemctl", "status", "--no-pager", "pw-hostile"))
	}
	out, err = sb.run(ctx, "journalctl", "--no-pager", "-x", "-t", "portwatchd", "MESSAGE_ID="+id, "PORTWATCH_PORT="+hostilePort)
	if err != nil {
		t.Fatalf("journalctl -x: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Listening socket opened: tcp") || !strings.Contains(out, ":"+hostilePort+" (unexpected)") {
		t.Errorf("journalctl -x does not explain the hostile listener's alert:\n%q", out)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("journalctl -x passes terminal control characters through:\n%q", out)
	}
}

func stepHardeningHeld(t *testing.T, ctx context.Context, sb *sandbox) {
	daemonPID := sb.show(ctx, "MainPID")["MainPID"]
	lpid := sb.showUnit(ctx, "pw-listener", "MainPID")["MainPID"]
	entries := sb.journal(ctx, "-t", "portwatchd", "PORTWATCH_VERDICT=unexpected", "PORTWATCH_PORT="+listenPort)
	if len(entries) == 0 {
		t.Fatal("no alert entry")
	}
	e := entries[0]
	// Under every sandboxing option of the unit, the daemon still resolved
	// another user's process: its executable, user, pid and unit.
	want := map[string]string{
		"PORTWATCH_EXE":  listenerExe,
		"PORTWATCH_USER": "nobody",
		"PORTWATCH_PID":  lpid,
		"PORTWATCH_UNIT": "pw-listener.service",
	}
	checkFields(t, e, want)
	// And it really ran confined: not root, only the capabilities the unit
	// grants, no new privileges, a seccomp filter.
	status, err := sb.run(ctx, "cat", "/proc/"+daemonPID+"/status")
	if err != nil {
		t.Fatalf("daemon status: %v", err)
	}
	const caps = 1<<2 | 1<<19 | // CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE: attribution
		1<<12 | 1<<38 | 1<<39 // CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF: the eBPF programs
	fields := procStatus(status)
	if uid := strings.Fields(fields["Uid"]); len(uid) == 0 || uid[0] == "0" {
		t.Errorf("daemon runs as uid %q, want a dynamic user", fields["Uid"])
	}
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
		v, err := strconv.ParseUint(fields[k], 16, 64)
		if err != nil || v != caps {
			t.Errorf("%s=%s, want %016x", k, fields[k], caps)
		}
	}
	if fields["NoNewPrivs"] != "1" || fields["Seccomp"] != "2" {
		t.Errorf("NoNewPrivs=%s Seccomp=%s, want 1 and 2", fields["NoNewPrivs"], fields["Seccomp"])
	}
	// The file system view systemd built for it: read-only root, hidepid
	// /proc, a writable state directory, home and tmp hidden.
	mi, err := sb.run(ctx, "cat", "/proc/"+daemonPID+"/mountinfo")
	if err != nil {
		t.Fatalf("daemon mountinfo: %v", err)
	}
	mounts := parseMountinfo(mi)
	for _, c := range []struct{ point, want string }{
		{"/", "ro"},
		{"/proc", "hidepid=ptraceable"},
		{"/var/lib/private/portwatch", "rw"},
	} {
		if !strings.Contains(","+mounts[c.point]+",", ","+c.want+",") {
			t.Errorf("daemon's %s mount has options %q, want %s", c.point, mounts[c.point], c.want)
		}
	}
	// ProtectHome=yes and PrivateTmp=yes put mounts over these.
	for _, p := range []string{"/home", "/root", "/tmp", "/var/tmp"} {
		if _, ok := mounts[p]; !ok {
			t.Errorf("no mount over %s in the daemon's mount namespace", p)
		}
	}
	out, _ := sb.run(ctx, "systemd-analyze", "security", "--no-pager", "portwatchd.service")
	if m := exposureRE.FindStringSubmatch(out); m != nil {
		t.Logf("systemd-analyze security on the running unit: %s", m[1])
	}
}

// stepUpgrade reinstalls the package over itself, as an upgrade does: the
// postinst try-restarts the running service, which keeps its state and so
// does not alert again about the listener it already reported.
func stepUpgrade(t *testing.T, ctx context.Context, sb *sandbox) {
	pid := sb.show(ctx, "MainPID")["MainPID"]
	alerts := len(sb.journal(ctx, "-t", "portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_PORT="+listenPort))
	if out, err := sb.run(ctx, "dpkg", "-i", stageDir+"/portwatchd.deb"); err != nil {
		t.Fatalf("dpkg -i over the installed package: %v\n%s", err, out)
	}
	p := sb.show(ctx, "MainPID", "ActiveState")
	if p["ActiveState"] != "active" || p["MainPID"] == pid {
		t.Errorf("after the upgrade: ActiveState=%s MainPID=%s (was %s), want active and restarted", p["ActiveState"], p["MainPID"], pid)
	}
	// The restarted daemon has evaluated its first snapshot (it is active);
	// give it a few more ticks to show a duplicate, if it would.
	time.Sleep(3 * time.Second)
	if n := len(sb.journal(ctx, "-t", "portwatchd", "PORTWATCH_EVENT=opened", "PORTWATCH_PORT="+listenPort)); n != alerts {
		t.Errorf("%d opened alerts for port %s after the upgrade, want still %d", n, listenPort, alerts)
	}
}

func stepReload(t *testing.T, ctx context.Context, sb *sandbox) {
	pid := sb.show(ctx, "MainPID")["MainPID"]
	original, err := sb.run(ctx, "cat", "/etc/portwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	valid := `version: 1
allow:
  - name: systest-listener
    protocol: tcp
    port: ` + listenPort + `
    exe: ` + listenerExe + `
    reason: the system test's own listener
`
	sb.writeFile(t, ctx, "/etc/portwatch.yaml", valid)
	if out, err := sb.run(ctx, "systemctl", "reload", "portwatchd"); err != nil {
		t.Fatalf("reload with a valid config: %v\n%s", err, out)
	}
	if got := sb.show(ctx, "MainPID")["MainPID"]; got != pid {
		t.Errorf("MainPID %s after a good reload, want %s", got, pid)
	}

	invalid := "version: 1\nallow:\n  - name: broken\n    prot: tcp\n"
	sb.writeFile(t, ctx, "/etc/portwatch.yaml", invalid)
	out, err := sb.run(ctx, "systemctl", "reload", "portwatchd")
	if err == nil {
		t.Errorf("reload with an invalid config succeeded:\n%s", out)
	}
	p := sb.show(ctx, "MainPID", "ActiveState")
	if p["MainPID"] != pid || p["ActiveState"] != "active" {
		t.Errorf("after a failed reload: MainPID=%s ActiveState=%s, want %s active", p["MainPID"], p["ActiveState"], pid)
	}
	// The error is in the status: the validate output in its log lines, and
	// the daemon's own STATUS= from its file watch.
	err = poll(ctx, 20*time.Second, func() error {
		st := sb.outQuiet(ctx, "systemctl", "status", "--no-pager", "-l", "-n", "30", "portwatchd")
		for _, want := range []string{`"prot"`, "/etc/portwatch.yaml:4", "reload failed"} {
			if !strings.Contains(st, want) {
				return fmt.Errorf("systemctl status lacks %q:\n%s", want, st)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	sb.writeFile(t, ctx, "/etc/portwatch.yaml", original)
	if out, err := sb.run(ctx, "systemctl", "reload", "portwatchd"); err != nil {
		t.Fatalf("reload with the original config: %v\n%s", err, out)
	}
	if got := sb.show(ctx, "MainPID")["MainPID"]; got != pid {
		t.Errorf("MainPID %s at the end, want %s", got, pid)
	}
}

func stepWatchdog(t *testing.T, ctx context.Context, sb *sandbox) {
	dropin := "[Service]\nEnvironment=PORTWATCHD_TEST_STALL_FILE=" + stallFile + "\nWatchdogSec=5s\n"
	if _, err := sb.run(ctx, "mkdir", "-p", "/run/systemd/system/portwatchd.service.d"); err != nil {
		t.Fatal(err)
	}
	sb.writeFile(t, ctx, "/run/systemd/system/portwatchd.service.d/systest-watchdog.conf", dropin)
	for _, args := range [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "restart", "portwatchd"}} {
		if out, err := sb.run(ctx, args...); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	before := sb.show(ctx, "MainPID", "NRestarts", "WatchdogUSec")
	if before["WatchdogUSec"] != "5s" {
		t.Fatalf("WatchdogUSec=%s, want the drop-in's 5s", before["WatchdogUSec"])
	}
	if _, err := sb.run(ctx, "touch", stallFile); err != nil {
		t.Fatal(err)
	}
	// Remove the stall file as soon as systemd acts, so the restarted
	// daemon runs normally.
	err := poll(ctx, 60*time.Second, func() error {
		p := sb.show(ctx, "MainPID", "ActiveState")
		if p["MainPID"] == before["MainPID"] && p["ActiveState"] == "active" {
			return errors.New("still running the stalled process")
		}
		return nil
	})
	sb.run(ctx, "rm", "-f", stallFile)
	if err != nil {
		t.Fatalf("no watchdog action on a stalled loop: %v", err)
	}
	var after map[string]string
	err = poll(ctx, 60*time.Second, func() error {
		after = sb.show(ctx, "MainPID", "NRestarts", "ActiveState")
		if after["ActiveState"] != "active" || after["MainPID"] == before["MainPID"] || after["MainPID"] == "0" {
			return fmt.Errorf("not restarted: %v", after)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nb, _ := strconv.Atoi(before["NRestarts"])
	na, _ := strconv.Atoi(after["NRestarts"])
	if na <= nb {
		t.Errorf("NRestarts %d -> %d, want an increase", nb, na)
	}
	log := sb.outQuiet(ctx, "journalctl", "--no-pager", "-u", "portwatchd")
	if !strings.Contains(log, "Watchdog timeout") {
		t.Errorf("journal has no watchdog timeout for portwatchd")
	}
	t.Logf("watchdog restart: MainPID %s -> %s, NRestarts %d -> %d", before["MainPID"], after["MainPID"], nb, na)
	sb.run(ctx, "rm", "-rf", "/run/systemd/system/portwatchd.service.d")
	sb.run(ctx, "systemctl", "daemon-reload")
}

func stepStopPurge(t *testing.T, ctx context.Context, sb *sandbox) {
	start := time.Now()
	if out, err := sb.run(ctx, "systemctl", "stop", "portwatchd"); err != nil {
		t.Fatalf("systemctl stop: %v\n%s", err, out)
	}
	t.Logf("systemctl stop took %s", time.Since(start).Round(time.Millisecond))
	p := sb.show(ctx, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
	// ExecMainCode 1 is CLD_EXITED: it exited by itself on SIGTERM.
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainStatus"] != "0" || p["ExecMainCode"] != "1" {
		t.Errorf("after stop: %v, want inactive, success, exit status 0", p)
	}
	// Running again, so that the purge must stop it (prerm).
	if out, err := sb.run(ctx, "systemctl", "start", "portwatchd"); err != nil {
		t.Fatalf("systemctl start: %v\n%s", err, out)
	}
	start = time.Now()
	out, err := sb.run(ctx, "dpkg", "--purge", "portwatchd")
	if err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	t.Logf("dpkg --purge took %s", time.Since(start).Round(time.Millisecond))
	for _, path := range []string{
		"/usr/sbin/portwatchd", "/usr/lib/systemd/system/portwatchd.service", "/etc/portwatch.yaml",
		"/var/lib/portwatch", "/var/lib/private/portwatch",
		"/etc/systemd/system/multi-user.target.wants/portwatchd.service",
	} {
		if _, err := sb.run(ctx, "test", "-e", path, "-o", "-L", path); err == nil {
			t.Errorf("%s still exists after purge", path)
		}
	}
	if out, _ := sb.run(ctx, "systemctl", "is-active", "portwatchd"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("systemctl is-active portwatchd after purge: %q, want inactive", out)
	}
	if out, err := sb.run(ctx, "pgrep", "-x", "portwatchd"); err == nil {
		t.Errorf("a portwatchd process survived the purge: %s", out)
	}
}

// sandbox is a throwaway systemd, or a plain shell, in its own namespaces.
type sandbox struct {
	t        *testing.T
	dir      string // host dir holding the stage and the mount point
	stage    string
	cgroup   string // the cgroup v2 directory made for the sandbox
	cmd      *exec.Cmd
	done     chan error
	out      *bytes.Buffer
	leader   int    // host PID of the sandbox's PID 1
	pidNS    string // its namespaces, to find leftovers
	mntNS    string
	mountsAt []string          // host mount points before the start
	kernelAt map[string]string // host kernel state before the start
}

func needRootAndDeb(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the system test boots systemd in namespaces: run as root (make systest)")
	}
	deb := os.Getenv("PORTWATCH_SYSTEST_DEB")
	if deb == "" {
		t.Skip("PORTWATCH_SYSTEST_DEB is not set: run through make systest, which builds the .deb")
	}
	for _, tool := range []string{"unshare", "nsenter", "timeout", "/lib/systemd/systemd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	return deb
}

// checkFields reports, in key order, each field of the journal entry e
// that is not as want says.
func checkFields(t *testing.T, e, want map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if e[k] != want[k] {
			t.Errorf("%s=%q, want %q", k, e[k], want[k])
		}
	}
}

// readCatalog maps each MESSAGE_ID in the shipped catalog to its Subject.
func readCatalog(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	var id string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if rest, ok := strings.CutPrefix(line, "-- "); ok {
			id = strings.Fields(rest)[0]
		} else if subj, ok := strings.CutPrefix(line, "Subject: "); ok && id != "" {
			m[id] = subj
		}
	}
	if len(m) == 0 {
		t.Fatal("no entries in packaging/systemd/portwatchd.catalog")
	}
	return m
}

func startSandbox(t *testing.T, ctx context.Context, mode, deb string) *sandbox {
	t.Helper()
	sb := &sandbox{t: t, dir: t.TempDir(), done: make(chan error, 1), out: new(bytes.Buffer)}
	sb.stage = filepath.Join(sb.dir, "stage")
	mnt := filepath.Join(sb.dir, "mnt")
	for _, d := range []string{sb.stage, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(sb.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, deb, filepath.Join(sb.stage, "portwatchd.deb"), 0o644)
	copyFile(t, self, filepath.Join(sb.stage, "pw-listener"), 0o755)
	if err := os.WriteFile(filepath.Join(sb.stage, "console.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	initScript, err := filepath.Abs("sandbox-init.sh")
	if err != nil {
		t.Fatal(err)
	}
	sb.mountsAt = hostMountPoints(t)
	sb.kernelAt = hostKernelState(t)

	// A cgroup of its own, so that the cgroup namespace's root is a
	// directory the test can remove afterwards.
	sb.cgroup = filepath.Join(cgroup2Dir(t), fmt.Sprintf("portwatch-systest-%d-%s", os.Getpid(), mode))
	if err := os.Mkdir(sb.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}

	// sh moves itself into the cgroup, then execs timeout (same PID), which
	// runs unshare; unshare forks the leader into the new namespaces and
	// SIGKILLs it (--kill-child) if unshare itself dies. timeout ends it all
	// after the lifetime even if this test has died.
	script := `echo $$ > "$1/cgroup.procs" && shift && exec "$@"`
	args := []string{"-c", script, "sh", sb.cgroup,
		"timeout", "--signal=KILL", strconv.Itoa(int((lifetime + killAfter).Seconds())),
		"unshare", "--mount", "--pid", "--uts", "--ipc", "--net", "--cgroup", "--fork", "--kill-child=SIGKILL",
		"--", "/bin/sh", initScript, mode, mnt, sb.stage, strconv.Itoa(int(lifetime.Seconds())), capsDrop,
	}
	sb.cmd = exec.Command("/bin/sh", args...)
	sb.cmd.Stdout, sb.cmd.Stderr = sb.out, sb.out
	sb.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	// Its own session: a ^C to the test must not skip the teardown order.
	sb.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sb.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sb.done <- sb.cmd.Wait() }()
	t.Cleanup(sb.teardown)

	// The leader is the child of unshare, the child of timeout.
	err = poll(ctx, 30*time.Second, func() error {
		u := childOf(sb.cmd.Process.Pid)
		if u == 0 {
			return errors.New("no unshare process yet")
		}
		if sb.leader = childOf(u); sb.leader == 0 {
			return errors.New("no leader yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sandbox leader: %v\n%s", err, sb.out)
	}
	sb.pidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", sb.leader))
	sb.mntNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", sb.leader))
	if self, _ := os.Readlink("/proc/self/ns/pid"); self == sb.pidNS {
		t.Fatalf("leader %d is not in a new PID namespace", sb.leader)
	}
	t.Logf("sandbox %s: leader PID %d, %s, %s", mode, sb.leader, sb.pidNS, sb.mntNS)
	return sb
}

// waitBooted waits until systemd in the sandbox has finished starting up.
func (sb *sandbox) waitBooted(ctx context.Context) error {
	var state string
	err := poll(ctx, 120*time.Second, func() error {
		select {
		case err := <-sb.done:
			sb.done <- err
			return fmt.Errorf("sandbox exited: %v\n%s", err, sb.output())
		default:
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", sb.leader))
		if !strings.HasSuffix(exe, "/systemd") {
			return fmt.Errorf("leader is %q, not systemd yet", exe)
		}
		out, _ := sb.run(ctx, "systemctl", "is-system-running")
		state = strings.TrimSpace(out)
		switch state {
		case "running":
			return nil
		case "degraded":
			sb.t.Logf("sandbox boot degraded:\n%s", sb.outQuiet(ctx, "systemctl", "--failed", "--no-pager"))
			return nil
		}
		return fmt.Errorf("system state %q", state)
	})
	if err != nil {
		return fmt.Errorf("%w\nconsole:\n%s", err, sb.console())
	}
	return nil
}

// wait waits for a sandbox that ends by itself (mode nosystemd).
func (sb *sandbox) wait(ctx context.Context) error {
	select {
	case err := <-sb.done:
		sb.done <- err
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (sb *sandbox) output() string {
	return sb.out.String()
}

func (sb *sandbox) console() string {
	b, _ := os.ReadFile(filepath.Join(sb.stage, "console.log"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// run runs a command inside the sandbox's namespaces and root, and returns
// its combined output.
func (sb *sandbox) run(ctx context.Context, args ...string) (string, error) {
	return sb.runIn(ctx, nil, args...)
}

func (sb *sandbox) runIn(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The same bounding set as the sandbox's PID 1: dpkg's maintainer
	// scripts run from here.
	ns := []string{"-t", strconv.Itoa(sb.leader), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
		"setpriv", "--bounding-set", capsDrop}
	cmd := exec.CommandContext(ctx, "nsenter", append(ns, args...)...)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive",
	}
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// outQuiet is run for diagnostics: the output, or the error.
func (sb *sandbox) outQuiet(ctx context.Context, args ...string) string {
	out, err := sb.run(ctx, args...)
	if err != nil {
		out += fmt.Sprintf("(%s: %v)", strings.Join(args, " "), err)
	}
	return out
}

// writeFile replaces path in the sandbox atomically, owned by root, 0644.
func (sb *sandbox) writeFile(t *testing.T, ctx context.Context, path, content string) {
	t.Helper()
	script := `set -e; tmp="$1.systest-tmp"; cat > "$tmp"; chmod 0644 "$tmp"; mv -f "$tmp" "$1"`
	if out, err := sb.runIn(ctx, strings.NewReader(content), "sh", "-c", script, "sh", path); err != nil {
		t.Fatalf("write %s: %v\n%s", path, err, out)
	}
}

func (sb *sandbox) show(ctx context.Context, props ...string) map[string]string {
	return sb.showUnit(ctx, "portwatchd", props...)
}

func (sb *sandbox) showUnit(ctx context.Context, unit string, props ...string) map[string]string {
	out, _ := sb.run(ctx, "systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// journal returns the entries journalctl -o json selects with args.
func (sb *sandbox) journal(ctx context.Context, args ...string) []map[string]string {
	out, _ := sb.run(ctx, append([]string{"journalctl", "--no-pager", "-o", "json"}, args...)...)
	var entries []map[string]string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var raw map[string]any
		if json.Unmarshal([]byte(line), &raw) != nil {
			continue
		}
		e := map[string]string{}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				e[k] = s
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// teardown stops the sandbox and checks that nothing is left behind.
func (sb *sandbox) teardown() {
	t := sb.t
	if t.Failed() {
		t.Logf("sandbox output:\n%s\nconsole (tail):\n%s", sb.output(), sb.console())
	}
	if sb.leader != 0 && alive(sb.leader) {
		// Ask systemd to power off; then, bounded, kill the leader by
		// PID, which ends every process in its PID namespace.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sb.run(ctx, "systemctl", "--no-block", "poweroff")
		cancel()
		deadline := time.Now().Add(20 * time.Second)
		for alive(sb.leader) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if alive(sb.leader) {
			t.Logf("sandbox leader %d did not power off in time: SIGKILL", sb.leader)
			syscall.Kill(sb.leader, syscall.SIGKILL)
		}
	}
	select {
	case <-sb.done:
	case <-time.After(30 * time.Second):
		t.Errorf("sandbox wrapper %d did not exit", sb.cmd.Process.Pid)
		return
	}

	// Nothing left: no process in the sandbox's namespaces, no mount on
	// the host, no cgroup.
	deadline := time.Now().Add(10 * time.Second)
	var left []string
	for {
		left = processesIn(sb.pidNS, sb.mntNS)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("processes left in the sandbox's namespaces: %v", left)
	}
	before := map[string]bool{}
	for _, m := range sb.mountsAt {
		before[m] = true
	}
	for _, m := range hostMountPoints(t) {
		if !before[m] && (strings.HasPrefix(m, sb.dir) || strings.Contains(m, "portwatch-systest")) {
			t.Errorf("mount left on the host: %s", m)
		}
	}
	// The host's kernel is as it was: binfmt_misc entries (systemd-binfmt's
	// ExecStop= would have unregistered them all) and the sysctls that
	// systemd-sysctl or PID 1 would set.
	if diff := cmp.Diff(sb.kernelAt, hostKernelState(t)); diff != "" {
		t.Errorf("host kernel state changed by the sandbox (-before +after):\n%s", diff)
	}
	// systemd leaves its (empty) sub-cgroups: remove them deepest first.
	var dirs []string
	filepath.WalkDir(sb.cgroup, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	}
	if _, err := os.Stat(sb.cgroup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s left behind", sb.cgroup)
	}
	t.Logf("teardown: leader %d gone, no processes, mounts or cgroups left; %d host sysctls and binfmt_misc unchanged", sb.leader, len(sb.kernelAt))
}

// hostSysctls are host-global kernel settings that a systemd booted as
// PID 1 would write: PID 1 bumps fs.file-max and fs.nr_open and turns off
// core dumps; systemd-sysctl applies the sysctl.d files, whose keys are
// added below. (kernel.pid_max is per PID namespace since Linux 6.14 and
// net.* per network namespace; they are checked all the same, for older
// kernels and in case the sandbox reaches the host's.)
var hostSysctls = []string{
	"fs.protected_regular", "fs.protected_fifos", "fs.protected_hardlinks", "fs.protected_symlinks",
	"fs.file-max", "fs.nr_open", "fs.suid_dumpable", "fs.inotify.max_user_instances",
	"kernel.pid_max", "kernel.core_pattern", "kernel.core_uses_pid", "kernel.sysrq",
	"kernel.kptr_restrict", "kernel.dmesg_restrict", "kernel.printk", "kernel.hostname",
	"net.ipv4.ping_group_range", "net.core.default_qdisc",
	"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter",
	"net.ipv4.conf.all.promote_secondaries", "net.ipv4.conf.default.promote_secondaries",
}

// hostKernelState reads the host's sysctls (hostSysctls and every plain key
// of the sysctl.d files) and its binfmt_misc entries, each to its value.
func hostKernelState(t *testing.T) map[string]string {
	t.Helper()
	keys := append([]string(nil), hostSysctls...)
	for _, dir := range []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.conf"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				k, _, ok := strings.Cut(line, "=")
				k = strings.TrimPrefix(strings.TrimSpace(k), "-")
				if ok && k != "" && !strings.ContainsAny(k, "#;*") {
					keys = append(keys, k)
				}
			}
		}
	}
	m := map[string]string{}
	for _, k := range keys {
		b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
		if err != nil {
			continue // not on this kernel
		}
		m["sysctl "+k] = strings.TrimSpace(string(b))
	}
	// The host may have no binfmt_misc mounted: read the (global) entries
	// through a mount in a private mount namespace of their own.
	script := `d=/proc/sys/fs/binfmt_misc
mountpoint -q $d || mount -t binfmt_misc binfmt_misc $d || exit 0
for f in $d/*; do
	[ "$f" = $d/register ] && continue
	printf '== %s\n' "${f#$d/}"
	cat "$f"
done`
	out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("read the host's binfmt_misc entries: %v\n%s", err, out)
	}
	m["binfmt_misc"] = string(out)
	return m
}

func alive(pid int) bool {
	// A zombie is gone for our purpose; its parent (unshare) reaps it.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// childOf returns a child process of pid, or 0.
func childOf(pid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		if procStatus(string(b))["PPid"] == strconv.Itoa(pid) {
			return child
		}
	}
	return 0
}

// processesIn lists host processes in either namespace.
func processesIn(pidNS, mntNS string) []string {
	var left []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid")
		m, _ := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if (pidNS != "" && p == pidNS) || (mntNS != "" && m == mntNS) {
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			left = append(left, e.Name()+" "+strings.TrimSpace(string(comm)))
		}
	}
	return left
}

// parseMountinfo maps each mount point to its mount and super options (the
// last mount on a point wins, as it is the visible one).
func parseMountinfo(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && len(f) > i+3 {
				m[f[4]] = f[5] + "," + f[i+3]
			}
		}
	}
	return m
}

func procStatus(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// hostMountPoints lists the mount points of the test's mount namespace.
func hostMountPoints(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			points = append(points, f[4])
		}
	}
	return points
}

// cgroup2Dir is the test process's own cgroup in the cgroup v2 hierarchy:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one.
func cgroup2Dir(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	mountPoint := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && i+1 < len(f) && f[i+1] == "cgroup2" {
				mountPoint = f[4]
			}
		}
	}
	if mountPoint == "" {
		t.Fatal("no cgroup2 file system mounted: systemd in the sandbox needs one")
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(own), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mountPoint, p)
		}
	}
	return mountPoint
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// poll calls f until it returns nil, for at most limit.
func poll(ctx context.Context, limit time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", limit, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
