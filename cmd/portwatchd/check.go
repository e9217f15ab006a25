package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func init() {
	commands["check"] = command{"take one snapshot and report unexpected listeners (monitoring-plugins exit codes)", runCheck}
}

// Exit codes and status words of check: those of the monitoring-plugins
// guidelines, which Nagios, Icinga, Naemon and Checkmk read. They are not
// the other commands' codes.
const (
	checkOK       = 0 // every listener allowed, nothing to look at
	checkWarning  = 1 // needs attention, not a breach
	checkCritical = 2 // unexpected listeners
	checkUnknown  = 3 // no verdict: bad usage, invalid config, failed snapshot
)

var checkStatus = [...]string{checkOK: "OK", checkWarning: "WARNING", checkCritical: "CRITICAL", checkUnknown: "UNKNOWN"}

// defaultWarnExpiry is how long before a rule expires check starts to warn.
const defaultWarnExpiry = 7 * 24 * time.Hour

const checkUsage = `usage: portwatchd check [-c FILE] [--json] [--warn-expiry DURATION]

Takes one snapshot of the listening sockets and evaluates it. The output
follows the monitoring-plugins guidelines: a first line for Nagios, Icinga
and cron with performance data after "|", then one line per finding.

  PORTWATCH OK        exit 0: every listener is allowed
  PORTWATCH WARNING   exit 1: nothing is unexpected, but a rule expires within
                      --warn-expiry, or attribution is partial (not root)
  PORTWATCH CRITICAL  exit 2: unexpected listeners
  PORTWATCH UNKNOWN   exit 3: a bad flag, an invalid or missing config, a
                      failed snapshot, or, when attribution is partial, the
                      only unexpected listeners have no visible process while
                      a rule naming a process would allow their socket: the
                      verdict rests on a process that check could not see.
                      Run it as root for a real answer.

Performance data: listeners=N unexpected=N unknown=N expiring_rules=N.

With --json the result is one JSON document on stdout, errors included
(status UNKNOWN and an "error" member); details go to stderr.

Flags:
`

// snapshotTimeout bounds one snapshot taken by check and baseline.
const snapshotTimeout = 2 * time.Minute

// checkOptions are check's flags past the config.
type checkOptions struct {
	json       bool
	warnExpiry time.Duration // 0: no warning for expiring rules
}

// checkOutput is the document `portwatchd check --json` prints.
type checkOutput struct {
	Status     string    `json:"status"` // OK, WARNING, CRITICAL or UNKNOWN
	Host       string    `json:"host"`
	Time       time.Time `json:"time"`
	Config     string    `json:"config"`
	Listeners  int       `json:"listeners"`
	Unexpected int       `json:"unexpected"`
	Ignored    int       `json:"ignored"`
	Partial    bool      `json:"partial"` // attribution could not see every process
	// Unknown counts the unexpected listeners whose verdict rests only on
	// a holder that partial attribution could not see; they are not in
	// Unexpected. UnknownReasons says, for each, which rule would allow it.
	Unknown        int               `json:"unknown"`
	UnknownReasons []string          `json:"unknown_reasons,omitempty"`
	Expiring       []expiringRule    `json:"expiring_rules,omitempty"`
	Decisions      []policy.Decision `json:"decisions"`
}

// expiringRule is a rule that stops allowing within --warn-expiry.
type expiringRule struct {
	Name    string `json:"name"`
	File    string `json:"file"`    // file:line
	Expires string `json:"expires"` // the last day it allows, YYYY-MM-DD
}

