package notify

import (
	"encoding/json"
	"maps"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
)

// formatter turns a batch into one request body for a service.
type formatter struct {
	build func(events []Event, h policy.Webhook) ([]byte, error)
	// buildAt, when set, replaces build for a payload that depends on when
	// it is sent (Alertmanager's endsAt).
	buildAt func(events []Event, h policy.Webhook, now time.Time) ([]byte, error)
	// path, when set, derives the request URL from the configured one.
	path func(u url.URL, h policy.Webhook) url.URL
	// split, when set, divides a delivery into the events of each message
	// (a chat service's size limit); build is called for each.
	split func(events []Event) [][]Event
}

// render returns the request body for events sent at now.
func (f formatter) render(events []Event, h policy.Webhook, now time.Time) ([]byte, error) {
	if f.buildAt != nil {
		return f.buildAt(events, h, now)
	}
	return f.build(events, h)
}

// formats maps the format: names onto their builders.
var formats = map[string]formatter{
	"generic":      {build: buildGeneric},
	"slack":        {build: buildSlack, split: slackList.split},
	"mattermost":   {build: buildMattermost, split: mattermostList.split},
	"discord":      {build: buildDiscord, split: discordList.split},
	"teams":        {build: buildTeams, split: teamsList.split},
	"googlechat":   {build: buildGoogleChat, split: googleChatList.split},
	"ntfy":         {build: buildNtfy, path: ntfyURL, split: ntfyList.split},
	"alertmanager": {buildAt: buildAlertmanager, path: alertmanagerURL},
}

// How each chat format lists events (see listStyle), within the service's
// limits: Slack's section text holds 3000 characters; Mattermost posts
// 16383, kept short; Discord's content 2000 with the headline; Google Chat
// 4096; ntfy turns messages over 4096 bytes into attachments.
//
// The line of a critical listener starts with a bold CRITICAL (plain in
// ntfy), and the headline of a message that holds one starts with CRITICAL:
// a clear marker, never a mention.
var (
	slackList      = listStyle{bullet: "• ", mark: "*CRITICAL* ", esc: escapeSlack, limit: fixedLimit(2900)}
	mattermostList = listStyle{bullet: "- ", mark: "**CRITICAL** ", esc: escapeMattermost, limit: fixedLimit(4000)}
	discordList    = listStyle{bullet: "- ", mark: "**CRITICAL** ", esc: escapeMarkdown, limit: func(events []Event) int {
		return 2000 - utf8.RuneCountInString(discordHead(events))
	}}
	teamsList      = listStyle{bullet: "- ", mark: "**CRITICAL** ", esc: escapeMarkdown, limit: fixedLimit(8000)}
	googleChatList = listStyle{bullet: "• ", mark: "*CRITICAL* ", esc: escapeGoogleChat, limit: fixedLimit(4000)}
	ntfyList       = listStyle{bullet: "- ", mark: "CRITICAL ", esc: escapeNtfy, limit: fixedLimit(3500)}
)

// Formats lists the supported format: names: those the config accepts.
func Formats() []string { return policy.WebhookFormats() }

// marshal encodes v without HTML escaping, so that "<" stays readable where
// a format escapes it itself; every format is still valid JSON.
func marshal(v any) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

func buildGeneric(events []Event, _ policy.Webhook) ([]byte, error) {
	return marshal(struct {
		Events []Event `json:"events"`
	}{events})
}

