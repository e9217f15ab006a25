package notify

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
)

// TestCriticalEverySink: through a real dispatcher and a loopback receiver,
// every webhook format shows a critical listener as critical, with the
// flags of its holders: the machine formats in fields, the chat formats
// with a CRITICAL marker and the flag names in the text.
func TestCriticalEverySink(t *testing.T) {
	flags := []string{"exe_gone", "exe_in_writable_dir", "session_launched"}
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			rc := newReceiver(t, nil)
			h := hook("crit", format, rc.URL+"/alerts")
			d, _ := startDispatcher(t, t.TempDir(), h)
			if err := d.Send([]Event{fixedEvent(1, TypeOpened, critical(4444))}); err != nil {
				t.Fatal(err)
			}
			body := rc.waitRequests(t, 1)[0].Body
			switch format {
			case "generic":
				var p struct {
					Events []struct {
						Severity string `json:"severity"`
						Listener struct {
							Severity  string   `json:"severity"`
							RiskFlags []string `json:"risk_flags"`
							Processes []struct {
								Flags []string `json:"flags"`
							} `json:"processes"`
						} `json:"listener"`
					} `json:"events"`
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatal(err)
				}
				ev := p.Events[0]
				got := []any{ev.Severity, ev.Listener.Severity, ev.Listener.RiskFlags, ev.Listener.Processes[0].Flags, ev.Listener.Processes[1].Flags}
				want := []any{"critical", "critical", flags[:2], flags[:2], flags[1:]}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("severity and flags (-want +got):\n%s", diff)
				}
			case "alertmanager":
				var alerts []struct {
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
				}
				if err := json.Unmarshal(body, &alerts); err != nil {
					t.Fatal(err)
				}
				a := alerts[0]
				got := []string{a.Labels["severity"], a.Annotations["flags"], a.Annotations["risk_flags"]}
				want := []string{"critical", strings.Join(flags, ","), strings.Join(flags[:2], ",")}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("severity label, flags annotations (-want +got):\n%s", diff)
				}
			default:
				var texts []string
				collectStrings(t, body, &texts)
				// Read past each format's escapes of "_" (Markdown's
				// "\_", Google Chat's look-alike).
				all := strings.NewReplacer(`\_`, "_", "\u02cd", "_").Replace(strings.Join(texts, "\n"))
				if !strings.Contains(all, "CRITICAL") {
					t.Errorf("no CRITICAL marker in:\n%s", all)
				}
				for _, f := range flags {
					if !strings.Contains(all, f) {
						t.Errorf("flag %s not shown in:\n%s", f, all)
					}
				}
				if strings.Contains(all, "@") {
					t.Errorf("a critical message must not mention anyone:\n%s", all)
				}
			}
			if format == "ntfy" {
				var p struct {
					Priority int `json:"priority"`
				}
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatal(err)
				}
				if p.Priority != 5 {
					t.Errorf("ntfy priority %d, want 5 (max) for critical", p.Priority)
				}
			}
		})
	}
}

// TestMinSeverityCritical: a sink with min_severity critical gets the
// critical event and not the warning one; a default sink gets both.
func TestMinSeverityCritical(t *testing.T) {
	critRC, allRC := newReceiver(t, nil), newReceiver(t, nil)
	critOnly := hook("crit-only", "generic", critRC.URL)
	critOnly.MinSeverity = policy.SeverityCritical
	d, _ := startDispatcher(t, t.TempDir(), critOnly, hook("all", "generic", allRC.URL))
	warn := fixedEvent(1, TypeOpened, unexpected(4444, "x"))
	crit := fixedEvent(2, TypeOpened, critical(4445))
	if err := d.Send([]Event{warn, crit}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	got := map[string][]string{}
	for name, rc := range map[string]*receiver{"crit-only": critRC, "all": allRC} {
		for _, r := range rc.requests() {
			got[name] = append(got[name], decodeEventIDs(t, r.Body)...)
		}
	}
	want := map[string][]string{"crit-only": {crit.ID}, "all": {warn.ID, crit.ID}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events per sink (-want +got):\n%s", diff)
	}
}