// checkError is the document `portwatchd check --json` prints when it
// cannot evaluate: bad usage, an invalid config or a failed snapshot.
type checkError struct {
	Status string    `json:"status"` // UNKNOWN
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	Config string    `json:"config"`
	Error  string    `json:"error"`
	// Errors lists the config errors, one "file:line:col: message" each.
	Errors []string `json:"errors,omitempty"`
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := configFlag(fs)
	var opts checkOptions
	fs.BoolVar(&opts.json, "json", false, "print JSON instead of text")
	warnExpiry := expiryWindow(defaultWarnExpiry)
	fs.Var(&warnExpiry, "warn-expiry", "warn when a rule expires within `DURATION` (7d, 36h; 0 turns it off)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), checkUsage)
		fs.PrintDefaults()
	}
	configName := func() string {
		if *cfgPath == "" {
			return policy.DefaultPath
		}
		return *cfgPath
	}
	// A monitoring system shows stdout and the exit code only, so bad
	// usage is an UNKNOWN result too, not just a message on stderr.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return checkOK
		}
		return reportCheckError(stdout, stderr, checkError{Config: configName(), Error: "usage: " + err.Error()}, opts.json)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portwatchd check: unexpected argument %q\n", fs.Arg(0))
		return reportCheckError(stdout, stderr, checkError{Config: configName(), Error: fmt.Sprintf("usage: unexpected argument %q", fs.Arg(0))}, opts.json)
	}
	opts.warnExpiry = time.Duration(warnExpiry)
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		printConfigError(stderr, err)
		ce := checkError{Config: configName(), Error: "invalid config"}
		var list policy.ErrorList
		if errors.As(err, &list) {
			ce.Error = "invalid config: " + plural(list.Total(), "error")
			for _, e := range list {
				ce.Errors = append(ce.Errors, e.Error())
			}
		} else {
			ce.Errors = []string{err.Error()}
		}
		return reportCheckError(stdout, stderr, ce, opts.json)
	}
	snap, err := takeSnapshot("check", stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd check: %v\n", err)
		return reportCheckError(stdout, stderr, checkError{Config: cfg.Source, Error: "snapshot failed", Errors: []string{err.Error()}}, opts.json)
	}
	printConfigWarnings(stderr, cfg, snap.Time)
	return reportCheck(stdout, stderr, cfg, snap, opts)
}

// expiryWindow is the --warn-expiry value: a Go duration, or whole days
// written as "7d" (expires: dates are days, and time.ParseDuration has no
// unit for them).
type expiryWindow time.Duration

var errExpiryWindow = errors.New("use a duration such as 7d, 36h or 0")

func (w *expiryWindow) String() string {
	d := time.Duration(*w)
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

func (w *expiryWindow) Set(s string) error {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return errExpiryWindow
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return errExpiryWindow
		}
	}
	*w = expiryWindow(d)
	return nil
}

// expiringRules returns the rules of cfg that allow at now but not at
// now+window, in file order. Every such rule counts, including one that
// allows no current listener: its service may just be down.
func expiringRules(cfg *policy.Config, now time.Time, window time.Duration) []expiringRule {
	var out []expiringRule
	for _, r := range cfg.Rules {
		if !r.Expires.IsZero() && now.Before(r.Expires) && !r.Expires.After(now.Add(window)) {
			out = append(out, expiringRule{Name: r.Name, File: r.File, Expires: r.ExpiresText})
		}
	}
	return out
}

// reportCheckError prints the UNKNOWN result of a check that could not
// evaluate, as text or as a JSON document, and returns its exit code.
func reportCheckError(stdout, stderr io.Writer, ce checkError, asJSON bool) int {
	if !asJSON {
		fmt.Fprintf(stdout, "PORTWATCH UNKNOWN - %s\n", errLine(ce.Error))
		return checkUnknown
	}
	ce.Status = checkStatus[checkUnknown]
	ce.Host, _ = os.Hostname()
	ce.Time = time.Now()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ce); err != nil {
		fmt.Fprintf(stderr, "portwatchd check: write: %v\n", err)
	}
	return checkUnknown
}

