package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
)

func init() {
	commands["notify-test"] = command{"send a test event through every configured sink and report each outcome", runNotifyTest}
}

// notifyTestTimeout bounds the whole run; each webhook attempt is also
// bounded by its own timeout.
const notifyTestTimeout = 2 * time.Minute

// runNotifyTest sends one test event to journald and every webhook, directly
// (not through the spools, so the daemon's pending deliveries are left
// alone), and prints "NAME: ok" or "NAME: error" per sink. URLs never appear:
// errors from the notify package are redacted.
func runNotifyTest(args []string, stdout, stderr io.Writer) int {
	cfg, code := parseConfigOnly("notify-test", args, stderr, exitError)
	if cfg == nil {
		return code
	}
	return notifyTest(cfg.Notify, stdout, stderr)
}

func notifyTest(cfg policy.Notify, stdout, stderr io.Writer) int {
	if !cfg.Journald && len(cfg.Webhooks) == 0 {
		fmt.Fprintln(stderr, "portwatchd notify-test: no sinks configured (notify.journald is false and there are no webhooks)")
		return exitFound
	}
	// A scratch state dir: Test does not use the spools, and the real ones
	// belong to the running daemon.
	dir, err := os.MkdirTemp("", "portwatchd-notify-test-")
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd notify-test: %v\n", err)
		return exitError
	}
	defer os.RemoveAll(dir)
	d, err := notify.New(cfg, notify.Options{StateDir: dir, Stderr: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd notify-test: %v\n", err)
		return exitError
	}
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(context.Background(), notifyTestTimeout)
	defer cancel()
	ev := notify.NewEvent(notify.TypeTest, policy.Decision{}, host, time.Now())
	code := exitOK
	for _, r := range d.Test(ctx, ev) {
		if r.Err == nil {
			fmt.Fprintf(stdout, "%s: ok\n", r.Sink)
			continue
		}
		code = exitFound
		// The error already names the sink; do not say it twice.
		msg := strings.TrimPrefix(r.Err.Error(), "webhook "+r.Sink+": ")
		fmt.Fprintf(stdout, "%s: %s\n", r.Sink, escape(msg))
	}
	return code
}
