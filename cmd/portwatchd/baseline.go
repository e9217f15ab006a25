package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/portwatchd/portwatchd/internal/atomicfile"
	"github.com/portwatchd/portwatchd/policy"
)

func init() {
	commands["baseline"] = command{"write an allowlist that covers every current listener, for review", runBaseline}
}

func runBaseline(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("baseline", stderr)
	cfgPath := configFlag(fs)
	outPath := fs.String("o", "", "write to `file` (atomically) instead of stdout")
	force := fs.Bool("force", false, "with -o, replace an existing file")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	// The current config only tells whether ephemeral UDP is ignored, so
	// that the baseline and the check that follows agree.
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		printConfigError(stderr, err)
		return exitError
	}
	if *outPath != "" && !*force {
		if _, err := os.Lstat(*outPath); err == nil {
			fmt.Fprintf(stderr, "portwatchd baseline: %s exists; use --force to replace it\n", *outPath)
			return exitError
		}
	}
	snap, err := takeSnapshot("baseline", stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd baseline: %v\n", err)
		return exitError
	}
	reserved := reservedNames(cfg, *outPath)
	data := policy.BaselineReserving(snap.Listeners, snap.Time, cfg.IgnoreEphemeralUDP, reserved)

	// Baseline output is valid by construction; prove it before writing.
	got, err := policy.Parse("baseline", data)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd baseline: internal error: generated policy is invalid: %v\n", err)
		return exitError
	}
	for _, r := range got.Rules {
		if where := reserved[r.Name]; where != "" {
			fmt.Fprintf(stderr, "portwatchd baseline: internal error: generated rule %q clashes with the rule at %s\n", r.Name, where)
			return exitError
		}
	}
	for _, l := range snap.Listeners {
		if d := got.Evaluate(l, snap.Time); d.Verdict == policy.Unexpected {
			fmt.Fprintf(stderr, "portwatchd baseline: internal error: generated policy does not allow: %s\n", escape(d.Reason))
			return exitError
		}
	}
	if snap.Partial {
		fmt.Fprintln(stderr, "portwatchd baseline: warning: attribution is partial (not root?): rules may lack exe, user and unit")
	}
	if *outPath == "" {
		if _, err := stdout.Write(data); err != nil {
			fmt.Fprintf(stderr, "portwatchd baseline: write: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if err := writeNewFile(*outPath, data, *force); err != nil {
		fmt.Fprintf(stderr, "portwatchd baseline: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "portwatchd baseline: wrote %s (%s)\n", *outPath, plural(len(got.Rules), "rule"))
	return exitOK
}

// reservedNames returns the names of the loaded config's rules that stay in
// force beside the baseline, with where each is defined: rule names must be
// unique across the main file and its drop-ins. With -o, the rules of the
// file being replaced are not reserved (they go away); written to stdout,
// the output may land anywhere, so every rule's name is.
func reservedNames(cfg *policy.Config, outPath string) map[string]string {
	out := ""
	if outPath != "" {
		out = canonicalPath(outPath)
	}
	reserved := map[string]string{}
	for _, r := range cfg.Rules {
		file := r.File
		if i := strings.LastIndexByte(file, ':'); i >= 0 {
			file = file[:i]
		}
		if out != "" && canonicalPath(file) == out {
			continue
		}
		reserved[r.Name] = r.File
	}
	return reserved
}

// canonicalPath makes p absolute, with symlinks resolved when it exists.
func canonicalPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	return p
}

// writeNewFile writes data to path atomically: a temporary file in the same
// directory, fsynced, then linked into place (which fails if path exists,
// so nothing is clobbered) or, with replace, renamed over it.
func writeNewFile(path string, data []byte, replace bool) error {
	err := atomicfile.Write(path, data, 0o644, ".portwatch-baseline-*", !replace)
	if errors.Is(err, fs.ErrExist) && !replace {
		return fmt.Errorf("%s exists; use --force to replace it", path)
	}
	return err
}