// takeSnapshot takes one snapshot of the real host.
func takeSnapshot(cmd string, stderr io.Writer) (*watcher.Snapshot, error) {
	w, err := watcher.New(watcher.Options{
		Warn: func(msg string) { fmt.Fprintf(stderr, "portwatchd %s: warning: %s\n", cmd, errLine(msg)) },
	})
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	snap, err := w.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return snap, nil
}

// reportCheck evaluates snap under cfg and prints the result: a first line
// with performance data for monitoring systems and cron, then one line per
// unexpected listener, unknown verdict and expiring rule.
func reportCheck(stdout, stderr io.Writer, cfg *policy.Config, snap *watcher.Snapshot, opts checkOptions) int {
	out := checkOutput{Time: snap.Time, Config: cfg.Source, Partial: snap.Partial}
	out.Host, _ = os.Hostname()
	out.Decisions = make([]policy.Decision, 0, len(snap.Listeners))
	unknown := map[int]bool{} // indexes into Decisions
	var figures alerting.Stats
	for _, l := range snap.Listeners {
		d := cfg.Evaluate(l, snap.Time)
		figures.Count(1, d.Verdict)
		switch d.Verdict {
		case policy.Unexpected:
			// Without root, another user's process is invisible: the
			// listener then has no holder, and a rule that names its
			// process cannot match. That is no evidence either way.
			if rule, ok := cfg.AllowedIfAttributed(l, snap.Time); snap.Partial && ok {
				unknown[len(out.Decisions)] = true
				out.Unknown++
				out.UnknownReasons = append(out.UnknownReasons, fmt.Sprintf("%s; rule %q would allow it if its process were visible", d.Reason, rule))
			}
		case policy.Ignored:
			out.Ignored++
		}
		out.Decisions = append(out.Decisions, d)
	}
	// The daemon's figures, less what partial attribution leaves unknown.
	out.Listeners, out.Unexpected = figures.Listeners, figures.Unexpected-out.Unknown
	out.Expiring = expiringRules(cfg, snap.Time, opts.warnExpiry)
	code := checkOK
	switch {
	case out.Unexpected > 0:
		// A socket no rule allows, whoever holds it, is a real finding.
		code = checkCritical
	case out.Unknown > 0:
		code = checkUnknown
	case len(out.Expiring) > 0 || snap.Partial:
		code = checkWarning
	}
	out.Status = checkStatus[code]
	if snap.Partial {
		fmt.Fprintln(stderr, "portwatchd check: warning: attribution is partial (not root?): some holders may be missing")
	}
	if opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "portwatchd check: write: %v\n", err)
			return checkUnknown
		}
		return code
	}
	first := fmt.Sprintf("PORTWATCH %s - %s, %d unexpected", out.Status, plural(out.Listeners, "listener"), out.Unexpected)
	switch {
	case out.Unknown > 0:
		first += fmt.Sprintf(", %d unknown (attribution partial: run as root)", out.Unknown)
	case snap.Partial:
		first += ", attribution partial (run as root)"
	}
	if n := len(out.Expiring); n > 0 {
		w := expiryWindow(opts.warnExpiry)
		first += fmt.Sprintf(", %s expiring within %s", plural(n, "rule"), w.String())
	}
	// Performance data: 'label'=value, space separated, after "|".
	first += fmt.Sprintf(" | listeners=%d unexpected=%d unknown=%d expiring_rules=%d", out.Listeners, out.Unexpected, out.Unknown, len(out.Expiring))
	fmt.Fprintln(stdout, first)
	for i, d := range out.Decisions {
		if d.Verdict == policy.Unexpected && !unknown[i] {
			fmt.Fprintln(stdout, escape(d.Reason))
		}
	}
	for _, r := range out.UnknownReasons {
		fmt.Fprintln(stdout, "unknown: "+escape(r))
	}
	for _, r := range out.Expiring {
		fmt.Fprintf(stdout, "expiring: rule %s (%s) allows nothing after %s\n", strconv.Quote(r.Name), escape(r.File), r.Expires)
	}
	return code
}
