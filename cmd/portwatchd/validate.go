package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/portwatchd/portwatchd/policy"
)

func init() {
	commands["validate"] = command{"check the config and its drop-ins, print every error (alias check-config)", runValidate}
}

// runValidate loads the config as the daemon would, permission checks
// included, and reports every problem. The systemd unit runs it before start
// and reload, as ssh.service runs sshd -t.
func runValidate(args []string, stdout, stderr io.Writer) int {
	cfg, code := parseConfigOnly("validate", args, stderr, exitFound)
	if cfg == nil {
		return code
	}
	printConfigWarnings(stderr, cfg, time.Now())
	// Rules of allow: and deny: alike.
	fmt.Fprintf(stdout, "%s: ok (%s in %s)\n", cfg.Source, plural(len(cfg.Rules)+len(cfg.Deny), "rule"), plural(len(cfg.Files), "file"))
	return exitOK
}

// printConfigError prints a load error, one problem per line.
func printConfigError(w io.Writer, err error) {
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(w, e.Error())
		}
		fmt.Fprintf(w, "portwatchd: config invalid: %s\n", plural(list.Total(), "error"))
		return
	}
	fmt.Fprintf(w, "portwatchd: %v\n", err)
}

// printConfigWarnings prints what does not stop the config from loading:
// unsafe secret file modes and expired rules.
func printConfigWarnings(w io.Writer, cfg *policy.Config, now time.Time) {
	for _, s := range cfg.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	for _, r := range cfg.Expired(now) {
		fmt.Fprintf(w, "warning: %s: rule %q expired after %s and allows nothing\n", r.File, r.Name, r.ExpiresText)
	}
}
