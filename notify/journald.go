package notify

import (
	"context"
	"fmt"
	"io"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/policy"
)

// MESSAGE_IDs of portwatchd's journal entries. Each was made once with
// `systemd-id128 new` and must never change: users filter on them
// (journalctl MESSAGE_ID=...) and packaging/systemd/portwatchd.catalog
// explains each one for journalctl -x.
const (
	MessageIDOpened  = "5afa4fee23b147b2b22acfaa78d21b10" // listener.opened
	MessageIDClosed  = "fe57518077e24d9891b541da0696cfea" // listener.closed
	MessageIDChanged = "c37524e1893d45d9ada146b9f7d0d3d7" // listener.changed
	MessageIDTest    = "46e4991703164e918f139d23a45eb407" // test (notify-test)
	// MessageIDDropped: events of a webhook were lost: the webhook refused
	// a batch for good (a 4xx other than 408 and 429, or a redirect), or a
	// spool file could not be read or decoded and was set aside
	// (PORTWATCH_SPOOL names it).
	MessageIDDropped = "acb59a0fa18a4cb48990d5496b24b0e2"
	// MessageIDOverflow: a webhook spool was full and its oldest events
	// were dropped.
	MessageIDOverflow = "3e0da0a41fbb451a9d3db00bca4f7842"
	// MessageIDOrphanSpool: a spool holds events for a webhook that is no
	// longer configured.
	MessageIDOrphanSpool = "0ddfcddc23b545a6bbfde5b32e3c24e0"
)

// SyslogIdentifier is the SYSLOG_IDENTIFIER of every entry:
// journalctl -t portwatchd.
const SyslogIdentifier = "portwatchd"

func messageID(typ string) string {
	switch typ {
	case TypeOpened:
		return MessageIDOpened
	case TypeClosed:
		return MessageIDClosed
	case TypeChanged:
		return MessageIDChanged
	}
	return MessageIDTest
}

// priority maps a severity onto journald's PRIORITY: critical is crit (2),
// warning 4, notice 5, info 6.
func priority(s policy.Severity) journal.Priority {
	switch {
	case s >= policy.SeverityCritical:
		return journal.PriCrit
	case s == policy.SeverityWarning:
		return journal.PriWarning
	case s == policy.SeverityNotice:
		return journal.PriNotice
	}
	return journal.PriInfo
}

// eventFields returns the journal fields of ev, apart from MESSAGE and
// PRIORITY, with raw values: entry escapes them (see escapeFields).
func eventFields(ev Event) map[string]string {
	l := ev.Listener
	f := map[string]string{
		"SYSLOG_IDENTIFIER":  SyslogIdentifier,
		"MESSAGE_ID":         messageID(ev.Type),
		"PORTWATCH_EVENT":    shortType(ev.Type),
		"PORTWATCH_EVENT_ID": ev.ID,
		"PORTWATCH_SEVERITY": ev.Severity.String(),
	}
	if ev.Type == TypeTest {
		return f
	}
	f["PORTWATCH_VERDICT"] = string(ev.Listener.Verdict)
	f["PORTWATCH_RULE"] = ev.Listener.Rule
	f["PORTWATCH_REASON"] = ev.Listener.Reason
	f["PORTWATCH_PROTOCOL"] = l.Protocol
	if l.Address.IsValid() {
		f["PORTWATCH_ADDRESS"] = l.Address.String()
	}
	f["PORTWATCH_PORT"] = strconv.Itoa(int(l.Port))
	f["PORTWATCH_NETNS"] = l.Netns
	// Fixed names (HolderFlags and knownFlags drop any other), joined
	// without spaces so that a script can split on ",".
	f["PORTWATCH_FLAGS"] = joinFlags(HolderFlags(l.Listener), ",")
	f["PORTWATCH_RISK_FLAGS"] = knownNames(ev.Listener.Flags)
	if len(l.Processes) > 0 {
		p := l.Processes[0]
		f["PORTWATCH_PID"] = strconv.Itoa(p.PID)
		f["PORTWATCH_COMM"] = p.Comm
		f["PORTWATCH_EXE"] = p.Exe
		f["PORTWATCH_USER"] = p.User
		f["PORTWATCH_UNIT"] = p.Unit
		f["PORTWATCH_CONTAINER"] = p.Container
	}
	if x := ev.Listener.Exposure; x != nil {
		f["PORTWATCH_EXPOSURE"] = strings.Join(x.Classes(), ",")
		pubs := make([]string, len(x.Published))
		for i, p := range x.Published {
			pubs[i] = p.String()
		}
		f["PORTWATCH_PUBLISHED"] = strings.Join(pubs, "; ")
		if x.Deciding != nil {
			f["PORTWATCH_EXPOSURE_RULE"] = x.Deciding.String()
		}
		f["PORTWATCH_EXPOSURE_REASON"] = x.Reason
	}
	if l.Published != "" {
		f["PORTWATCH_PUBLISHED_TO"] = l.Published
	}
	if t := ev.Transient; t != nil {
		f["PORTWATCH_TRANSIENT"] = "1"
		f["PORTWATCH_LIFETIME_USEC"] = strconv.FormatInt(t.Lifetime.Microseconds(), 10)
		if t.AtMost {
			f["PORTWATCH_LIFETIME_AT_MOST"] = "1"
		}
		if s := t.Summary; s != nil {
			f["PORTWATCH_TRANSIENT_COUNT"] = strconv.Itoa(s.Count)
		}
	}
	for k, v := range f {
		if v == "" {
			delete(f, k)
		}
	}
	return f
}

