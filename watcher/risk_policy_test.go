package watcher_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestPolicyRiskFlags judges real listeners by their real flags: a program
// run from a memfd and one whose executable was deleted are critical under
// a port-only rule, which allows neither; a rule naming the flag allows it;
// a deny rule beats an allow rule.
func TestPolicyRiskFlags(t *testing.T) {
	sc := watcher.NewRiskScene(t)
	m, g := sc.Memfd.Port, sc.Gone.Port
	type verdict struct {
		Verdict  policy.Verdict
		Severity string
	}
	tests := []struct {
		name       string
		config     string
		memfd, gon verdict
	}{
		{
			name:   "a port-only rule allows neither",
			config: fmt.Sprintf("allow:\n  - {name: ports, port: [%d, %d]}\n", m, g),
			memfd:  verdict{policy.Unexpected, "critical"}, gon: verdict{policy.Unexpected, "critical"},
		},
		{
			name:   "a rule naming exe_memfd allows the memfd one",
			config: fmt.Sprintf("allow:\n  - {name: ports, port: [%d, %d], flags: [exe_memfd]}\n", m, g),
			memfd:  verdict{policy.Allowed, "info"}, gon: verdict{policy.Unexpected, "critical"},
		},
		{
			name: "deny beats allow",
			config: fmt.Sprintf("allow:\n  - {name: ports, port: [%d, %d], flags: [exe_memfd, exe_gone]}\n"+
				"deny:\n  - {name: no-fileless, flags: [exe_memfd]}\n", m, g),
			memfd: verdict{policy.Unexpected, "critical"}, gon: verdict{policy.Allowed, "info"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := policy.Parse("p.yaml", []byte("version: 1\n"+tt.config))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				l    watcher.Listener
				want verdict
			}{{sc.Memfd, tt.memfd}, {sc.Gone, tt.gon}} {
				d := cfg.Evaluate(c.l, time.Now())
				got := verdict{d.Verdict, d.Severity.String()}
				if diff := cmp.Diff(c.want, got); diff != "" {
					t.Errorf("%s (flags %v): (-want +got):\n%s\nreason: %s", c.l.Processes[0].Exe, c.l.Processes[0].Flags, diff, d.Reason)
				}
			}
		})
	}
}
