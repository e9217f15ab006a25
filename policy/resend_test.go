package policy

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestResendInterval: alertmanager sinks re-send every minute unless
// resend_interval says otherwise; the other formats never re-send.
func TestResendInterval(t *testing.T) {
	tests := []struct {
		name string
		hook string
		want time.Duration
	}{
		{name: "alertmanager default", hook: "format: alertmanager\n      url: http://127.0.0.1:9093", want: time.Minute},
		{name: "alertmanager set", hook: "format: alertmanager\n      url: http://127.0.0.1:9093\n      resend_interval: 30s", want: 30 * time.Second},
		{name: "alertmanager least", hook: "format: alertmanager\n      url: http://127.0.0.1:9093\n      resend_interval: 10s", want: 10 * time.Second},
		{name: "chat never re-sends", hook: "format: slack\n      url: https://hooks.example.com/x", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := "notify:\n  webhooks:\n    - name: h\n      " + tt.hook + "\n"
			c, err := testLoader(nil).parse("x.yaml", []byte(data))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Notify.Webhooks) != 1 {
				t.Fatalf("%d webhooks, want 1", len(c.Notify.Webhooks))
			}
			if diff := cmp.Diff(tt.want, c.Notify.Webhooks[0].ResendInterval); diff != "" {
				t.Errorf("resend interval (-want +got):\n%s", diff)
			}
		})
	}
}
