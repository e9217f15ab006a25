package notify

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/portwatchd/portwatchd/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func goldenBatches() map[string][]Event {
	var many []Event
	for i := 0; i < 60; i++ {
		many = append(many, fixedEvent(i, TypeOpened, unexpected(uint16(4000+i), "x")))
	}
	return map[string][]Event{
		"single": {fixedEvent(1, TypeOpened, unexpected(4444, "x"))},
		"mixed": {
			fixedEvent(1, TypeOpened, unexpected(4444, "x")),
			fixedEvent(2, TypeChanged, unexpected(4445, "nc")),
			fixedEvent(3, TypeClosed, unexpected(4446, "x")),
		},
		"hostile": {fixedEvent(1, TypeOpened, unexpected(4444, hostile))},
		// A critical listener opened, a warning one, and a critical one's
		// resolve: the marker, the flags and the severity of each.
		"critical": {
			fixedEvent(1, TypeOpened, critical(4444)),
			fixedEvent(2, TypeOpened, unexpected(4445, "x")),
			fixedEvent(3, TypeClosed, critical(4446)),
		},
		"many": many,
		"test": {fixedEvent(1, TypeTest, policy.Decision{})},
	}
}

// TestFormatsGolden compares every format's payload for several batches with
// testdata/format/<format>-<batch>.json. Run with -update to rewrite them.
func TestFormatsGolden(t *testing.T) {
	hook := policy.Webhook{Name: "t", URL: "https://ntfy.example/alerts", Topic: ""}
	for _, format := range Formats() {
		for name, events := range goldenBatches() {
			t.Run(format+"/"+name, func(t *testing.T) {
				got, err := formats[format].render(events, hook, testTime)
				if err != nil {
					t.Fatal(err)
				}
				if !json.Valid(got) {
					t.Fatalf("invalid JSON:\n%s", got)
				}
				path := filepath.Join("testdata", "format", format+"-"+name+".json")
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./notify -run TestFormatsGolden -update)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", path, diff)
				}
			})
		}
	}
}

// TestFormatsHostile checks, for every format, that a hostile process name
// keeps the JSON valid and fires no mention.
func TestFormatsHostile(t *testing.T) {
	names := []string{
		hostile,
		"<@U123> <!here> <!everyone> @channel @here @all @everyone <users/all>",
		"```\n**bold** [link](https://evil.example) ~~x~~ | # h",
		"\u202eexe.txt\u200b\x00\x7f\xff",
		`"}]},{"text":"injected`,
	}
	for _, format := range Formats() {
		for i, comm := range names {
			t.Run(format, func(t *testing.T) {
				d := unexpected(4444, comm)
				d.Processes[0].Exe = "/tmp/" + comm
				d.Reason = "no rule allows " + comm
				events := []Event{fixedEvent(i, TypeOpened, d), fixedEvent(i+1, TypeChanged, d)}
				body, err := formats[format].render(events, policy.Webhook{Name: "t", URL: "https://h.example/t"}, testTime)
				if err != nil {
					t.Fatal(err)
				}
				if !json.Valid(body) {
					t.Fatalf("invalid JSON:\n%s", body)
				}
				if format == "generic" || format == "alertmanager" {
					// Machine formats carry the raw values, JSON-escaped.
					return
				}
				var texts []string
				collectStrings(t, body, &texts)
				all := strings.Join(texts, "\n")
				bads := []string{"<!channel>", "<!here>", "<!everyone>", "<@U123>", "<users/all>", "\x1b", "\x00", "\u202e"}
				if format == "ntfy" {
					// ntfy shows plain text: no mentions, no Markdown
					// unless asked for. Only control characters matter.
					bads = []string{"\x1b", "\x00", "\u202e"}
				}
				for _, bad := range bads {
					if strings.Contains(all, bad) {
						t.Errorf("%s payload contains live %q:\n%s", format, bad, all)
					}
				}
				switch format {
				case "mattermost", "discord", "googlechat":
					for _, m := range []string{"@channel", "@here", "@all", "@everyone"} {
						if strings.Contains(all, m) {
							t.Errorf("%s payload contains live %q:\n%s", format, m, all)
						}
					}
				}
				switch format {
				case "mattermost", "discord", "teams":
					if strings.Contains(all, "**bold**") || strings.Contains(all, "[link](") || strings.Contains(all, "\n```") {
						t.Errorf("%s payload contains live Markdown:\n%s", format, all)
					}
				}
				if format == "discord" {
					var p struct {
						Content         string `json:"content"`
						AllowedMentions struct {
							Parse []string `json:"parse"`
						} `json:"allowed_mentions"`
					}
					if err := json.Unmarshal(body, &p); err != nil {
						t.Fatal(err)
					}
					if p.AllowedMentions.Parse == nil || len(p.AllowedMentions.Parse) != 0 {
						t.Errorf("allowed_mentions.parse = %v, want []", p.AllowedMentions.Parse)
					}
					if n := utf8.RuneCountInString(p.Content); n > 2000 {
						t.Errorf("content has %d characters, want <= 2000", n)
					}
				}
			})
		}
	}
}