// title is the headline of a chat message for a batch: "portwatchd on
// web-1: 2 unexpected listeners, 1 resolved", and "CRITICAL portwatchd on
// web-1: 2 unexpected listeners (1 critical)" when one is critical.
func title(events []Event) string {
	host := "unknown host"
	if len(events) > 0 && events[0].Host != "" {
		host = textesc.Line(events[0].Host)
	}
	var opened, critical, closed, test, other int
	for _, ev := range events {
		switch {
		case ev.Type == TypeTest:
			test++
		case ev.Type == TypeClosed:
			closed++
		case ev.Severity >= policy.SeverityWarning:
			opened++
			if ev.Severity >= policy.SeverityCritical {
				critical++
			}
		default:
			other++
		}
	}
	var parts []string
	if opened > 0 {
		s := plural(opened, "unexpected listener", "unexpected listeners")
		if critical > 0 {
			s += " (" + strconv.Itoa(critical) + " critical)"
		}
		parts = append(parts, s)
	}
	if closed > 0 {
		parts = append(parts, plural(closed, "resolved", "resolved"))
	}
	if other > 0 {
		parts = append(parts, plural(other, "event", "events"))
	}
	if test > 0 {
		parts = append(parts, "test notification")
	}
	t := "portwatchd on " + host + ": " + strings.Join(parts, ", ")
	if critical > 0 {
		t = "CRITICAL " + t
	}
	return t
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// maxLine bounds one line of a chat list (an event's message, or a
// holder's name), so one hostile path cannot push every other event out of
// the message.
const maxLine = 400

// slackEntities escapes the three characters Slack's mrkdwn requires, which
// also turns <!channel> and <@U123> into inert text.
var slackEntities = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escapeSlack escapes text for the Slack format. Mentions are muted too:
// Slack itself fires only <!here>, but Slack-compatible receivers
// (Mattermost, Rocket.Chat) also fire @here and @all from plain text.
func escapeSlack(s string) string { return muteMentions(slackEntities.Replace(s)) }

// markdownEscaper backslash-escapes CommonMark's punctuation that can start
// emphasis, code, spoilers, links, quotes or (in Discord) mentions, as
// Discord, Mattermost and Teams accept. Parentheses and "#" need no escape:
// without "[" and "]" there is no link, and a summary line never starts with
// "#" (control characters, newlines included, are already escaped).
var markdownEscaper = strings.NewReplacer(
	`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "~", `\~`, "|", `\|`,
	"[", `\[`, "]", `\]`, ">", `\>`, "<", `\<`,
)

// muteMentions puts a zero-width space after every "@", so that @channel,
// @here, @all, @everyone or @user in a process name cannot notify anyone.
// Every chat format applies it, once, as the last step.
func muteMentions(s string) string { return strings.ReplaceAll(s, "@", "@\u200b") }

// escapeMattermost escapes Markdown, then &, < and > as for Slack (Mattermost
// expands Slack's <!channel> in incoming webhooks), then mutes @mentions,
// which Mattermost also fires from plain text.
func escapeMattermost(s string) string {
	return muteMentions(slackEntities.Replace(markdownNoAngle.Replace(s)))
}

var markdownNoAngle = strings.NewReplacer(
	`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "~", `\~`, "|", `\|`,
	"[", `\[`, "]", `\]`,
)

// escapeMarkdown is the escape of the Discord and Teams formats: Markdown,
// then mentions (Teams mentions need <at>, escaped as "\<at\>", and an
// entity the payload never has; @here in text is muted all the same).
func escapeMarkdown(s string) string { return muteMentions(markdownEscaper.Replace(s)) }

// escapeNtfy mutes @mentions in ntfy's plain text, for the chats it may be
// bridged to (ntfy's Markdown is not asked for, so there is none to escape).
func escapeNtfy(s string) string { return muteMentions(s) }

func buildSlack(events []Event, _ policy.Webhook) ([]byte, error) {
	// Slack: a section's text holds at most 3000 characters, a header 150.
	head := escapeSlack(truncate(title(events), 150))
	body, _ := slackList.list(events)
	return marshal(map[string]any{
		"text": head + "\n" + body,
		"blocks": []any{
			map[string]any{"type": "header", "text": map[string]any{"type": "plain_text", "text": head}},
			map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": body}},
		},
	})
}

func buildMattermost(events []Event, _ policy.Webhook) ([]byte, error) {
	list, _ := mattermostList.list(events)
	text := "#### " + escapeMattermost(title(events)) + "\n" + list
	return marshal(map[string]any{"text": text})
}

func buildDiscord(events []Event, _ policy.Webhook) ([]byte, error) {
	list, grouped := discordList.list(events)
	content := discordHead(events) + list
	// A grouped list has no embeds: the groups are what the reader needs.
	embeds := []any{}
	if !grouped {
		embeds = discordEmbeds(events)
	}
	return marshal(map[string]any{
		"content":          content,
		"embeds":           embeds,
		"allowed_mentions": map[string]any{"parse": []string{}},
	})
}

// discordEmbeds is one embed per event: at most 10, and 6000 characters in
// total.
func discordEmbeds(events []Event) []any {
	var embeds []any
	total := 0
	for _, ev := range events {
		if len(embeds) == 10 {
			break
		}
		t := truncate(escapeMarkdown(shortType(ev.Type)+" "+endpoint(ev.Listener.Listener)), 256)
		if ev.Type == TypeTest {
			t = "test"
		}
		d := truncate(escapeMarkdown(ev.Message), 1000)
		size := utf8.RuneCountInString(t) + utf8.RuneCountInString(d)
		if total+size > 5500 {
			break
		}
		total += size
		embeds = append(embeds, map[string]any{
			"title":       t,
			"description": d,
			"color":       colour(ev.Severity),
			"timestamp":   ev.Time.UTC().Format(time.RFC3339),
		})
	}
	return embeds
}

// discordHead is the bold headline of a Discord message.
func discordHead(events []Event) string { return "**" + escapeMarkdown(title(events)) + "**\n" }

// colour is a Discord embed's colour: red for critical, orange for a
// warning, green for a notice (a resolve, a test), grey for the rest.
func colour(s policy.Severity) int {
	switch {
	case s >= policy.SeverityCritical:
		return 0xE74C3C
	case s == policy.SeverityWarning:
		return 0xE67E22
	case s == policy.SeverityNotice:
		return 0x2ECC71
	}
	return 0x95A5A6
}

// anyCritical says whether events hold a critical one.
func anyCritical(events []Event) bool {
	return slices.ContainsFunc(events, func(ev Event) bool { return ev.Severity >= policy.SeverityCritical })
}

func buildTeams(events []Event, _ policy.Webhook) ([]byte, error) {
	list, _ := teamsList.list(events)
	head := map[string]any{"type": "TextBlock", "text": escapeMarkdown(title(events)), "weight": "Bolder", "size": "Medium", "wrap": true}
	if anyCritical(events) {
		// Adaptive Cards' red.
		head["color"] = "Attention"
	}
	card := map[string]any{
		"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
		"type":    "AdaptiveCard",
		"version": "1.4",
		"body": []any{
			head,
			map[string]any{"type": "TextBlock", "text": list, "wrap": true},
		},
	}
	return marshal(map[string]any{
		"type": "message",
		"attachments": []any{map[string]any{
			"contentType": "application/vnd.microsoft.card.adaptive",
			"contentUrl":  nil,
			"content":     card,
		}},
	})
}

// escapeGoogleChat neutralises Google Chat's mention syntax (<users/all>)
// and its formatting markers.
func escapeGoogleChat(s string) string {
	return muteMentions(strings.NewReplacer("<", "‹", ">", "›", "*", "∗", "_", "\u02cd", "~", "∼", "`", "ˋ").Replace(s))
}

func buildGoogleChat(events []Event, _ policy.Webhook) ([]byte, error) {
	list, _ := googleChatList.list(events)
	text := "*" + escapeGoogleChat(title(events)) + "*\n" + list
	return marshal(map[string]any{"text": text})
}

// ntfyURL is where ntfy takes JSON: its root, which behind a reverse proxy
// is a path prefix. The query is kept: ntfy reads credentials from ?auth=.
func ntfyURL(u url.URL, h policy.Webhook) url.URL {
	root, _ := ntfySplit(u, h.Topic)
	return root
}

// ntfySplit splits an ntfy URL into its root and the topic. The last path
// segment is the topic unless topic: is set ("https://example.com/ntfy/alerts"
// is root /ntfy/, topic alerts); a topic: equal to the last segment is taken
// off too.
func ntfySplit(u url.URL, topic string) (url.URL, string) {
	p := strings.TrimSuffix(u.Path, "/")
	dir, last := path.Split(p)
	switch {
	case topic == "":
		topic, p = last, dir
	case last == topic:
		p = dir
	case p != "":
		p += "/"
	}
	if p == "" {
		p = "/"
	}
	u.Path, u.RawPath = p, ""
	return u, topic
}

func buildNtfy(events []Event, h policy.Webhook) ([]byte, error) {
	var topic string
	if u, err := url.Parse(h.URL); err == nil {
		_, topic = ntfySplit(*u, h.Topic)
	} else {
		topic = h.Topic
	}
	// The priority and tags of the most severe event: 5 (max, a
	// persistent alert on phones) for critical, 4 for a warning, 3 else.
	prio, tags := 3, []string{"white_check_mark"}
	for _, ev := range events {
		switch {
		case ev.Type == TypeTest:
			tags = []string{"test_tube"}
		case ev.Severity >= policy.SeverityCritical:
			prio, tags = 5, []string{"rotating_light", "critical"}
		case ev.Severity == policy.SeverityWarning && prio < 5:
			prio, tags = 4, []string{"warning", "rotating_light"}
		}
	}
	// ntfy turns messages over 4096 bytes into attachments; stay below.
	msg, _ := ntfyList.list(events)
	for len(msg) > 4000 {
		msg = truncate(msg, utf8.RuneCountInString(msg)-200)
	}
	return marshal(map[string]any{
		"topic":    topic,
		"title":    escapeNtfy(title(events)),
		"message":  msg,
		"priority": prio,
		"tags":     tags,
	})
}

// alertmanagerURL appends the v2 alerts path unless the URL already ends in
// it.
func alertmanagerURL(u url.URL, _ policy.Webhook) url.URL {
	if !strings.HasSuffix(u.Path, "/api/v2/alerts") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v2/alerts"
		u.RawPath = ""
	}
	return u
}

