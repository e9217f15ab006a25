package notify

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
)

// A chat message lists the events of a delivery, one line each, as long as
// they fit in the service's limit. A storm does not fit: hundreds of
// listeners opened by one process would be cut to the first few and "… and
// 490 more". So when the lines do not fit, the events are grouped by what
// happened and who holds the socket, and each group is one line naming every
// endpoint, with runs of ports as ranges:
//
//	unexpected listeners opened by /usr/bin/python3.11 (pid 4242, user www): tcp 0.0.0.0:40000-40499
//
// When even the groups do not fit in one message, the webhook sends several
// (split), each within the limit: as few as needed, at most maxMessages.

// maxMessages bounds the messages one delivery is split into, so that a
// storm cannot flood a channel (or the service's rate limit). 500 listeners
// in a few groups take one or two; past maxMessages, the last message ends
// in "… and N more".
const maxMessages = 10

// listStyle is how a chat format lists events: each line starts with
// bullet, lines are joined by "\n", text is escaped by esc, and the list of
// a message holding events may take limit(events) characters (runes).
type listStyle struct {
	bullet string
	// mark starts the line of a critical listener, after the bullet:
	// fixed text in the format's markup, not escaped.
	mark  string
	esc   func(string) string
	limit func(events []Event) int
}

func fixedLimit(n int) func([]Event) int { return func([]Event) int { return n } }

// line is one line of a list, unescaped, and how many events it covers.
type line struct {
	text     string
	events   int
	critical bool // the line starts with the style's mark
}

// list renders events as the list of one message. grouped says the events
// did not fit one line each and are grouped (see groupEvents). Lines that
// still do not fit (a delivery that was not split) are counted in a last
// "… and N more".
func (st listStyle) list(events []Event) (text string, grouped bool) {
	limit := st.limit(events)
	if lines := eventLines(events); st.fits(lines, limit) {
		return st.render(lines, limit), false
	}
	var lines []line
	for _, g := range groupEvents(events) {
		lines = append(lines, line{g.text(g.events), len(g.events), g.critical})
	}
	return st.render(lines, limit), true
}

// split divides a delivery into the events of each message: one message
// when the events fit one line each; else the groups of groupEvents, a group
// too long for one message spread over several, packed in order into as few
// messages as the limit allows (at most maxMessages).
func (st listStyle) split(events []Event) [][]Event {
	limit := st.limit(events)
	if st.fits(eventLines(events), limit) {
		return [][]Event{events}
	}
	var (
		parts [][]Event
		cur   []Event // events of the message being filled
		size  int     // its list's size so far
	)
	add := func(chunk []Event, n int) {
		if len(cur) > 0 {
			n++ // the "\n" before the line
		}
		cur, size = append(cur, chunk...), size+n
	}
	for _, g := range groupEvents(events) {
		var chunk []Event // the events of g in the current message
		n := 0            // the size of their line
		for _, ev := range g.events {
			try := append(chunk[:len(chunk):len(chunk)], ev)
			m := st.size(g.text(try), g.critical)
			sep := 0
			if len(cur) > 0 {
				sep = 1
			}
			if size+sep+m <= limit || (len(cur) == 0 && len(chunk) == 0) {
				chunk, n = try, m
				continue
			}
			if len(chunk) > 0 {
				add(chunk, n)
			}
			parts = append(parts, cur)
			cur, size = nil, 0
			chunk, n = []Event{ev}, st.size(g.text([]Event{ev}), g.critical)
		}
		add(chunk, n)
	}
	if len(cur) > 0 {
		parts = append(parts, cur)
	}
	if len(parts) > maxMessages {
		last := slices.Concat(parts[maxMessages-1:]...)
		parts = append(parts[:maxMessages-1], last)
	}
	return parts
}

// size is the length of one line as sent.
func (st listStyle) size(text string, critical bool) int {
	return utf8.RuneCountInString(st.head(critical)) + utf8.RuneCountInString(st.esc(text))
}

// head is what a line starts with: the bullet, and the mark when critical.
func (st listStyle) head(critical bool) string {
	if critical {
		return st.bullet + st.mark
	}
	return st.bullet
}

func (st listStyle) fits(lines []line, limit int) bool {
	total := 0
	for i, l := range lines {
		if i > 0 {
			total++
		}
		total += st.size(l.text, l.critical)
		if total > limit {
			return false
		}
	}
	return true
}

