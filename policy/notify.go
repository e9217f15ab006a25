package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portwatchd/portwatchd/internal/textesc"
)

// webhookFormats are the values of a webhook's format:, in the order the
// documentation lists them. The notify package has a builder for each.
var webhookFormats = []string{"generic", "slack", "mattermost", "discord", "teams", "googlechat", "ntfy", "alertmanager"}

// WebhookFormats returns the values a webhook's format: may take.
func WebhookFormats() []string { return slices.Clone(webhookFormats) }

// webhookEvents are the values allowed in events:.
var webhookEvents = []string{"opened", "changed", "closed"}

var severities = map[string]Severity{"info": SeverityInfo, "notice": SeverityNotice, "warning": SeverityWarning,
	"critical": SeverityCritical}

// String returns the severity's name, as written in min_severity.
func (s Severity) String() string {
	switch s {
	case SeverityInfo:
		return "info"
	case SeverityNotice:
		return "notice"
	case SeverityWarning:
		return "warning"
	case SeverityCritical:
		return "critical"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText gives the severity's name: list --json and events carry it.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity's name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, ok := severities[string(b)]
	if !ok {
		return fmt.Errorf("unknown severity %q", b)
	}
	*s = v
	return nil
}

var notifyKeys = []string{"journald", "spool_size", "webhooks"}

var webhookKeys = []string{"name", "format", "url", "url_file", "secret_file", "timeout", "events", "min_severity", "insecure", "topic",
	"resend_interval"}

// hookName limits sink names to what is safe as a spool directory name and
// a journald field value.
var hookName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (l *loader) notify(d *decoder, f field, n *Notify, main bool, names map[string]string) {
	if f.v.Kind == yaml.ScalarNode && f.v.Tag == "!!null" {
		return
	}
	for _, nf := range d.fields(f.v, "notify", notifyKeys) {
		if !main && nf.key != "webhooks" {
			d.errorf(nf.k, "\"notify.%s\" may be set only in the main file, not in a drop-in (drop-ins may add allow rules and notify.webhooks)", nf.key)
			continue
		}
		switch nf.key {
		case "journald":
			if v, ok := d.boolean(nf); ok {
				n.Journald = v
			}
		case "spool_size":
			if v, ok := d.intIn(nf, 1, 10_000_000); ok {
				n.SpoolSize = v
			}
		case "webhooks":
			if nf.v.Kind == yaml.ScalarNode && nf.v.Tag == "!!null" {
				continue
			}
			if nf.v.Kind != yaml.SequenceNode {
				d.errorf(nf.v, "webhooks: expected a list, got %s", kindName(nf.v))
				continue
			}
			for _, hn := range nf.v.Content {
				if w, ok := l.webhook(d, hn, names); ok {
					n.Webhooks = append(n.Webhooks, w)
				}
			}
		}
	}
}

func (l *loader) webhook(d *decoder, n *yaml.Node, names map[string]string) (Webhook, bool) {
	w := Webhook{
		File:        fmt.Sprintf("%s:%d", d.file, n.Line),
		Timeout:     10 * time.Second,
		MinSeverity: SeverityInfo,
	}
	before := len(*d.errs)
	fs := d.fields(n, "webhook", webhookKeys)
	if n.Kind != yaml.MappingNode {
		return w, false
	}
	by := map[string]field{}
	for _, f := range fs {
		by[f.key] = f
	}
	if f, ok := by["name"]; ok {
		if s, ok := d.str(f); ok {
			if !hookName.MatchString(s) {
				d.errorf(f.v, "name: %q must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", clip(s))
			} else if first, dup := names[s]; dup {
				d.errorf(f.v, "duplicate webhook name %q (first defined at %s)", s, first)
			} else {
				names[s] = w.File
				w.Name = s
			}
		}
	} else {
		d.errorf(n, "webhook: name is required")
	}
	if f, ok := by["format"]; ok {
		if s, ok := d.str(f); ok {
			if !contains(webhookFormats, s) {
				d.errorf(f.v, "format: unknown format %q; one of %s", clip(s), strings.Join(webhookFormats, ", "))
			} else {
				w.Format = s
			}
		}
	} else {
		d.errorf(n, "webhook: format is required (%s)", strings.Join(webhookFormats, ", "))
	}
	if f, ok := by["insecure"]; ok {
		w.Insecure, _ = d.boolean(f)
	}
	if f, ok := by["timeout"]; ok {
		if v, ok := d.duration(f, time.Millisecond); ok {
			w.Timeout = v
		}
	}
	if f, ok := by["min_severity"]; ok {
		if s, ok := d.str(f); ok {
			if v, ok := severities[s]; ok {
				w.MinSeverity = v
			} else {
				d.errorf(f.v, "min_severity: %q is not info, notice, warning or critical", clip(s))
			}
		}
	}
	if f, ok := by["events"]; ok {
		if items, ok := d.strs(f); ok {
			for _, it := range items {
				if !contains(webhookEvents, it.Value) {
					d.errorf(it, "events: %q is not opened, changed or closed", clip(it.Value))
				} else if !contains(w.Events, it.Value) {
					w.Events = append(w.Events, it.Value)
				}
			}
		}
	} else {
		w.Events = append(w.Events, webhookEvents...)
	}
	// notify-test must reach every sink, whatever it filters.
	w.Events = append(w.Events, "test")
	if f, ok := by["topic"]; ok {
		if s, ok := d.str(f); ok {
			w.Topic = s
			if w.Format != "" && w.Format != "ntfy" {
				d.errorf(f.k, "topic: only the ntfy format takes a topic")
			}
		}
	} else if w.Format == "ntfy" {
		d.errorf(n, "webhook %q: format ntfy needs a topic", w.Name)
	}
	resendInterval(d, by, &w)

	// The URL is a secret: errors about it never quote it.
	fu, hasURL := by["url"]
	ff, hasFile := by["url_file"]
	switch {
	case hasURL && hasFile:
		d.errorf(ff.k, "set either url or url_file, not both")
	case !hasURL && !hasFile:
		d.errorf(n, "webhook %q: url or url_file is required", w.Name)
	case hasURL:
		if fu.v.Kind != yaml.ScalarNode || fu.v.Tag == "!!null" || fu.v.Value == "" {
			d.errorf(fu.v, "url: expected a URL string")
		} else if err := checkURL(fu.v.Value, w.Insecure); err != nil {
			d.errorf(fu.v, "url: %v", err)
		} else {
			w.URL = fu.v.Value
		}
	case hasFile:
		if data, ok := l.secretFile(d, ff); ok {
			u := string(bytes.TrimSpace(data))
			if u == "" {
				d.errorf(ff.v, "url_file: the file is empty")
			} else if strings.ContainsAny(u, "\r\n") {
				d.errorf(ff.v, "url_file: the file must hold one URL on one line")
			} else if err := checkURL(u, w.Insecure); err != nil {
				d.errorf(ff.v, "url_file: %v", err)
			} else {
				w.URL = u
			}
		}
	}
	if f, ok := by["secret_file"]; ok {
		if w.Format != "" && w.Format != "generic" {
			d.errorf(f.k, "secret_file: only the generic format signs its payloads")
		} else if data, ok := l.secretFile(d, f); ok {
			s := bytes.TrimSpace(data)
			if len(s) == 0 {
				d.errorf(f.v, "secret_file: the file is empty")
			} else {
				w.Secret = s
			}
		}
	}
	return w, len(*d.errs) == before
}

// checkURL validates a webhook URL without ever quoting it.
func checkURL(raw string, insecure bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("the scheme must be http or https")
	}
	if u.Hostname() == "" {
		return fmt.Errorf("the URL has no host")
	}
	if u.Scheme == "http" && !insecure && !IsLoopbackHost(u.Hostname()) {
		return fmt.Errorf("plain http is refused for a host other than loopback; use https, or set insecure: true")
	}
	return nil
}