// collectStrings appends every string value in a JSON document.
func collectStrings(t *testing.T, body []byte, out *[]string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			*out = append(*out, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
}

// TestFormatsLimits checks each chat service's length limits with a big batch
// (500 listeners of one holder) and a very long executable path.
func TestFormatsLimits(t *testing.T) {
	var events []Event
	for i := 0; i < 500; i++ {
		d := unexpected(uint16(1000+i), "x")
		d.Processes[0].Exe = "/tmp/" + strings.Repeat("a", 3000)
		events = append(events, fixedEvent(i, TypeOpened, d))
	}
	tests := []struct {
		name   string
		format string
		field  func(map[string]any) string
		max    int
	}{
		{name: "slack section", format: "slack", max: 3000, field: func(m map[string]any) string {
			return m["blocks"].([]any)[1].(map[string]any)["text"].(map[string]any)["text"].(string)
		}},
		{name: "slack header", format: "slack", max: 150, field: func(m map[string]any) string {
			return m["blocks"].([]any)[0].(map[string]any)["text"].(map[string]any)["text"].(string)
		}},
		{name: "discord content", format: "discord", max: 2000, field: func(m map[string]any) string { return m["content"].(string) }},
		{name: "mattermost text", format: "mattermost", max: 16383, field: func(m map[string]any) string { return m["text"].(string) }},
		{name: "googlechat text", format: "googlechat", max: 4096, field: func(m map[string]any) string { return m["text"].(string) }},
		{name: "ntfy message", format: "ntfy", max: 4096, field: func(m map[string]any) string { return m["message"].(string) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := formats[tt.format].render(events, policy.Webhook{Name: "t", URL: "https://h.example/t"}, testTime)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			s := tt.field(m)
			if n := utf8.RuneCountInString(s); n > tt.max {
				t.Errorf("%d characters, want <= %d", n, tt.max)
			}
			if tt.format == "ntfy" && len(s) > tt.max {
				t.Errorf("%d bytes, want <= %d", len(s), tt.max)
			}
			// One holder: one line names every port.
			if tt.name != "slack header" && (!strings.Contains(s, "tcp 0.0.0.0:1000-1499") || strings.Contains(s, "more")) {
				t.Errorf("not every port named in %q", truncate(s, 300))
			}
		})
	}
	var m map[string]any
	body, _ := formats["discord"].build(events, policy.Webhook{})
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	embeds := m["embeds"].([]any)
	total := 0
	for _, e := range embeds {
		e := e.(map[string]any)
		total += utf8.RuneCountInString(e["title"].(string)) + utf8.RuneCountInString(e["description"].(string))
	}
	if len(embeds) > 10 || total > 6000 {
		t.Errorf("discord: %d embeds, %d characters; want <= 10 and <= 6000", len(embeds), total)
	}
}

func TestList(t *testing.T) {
	id := func(s string) string { return s }
	short := []Event{{Message: "aaaa"}, {Message: "bbbb"}, {Message: "cccccccccccc"}}
	var storm []Event
	for _, p := range []uint16{40000, 40001, 40002, 22, 40003, 8080} {
		storm = append(storm, fixedEvent(int(p), TypeOpened, unexpected(p, "x")))
	}
	other := unexpected(53, "x")
	other.Protocol, other.Netns = "udp", "vpn"
	storm = append(storm, fixedEvent(1, TypeOpened, other), fixedEvent(2, TypeClosed, unexpected(9, "x")))
	reminder := NewEvent(TypeOpened, unexpected(7, "x"), "web-1", testTime, WithNote("reminder"))
	storm = append(storm, reminder)
	tests := []struct {
		name    string
		events  []Event
		limit   int
		want    string
		grouped bool
	}{
		{name: "all fit", events: short, limit: 100, want: "- aaaa\n- bbbb\n- cccccccccccc"},
		// Events with messages of their own are groups of one.
		{name: "two fit", events: short, limit: 27, grouped: true, want: "- aaaa\n- bbbb\n… and 1 more"},
		{name: "one fits", events: short, limit: 21, grouped: true, want: "- aaaa\n… and 2 more"},
		{name: "none fit", events: short, limit: 5, grouped: true, want: "… and 3 more"},
		{name: "storm grouped by holder, ports as ranges", events: storm, limit: 1000, grouped: true, want: "" +
			"- unexpected listeners opened by /tmp/x (pid 812, user nobody, unit evil.service): tcp 0.0.0.0:22,8080,40000-40003, udp 0.0.0.0:53 in netns vpn\n" +
			"- unexpected listener closed, alert resolved (held by /tmp/x (pid 812, user nobody, unit evil.service)): tcp 0.0.0.0:9\n" +
			"- unexpected listener opened by /tmp/x (pid 812, user nobody, unit evil.service): tcp 0.0.0.0:7 (reminder)"},
		{name: "storm over the limit", events: storm, limit: 200, grouped: true, want: "" +
			"- unexpected listeners opened by /tmp/x (pid 812, user nobody, unit evil.service): tcp 0.0.0.0:22,8080,40000-40003, udp 0.0.0.0:53 in netns vpn\n" +
			"… and 2 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := listStyle{bullet: "- ", esc: id, limit: fixedLimit(tt.limit)}
			got, grouped := st.list(tt.events)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
			if grouped != tt.grouped {
				t.Errorf("grouped = %v, want %v", grouped, tt.grouped)
			}
		})
	}
}