// journald writes events as structured journal entries. When the journal
// socket is missing (not running under systemd), it writes one logfmt line
// per event to fallback instead.
type journald struct {
	send     func(msg string, p journal.Priority, vars map[string]string) error
	mu       sync.Mutex // serialises fallback lines
	fallback io.Writer  // nil when the journal is used
	now      func() time.Time
}

func newJournald(fallback io.Writer) *journald {
	j := &journald{send: journal.Send, now: time.Now}
	if !journal.Enabled() {
		j.fallback = fallback
	}
	return j
}

// Notify writes every event. It never asks for a retry: the journal is local
// and a lost datagram cannot be told apart from a written one.
func (j *journald) Notify(_ context.Context, events []Event) (bool, error) {
	for _, ev := range events {
		if err := j.entry(ev.Message, priority(ev.Severity), eventFields(ev)); err != nil {
			return false, fmt.Errorf("journald: %w", err)
		}
	}
	return false, nil
}

// write writes the events whose ids are not in taken, adding each id once
// its entry is written; n is the number of events left unwritten on error.
func (j *journald) write(events []Event, taken *accepted) (n int, err error) {
	for i, ev := range events {
		if taken.has(ev.ID) {
			continue
		}
		if err := j.entry(ev.Message, priority(ev.Severity), eventFields(ev)); err != nil {
			return len(events) - i, fmt.Errorf("journald: %w", err)
		}
		taken.add(ev.ID)
	}
	return 0, nil
}

// entry writes one entry; fields must include SYSLOG_IDENTIFIER and
// MESSAGE_ID.
func (j *journald) entry(msg string, p journal.Priority, fields map[string]string) error {
	if j.fallback == nil {
		return j.send(msg, p, escapeFields(fields))
	}
	line := logfmt(j.now(), p, msg, fields)
	j.mu.Lock()
	defer j.mu.Unlock()
	_, err := io.WriteString(j.fallback, line)
	return err
}

// report writes an operational entry about delivery (a dropped batch, an
// overflowing or orphaned spool). msg is built from raw values (paths,
// names) and escaped here.
func (j *journald) report(id string, p journal.Priority, msg string, fields map[string]string) error {
	f := map[string]string{"SYSLOG_IDENTIFIER": SyslogIdentifier, "MESSAGE_ID": id}
	for k, v := range fields {
		f[k] = v
	}
	return j.entry(textesc.Line(msg), p, f)
}

// escapeFields returns fields with every value escaped as MESSAGE is
// (textesc.Line), so that journalctl -o json consumers, log shippers and
// terminals never get control bytes from a process name or path. Where
// escaping changed a value, NAME_RAW holds its exact bytes, for matching:
// journald's native protocol is binary-safe, and go-systemd sends a value
// holding a newline in the length-prefixed form, so it cannot split the
// entry or forge a field.
//
// fields is returned as it is when no value needs escaping, the usual case;
// otherwise a copy is, so that the caller's map is never changed.
func escapeFields(fields map[string]string) map[string]string {
	var out map[string]string
	for k, v := range fields {
		if !textesc.Needed(v) {
			continue
		}
		if out == nil {
			out = maps.Clone(fields)
		}
		out[k], out[k+"_RAW"] = textesc.Line(v), v
	}
	if out == nil {
		return fields
	}
	return out
}

var levelNames = map[journal.Priority]string{
	journal.PriCrit: "critical", journal.PriWarning: "warning", journal.PriNotice: "notice", journal.PriInfo: "info", journal.PriErr: "error",
}

// logfmt renders one line: time, level, msg, then the fields in sorted order
// with the PORTWATCH_ prefix dropped and names lowercased. Values are quoted
// and escaped when needed, so the line stays one line.
func logfmt(now time.Time, p journal.Priority, msg string, fields map[string]string) string {
	var b strings.Builder
	b.WriteString("time=" + now.UTC().Format(time.RFC3339Nano))
	b.WriteString(" level=" + levelNames[p])
	b.WriteString(" msg=" + logfmtValue(msg))
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k != "SYSLOG_IDENTIFIER" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.ToLower(strings.TrimPrefix(k, "PORTWATCH_"))
		b.WriteString(" " + name + "=" + logfmtValue(fields[k]))
	}
	b.WriteString("\n")
	return b.String()
}

func logfmtValue(v string) string {
	if v == "" {
		return `""`
	}
	if strings.ContainsAny(v, " =\"") || textesc.Needed(v) {
		return strconv.Quote(v)
	}
	return v
}
