package policy

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMinSeverity: every severity name is accepted by min_severity, critical
// included, and gives that severity.
func TestMinSeverity(t *testing.T) {
	tests := []struct {
		name string
		want Severity
	}{
		{name: "info", want: SeverityInfo},
		{name: "notice", want: SeverityNotice},
		{name: "warning", want: SeverityWarning},
		{name: "critical", want: SeverityCritical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("p.yaml", []byte("version: 1\nnotify:\n  webhooks:\n    - name: h\n      format: generic\n"+
				"      url: http://127.0.0.1:9/h\n      min_severity: "+tt.name+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg.Notify.Webhooks[0].MinSeverity); diff != "" {
				t.Errorf("MinSeverity (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSeverityJSON: a severity's JSON form is its name, both ways, and an
// unknown name is an error (a spooled event written by a newer version).
func TestSeverityJSON(t *testing.T) {
	all := []Severity{SeverityInfo, SeverityNotice, SeverityWarning, SeverityCritical}
	b, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`["info","notice","warning","critical"]`, string(b)); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	var back []Severity
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(all, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	var s Severity
	if err := json.Unmarshal([]byte(`"emergency"`), &s); err == nil {
		t.Errorf("unknown severity accepted as %v", s)
	}
}
