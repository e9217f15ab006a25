package notify

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestExposureFacts: an event of a listener with an exposure carries it in
// its message, its journald fields and its Alertmanager label; a change of
// exposure says both.
func TestExposureFacts(t *testing.T) {
	filtered := &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictFiltered,
		Deciding: &exposure.RuleRef{Family: "inet", Table: "filter", Chain: "input", Handle: 7}}
	open := &exposure.Exposure{Scope: exposure.ScopeWildcard, Verdict: exposure.VerdictOpen,
		Published: []exposure.Publication{{Proto: "tcp", HostAddr: netip.IPv4Unspecified(), HostPort: 8080,
			ToAddr: netip.MustParseAddr("172.17.0.2"), ToPort: 80, Owner: exposure.OwnerDocker}}}
	d := policy.Decision{Listener: watcher.Listener{Protocol: "tcp", Family: watcher.IPv4, Address: netip.IPv4Unspecified(), Port: 5432,
		Netns: watcher.HostNetns, Processes: []watcher.Process{}}, Verdict: policy.Unexpected, Severity: policy.SeverityWarning,
		Reason: "no rule allows it", Exposure: open}
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

	ev := NewEvent(TypeOpened, d, "h", now)
	if want := "unexpected listener tcp 0.0.0.0:5432 (open; published: host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker)) opened by an unattributed process: no rule allows it"; ev.Message != want {
		t.Errorf("message\n got %q\nwant %q", ev.Message, want)
	}
	f := eventFields(ev)
	got := map[string]string{"PORTWATCH_EXPOSURE": f["PORTWATCH_EXPOSURE"], "PORTWATCH_PUBLISHED": f["PORTWATCH_PUBLISHED"], "PORTWATCH_EXPOSURE_RULE": f["PORTWATCH_EXPOSURE_RULE"]}
	want := map[string]string{"PORTWATCH_EXPOSURE": "open,published", "PORTWATCH_PUBLISHED": "host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker)", "PORTWATCH_EXPOSURE_RULE": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journald fields (-want +got):\n%s", diff)
	}
	if l := alertLabels(ev)["exposure"]; l != "open,published" {
		t.Errorf("Alertmanager exposure label = %q, want open,published", l)
	}

	ch := NewEvent(TypeChanged, d, "h", now, WithExposureBefore(filtered))
	if want := "unexpected listener tcp 0.0.0.0:5432 (held by an unattributed process) is now open; published: host 0.0.0.0:8080/tcp → 172.17.0.2:80 (docker), was filtered by inet filter input handle 7: no rule allows it"; ch.Message != want {
		t.Errorf("changed message\n got %q\nwant %q", ch.Message, want)
	}
	if !ch.ExposureChanged || ch.ExposureBefore != filtered {
		t.Errorf("changed event: ExposureChanged %v, before %v", ch.ExposureChanged, ch.ExposureBefore)
	}
	d.Exposure = filtered
	if f := eventFields(NewEvent(TypeOpened, d, "h", now)); f["PORTWATCH_EXPOSURE_RULE"] != "inet filter input handle 7" || f["PORTWATCH_EXPOSURE"] != "filtered" {
		t.Errorf("filtered: PORTWATCH_EXPOSURE %q, PORTWATCH_EXPOSURE_RULE %q", f["PORTWATCH_EXPOSURE"], f["PORTWATCH_EXPOSURE_RULE"])
	}
	// Exposure not known: messages and fields as before.
	d.Exposure = nil
	if f := eventFields(NewEvent(TypeOpened, d, "h", now)); f["PORTWATCH_EXPOSURE"] != "" {
		t.Errorf("no exposure: PORTWATCH_EXPOSURE = %q, want it absent", f["PORTWATCH_EXPOSURE"])
	}
}
