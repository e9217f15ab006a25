package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/watcher"
)

// TestBaselineFlags: baseline's rules accept the high-risk flags they saw,
// say which processes had them, and so make their own round trip pass;
// and they accept nothing more than they must.
func TestBaselineFlags(t *testing.T) {
	seen := time.Date(2026, 11, 28, 1, 30, 0, 0, time.UTC)
	ephemeralMemfd := with(listener("udp", "0.0.0.0", 41000, memfdProc), func(l *watcher.Listener) { l.Ephemeral = true })
	ls := []watcher.Listener{
		listener("tcp", "0.0.0.0", 4444, memfdProc),
		ephemeralMemfd,
		listener("tcp", "0.0.0.0", 8000, tmpProc),
		listener("tcp", "0.0.0.0", 443, goneProc),
		listener("tcp", "0.0.0.0", 9000, optProc),
		listener("tcp", "0.0.0.0", 80, upgradedNginx),
		listener("tcp", "0.0.0.0", 8080, python, memfdProc),
		with(listener("tcp", "0.0.0.0", 8000, runcInit), func(l *watcher.Listener) { l.Netns = "container:0123456789ab" }),
		// Low-risk flags only: no flags: line.
		listener("tcp", "0.0.0.0", 5555, ncatProc),
	}
	out := string(Baseline(ls, seen, true))
	for _, want := range []string{
		"  # high-risk, accepted by flags: below (review it): pid 5003 /memfd:x: exe_memfd\n",
		"  # high-risk, accepted by flags: below (review it): pid 5005 /tmp/srv: exe_in_writable_dir, exe_unpackaged, session_launched\n",
		"    flags: [exe_in_writable_dir, exe_unpackaged, session_launched]\n",
		"  # high-risk, accepted by flags: below (review it): pid 5004 /var/tmp/.cache/agent: exe_gone\n",
		"    flags: [exe_gone]\n",
		// The runtime exception is not relied on: the rule holds with
		// memfd_runtimes: [] too.
		"  # high-risk, accepted by flags: below (review it): pid 6001 /memfd:runc_cloned:/proc/self/exe: exe_memfd\n",
		// exe_replaced: the exe is pinned (baseline rules name user:).
		"    port: [80]\n    exe: /usr/sbin/nginx\n    user: www-data\n    unit: nginx.service\n    reason:",
		// The ephemeral UDP socket of a memfd holder is checked, so it
		// gets a rule.
		"    protocol: [tcp, udp]\n    port: [4444, 41000]\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("baseline lacks %q:\n%s", want, out)
		}
	}
	// python's rule names the flag of its memfd co-holder, which it saw.
	if !strings.Contains(out, "  # high-risk, accepted by flags: below (review it): pid 5003 /memfd:x: exe_memfd\n  - name: python3-11\n") {
		t.Errorf("python's rule does not say its co-holder had exe_memfd:\n%s", out)
	}
	for _, noFlags := range []string{"  - name: acmed\n", "  - name: ncat\n"} {
		i := strings.Index(out, noFlags)
		if i < 0 {
			t.Fatalf("no rule %q:\n%s", noFlags, out)
		}
		rule, _, _ := strings.Cut(out[i:], "reason:")
		if strings.Contains(rule, "flags:") {
			t.Errorf("rule with low-risk flags only names flags:\n%s", rule)
		}
	}

	for _, runtimes := range []string{"", "memfd_runtimes: []\n"} {
		c := mustParse(t, runtimes+out)
		for _, l := range ls {
			if d := c.Evaluate(l, seen); d.Verdict != Allowed {
				t.Errorf("%sbaseline does not allow its own listener: %s", runtimes, d.Reason)
			}
		}
		// Not more than it must: the same ports from a holder with a flag
		// the rule did not see are refused.
		for _, l := range []watcher.Listener{
			listener("tcp", "0.0.0.0", 9000, withProc(optProc, func(p *watcher.Process) { p.Exe, p.ExeUnverified = "/opt/acme/bin/acmed", true })),
			listener("tcp", "0.0.0.0", 80, nginx, goneProc),
			listener("tcp", "0.0.0.0", 5555, withProc(ncatProc, func(p *watcher.Process) { p.Flags = append(p.Flags, watcher.FlagExeInWritableDir) })),
		} {
			if d := c.Evaluate(l, seen); d.Verdict != Unexpected || d.Severity != SeverityCritical {
				t.Errorf("baseline: %s %s by %q (%s), want unexpected and critical", l.Processes[0].Exe, d.Verdict, d.Rule, d.Reason)
			}
		}
	}
}

// TestAllowedIfAttributedDeny: a listener that a deny rule refuses as it
// is would not be allowed whoever held it.
func TestAllowedIfAttributedDeny(t *testing.T) {
	c := mustParse(t, "allow: [{name: nfs, port: 2049, user: root}, {name: web, port: 80, user: www-data}]\ndeny: [{name: no-80, port: 80}]")
	now := time.Now()
	type res struct {
		Rule string
		OK   bool
	}
	for _, tt := range []struct {
		l    watcher.Listener
		want res
	}{
		{listener("tcp", "0.0.0.0", 2049), res{"nfs", true}},
		{listener("tcp", "0.0.0.0", 80), res{"", false}},
	} {
		rule, ok := c.AllowedIfAttributed(tt.l, now)
		if diff := cmp.Diff(tt.want, res{rule, ok}); diff != "" {
			t.Errorf("AllowedIfAttributed(port %d) mismatch (-want +got):\n%s", tt.l.Port, diff)
		}
	}
}
