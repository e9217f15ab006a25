package policy

import (
	"time"

	"github.com/portwatchd/portwatchd/exposure"
	"github.com/portwatchd/portwatchd/watcher"
)

// Verdict is the policy's answer for one listener.
type Verdict string

// Verdicts.
const (
	Allowed    Verdict = "allowed"
	Unexpected Verdict = "unexpected"
	Ignored    Verdict = "ignored" // ephemeral UDP with ignore_ephemeral_udp
)

// Decision is a listener with the policy's verdict on it. Its JSON form is the
// listener object of `portwatchd list --json` and of alert events.
type Decision struct {
	watcher.Listener
	Verdict Verdict `json:"verdict"`
	Rule    string  `json:"rule"`   // name of the allowing rule, or of the closest rule when unexpected
	Reason  string  `json:"reason"` // the rule's reason when allowed; why not, in one line, when unexpected
	// Severity ranks the listener: critical or warning when unexpected
	// (critical with a high-risk flag), info when allowed or ignored.
	Severity Severity `json:"severity"`
	// Flags are the holders' flags that made the listener unexpected
	// (a port-only rule refused a high-risk flag, a deny rule matched them)
	// or critical; empty when none did.
	Flags []watcher.Flag `json:"risk_flags,omitempty"`
	// Exposure is whether the listener is reachable from outside (bind
	// scope, filter verdict, publications), as the daemon computed it
	// when it judged the listener; nil when not computed (exposure: off,
	// or a judgement made without it): the policy then reads it as
	// unknown.
	Exposure *exposure.Exposure `json:"exposure,omitempty"`
}

// Settings are the top-level scalar keys; drop-ins may not set them.
type Settings struct {
	Interval           time.Duration // interval: snapshot period, default 1s
	IgnoreEphemeralUDP bool          // ignore_ephemeral_udp, default true
	LogAllowed         bool          // log_allowed: journald info entries for allowed listeners
	RepeatInterval     time.Duration // repeat_interval: 0 = no reminders
	FlapWindow         time.Duration // flap_window, default 30s
	ShutdownGrace      time.Duration // shutdown_grace: time given to pending deliveries on stop, default 5s
	StateDir           string        // state_dir: default $STATE_DIRECTORY or /var/lib/portwatch
	EBPF               EBPFMode      // ebpf: whether the daemon loads its kernel programs, default auto
	// ReconcileInterval is the period of the full snapshot while the kernel
	// programs report listeners as they open (reconcile_interval): default
	// 10s or interval, whichever is longer; never less than interval.
	ReconcileInterval time.Duration
	// TransientAlertsPerMinute is how many unexpected transient listeners
	// of one program (exe, user, namespace) are alerted one by one each
	// minute (transient_alerts_per_minute); the rest are counted in one
	// summary event at the end of the minute.
	TransientAlertsPerMinute int
	// Exposure says whether the daemon reads the nftables rulesets to
	// tell whether each listener is reachable (exposure:), default auto.
	Exposure ExposureMode
}

// ExposureMode says whether the daemon computes exposure (exposure:).
type ExposureMode string

// Exposure modes.
const (
	// ExposureAuto reads the rulesets when the privileges allow it, and
	// otherwise gives every listener `unknown (no CAP_NET_ADMIN)`.
	ExposureAuto ExposureMode = "auto"
	// ExposureOff never reads them: every listener's exposure is nil,
	// which the policy reads as unknown.
	ExposureOff ExposureMode = "off"
)

// EBPFMode says whether the daemon loads its kernel programs (ebpf:).
type EBPFMode string

// EBPF modes.
const (
	// EBPFAuto loads them when the kernel and the privileges allow it, and
	// otherwise polls at interval.
	EBPFAuto EBPFMode = "auto"
	// EBPFOn refuses to start without them.
	EBPFOn EBPFMode = "on"
	// EBPFOff never loads them: the daemon polls at interval.
	EBPFOff EBPFMode = "off"
)

// DefaultReconcileInterval is reconcile_interval's default, when interval is
// shorter.
const DefaultReconcileInterval = 10 * time.Second

// DefaultTransientAlertsPerMinute is transient_alerts_per_minute's default.
const DefaultTransientAlertsPerMinute = 20

// Severity of an event or a listener, in increasing order. It drives
// journald's PRIORITY, Alertmanager's severity label, the marker of chat
// messages and each sink's min_severity. Its JSON and text form is its name.
type Severity int

// Severities; they map onto syslog priorities.
const (
	SeverityInfo Severity = iota
	SeverityNotice
	SeverityWarning
	// SeverityCritical is an unexpected listener whose holder has a
	// high-risk flag; journald PRIORITY 2 (crit).
	SeverityCritical
)

// Webhook is one validated webhook sink from notify.webhooks.
type Webhook struct {
	Name   string
	Format string // generic | slack | mattermost | discord | teams | googlechat | ntfy | alertmanager
	// URL is the target, read from url: or url_file: at load time. It is a
	// secret: never log it, print it or put it in an error.
	URL         string
	Secret      []byte        // content of secret_file: (whitespace trimmed), for generic signing; nil when unset
	Timeout     time.Duration // default 10s
	Events      []string      // events: (opened, changed, closed; default all), always followed by "test"
	MinSeverity Severity      // default info
	Insecure    bool          // allow plain http to non-loopback hosts
	Topic       string        // ntfy topic
	// ResendInterval is how often an alertmanager sink re-sends every alert
	// still firing (resend_interval); 0 for the other formats.
	ResendInterval time.Duration
	File           string // file:line of the definition, for messages
}

// Alertmanager re-sends: the default and the least resend_interval.
const (
	DefaultResendInterval = time.Minute
	MinResendInterval     = 10 * time.Second
)

// Notify is the validated notify: section.
type Notify struct {
	Journald  bool // default true
	SpoolSize int  // spool_size: events kept per sink, default 10000
	Webhooks  []Webhook
}
