package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/watcher"
)

const riskCtrID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// Holders with flags, as the watcher reports them.
var (
	memfdProc = watcher.Process{PID: 5003, Comm: "x", Exe: "/memfd:x", ExeDeleted: true, ExeUnverified: true, UID: 1000, User: "alice",
		Unit: "session-2.scope", Flags: []watcher.Flag{watcher.FlagExeMemfd, watcher.FlagSessionLaunched}}
	goneProc = watcher.Process{PID: 5004, Comm: "agent", Exe: "/var/tmp/.cache/agent", ExeDeleted: true, ExeUnverified: true, UID: 0, User: "root",
		Flags: []watcher.Flag{watcher.FlagExeGone}}
	tmpProc = watcher.Process{PID: 5005, Comm: "srv", Exe: "/tmp/srv", UID: 1000, User: "alice", Unit: "session-2.scope",
		Flags: []watcher.Flag{watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched, watcher.FlagParentShell}}
	optProc = watcher.Process{PID: 5006, Comm: "acmed", Exe: "/opt/acme/bin/acmed", UID: 0, User: "root", Unit: "session-3.scope",
		Flags: []watcher.Flag{watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched, watcher.FlagRootUnprivilegedPort}}
	// An nginx still running the binary that an upgrade replaced.
	upgradedNginx = watcher.Process{PID: 900, Comm: "nginx", Exe: "/usr/sbin/nginx", ExeDeleted: true, ExeUnverified: true, UID: 33, User: "www-data",
		Unit: "nginx.service", Flags: []watcher.Flag{watcher.FlagExeReplaced}}
	ncatProc = watcher.Process{PID: 5007, Comm: "ncat", Exe: "/usr/bin/ncat", UID: 1000, User: "alice", Unit: "session-2.scope",
		Flags: []watcher.Flag{watcher.FlagSessionLaunched, watcher.FlagParentShell, watcher.FlagNetcatFamily}}
	runcInit = watcher.Process{PID: 6001, Comm: "runc:[2:INIT]", Exe: "/memfd:runc_cloned:/proc/self/exe", ExeDeleted: true, ExeUnverified: true,
		Container: riskCtrID, Unit: "docker-" + riskCtrID + ".scope", Flags: []watcher.Flag{watcher.FlagExeMemfd}}
)

func flags(fs ...watcher.Flag) []watcher.Flag { return fs }

func withProc(p watcher.Process, f func(*watcher.Process)) watcher.Process {
	p.Flags = append([]watcher.Flag(nil), p.Flags...)
	f(&p)
	return p
}

