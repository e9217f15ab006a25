package policy

import (
	"testing"
	"time"
)

// A decision made at from may not hold at to when a rule expired between:
// the engine and the metrics judge every listener again then, and only
// then. A rule expires at its expires: time (judged at it, it is expired).
func TestExpiredBetween(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	cfg := &Config{
		Rules: []Rule{{Name: "forever"}, {Name: "temp", Expires: t0.Add(time.Hour)}},
		Deny:  []Rule{{Name: "deny-temp", Expires: t0.Add(2 * time.Hour)}},
	}
	for _, tt := range []struct {
		name     string
		from, to time.Duration
		want     bool
	}{
		{"before any expiry", 0, 59 * time.Minute, false},
		{"an allow rule expires at the end", 59 * time.Minute, time.Hour, true},
		{"judged at the expiry: already expired then", time.Hour, 90 * time.Minute, false},
		{"a deny rule expires between", 90 * time.Minute, 3 * time.Hour, true},
		{"after every expiry", 3 * time.Hour, 4 * time.Hour, false},
	} {
		if got := cfg.ExpiredBetween(t0.Add(tt.from), t0.Add(tt.to)); got != tt.want {
			t.Errorf("%s: ExpiredBetween = %v, want %v", tt.name, got, tt.want)
		}
	}
}
