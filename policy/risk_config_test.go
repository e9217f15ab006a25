package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/filetest"
	"github.com/portwatchd/portwatchd/watcher"
)

// checkDenyExamples parses the commented-out deny rules under "deny: []"
// ("For example:") in the shipped file: examples that do not load teach nothing.
func checkDenyExamples(t *testing.T, main string) {
	t.Helper()
	var block []string
	in := false
	for _, line := range strings.Split(main, "\n") {
		switch {
		case line == "  # For example:":
			in = true
		case in && !strings.HasPrefix(line, "  #"):
			in = false
		case in:
			block = append(block, strings.TrimPrefix(strings.TrimPrefix(line, "  #"), " "))
		}
	}
	c, err := testLoader(nil).parse("examples", []byte("deny:\n"+strings.Join(block, "\n")))
	if err != nil {
		t.Fatalf("commented-out deny examples in configs/portwatch.yaml:\n%v", err)
	}
	if len(c.Deny) != 3 || len(c.Rules) != 0 {
		t.Errorf("parsed %d commented-out deny rules and %d allow rules, want 3 and 0", len(c.Deny), len(c.Rules))
	}
	if len(c.Warnings) != 0 {
		t.Errorf("deny examples give warnings: %q", c.Warnings)
	}
	// They deny what they say.
	now := time.Now()
	for _, tt := range []struct {
		l    watcher.Listener
		rule string
	}{
		{listener("tcp", "127.0.0.1", 4444, ncatProc), "no-netcat"},
		{listener("tcp", "0.0.0.0", 8080, watcher.Process{PID: 1, Exe: "/usr/bin/python3.11", Flags: flags(watcher.FlagParentWebServer)}), "no-web-shells"},
		{listener("tcp", "0.0.0.0", 23), "no-telnet"},
	} {
		if d := c.Evaluate(tt.l, now); d.Verdict != Unexpected || d.Rule != tt.rule {
			t.Errorf("deny example: %s by %q (%s), want unexpected by %q", d.Verdict, d.Rule, d.Reason, tt.rule)
		}
	}
}

// TestReferenceConfigRisk: the shipped file's rules and the risk flags.
func TestReferenceConfigRisk(t *testing.T) {
	c := mustLoad(t, nil, "../configs/portwatch.yaml")
	main, err := os.ReadFile("../configs/portwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkDenyExamples(t, string(main))
	if diff := cmp.Diff(DefaultMemfdRuntimes, c.MemfdRuntimes); diff != "" {
		t.Errorf("memfd_runtimes mismatch (-want +got):\n%s", diff)
	}
	if len(c.Deny) != 0 {
		t.Errorf("the shipped file has %d deny rules, want none", len(c.Deny))
	}
	if len(c.Warnings) != 0 {
		t.Errorf("the shipped file gives warnings: %q", c.Warnings)
	}
	upgradedSSHD := withProc(sshd, func(p *watcher.Process) {
		p.ExeDeleted, p.ExeUnverified, p.Flags = true, true, flags(watcher.FlagExeReplaced)
	})
	now := time.Now()
	tests := []struct {
		name string
		l    watcher.Listener
		want verdict
	}{
		{name: "memfd on loopback", l: listener("tcp", "127.0.0.1", 8080, memfdProc), want: verdict{Unexpected, "loopback", SeverityCritical, flags(watcher.FlagExeMemfd)}},
		{name: "python on loopback from a session", l: listener("tcp", "127.0.0.1", 8080, ncatProc), want: verdict{Allowed, "loopback", SeverityInfo, nil}},
		{name: "sshd after an upgrade", l: listener("tcp", "0.0.0.0", 22, upgradedSSHD), want: verdict{Allowed, "ssh", SeverityInfo, nil}},
		{name: "a gone binary on 22", l: listener("tcp", "0.0.0.0", 22, goneProc), want: verdict{Unexpected, "loopback", SeverityCritical, flags(watcher.FlagExeGone)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.Evaluate(tt.l, now)
			if diff := cmp.Diff(tt.want, verdict{d.Verdict, d.Rule, d.Severity, d.Flags}); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s\nreason: %s", diff, d.Reason)
			}
		})
	}
}