func TestPortRuns(t *testing.T) {
	tests := []struct {
		name  string
		ports []int
		want  string
	}{
		{name: "one", ports: []int{22}, want: "22"},
		{name: "run", ports: []int{40002, 40000, 40001}, want: "40000-40002"},
		{name: "runs and singles", ports: []int{80, 22, 443, 444, 445, 8080, 8081}, want: "22,80,443-445,8080-8081"},
		{name: "duplicates", ports: []int{53, 53, 54}, want: "53-54"},
		{name: "edges", ports: []int{65535, 1, 65534}, want: "1,65534-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, portRuns(tt.ports)); diff != "" {
				t.Errorf("portRuns(%v) (-want +got):\n%s", tt.ports, diff)
			}
		})
	}
}

// TestFormatsMatchConfig: every format the config accepts has a builder, and
// there is no builder the config would refuse.
func TestFormatsMatchConfig(t *testing.T) {
	got := slices.Sorted(maps.Keys(formats))
	want := slices.Sorted(slices.Values(policy.WebhookFormats()))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("format builders (-want +got):\n%s", diff)
	}
}

// TestFormatsMuteMentions: in every chat format, a process name, path, user
// or host written as a mention notifies nobody. Slack-compatible receivers
// (Mattermost, Rocket.Chat) take the Slack format and fire @here from plain
// text, so the Slack format must mute it too.
func TestFormatsMuteMentions(t *testing.T) {
	// A "<" the Markdown formats escaped ("\<") is text.
	live := regexp.MustCompile(`@[\p{L}\p{N}_]|(?:^|[^\\])(?:<[!@#]|<users/|<at>)`)
	liveAt := regexp.MustCompile(`@[\p{L}\p{N}_]`)
	names := []struct{ name, s string }{
		{name: "everyone", s: "@everyone"},
		{name: "here", s: "@here"},
		{name: "channel", s: "@channel"},
		{name: "all", s: "@all"},
		{name: "user", s: "@alice"},
		{name: "slack broadcast", s: "<!channel>"},
		{name: "slack user", s: "<@U123>"},
		{name: "google chat", s: "<users/all>"},
		{name: "teams", s: "<at>everyone</at>"},
		{name: "unicode", s: "@ünïcode"},
	}
	for _, format := range Formats() {
		if format == "generic" || format == "alertmanager" {
			// Machine formats carry the raw values for matching.
			continue
		}
		for _, n := range names {
			t.Run(format+"/"+n.name, func(t *testing.T) {
				d := unexpected(4444, n.s)
				d.Processes[0].Exe = "/tmp/" + n.s
				d.Processes[0].User = n.s
				d.Reason = "no rule allows " + n.s
				events := []Event{fixedEvent(1, TypeOpened, d), fixedEvent(2, TypeClosed, d)}
				for i := range events {
					events[i].Host = n.s
				}
				body, err := formats[format].build(events, policy.Webhook{Name: "t", URL: "https://h.example/t"})
				if err != nil {
					t.Fatal(err)
				}
				var texts []string
				collectStrings(t, body, &texts)
				re := live
				if format == "ntfy" {
					// ntfy shows plain text: "<!here>" is text there, an
					// @here may still reach a chat it is bridged to.
					re = liveAt
				}
				for _, s := range texts {
					if m := re.FindString(s); m != "" {
						t.Errorf("live mention %q in %q", m, s)
					}
				}
			})
		}
	}
}

