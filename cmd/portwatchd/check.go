package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/portwatchd/portwatchd/alerting"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func init() {
	commands["check"] = command{"take one snapshot and report unexpected listeners (Nagios-style exit codes)", runCheck}
}

// checkUsage explains the exit codes and the UNKNOWN status; Nagios shows
// exit 1 as WARNING, which is what the issue fixes them to.
const checkUsage = `usage: portwatchd check [-c FILE] [--json]

Takes one snapshot of the listening sockets and evaluates it. The first line
suits Nagios and cron; each unexpected listener follows on a line of its own.

  PORTWATCH OK        exit 0: every listener is allowed
  PORTWATCH CRITICAL  exit 1: unexpected listeners (Nagios shows exit 1 as WARNING)
  PORTWATCH UNKNOWN   exit 2: the config is invalid, the snapshot failed, or,
                      when not run as root (attribution is partial), the only
                      unexpected listeners have no visible process while a rule
                      naming a process would allow their socket: the verdict
                      rests on a process that check could not see. Run it as
                      root for a real answer.

With --json the result is one JSON document on stdout, errors included
(status UNKNOWN and an "error" member); details go to stderr.

Flags:
`

// snapshotTimeout bounds one snapshot taken by check and baseline.
const snapshotTimeout = 2 * time.Minute

// checkOutput is the document `portwatchd check --json` prints.
type checkOutput struct {
	Status     string    `json:"status"` // OK, CRITICAL or UNKNOWN
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
	Decisions      []policy.Decision `json:"decisions"`
}

// checkError is the document `portwatchd check --json` prints when it
// cannot evaluate: the config is invalid or the snapshot failed.
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
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), checkUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portwatchd check: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		printConfigError(stderr, err)
		ce := checkError{Error: "invalid config"}
		var list policy.ErrorList
		if errors.As(err, &list) {
			ce.Error = "invalid config: " + plural(list.Total(), "error")
			for _, e := range list {
				ce.Errors = append(ce.Errors, e.Error())
			}
		} else {
			ce.Errors = []string{err.Error()}
		}
		ce.Config = *cfgPath
		if ce.Config == "" {
			ce.Config = policy.DefaultPath
		}
		return reportCheckError(stdout, stderr, ce, *asJSON)
	}
	snap, err := takeSnapshot("check", stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd check: %v\n", err)
		return reportCheckError(stdout, stderr, checkError{Config: cfg.Source, Error: "snapshot failed", Errors: []string{err.Error()}}, *asJSON)
	}
	printConfigWarnings(stderr, cfg, snap.Time)
	return reportCheck(stdout, stderr, cfg, snap, *asJSON)
}

// reportCheckError prints the UNKNOWN result of a check that could not
// evaluate, as text or as a JSON document, and returns exit 2.
func reportCheckError(stdout, stderr io.Writer, ce checkError, asJSON bool) int {
	if !asJSON {
		fmt.Fprintf(stdout, "PORTWATCH UNKNOWN - %s\n", ce.Error)
		return exitError
	}
	ce.Status = "UNKNOWN"
	ce.Host, _ = os.Hostname()
	ce.Time = time.Now()
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ce); err != nil {
		fmt.Fprintf(stderr, "portwatchd check: write: %v\n", err)
	}
	return exitError
}

// takeSnapshot takes one snapshot of the real host.
func takeSnapshot(cmd string, stderr io.Writer) (*watcher.Snapshot, error) {
	w, err := watcher.New(watcher.Options{
		Warn: func(msg string) { fmt.Fprintf(stderr, "portwatchd %s: warning: %s\n", cmd, escape(oneLine(msg))) },
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
// for Nagios and cron, then one line per unexpected listener.
func reportCheck(stdout, stderr io.Writer, cfg *policy.Config, snap *watcher.Snapshot, asJSON bool) int {
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
	out.Status = "OK"
	code := exitOK
	switch {
	case out.Unexpected > 0:
		// A socket no rule allows, whoever holds it, is a real finding.
		out.Status, code = "CRITICAL", exitFound
	case out.Unknown > 0:
		out.Status, code = "UNKNOWN", exitError
	}
	if snap.Partial {
		fmt.Fprintln(stderr, "portwatchd check: warning: attribution is partial (not root?): some holders may be missing")
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "portwatchd check: write: %v\n", err)
			return exitError
		}
		return code
	}
	first := fmt.Sprintf("PORTWATCH %s - %s, %d unexpected", out.Status, plural(out.Listeners, "listener"), out.Unexpected)
	if out.Unknown > 0 {
		first += fmt.Sprintf(", %d unknown (attribution partial: run as root)", out.Unknown)
	}
	fmt.Fprintln(stdout, first)
	for i, d := range out.Decisions {
		if d.Verdict == policy.Unexpected && !unknown[i] {
			fmt.Fprintln(stdout, escape(oneLine(d.Reason)))
		}
	}
	for _, r := range out.UnknownReasons {
		fmt.Fprintln(stdout, "unknown: "+escape(oneLine(r)))
	}
	return code
}
