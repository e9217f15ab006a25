package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/portwatchd/portwatchd/policy"
)

// Exit codes of every subcommand but check, which follows the monitoring-plugins guidelines.
const (
	exitOK    = 0
	exitFound = 1 // validate: invalid config; notify-test: a sink failed (check has its own codes)
	exitError = 2
)

// command is one subcommand. run gets the arguments after the subcommand name.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands is filled by each subcommand's file in its init function, so that
// each subcommand lives in a file of its own.
var commands = map[string]command{}

// aliases map alternative names onto commands.
var aliases = map[string]string{"check-config": "validate"}

func run(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if a, ok := aliases[name]; ok {
		name = a
	}
	switch name {
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "portwatchd: unknown command %q\n", name)
		usage(stderr)
		return exitError
	}
	return c.run(args, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: portwatchd [command] [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'portwatchd COMMAND -h' for a command's flags. With no command, portwatchd runs the daemon.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("portwatchd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args into fs; the commands that use it take no
// positional arguments, so one left over is an error. When it returns ok
// false, the command ends with code: 0 for -h/--help (usage was printed),
// exitError otherwise.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	case err != nil:
		return exitError, false
	case fs.NArg() > 0:
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitError, false
	}
	return exitOK, true
}

// parseConfigOnly parses args for a command whose one flag is -c/--config,
// and loads that config, printing every problem on stderr. When cfg is nil,
// the command ends with code: badConfig if the config did not load.
func parseConfigOnly(name string, args []string, stderr io.Writer, badConfig int) (cfg *policy.Config, code int) {
	fs := newFlagSet(name, stderr)
	cfgPath := configFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return nil, code
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		printConfigError(stderr, err)
		return nil, badConfig
	}
	return cfg, exitOK
}

// configFlag registers -c and --config on fs.
func configFlag(fs *flag.FlagSet) *string {
	p := new(string)
	fs.StringVar(p, "c", "", "config `file` (default "+policy.DefaultPath+")")
	fs.StringVar(p, "config", "", "config `file` (default "+policy.DefaultPath+")")
	return p
}

// loadConfig loads the config at path. With no explicit path, a missing
// default file selects the embedded default policy, which is said on stderr.
func loadConfig(path string, stderr io.Writer) (*policy.Config, error) {
	return loadConfigWith(path, stderr, policy.LoadOptions{Strict: os.Geteuid() == 0})
}

// loadStrictConfig is loadConfig for the daemon: the StrictModes checks
// apply whatever the uid. Under systemd's DynamicUser= the daemon never runs
// as root, and a file-change reload does not go through validate first.
func loadStrictConfig(path string, stderr io.Writer) (*policy.Config, error) {
	return loadConfigWith(path, stderr, policy.LoadOptions{Strict: true})
}

// loadConfigWith is loadConfig with the given load options (which do not
// apply to the embedded default: it has no file to check).
func loadConfigWith(path string, stderr io.Writer, opts policy.LoadOptions) (*policy.Config, error) {
	if path == "" {
		// Lstat, not Stat: a dangling symlink (a broken ConfigMap swap) must
		// fail loudly in Load, not fall back to the default policy.
		if _, err := os.Lstat(policy.DefaultPath); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "portwatchd: %s does not exist; using the embedded default policy (only loopback listeners are allowed)\n", policy.DefaultPath)
			return policy.Default(), nil
		}
		path = policy.DefaultPath
	}
	return policy.LoadWith(path, opts)
}

// plural is "1 word" or "n words".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