// TestAlertmanagerDescriptionEscaped: the description annotation is text for
// people (Alertmanager templates paste it into chat and mail), so the reason,
// which quotes the process's names, is escaped as messages are.
func TestAlertmanagerDescriptionEscaped(t *testing.T) {
	d := unexpected(4444, "x")
	d.Reason = "no rule allows /tmp/x\n\x1b[31mname"
	body, err := formats["alertmanager"].render([]Event{fixedEvent(1, TypeOpened, d)}, policy.Webhook{}, testTime)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(body, &alerts); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`no rule allows /tmp/x\n\x1b[31mname`, alerts[0].Annotations["description"]); diff != "" {
		t.Errorf("description (-want +got):\n%s", diff)
	}
}

// TestSplit: split divides a delivery into parts that hold every event once,
// in order within each holder, each part's list fitting without "… and N
// more", in as many parts as needed up to maxMessages; past that the last
// part counts what does not fit.
func TestSplit(t *testing.T) {
	distinct := func(n, pathLen int) []Event {
		var events []Event
		for i := range n {
			d := unexpected(uint16(1000+i), "x")
			d.Processes[0].PID = 10000 + i
			d.Processes[0].Exe = fmt.Sprintf("/opt/%s/%d", strings.Repeat("p", pathLen), i)
			events = append(events, fixedEvent(i, TypeOpened, d))
		}
		return events
	}
	tests := []struct {
		name     string
		events   []Event
		parts    int
		lastCuts bool // the last part ends in "… and N more"
	}{
		{name: "fits one line each", events: distinct(3, 10), parts: 1},
		{name: "one holder", events: stormEvents(false), parts: 1},
		{name: "mixed holders", events: stormEvents(true), parts: 2},
		// 100 lines of about 123 characters: 12,290 in all, 5 messages of 2,900.
		{name: "many holders", events: distinct(100, 10), parts: 5},
		{name: "more holders than ten messages hold", events: distinct(500, 60), parts: maxMessages, lastCuts: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts := slackList.split(tt.events)
			if len(parts) != tt.parts {
				t.Errorf("%d parts, want %d", len(parts), tt.parts)
			}
			var got []string
			for i, p := range parts {
				for _, ev := range p {
					got = append(got, ev.ID)
				}
				text, _ := slackList.list(p)
				if n := utf8.RuneCountInString(text); n > 2900 {
					t.Errorf("part %d: %d characters, want <= 2900", i, n)
				}
				cut := strings.Contains(text, " more")
				if want := tt.lastCuts && i == len(parts)-1; cut != want {
					t.Errorf("part %d ends in \"… and N more\": %v, want %v", i, cut, want)
				}
			}
			if diff := cmp.Diff(ids(tt.events), got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("events of the parts (-want +got):\n%s", diff)
			}
		})
	}
}
