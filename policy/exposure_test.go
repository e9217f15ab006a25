package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/watcher"
)

var (
	exOpen     = &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictOpen}
	exFiltered = &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictFiltered, Reason: "dropped",
		Deciding: &exposure.RuleRef{Family: "inet", Table: "filter", Chain: "input"}}
	exLoopback   = &exposure.Exposure{Scope: exposure.ScopeLoopback, Verdict: exposure.VerdictOpen}
	exRestricted = &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictRestricted, RestrictedTo: []string{"ip saddr 10.0.0.0/8"}}
	exNoCap      = &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictUnknown, Reason: exposure.ReasonNoCapNetAdmin}
	// exPublished: the input hook drops it, yet Docker's DNAT publishes it
	// (the ufw bypass).
	exPublished = &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictFiltered,
		Deciding: &exposure.RuleRef{Family: "ip", Table: "filter", Chain: "INPUT"},
		Published: []exposure.Publication{{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 8080,
			ToAddr: netip.MustParseAddr("172.17.0.2"), ToPort: 80, Owner: exposure.OwnerDocker, Verdict: exposure.VerdictOpen}}}
)

// TestEvaluateExposure: a rule's exposure: matches when one of the
// listener's classes is in its list; no exposure known is unknown.
func TestEvaluateExposure(t *testing.T) {
	c := mustParse(t, `
allow:
  - name: pg
    port: 5432
    unit: postgresql.service
    exposure: [loopback, filtered]
  - name: web-published
    port: 80
    exposure: published
  - name: unsure
    port: 9000
    exposure: [unknown]
  - name: redis
    port: 6379
deny:
  - name: no-open-redis
    port: 6379
    exposure: [open, published, unknown]
`)
	pg := watcher.Process{PID: 700, Comm: "postgres", Exe: "/usr/lib/postgresql/15/bin/postgres", UID: 105, User: "postgres", Unit: "postgresql.service"}
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.Local)
	tests := []struct {
		name string
		l    watcher.Listener
		e    *exposure.Exposure
		want Verdict
		rule string
	}{
		{name: "filtered postgres", l: listener("tcp", "0.0.0.0", 5432, pg), e: exFiltered, want: Allowed, rule: "pg"},
		{name: "loopback postgres", l: listener("tcp", "127.0.0.1", 5432, pg), e: exLoopback, want: Allowed, rule: "pg"},
		{name: "open postgres", l: listener("tcp", "0.0.0.0", 5432, pg), e: exOpen, want: Unexpected, rule: "pg"},
		{name: "restricted postgres", l: listener("tcp", "0.0.0.0", 5432, pg), e: exRestricted, want: Unexpected, rule: "pg"},
		{name: "published postgres: filtered at input, yet published", l: listener("tcp", "0.0.0.0", 5432, pg), e: exPublished, want: Allowed, rule: "pg"},
		{name: "postgres, exposure not computed", l: listener("tcp", "0.0.0.0", 5432, pg), e: nil, want: Unexpected, rule: "pg"},
		{name: "postgres, no CAP_NET_ADMIN", l: listener("tcp", "0.0.0.0", 5432, pg), e: exNoCap, want: Unexpected, rule: "pg"},
		{name: "published web", l: listener("tcp", "0.0.0.0", 80), e: exPublished, want: Allowed, rule: "web-published"},
		{name: "web open but not published", l: listener("tcp", "0.0.0.0", 80), e: exOpen, want: Unexpected, rule: "web-published"},
		{name: "unknown matches nil", l: listener("tcp", "0.0.0.0", 9000), e: nil, want: Allowed, rule: "unsure"},
		{name: "unknown matches no CAP_NET_ADMIN", l: listener("tcp", "0.0.0.0", 9000), e: exNoCap, want: Allowed, rule: "unsure"},
		{name: "unknown does not match open", l: listener("tcp", "0.0.0.0", 9000), e: exOpen, want: Unexpected, rule: "unsure"},
		{name: "deny open redis", l: listener("tcp", "0.0.0.0", 6379), e: exOpen, want: Unexpected, rule: "no-open-redis"},
		{name: "deny redis of unknown exposure", l: listener("tcp", "0.0.0.0", 6379), e: nil, want: Unexpected, rule: "no-open-redis"},
		{name: "filtered redis passes the deny rule", l: listener("tcp", "0.0.0.0", 6379), e: exFiltered, want: Allowed, rule: "redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.EvaluateExposed(tt.l, tt.e, now)
			if d.Verdict != tt.want || d.Rule != tt.rule {
				t.Errorf("decision = %s by %q (%s), want %s by %q", d.Verdict, d.Rule, d.Reason, tt.want, tt.rule)
			}
			if d.Exposure != tt.e {
				t.Errorf("Decision.Exposure = %v, want %v", d.Exposure, tt.e)
			}
		})
	}
	// Evaluate is EvaluateExposed with nil.
	if d := c.Evaluate(listener("tcp", "0.0.0.0", 9000), now); d.Verdict != Allowed || d.Exposure != nil {
		t.Errorf("Evaluate = %s, exposure %v; want allowed by unsure, no exposure", d.Verdict, d.Exposure)
	}
}