// render joins lines, keeping the result within limit characters; the
// events of lines that do not fit are counted in a final "… and N more".
func (st listStyle) render(lines []line, limit int) string {
	rest := 0
	for _, l := range lines {
		rest += l.events
	}
	var b strings.Builder
	size := 0
	for i, l := range lines {
		add := st.head(l.critical) + st.esc(l.text)
		if i > 0 {
			add = "\n" + add
		}
		rest -= l.events
		more := 0
		if rest > 0 {
			more = utf8.RuneCountInString("\n" + st.esc(fmt.Sprintf("… and %d more", rest)))
		}
		n := utf8.RuneCountInString(add)
		if size+n+more > limit {
			rest += l.events
			break
		}
		b.WriteString(add)
		size += n
	}
	if rest > 0 {
		if size > 0 {
			b.WriteString("\n")
		}
		b.WriteString(st.esc(fmt.Sprintf("… and %d more", rest)))
	}
	return b.String()
}

// eventLines is one line per event: its message.
func eventLines(events []Event) []line {
	lines := make([]line, len(events))
	for i, ev := range events {
		lines[i] = line{truncate(ev.Message, maxLine), 1, ev.Severity >= policy.SeverityCritical}
	}
	return lines
}

// group is events alike in all but their endpoints: the same type, verdict,
// holder and severity (critical or not), and the same note. An event whose message is not the one
// NewEvent writes from its decision (a resolve of a listener now allowed) is
// a group of its own, shown by its message.
type group struct {
	events   []Event
	typ      string
	d        policy.Decision // of the first event: verdict and holder
	note     string          // what follows the standard message, e.g. " (reminder: ...)"
	custom   bool
	critical bool
}

// groupEvents groups events in the order each group first appears.
func groupEvents(events []Event) []*group {
	var groups []*group
	index := map[string]*group{}
	for _, ev := range events {
		crit := ev.Severity >= policy.SeverityCritical
		std := message(ev.Type, ev.Listener, ev.Host)
		note, ok := strings.CutPrefix(ev.Message, std)
		if !ok || ev.Type == TypeTest || (note != "" && !strings.HasPrefix(note, " (")) {
			groups = append(groups, &group{events: []Event{ev}, custom: true, critical: crit})
			continue
		}
		key := ev.Type + "\x00" + string(ev.Listener.Verdict) + "\x00" + holder(ev.Listener.Listener) + "\x00" + note +
			"\x00" + strconv.FormatBool(crit)
		g := index[key]
		if g == nil {
			g = &group{typ: ev.Type, d: ev.Listener, note: note, critical: crit}
			index[key] = g
			groups = append(groups, g)
		}
		g.events = append(g.events, ev)
	}
	return groups
}

// text is the line of the events evs of g.
func (g *group) text(evs []Event) string {
	if g.custom {
		return truncate(evs[0].Message, maxLine)
	}
	noun := "listener"
	if len(evs) > 1 {
		noun = "listeners"
	}
	who := truncate(holder(g.d.Listener), maxLine)
	var head string
	switch {
	case g.typ == TypeOpened:
		head = fmt.Sprintf("%s %s opened by %s", g.d.Verdict, noun, who)
	case g.typ == TypeChanged:
		head = fmt.Sprintf("%s %s changed owner to %s", g.d.Verdict, noun, who)
	case g.typ == TypeClosed && g.d.Verdict == policy.Unexpected:
		head = fmt.Sprintf("unexpected %s closed, alert resolved (held by %s)", noun, who)
	case g.typ == TypeClosed:
		head = fmt.Sprintf("%s %s closed (held by %s)", g.d.Verdict, noun, who)
	default:
		head = fmt.Sprintf("%s: %s %s held by %s", textesc.Line(g.typ), g.d.Verdict, noun, who)
	}
	return head + ": " + endpoints(evs) + g.note
}

// endpoints names the endpoints of evs compactly: per protocol, address and
// namespace, in order of first appearance, the ports sorted with runs as
// ranges: "tcp 0.0.0.0:22,80,40000-40499, udp [::]:53 in netns vpn".
func endpoints(evs []Event) string {
	type place struct {
		proto, addr, netns string
	}
	var places []place
	ports := map[place][]int{}
	for _, ev := range evs {
		l := ev.Listener.Listener
		p := place{proto: l.Protocol, addr: "*", netns: otherNetns(l)}
		if l.Address.IsValid() {
			p.addr = strings.TrimSuffix(hostPort(l.Address, 0), ":0")
		}
		if _, ok := ports[p]; !ok {
			places = append(places, p)
		}
		ports[p] = append(ports[p], int(l.Port))
	}
	var b strings.Builder
	for i, p := range places {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.proto + " " + p.addr + ":" + portRuns(ports[p]))
		if p.netns != "" {
			b.WriteString(" in netns " + textesc.Line(p.netns))
		}
	}
	return b.String()
}

// portRuns writes ports sorted, without duplicates, with runs as ranges:
// "22,80,40000-40499".
func portRuns(ports []int) string {
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var b strings.Builder
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ports[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ports[j]))
		}
		i = j + 1
	}
	return b.String()
}