// TestHighRisk is the risk table of HighRisk, case by case.
func TestHighRisk(t *testing.T) {
	rootless := withProc(runcInit, func(p *watcher.Process) { p.Unit = "user@1000.service/user.slice/libpod-" + riskCtrID + ".scope" })
	tests := []struct {
		name     string
		p        watcher.Process
		runtimes []string // nil: the default
		want     []watcher.Flag
	}{
		{name: "no flags", p: sshd, want: nil},
		{name: "exe_gone", p: goneProc, want: flags(watcher.FlagExeGone)},
		{name: "exe_memfd on the host", p: memfdProc, want: flags(watcher.FlagExeMemfd)},
		{name: "exe_memfd: runc in a container", p: runcInit, want: nil},
		{name: "exe_memfd: by the memfd's name", p: withProc(runcInit, func(p *watcher.Process) { p.Comm = "x" }), want: nil},
		{name: "exe_memfd: by comm", p: withProc(runcInit, func(p *watcher.Process) { p.Exe = "/memfd:x" }), want: nil},
		{name: "exe_memfd: crun", p: withProc(runcInit, func(p *watcher.Process) { p.Comm, p.Exe = "crun", "/memfd:crun" }), want: nil},
		{name: "exe_memfd: a name that only starts with runc", p: withProc(runcInit, func(p *watcher.Process) { p.Comm, p.Exe = "runcx", "/memfd:runcx" }), want: flags(watcher.FlagExeMemfd)},
		{name: "exe_memfd: runc's names on the host", p: withProc(runcInit, func(p *watcher.Process) { p.Container, p.Unit = "", "session-2.scope" }), want: flags(watcher.FlagExeMemfd)},
		{name: "exe_memfd: runc's names in a rootless container", p: rootless, want: flags(watcher.FlagExeMemfd)},
		{name: "exe_memfd: memfd_runtimes []", p: runcInit, runtimes: []string{}, want: flags(watcher.FlagExeMemfd)},
		{name: "exe_memfd: a runtime of one's own", p: withProc(runcInit, func(p *watcher.Process) { p.Comm, p.Exe = "kata-x", "/memfd:kata" }), runtimes: []string{"kata"}, want: nil},
		{name: "exe_in_writable_dir, with exe_unpackaged and session_launched", p: tmpProc,
			want: flags(watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
		{name: "exe_unpackaged alone", p: withProc(optProc, func(p *watcher.Process) { p.Exe, p.Flags = "/srv/bin/x", flags(watcher.FlagExeUnpackaged) }), want: nil},
		{name: "exe_unpackaged with session_launched", p: withProc(optProc, func(p *watcher.Process) { p.Exe = "/srv/bin/x" }),
			want: flags(watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
		{name: "exe_unpackaged with interpreter and netcat_family", p: withProc(optProc, func(p *watcher.Process) {
			p.Exe, p.Flags = "/srv/bin/x", flags(watcher.FlagExeUnpackaged, watcher.FlagInterpreter, watcher.FlagNetcatFamily)
		}), want: flags(watcher.FlagExeUnpackaged, watcher.FlagInterpreter, watcher.FlagNetcatFamily)},
		{name: "exe_unpackaged under /opt with session_launched", p: optProc, want: nil},
		{name: "exe_unpackaged under /usr/local with an interpreter", p: withProc(optProc, func(p *watcher.Process) {
			p.Exe, p.Flags = "/usr/local/bin/node", flags(watcher.FlagExeUnpackaged, watcher.FlagInterpreter)
		}), want: nil},
		{name: "exe_unpackaged: an unverified /opt path proves nothing", p: withProc(optProc, func(p *watcher.Process) { p.ExeUnverified = true }),
			want: flags(watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
		{name: "exe_unpackaged: /optional is not /opt", p: withProc(optProc, func(p *watcher.Process) { p.Exe = "/optional/acmed" }),
			want: flags(watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
		{name: "exe_unpackaged unknown (no dpkg) with session_launched", p: withProc(optProc, func(p *watcher.Process) {
			p.Exe, p.Flags, p.FlagsUnknown = "/srv/bin/x", flags(watcher.FlagSessionLaunched), flags(watcher.FlagExeUnpackaged, watcher.FlagExeModified)
		}), want: nil},
		{name: "low-risk flags", p: withProc(sshd, func(p *watcher.Process) {
			p.Flags = flags(watcher.FlagExeReplaced, watcher.FlagExeModified, watcher.FlagSessionLaunched, watcher.FlagParentShell,
				watcher.FlagParentWebServer, watcher.FlagInterpreter, watcher.FlagNetcatFamily, watcher.FlagCommMismatch, watcher.FlagRootUnprivilegedPort)
		}), want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rts := tt.runtimes
			if rts == nil {
				rts = DefaultMemfdRuntimes
			}
			if diff := cmp.Diff(tt.want, HighRisk(&tt.p, rts)); diff != "" {
				t.Errorf("HighRisk mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// verdict is the part of a Decision that TestEvaluateRisk compares.
type verdict struct {
	Verdict  Verdict
	Rule     string
	Severity Severity
	Flags    []watcher.Flag
}

func TestEvaluateRisk(t *testing.T) {
	now := time.Date(2027, 3, 31, 12, 0, 0, 0, time.Local)
	ctr := func(l watcher.Listener) watcher.Listener {
		l.Netns = "container:0123456789ab"
		return l
	}
	ephemeral := func(l watcher.Listener) watcher.Listener {
		l.Ephemeral = true
		return l
	}
	memfdOnly := flags(watcher.FlagExeMemfd)
	tests := []struct {
		name   string
		policy string
		l      watcher.Listener
		want   verdict
		reason string // the whole reason when it starts with "=", else a substring
	}{
		// flags: on allow rules.
		{name: "a port-only rule does not allow the memfd listener", policy: "allow: [{name: any-8080, port: 8080}]",
			l:      listener("tcp", "0.0.0.0", 8080, memfdProc),
			want:   verdict{Unexpected, "any-8080", SeverityCritical, memfdOnly},
			reason: `=no rule allows tcp 0.0.0.0:8080 (pid 5003 /memfd:x, user alice); rule "any-8080" (x.yaml:1) would allow it but for high-risk flag exe_memfd, which its flags: does not name`},
		{name: "a rule with flags: does", policy: "allow: [{name: r, port: 8080, flags: [exe_memfd]}]",
			l: listener("tcp", "0.0.0.0", 8080, memfdProc), want: verdict{Allowed, "r", SeverityInfo, nil}},
		{name: "flags: as one name", policy: "allow: [{name: r, port: 8080, unit: session-2.scope, flags: exe_memfd}]",
			l: listener("tcp", "0.0.0.0", 8080, memfdProc), want: verdict{Allowed, "r", SeverityInfo, nil}},
		{name: "a loopback rule does not allow a memfd on loopback", policy: "allow: [{name: loopback, address: loopback}]",
			l: listener("tcp", "127.0.0.1", 8080, memfdProc), want: verdict{Unexpected, "loopback", SeverityCritical, memfdOnly}},
		{name: "exe_gone refused by a unit rule", policy: "allow: [{name: r, user: root}]",
			l: listener("tcp", "0.0.0.0", 443, goneProc), want: verdict{Unexpected, "r", SeverityCritical, flags(watcher.FlagExeGone)}},
		{name: "a pinned exe alone does not accept high-risk flags", policy: "allow: [{name: r, exe: /tmp/srv}]",
			l:      listener("tcp", "0.0.0.0", 8000, tmpProc),
			want:   verdict{Unexpected, "r", SeverityCritical, flags(watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
			reason: "would allow it but for high-risk flags exe_in_writable_dir, exe_unpackaged, session_launched, which its flags: does not name"},
		{name: "a pinned exe with its flags", policy: "allow: [{name: r, exe: /tmp/srv, flags: [exe_in_writable_dir, exe_unpackaged, session_launched]}]",
			l: listener("tcp", "0.0.0.0", 8000, tmpProc), want: verdict{Allowed, "r", SeverityInfo, nil}},
		{name: "flags: must name every high-risk flag", policy: "allow: [{name: r, exe: /tmp/srv, flags: [exe_in_writable_dir]}]",
			l:      listener("tcp", "0.0.0.0", 8000, tmpProc),
			want:   verdict{Unexpected, "r", SeverityCritical, flags(watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)},
			reason: "but for high-risk flags exe_unpackaged, session_launched, which"},
		{name: "a pinned exe accepts exe_unpackaged under /opt", policy: "allow: [{name: acme, exe: /opt/acme/bin/acmed}]",
			l: listener("tcp", "0.0.0.0", 9000, optProc), want: verdict{Allowed, "acme", SeverityInfo, nil}},
		{name: "low-risk flags need no naming", policy: "allow: [{name: r, port: 4444}]",
			l: listener("tcp", "0.0.0.0", 4444, ncatProc), want: verdict{Allowed, "r", SeverityInfo, nil}},
		{name: "a pinned exe with user: accepts exe_replaced", policy: "allow: [{name: web, exe: /usr/sbin/nginx, user: www-data}]",
			l: listener("tcp", "0.0.0.0", 80, upgradedNginx), want: verdict{Allowed, "web", SeverityInfo, nil}},
		{name: "a pinned exe with unit: accepts exe_replaced", policy: "allow: [{name: web, exe: /usr/sbin/nginx, unit: nginx.service}]",
			l: listener("tcp", "0.0.0.0", 80, upgradedNginx), want: verdict{Allowed, "web", SeverityInfo, nil}},
		{name: "a pinned exe alone does not match exe_replaced", policy: "allow: [{name: web, exe: /usr/sbin/nginx}]",
			l: listener("tcp", "0.0.0.0", 80, upgradedNginx), want: verdict{Unexpected, "web", SeverityWarning, nil},
			reason: "wants exe /usr/sbin/nginx (the executable was replaced by an upgrade (exe_replaced): restart the service, or name user: or unit: in the rule too)"},
		{name: "exe_replaced and exe_gone together: deleted", policy: "allow: [{name: web, exe: /usr/sbin/nginx, user: www-data, flags: [exe_gone]}]",
			l:    listener("tcp", "0.0.0.0", 80, withProc(upgradedNginx, func(p *watcher.Process) { p.Flags = append(p.Flags, watcher.FlagExeGone) })),
			want: verdict{Unexpected, "web", SeverityCritical, flags(watcher.FlagExeGone)}, reason: "the executable was deleted"},

		// Severity of unexpected listeners with no rule close.
		{name: "unexpected, low-risk flags: warning", policy: "allow: [{name: ssh, port: 22}]",
			l: listener("tcp", "0.0.0.0", 4444, ncatProc), want: verdict{Unexpected, "ssh", SeverityWarning, nil}},
		{name: "unexpected, high-risk flag: critical, named in the reason", policy: "allow: [{name: ssh, port: 22}]",
			l:      listener("tcp", "0.0.0.0", 4444, memfdProc),
			want:   verdict{Unexpected, "ssh", SeverityCritical, memfdOnly},
			reason: `=no rule allows tcp 0.0.0.0:4444 (pid 5003 /memfd:x, user alice); closest: rule "ssh" (x.yaml:1) wants port 22; high-risk flag exe_memfd`},
		{name: "no rules, high-risk flag", policy: "allow: []", l: listener("tcp", "0.0.0.0", 4444, goneProc),
			want: verdict{Unexpected, "", SeverityCritical, flags(watcher.FlagExeGone)}, reason: "the policy has no rules; high-risk flag exe_gone"},

		// Several holders: every holder's risk must be accepted.
		{name: "a memfd co-holder is not covered by the nginx rule", policy: "allow: [{name: web, exe: /usr/sbin/nginx}]",
			l: listener("tcp", "0.0.0.0", 80, nginx, memfdProc), want: verdict{Unexpected, "web", SeverityCritical, memfdOnly}},
		{name: "unless the rule names its flag", policy: "allow: [{name: web, exe: /usr/sbin/nginx, flags: [exe_memfd]}]",
			l: listener("tcp", "0.0.0.0", 80, nginx, memfdProc), want: verdict{Allowed, "web", SeverityInfo, nil}},
		{name: "a later rule accepts what an earlier one refused", policy: "allow: [{name: any, port: 80}, {name: web, exe: /usr/sbin/nginx, flags: [exe_memfd]}]",
			l: listener("tcp", "0.0.0.0", 80, nginx, memfdProc), want: verdict{Allowed, "web", SeverityInfo, nil}},

		// Containers and memfd_runtimes.
		{name: "runc's memfd in a container: allowed by a port rule", policy: "allow: [{name: ctr, port: 8000}]",
			l: ctr(listener("tcp", "0.0.0.0", 8000, runcInit)), want: verdict{Allowed, "ctr", SeverityInfo, nil}},
		{name: "runc's memfd with memfd_runtimes: []", policy: "memfd_runtimes: []\nallow: [{name: ctr, port: 8000}]",
			l: ctr(listener("tcp", "0.0.0.0", 8000, runcInit)), want: verdict{Unexpected, "ctr", SeverityCritical, memfdOnly}},
		{name: "memfd_runtimes: [] and a container-pinned flags: rule", policy: "memfd_runtimes: []\nallow: [{name: ctr, container: \"0123*\", flags: [exe_memfd]}]",
			l: ctr(listener("tcp", "0.0.0.0", 8000, runcInit)), want: verdict{Allowed, "ctr", SeverityInfo, nil}},

		// Unattributed and ephemeral.
		{name: "unattributed: no flags, port rule allows", policy: "allow: [{name: r, port: 2049}]",
			l: listener("tcp", "0.0.0.0", 2049), want: verdict{Allowed, "r", SeverityInfo, nil}},
		{name: "ephemeral UDP: ignored", policy: "allow: []", l: ephemeral(listener("udp", "0.0.0.0", 41000, python)),
			want: verdict{Ignored, "", SeverityInfo, nil}},
		{name: "ephemeral UDP with a high-risk holder: checked", policy: "allow: []", l: ephemeral(listener("udp", "0.0.0.0", 41000, memfdProc)),
			want: verdict{Unexpected, "", SeverityCritical, memfdOnly}},

		// deny:.
		{name: "deny beats allow", policy: "allow: [{name: all}]\ndeny: [{name: no-nc, flags: [netcat_family]}]",
			l:      listener("tcp", "0.0.0.0", 4444, ncatProc),
			want:   verdict{Unexpected, "no-nc", SeverityWarning, flags(watcher.FlagNetcatFamily)},
			reason: `=denied by rule "no-nc" (x.yaml:2): tcp 0.0.0.0:4444 (pid 5007 /usr/bin/ncat, user alice) with flag netcat_family`},
		{name: "deny: flags means any of them", policy: "allow: [{name: all}]\ndeny: [{name: no-shells, flags: [parent_web_server, parent_shell]}]",
			l: listener("tcp", "0.0.0.0", 4444, ncatProc), want: verdict{Unexpected, "no-shells", SeverityWarning, flags(watcher.FlagParentShell)}},
		{name: "deny: with a high-risk holder is critical", policy: "allow: [{name: all, flags: [exe_memfd]}]\ndeny: [{name: no-4444, port: 4444, reason: known backdoor port}]",
			l:      listener("tcp", "0.0.0.0", 4444, memfdProc),
			want:   verdict{Unexpected, "no-4444", SeverityCritical, memfdOnly},
			reason: `=denied by rule "no-4444" (x.yaml:2): tcp 0.0.0.0:4444 (pid 5003 /memfd:x, user alice); high-risk flag exe_memfd; reason: known backdoor port`},
		{name: "deny: no match, allow decides", policy: "allow: [{name: all}]\ndeny: [{name: no-nc, flags: [netcat_family]}]",
			l: listener("tcp", "0.0.0.0", 80, nginx), want: verdict{Allowed, "all", SeverityInfo, nil}},
		{name: "deny: fields of different holders do not add up", policy: "allow: [{name: all}]\ndeny: [{name: r, user: root, flags: [netcat_family]}]",
			l: listener("tcp", "0.0.0.0", 4444, sshd, ncatProc), want: verdict{Allowed, "all", SeverityInfo, nil}},
		{name: "deny: exe matches a deleted executable", policy: "allow: [{name: all}]\ndeny: [{name: old-nginx, exe: /usr/sbin/nginx}]",
			l: listener("tcp", "0.0.0.0", 80, upgradedNginx), want: verdict{Unexpected, "old-nginx", SeverityWarning, nil}},
		{name: "deny: an expired rule denies nothing", policy: "allow: [{name: all}]\ndeny: [{name: r, port: 23, expires: 2020-01-01}]",
			l: listener("tcp", "0.0.0.0", 23), want: verdict{Allowed, "all", SeverityInfo, nil}},
		{name: "deny: a socket rule matches an unattributed listener", policy: "allow: [{name: all}]\ndeny: [{name: telnet, port: 23}]",
			l: listener("tcp", "0.0.0.0", 23), want: verdict{Unexpected, "telnet", SeverityWarning, nil}},
		{name: "deny: a process rule does not match an unattributed listener", policy: "allow: [{name: all}]\ndeny: [{name: r, port: 23, user: root}]",
			l: listener("tcp", "0.0.0.0", 23), want: verdict{Allowed, "all", SeverityInfo, nil}},
		{name: "deny: beats ignore_ephemeral_udp", policy: "allow: []\ndeny: [{name: no-py, exe: \"/usr/bin/python3*\"}]",
			l: ephemeral(listener("udp", "0.0.0.0", 41000, python)), want: verdict{Unexpected, "no-py", SeverityWarning, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.policy)
			d := c.Evaluate(tt.l, now)
			got := verdict{d.Verdict, d.Rule, d.Severity, d.Flags}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s\nreason: %s", diff, d.Reason)
			}
			if whole, ok := strings.CutPrefix(tt.reason, "="); ok {
				if diff := cmp.Diff(whole, d.Reason); diff != "" {
					t.Errorf("reason mismatch (-want +got):\n%s", diff)
				}
			} else if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tt.reason)
			}
		})
	}
}

// TestExeReplacedUnpinnable checks that baseline's exeUnpinnable agrees
// with the matcher on an exe_replaced holder under a rule with user:.
func TestExeReplacedUnpinnable(t *testing.T) {
	if why := exeUnpinnable(&upgradedNginx, watcher.HostNetns); why != "" {
		t.Errorf("exeUnpinnable(exe_replaced) = %q, want pinnable", why)
	}
	ok, _ := (&Rule{User: "www-data"}).exeTrusted(&upgradedNginx)
	if !ok {
		t.Error("exeTrusted(exe_replaced) under a rule with user: = false")
	}
	if why := exeUnpinnable(&goneProc, watcher.HostNetns); why == "" {
		t.Error("exeUnpinnable(exe_gone) = pinnable")
	}
}