// TestExposureSeverity: an unexpected listener known to be unreachable from
// outside (loopback, filtered, not published) is a notice; open, published,
// restricted and unknown stay warnings; critical stays critical.
func TestExposureSeverity(t *testing.T) {
	c := mustParse(t, "allow:\n  - name: ssh\n    port: 22\n    exe: /usr/sbin/sshd\n")
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.Local)
	backdoor := watcher.Process{PID: 31337, Comm: "x", Exe: "/memfd:x (deleted)", ExeDeleted: true, UID: 0, User: "root",
		Flags: []watcher.Flag{watcher.FlagExeMemfd}}
	tests := []struct {
		name string
		l    watcher.Listener
		e    *exposure.Exposure
		want Severity
	}{
		{name: "open", l: listener("tcp", "0.0.0.0", 8080, python), e: exOpen, want: SeverityWarning},
		{name: "published", l: listener("tcp", "0.0.0.0", 8080, python), e: exPublished, want: SeverityWarning},
		{name: "restricted", l: listener("tcp", "0.0.0.0", 8080, python), e: exRestricted, want: SeverityWarning},
		{name: "unknown", l: listener("tcp", "0.0.0.0", 8080, python), e: exNoCap, want: SeverityWarning},
		{name: "not computed", l: listener("tcp", "0.0.0.0", 8080, python), e: nil, want: SeverityWarning},
		{name: "filtered", l: listener("tcp", "0.0.0.0", 8080, python), e: exFiltered, want: SeverityNotice},
		{name: "loopback", l: listener("tcp", "127.0.0.1", 8080, python), e: exLoopback, want: SeverityNotice},
		{name: "critical open", l: listener("tcp", "0.0.0.0", 4444, backdoor), e: exOpen, want: SeverityCritical},
		{name: "critical filtered stays critical", l: listener("tcp", "0.0.0.0", 4444, backdoor), e: exFiltered, want: SeverityCritical},
		{name: "allowed filtered is info", l: listener("tcp", "0.0.0.0", 22, sshd), e: exFiltered, want: SeverityInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.EvaluateExposed(tt.l, tt.e, now).Severity; got != tt.want {
				t.Errorf("severity = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestExposureReason: the reason says what the exposure is when it decided.
func TestExposureReason(t *testing.T) {
	c := mustParse(t, `
allow:
  - name: pg
    port: 5432
    exposure: [loopback, filtered]
deny:
  - name: no-open
    port: 6379
    exposure: open
`)
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.Local)
	tests := []struct {
		name string
		l    watcher.Listener
		e    *exposure.Exposure
		want string
	}{
		{
			name: "closest rule wants another exposure",
			l:    listener("tcp", "0.0.0.0", 5432),
			e:    exOpen,
			want: `no rule allows tcp 0.0.0.0:5432 (no known process); closest: rule "pg" (x.yaml:3) wants exposure loopback,filtered (it is open)`,
		},
		{
			name: "published",
			l:    listener("tcp", "0.0.0.0", 5432),
			e:    &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictRestricted, RestrictedTo: []string{`iifname "eth1"`}, Published: exPublished.Published},
			want: `no rule allows tcp 0.0.0.0:5432 (no known process); closest: rule "pg" (x.yaml:3) wants exposure loopback,filtered (it is restricted to iifname "eth1"; published: host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker))`,
		},
		{
			name: "not computed",
			l:    listener("tcp", "0.0.0.0", 5432),
			want: `no rule allows tcp 0.0.0.0:5432 (no known process); closest: rule "pg" (x.yaml:3) wants exposure loopback,filtered (it is unknown (not computed))`,
		},
		{
			name: "no CAP_NET_ADMIN",
			l:    listener("tcp", "0.0.0.0", 5432),
			e:    exNoCap,
			want: `no rule allows tcp 0.0.0.0:5432 (no known process); closest: rule "pg" (x.yaml:3) wants exposure loopback,filtered (it is unknown (no CAP_NET_ADMIN))`,
		},
		{
			name: "denied",
			l:    listener("tcp", "0.0.0.0", 6379),
			e:    exOpen,
			want: `denied by rule "no-open" (x.yaml:7): tcp 0.0.0.0:6379 (no known process); exposure open`,
		},
		{
			name: "lowered to notice",
			l:    listener("tcp", "0.0.0.0", 7777),
			e:    exFiltered,
			want: `no rule allows tcp 0.0.0.0:7777 (no known process); closest: rule "pg" (x.yaml:3) wants port 5432; notice rather than warning: not reachable from outside (filtered by inet filter input policy)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.EvaluateExposed(tt.l, tt.e, now)
			if diff := cmp.Diff(tt.want, d.Reason); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}