// TestFlagsConfig: flags:, deny: and memfd_runtimes: as loaded, and the
// warnings about rules that accept high-risk flags for any program.
func TestFlagsConfig(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		allow    [][]watcher.Flag
		deny     []string
		runtimes []string
		warnings []string
	}{
		{name: "defaults", policy: "allow: [{name: a}]", allow: [][]watcher.Flag{nil}, runtimes: DefaultMemfdRuntimes},
		{name: "flags in AllFlags order, once", policy: "allow: [{name: a, exe: /x, flags: [session_launched, exe_unpackaged, session_launched]}]",
			allow: [][]watcher.Flag{flags(watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched)}, runtimes: DefaultMemfdRuntimes},
		{name: "memfd_runtimes", policy: "memfd_runtimes: [kata-runtime, gvisor.x]\nallow: []", runtimes: []string{"kata-runtime", "gvisor.x"}},
		{name: "memfd_runtimes: []", policy: "memfd_runtimes: []\nallow: []", runtimes: []string{}},
		{name: "memfd_runtimes: one name", policy: "memfd_runtimes: runc\nallow: []", runtimes: []string{"runc"}},
		{name: "deny rules", policy: "deny: [{name: d1, port: 23}, {name: d2, flags: netcat_family}]\nallow:", deny: []string{"d1", "d2"}, runtimes: DefaultMemfdRuntimes},
		{name: "deny: empty", policy: "deny:\nallow: []", runtimes: DefaultMemfdRuntimes},
		{name: "broad: a port rule that accepts exe_memfd", policy: "allow:\n  - name: a\n    port: 8080\n    flags: [exe_memfd, comm_mismatch]\n",
			allow: [][]watcher.Flag{flags(watcher.FlagExeMemfd, watcher.FlagCommMismatch)}, runtimes: DefaultMemfdRuntimes,
			warnings: []string{`x.yaml:4:12: rule "a" accepts high-risk flag exe_memfd with no exe:, unit: or container: to say which program: any program with them is allowed on what the rule matches`}},
		{name: "broad: user: does not narrow", policy: "allow: [{name: a, user: root, flags: [exe_gone, exe_in_writable_dir, exe_unpackaged]}]",
			allow: [][]watcher.Flag{flags(watcher.FlagExeGone, watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged)}, runtimes: DefaultMemfdRuntimes,
			warnings: []string{`x.yaml:1:38: rule "a" accepts high-risk flags exe_gone, exe_in_writable_dir, exe_unpackaged with no exe:, unit: or container: to say which program: any program with them is allowed on what the rule matches`}},
		{name: "not broad: exe:", policy: "allow: [{name: a, exe: /srv/x, flags: [exe_unpackaged]}]", allow: [][]watcher.Flag{flags(watcher.FlagExeUnpackaged)}, runtimes: DefaultMemfdRuntimes},
		{name: "not broad: unit:", policy: "allow: [{name: a, unit: x.service, flags: [exe_memfd]}]", allow: [][]watcher.Flag{flags(watcher.FlagExeMemfd)}, runtimes: DefaultMemfdRuntimes},
		{name: "not broad: container:", policy: "allow: [{name: a, container: \"*\", flags: [exe_memfd]}]", allow: [][]watcher.Flag{flags(watcher.FlagExeMemfd)}, runtimes: DefaultMemfdRuntimes},
		{name: "not broad: only pairing flags", policy: "allow: [{name: a, flags: [session_launched, interpreter]}]",
			allow: [][]watcher.Flag{flags(watcher.FlagSessionLaunched, watcher.FlagInterpreter)}, runtimes: DefaultMemfdRuntimes},
		{name: "not broad: a deny rule", policy: "deny: [{name: d, flags: [exe_memfd]}]", deny: []string{"d"}, runtimes: DefaultMemfdRuntimes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.policy)
			var allow [][]watcher.Flag
			for _, r := range c.Rules {
				allow = append(allow, r.Flags)
			}
			var deny []string
			for _, r := range c.Deny {
				deny = append(deny, r.Name)
			}
			if diff := cmp.Diff(tt.allow, allow); diff != "" {
				t.Errorf("allow flags mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.deny, deny); diff != "" {
				t.Errorf("deny rules mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.runtimes, c.MemfdRuntimes); diff != "" {
				t.Errorf("memfd_runtimes mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.warnings, c.Warnings); diff != "" {
				t.Errorf("warnings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDenyDropins: drop-ins may add deny rules, which then apply, and
// whose names share one namespace with the allow rules.
func TestDenyDropins(t *testing.T) {
	dir := t.TempDir()
	filetest.Write(t, dir, map[string]string{
		"portwatch.yaml":            "allow: [{name: all}]\ndeny: [{name: telnet, port: 23}]\n",
		"portwatch.d/10-nc.yaml":    "deny:\n  - name: no-netcat\n    flags: [netcat_family]\n",
		"portwatch.d/20-allow.yaml": "allow: [{name: web, port: 80}]\n",
	})
	c := mustLoad(t, nil, filepath.Join(dir, "portwatch.yaml"))
	var deny []string
	for _, r := range c.Deny {
		deny = append(deny, r.Name)
	}
	if diff := cmp.Diff([]string{"telnet", "no-netcat"}, deny); diff != "" {
		t.Errorf("deny rules mismatch (-want +got):\n%s", diff)
	}
	d := c.Evaluate(listener("tcp", "0.0.0.0", 4444, ncatProc), time.Now())
	if d.Verdict != Unexpected || d.Rule != "no-netcat" || !strings.Contains(d.Reason, "portwatch.d/10-nc.yaml:2") {
		t.Errorf("decision = %s by %q (%s), want unexpected by the drop-in's no-netcat", d.Verdict, d.Rule, d.Reason)
	}
}
