package notify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/portwatchd/portwatchd/policy"
)

// FuzzFormats: a process name and path of any bytes give valid JSON in every
// format, and no live Slack mention in Slack and Mattermost payloads.
func FuzzFormats(f *testing.F) {
	f.Add(hostile, "/tmp/x")
	f.Add("<!here>", "/tmp/<@U1>")
	f.Add("\xff", "\x00")
	f.Fuzz(func(t *testing.T, comm, exe string) {
		d := unexpected(4444, comm)
		d.Processes[0].Exe = exe
		ev := NewEvent(TypeOpened, d, "h", time.Unix(0, 0))
		if strings.ContainsAny(ev.Message, "\n\r\x1b") {
			t.Fatalf("message %q holds control characters", ev.Message)
		}
		for _, format := range Formats() {
			body, err := formats[format].render([]Event{ev}, policy.Webhook{Name: "f", URL: "https://h.example/t"}, testTime)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(body) {
				t.Fatalf("%s: invalid JSON for comm %q exe %q", format, comm, exe)
			}
			if format == "slack" || format == "mattermost" {
				var texts []string
				collectStrings(t, body, &texts)
				if all := strings.Join(texts, "\n"); strings.Contains(all, "<!") || strings.Contains(all, "<@") {
					t.Fatalf("%s: live mention in %q", format, all)
				}
			}
		}
	})
}