// IsLoopbackHost reports whether a URL's host (url.URL.Hostname) names the
// loopback interface, where plain http is allowed: "localhost" in any case
// (host names are case-insensitive), or a loopback address (127.0.0.0/8,
// ::1, either with a zone, 127/8 mapped into IPv6). Validation and the
// webhook sink both use it, so a URL that validates also starts.
//
// Other names under .localhost are refused: the resolver in use may send
// them to DNS, which can answer with any address.
func IsLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// secretFile reads a url_file or secret_file. The path may use
// ${CREDENTIALS_DIRECTORY}, so that systemd's LoadCredential= works; a
// relative path is relative to the file that names it.
func (l *loader) secretFile(d *decoder, f field) ([]byte, bool) {
	raw, ok := d.str(f)
	if !ok {
		return nil, false
	}
	var bad string
	p := os.Expand(raw, func(k string) string {
		if k != "CREDENTIALS_DIRECTORY" {
			bad = "only ${CREDENTIALS_DIRECTORY} may be used in a path, not $" + k
			return ""
		}
		v := l.getenv(k)
		if v == "" {
			bad = "${CREDENTIALS_DIRECTORY} is not set (use LoadCredential= in the unit)"
		}
		return v
	})
	if bad != "" {
		d.errorf(f.v, "%s: %s", f.key, bad)
		return nil, false
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(d.file), p)
	}
	data, fi, err := l.readSecret(p)
	if err != nil {
		d.errorf(f.v, "%s: %s: %v", f.key, p, err)
		return nil, false
	}
	if l.checkPerms {
		if err := checkSafeIn(p, fi, l.getenv("CREDENTIALS_DIRECTORY")); err != nil {
			d.errorf(f.v, "%s: %v", f.key, err)
			return nil, false
		}
		if fi.Mode().Perm()&0o044 != 0 {
			l.warns = append(l.warns, textesc.Controls(fmt.Sprintf("%s:%d:%d: %s: %s is readable by group or others (mode %s); it holds a secret: chmod 600 it",
				d.file, f.v.Line, f.v.Column, f.key, p, modeString(fi.Mode()))))
		}
	}
	l.record(p, data)
	return data, true
}
