package notify

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// hostile is a hostile process name: a newline, a Slack broadcast
// mention and an escape sequence that clears a terminal.
const hostile = "x\n<!channel>\x1b[2J"

var testTime = time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC)

func unexpected(port uint16, comm string) policy.Decision {
	return policy.Decision{
		Listener: watcher.Listener{
			Protocol: watcher.TCP, Family: watcher.IPv4,
			Address: netip.MustParseAddr("0.0.0.0"), Port: port,
			Netns: watcher.HostNetns, NetnsInode: 4026531840, Inode: 123456, UID: 65534,
			Processes: []watcher.Process{{
				PID: 812, Comm: comm, Exe: "/tmp/x", Cmdline: []string{"/tmp/x", "-l", fmt.Sprint(port)},
				UID: 65534, User: "nobody", Unit: "evil.service",
				Flags: []watcher.Flag{}, // as the watcher gives: never nil
			}},
		},
		Verdict: policy.Unexpected,
		Rule:    "web",
		Reason:  "no rule allows it",
	}
}

func allowed(port uint16) policy.Decision {
	d := unexpected(port, "sshd")
	d.Processes[0].Exe = "/usr/sbin/sshd"
	d.Verdict, d.Rule, d.Reason = policy.Allowed, "ssh", "remote administration"
	return d
}

// fixedEvent is NewEvent with a predictable id, for golden files.
func fixedEvent(n int, typ string, d policy.Decision) Event {
	ev := NewEvent(typ, d, "web-1", testTime.Add(time.Duration(n)*time.Second))
	ev.ID = fmt.Sprintf("ev%030d", n)
	return ev
}

// critical is an unexpected listener as the policy judges a high-risk one:
// severity critical, the flags that made it so, and holders carrying their
// flags (the second holder adds one, so that flags are a union).
func critical(port uint16) policy.Decision {
	d := unexpected(port, "x")
	d.Processes = append(d.Processes, d.Processes[0])
	d.Processes[0].Cmdline = slices.Clone(d.Processes[0].Cmdline)
	d.Processes[0].Flags = []watcher.Flag{watcher.FlagExeGone, watcher.FlagExeInWritableDir}
	d.Processes[1].PID = 813
	d.Processes[1].Flags = []watcher.Flag{watcher.FlagExeInWritableDir, watcher.FlagSessionLaunched}
	d.Severity = policy.SeverityCritical
	d.Flags = []watcher.Flag{watcher.FlagExeGone, watcher.FlagExeInWritableDir}
	d.Reason = "rule web names no exe: and does not accept exe_gone, exe_in_writable_dir"
	return d
}