// AlertName is the alertname label of portwatchd's alerts in Alertmanager.
const AlertName = "PortwatchUnexpectedListener"

// alertLifetime is how long after a request a firing alert it carries ends
// unless sent again: 4 resend intervals, as Prometheus does. The sink
// re-sends every alert still firing each interval, so the alert stays
// active while portwatchd runs and resolves by itself within about four
// intervals once it stops (or its host dies); the closed event resolves it
// at once.
func alertLifetime(h policy.Webhook) time.Duration {
	return 4 * resendInterval(h)
}

// resendInterval is h's resend_interval, or the default for a webhook built
// without one.
func resendInterval(h policy.Webhook) time.Duration {
	if h.ResendInterval > 0 {
		return h.ResendInterval
	}
	return policy.DefaultResendInterval
}

func alertLabels(ev Event) map[string]string {
	l := ev.Listener
	labels := map[string]string{"alertname": AlertName, "instance": ev.Host}
	if ev.Type == TypeTest {
		labels["alertname"] = "PortwatchTest"
		labels["severity"] = ev.Severity.String()
		return dropEmpty(labels)
	}
	labels["protocol"] = l.Protocol
	if l.Address.IsValid() {
		labels["address"] = l.Address.String()
	}
	labels["port"] = strconv.Itoa(int(l.Port))
	labels["netns"] = l.Netns
	if len(l.Processes) > 0 {
		labels["exe"] = l.Processes[0].Exe
	}
	labels["rule"] = l.Rule
	if l.Exposure != nil {
		labels["exposure"] = strings.Join(l.Exposure.Classes(), ",")
	}
	labels["severity"] = labelSeverity(ev).String()
	return dropEmpty(labels)
}

