package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func init() {
	commands["check"] = command{"take one snapshot and report unexpected listeners (Nagios-style exit codes)", runCheck}
}

// snapshotTimeout bounds one snapshot taken by check and baseline.
const snapshotTimeout = 2 * time.Minute

// checkOutput is the document `portwatchd check --json` prints.
type checkOutput struct {
	Status     string            `json:"status"` // OK or CRITICAL
	Host       string            `json:"host"`
	Time       time.Time         `json:"time"`
	Config     string            `json:"config"`
	Listeners  int               `json:"listeners"`
	Unexpected int               `json:"unexpected"`
	Ignored    int               `json:"ignored"`
	Partial    bool              `json:"partial"` // attribution could not see every process
	Decisions  []policy.Decision `json:"decisions"`
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portwatchd check: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		fmt.Fprintln(stdout, "PORTWATCH UNKNOWN - invalid config")
		printConfigError(stderr, err)
		return exitError
	}
	snap, err := takeSnapshot("check", stderr)
	if err != nil {
		fmt.Fprintln(stdout, "PORTWATCH UNKNOWN - snapshot failed")
		fmt.Fprintf(stderr, "portwatchd check: %v\n", err)
		return exitError
	}
	printConfigWarnings(stderr, cfg, snap.Time)
	return reportCheck(stdout, stderr, cfg, snap, *asJSON)
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
	out := checkOutput{Time: snap.Time, Config: cfg.Source, Listeners: len(snap.Listeners), Partial: snap.Partial}
	out.Host, _ = os.Hostname()
	out.Decisions = make([]policy.Decision, 0, len(snap.Listeners))
	for _, l := range snap.Listeners {
		d := cfg.Evaluate(l, snap.Time)
		switch d.Verdict {
		case policy.Unexpected:
			out.Unexpected++
		case policy.Ignored:
			out.Ignored++
		}
		out.Decisions = append(out.Decisions, d)
	}
	out.Status = "OK"
	code := exitOK
	if out.Unexpected > 0 {
		out.Status, code = "CRITICAL", exitFound
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
	fmt.Fprintf(stdout, "PORTWATCH %s - %s, %d unexpected\n", out.Status, plural(out.Listeners, "listener"), out.Unexpected)
	for _, d := range out.Decisions {
		if d.Verdict == policy.Unexpected {
			fmt.Fprintln(stdout, escape(oneLine(d.Reason)))
		}
	}
	return code
}