// labelSeverity is the severity label of ev's alert: that of the alert
// (alertSeverity), on its closed event too, whose own severity is notice:
// the labels of a resolve must be those the alert fired with.
func labelSeverity(ev Event) policy.Severity {
	if ev.Listener.Verdict == policy.Unexpected {
		return alertSeverity(ev.Listener)
	}
	return ev.Severity
}

// exposureAnnotation is the listener's exposure in a phrase, for the
// Alertmanager annotation; "" when not known.
func exposureAnnotation(d policy.Decision) string {
	if d.Exposure == nil {
		return ""
	}
	return textesc.Line(policy.ExposurePhrase(d.Exposure))
}

// publishedAnnotation lists the publications of the listener, or where a
// published port with no socket of its own leads.
func publishedAnnotation(d policy.Decision) string {
	var out []string
	if d.Published != "" {
		out = append(out, textesc.Line(d.Published))
	}
	if d.Exposure != nil {
		for _, p := range d.Exposure.Published {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, "; ")
}

func dropEmpty(m map[string]string) map[string]string {
	for k, v := range m {
		if v == "" || !utf8.ValidString(v) {
			if v != "" {
				m[k] = strings.ToValidUTF8(v, "\uFFFD")
				continue
			}
			delete(m, k)
		}
	}
	return m
}

func buildAlertmanager(events []Event, h policy.Webhook, now time.Time) ([]byte, error) {
	type alert struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    string            `json:"startsAt,omitempty"`
		EndsAt      string            `json:"endsAt,omitempty"`
	}
	alerts := make([]alert, 0, len(events))
	for _, ev := range events {
		if ev.Type == TypeClosed && ev.Transient != nil {
			// Alertmanager notifies only what still fires at group_wait:
			// an alert resolved milliseconds after it was raised would
			// reach no one. It ends by itself at the endsAt its opened
			// event set (alertLifetime), as a transient one seen only
			// once does.
			continue
		}
		a := alert{
			Labels: alertLabels(ev),
			Annotations: dropEmpty(map[string]string{
				"summary":     ev.Message,
				"description": textesc.Line(ev.Listener.Reason),
				"event_id":    ev.ID,
				"event":       shortType(ev.Type),
				"flags":       joinFlags(HolderFlags(ev.Listener.Listener), ","),
				"risk_flags":  knownNames(ev.Listener.Flags),
				"exposure":    exposureAnnotation(ev.Listener),
				"published":   publishedAnnotation(ev.Listener),
			}),
		}
		t := ev.Time.UTC()
		if ev.Type == TypeChanged && ev.Previous != nil {
			// The owner is a label: the changed alert is a new alert in
			// Alertmanager, so resolve the one the previous owner raised.
			prev := ev
			prev.Listener, prev.Previous = *ev.Previous, nil
			if pl := alertLabels(prev); !maps.Equal(pl, a.Labels) {
				alerts = append(alerts, alert{
					Labels:      pl,
					Annotations: dropEmpty(map[string]string{"summary": ev.Message, "event_id": ev.ID, "event": shortType(ev.Type)}),
					EndsAt:      t.Format(time.RFC3339Nano),
				})
			}
		}
		switch ev.Type {
		case TypeClosed:
			// Only endsAt, the time it closed: Alertmanager merges it into
			// the firing alert with the same labels, which resolves it.
			a.EndsAt = t.Format(time.RFC3339Nano)
		case TypeTest:
			a.StartsAt = t.Format(time.RFC3339Nano)
			a.EndsAt = t.Add(5 * time.Minute).Format(time.RFC3339Nano)
		default:
			// startsAt is the event's time, so a retry or a re-send is the
			// same alert; endsAt counts from the request, so an event that
			// waited in the spool is not already over when it arrives.
			a.StartsAt = t.Format(time.RFC3339Nano)
			a.EndsAt = now.UTC().Add(alertLifetime(h)).Format(time.RFC3339Nano)
		}
		alerts = append(alerts, a)
	}
	return marshal(alerts)
}
