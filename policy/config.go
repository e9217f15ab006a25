package policy

import (
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultPath is where the allowlist lives.
const DefaultPath = "/etc/portwatch.yaml"

// DefaultInclude is the include: glob used when the main file sets none.
const DefaultInclude = "portwatch.d/*.yaml"

// Config is a loaded, validated and built configuration.
type Config struct {
	Settings
	Notify  Notify
	Metrics Metrics // metrics:
	Rules   []Rule  // allow:
	// Deny is deny:, the rules whose match makes a listener unexpected
	// whatever allow: says.
	Deny []Rule
	// MemfdRuntimes is memfd_runtimes: the container runtimes whose memfd
	// executables are not high-risk (see HighRisk). Default
	// DefaultMemfdRuntimes.
	MemfdRuntimes []string
	// Source is the main file's path, or "embedded default".
	Source string
	// Files lists every file read: the main file and its drop-ins.
	Files []string
	// Hash covers the content of every file read, including url_file and
	// secret_file targets; an unchanged hash means a reload has nothing to do.
	Hash [32]byte
	// Includes are the include: globs, made absolute against the main
	// file's directory, whether or not they match anything yet: the daemon
	// watches their directories for new drop-ins.
	Includes []string
	// Warnings are problems that do not stop the config from loading, such
	// as a secret_file readable by other users, in "file:line:col: message"
	// form.
	Warnings []string
}

// Load reads the main file at path and its drop-ins, checks their
// permissions when running as root, and returns the built Config. Errors list
// every problem found, one "file:line:col: message" per line; the error is
// then an ErrorList. It is LoadWith(path, LoadOptions{Strict: os.Geteuid() == 0}).
func Load(path string) (*Config, error) {
	return LoadWith(path, LoadOptions{Strict: os.Geteuid() == 0})
}

// LoadOptions are the knobs of LoadWith.
type LoadOptions struct {
	// Strict applies the StrictModes checks whatever the process's uid: the
	// config files, their drop-ins, url_file and secret_file targets, every
	// directory above them and every symlink on the way must be owned by
	// root and not writable by group or others. The daemon sets it always:
	// under systemd's DynamicUser= it does not run as root, yet whoever can
	// write its allowlist can still hide a backdoor in it.
	Strict bool
}

// LoadWith is Load with explicit options.
func LoadWith(path string, opts LoadOptions) (*Config, error) {
	l := newLoader()
	l.checkPerms = opts.Strict
	return l.load(path)
}

// Parse builds a Config from the bytes of one main file named name. It reads
// no drop-ins (include: is validated but not followed) and checks no
// permissions; url_file and secret_file targets are still read from disk.
func Parse(name string, data []byte) (*Config, error) {
	l := newLoader()
	l.checkPerms = false
	l.followIncludes = false
	return l.parse(name, data)
}

//go:embed default.yaml
var defaultYAML []byte

// Default returns the embedded default policy: only loopback listeners are
// allowed.
func Default() *Config {
	l := newLoader()
	l.checkPerms = false
	l.followIncludes = false
	c, err := l.parse("embedded default", defaultYAML)
	if err != nil {
		// The embedded file is tested; this is a build defect.
		panic("policy: embedded default policy: " + err.Error())
	}
	c.Files = nil
	return c
}

// loader holds what one load needs. Its knobs exist so that tests can point
// it at fixture files and run it with or without the root-only checks.
type loader struct {
	servicesFile   string
	checkPerms     bool
	followIncludes bool
	getenv         func(string) string
	// readSecret reads url_file and secret_file targets.
	readSecret func(string) ([]byte, fs.FileInfo, error)
	// selfExe is the daemon's own executable, for the rule of
	// metrics.listen; dirExists says whether metrics.textfile's default
	// directory exists.
	selfExe   func() (string, error)
	dirExists func(string) bool

	svc    Services
	svcErr error
	svcSet bool

	errs  ErrorList
	order map[string]int
	hash  hash.Hash
	files []string
	warns []string
}

func newLoader() *loader {
	return &loader{
		servicesFile:   DefaultServicesFile,
		checkPerms:     os.Geteuid() == 0,
		followIncludes: true,
		getenv:         os.Getenv,
		readSecret:     readLimited,
		selfExe:        os.Executable,
		dirExists:      dirExists,
	}
}

// services loads the services database once, on first use.
func (l *loader) services() (Services, error) {
	if !l.svcSet {
		l.svcSet = true
		data, err := os.ReadFile(l.servicesFile)
		if err != nil {
			l.svcErr = err
		} else {
			l.svc = ParseServices(data)
			// Names resolve through it, so a reload must see its changes.
			l.record(l.servicesFile, data)
		}
	}
	return l.svc, l.svcErr
}

func (l *loader) load(p string) (*Config, error) {
	l.start()
	data, err := l.read(p)
	if err != nil {
		l.fileError(p, err)
		return nil, l.errs.finish(l.order)
	}
	return l.build(p, data)
}

func (l *loader) parse(name string, data []byte) (*Config, error) {
	l.start()
	l.record(name, data)
	return l.build(name, data)
}

func (l *loader) start() {
	l.errs = nil
	l.order = map[string]int{}
	l.hash = sha256.New()
	l.files = nil
	l.warns = nil
}

// record adds a file read to the hash and the error ordering.
func (l *loader) record(name string, data []byte) {
	if _, ok := l.order[name]; !ok {
		l.order[name] = len(l.order)
	}
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(name)))
	l.hash.Write(n[:])
	l.hash.Write([]byte(name))
	binary.BigEndian.PutUint64(n[:], uint64(len(data)))
	l.hash.Write(n[:])
	l.hash.Write(data)
}

func (l *loader) fileError(name string, err error) {
	if _, ok := l.order[name]; !ok {
		l.order[name] = len(l.order)
	}
	l.errs = append(l.errs, &Error{File: name, Msg: err.Error()})
}

// read reads one config file: a regular file of at most maxFileSize bytes,
// safe by StrictModes rules when running as root.
func (l *loader) read(name string) ([]byte, error) {
	data, fi, err := readLimited(name)
	if err != nil {
		return nil, err
	}
	if l.checkPerms {
		if err := checkSafe(name, fi); err != nil {
			return nil, err
		}
	}
	l.record(name, data)
	return data, nil
}

// readLimited opens name without blocking (a FIFO must not hang the
// loader), refuses anything but a regular file, and reads at most
// maxFileSize bytes.
func readLimited(name string) ([]byte, fs.FileInfo, error) {
	// Stat before opening: opening some devices has side effects
	// (/dev/watchdog arms a reboot, a tty can become ours).
	pre, err := os.Stat(name)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if !pre.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("not a regular file (%s)", pre.Mode().Type())
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if !fi.Mode().IsRegular() || !os.SameFile(pre, fi) {
		return nil, nil, fmt.Errorf("file changed while being opened")
	}
	if fi.Size() > maxFileSize {
		return nil, nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if len(data) > maxFileSize {
		return nil, nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	return data, fi, nil
}

// unwrapPath drops the path from a *fs.PathError: messages already name
// the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read: %w", pe.Err)
	}
	return err
}

var topKeys = []string{"version", "interval", "ignore_ephemeral_udp", "include", "allow", "notify",
	"log_allowed", "repeat_interval", "flap_window", "shutdown_grace", "state_dir", "ebpf", "reconcile_interval",
	"transient_alerts_per_minute", "deny", "memfd_runtimes", "metrics", "exposure"}

// dropinKeys are the keys a drop-in may set; everything else is a setting
// that belongs to the main file alone.
var dropinKeys = []string{"version", "allow", "deny", "notify"}

func (l *loader) build(mainName string, data []byte) (*Config, error) {
	c := &Config{Source: mainName, MemfdRuntimes: slices.Clone(DefaultMemfdRuntimes)}
	c.Settings = defaultSettings(l.getenv)
	c.Notify = Notify{Journald: true, SpoolSize: 10000}
	c.Metrics = defaultMetrics(l.dirExists)
	l.files = append(l.files, mainName)

	d := &decoder{file: mainName, errs: &l.errs}
	includes := []string{DefaultInclude}
	var includeNodes []*yaml.Node
	ruleNames := map[string]string{}
	hookNames := map[string]string{}
	var listen *yaml.Node // metrics.listen, when set
	if root := d.parseYAML(data); root != nil {
		includes, includeNodes, listen = l.top(d, root, c, true, ruleNames, hookNames)
	}

	for _, p := range includes {
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(mainName), p)
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		c.Includes = append(c.Includes, p)
	}
	if l.followIncludes {
		for _, p := range l.dropins(d, mainName, includes, includeNodes) {
			l.files = append(l.files, p)
			dd := &decoder{file: p, errs: &l.errs}
			data, err := l.read(p)
			if err != nil {
				l.fileError(p, err)
				continue
			}
			if root := dd.parseYAML(data); root != nil {
				l.top(dd, root, c, false, ruleNames, hookNames)
			}
		}
	}

	if len(l.errs) > 0 {
		return nil, l.errs.finish(l.order)
	}
	if listen != nil {
		if r, ok := l.metricsRule(d, c.Metrics, listen); ok {
			c.Rules = append(c.Rules, r)
		}
	}
	c.Files = l.files
	c.Warnings = l.warns
	copy(c.Hash[:], l.hash.Sum(nil))
	return c, nil
}

func defaultSettings(getenv func(string) string) Settings {
	s := Settings{
		Interval:                 time.Second,
		IgnoreEphemeralUDP:       true,
		FlapWindow:               30 * time.Second,
		ShutdownGrace:            5 * time.Second,
		StateDir:                 "/var/lib/portwatch",
		EBPF:                     EBPFAuto,
		ReconcileInterval:        DefaultReconcileInterval,
		TransientAlertsPerMinute: DefaultTransientAlertsPerMinute,
		Exposure:                 ExposureAuto,
	}
	// systemd sets STATE_DIRECTORY from StateDirectory=, colon-separated
	// when the unit lists several; the first is ours.
	if sd, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":"); sd != "" {
		s.StateDir = sd
	}
	return s
}

// top decodes the top-level mapping of the main file (main) or of a
// drop-in. It returns the include: patterns and their nodes, and the node
// of metrics.listen when set.
func (l *loader) top(d *decoder, root *yaml.Node, c *Config, main bool, ruleNames, hookNames map[string]string) ([]string, []*yaml.Node, *yaml.Node) {
	includes := []string{DefaultInclude}
	var includeNodes []*yaml.Node
	var listen *yaml.Node
	var reconcile *yaml.Node // reconcile_interval, when set and valid
	for _, f := range d.fields(root, "top level", topKeys) {
		if !main && !contains(dropinKeys, f.key) {
			d.errorf(f.k, "%q may be set only in the main file, not in a drop-in (drop-ins may add allow and deny rules and notify.webhooks)", f.key)
			continue
		}
		switch f.key {
		case "version":
			if v, ok := d.integer(f); ok && v != 1 {
				d.errorf(f.v, "version: unsupported version %d (this portwatchd reads version 1)", v)
			}
		case "interval":
			if v, ok := d.duration(f, 100*time.Millisecond); ok {
				c.Interval = v
			}
		case "ignore_ephemeral_udp":
			if v, ok := d.boolean(f); ok {
				c.IgnoreEphemeralUDP = v
			}
		case "log_allowed":
			if v, ok := d.boolean(f); ok {
				c.LogAllowed = v
			}
		case "repeat_interval":
			if v, ok := d.duration(f, 0); ok {
				if v != 0 && v < time.Minute {
					d.errorf(f.v, "repeat_interval: must be 0 (off) or at least 1m0s")
				} else {
					c.RepeatInterval = v
				}
			}
		case "flap_window":
			if v, ok := d.duration(f, 0); ok {
				c.FlapWindow = v
			}
		case "shutdown_grace":
			if v, ok := d.duration(f, 0); ok {
				c.ShutdownGrace = v
			}
		case "state_dir":
			if v, ok := d.str(f); ok {
				if !filepath.IsAbs(v) {
					d.errorf(f.v, "state_dir: must be an absolute path, got %q", clip(v))
				} else {
					c.StateDir = filepath.Clean(v)
				}
			}
		case "ebpf":
			if v, ok := d.str(f); ok {
				switch m := EBPFMode(v); m {
				case EBPFAuto, EBPFOn, EBPFOff:
					c.EBPF = m
				default:
					d.errorf(f.v, "ebpf: expected auto, on or off, got %q", clip(v))
				}
			}
		case "exposure":
			if v, ok := d.str(f); ok {
				switch m := ExposureMode(v); m {
				case ExposureAuto, ExposureOff:
					c.Exposure = m
				default:
					d.errorf(f.v, "exposure: expected auto or off, got %q (the exposure: of a rule is a list of classes)", clip(v))
				}
			}
		case "reconcile_interval":
			if v, ok := d.duration(f, 100*time.Millisecond); ok {
				c.ReconcileInterval, reconcile = v, f.v
			}
		case "transient_alerts_per_minute":
			if v, ok := d.intIn(f, 1, 100_000); ok {
				c.TransientAlertsPerMinute = v
			}
		case "include":
			if f.v.Kind == yaml.SequenceNode && len(f.v.Content) == 0 {
				includes = nil // include: [] turns drop-ins off
				continue
			}
			items, ok := d.strs(f)
			if !ok {
				continue
			}
			includes = nil
			for _, it := range items {
				if _, err := path.Match(it.Value, ""); err != nil {
					d.errorf(it, "include: invalid glob %q: %v", clip(it.Value), err)
					continue
				}
				includes = append(includes, it.Value)
				includeNodes = append(includeNodes, it)
			}
		case "allow":
			c.Rules = l.rules(d, f, ruleNames, c.Rules, false)
		case "deny":
			c.Deny = l.rules(d, f, ruleNames, c.Deny, true)
		case "memfd_runtimes":
			if rts, ok := d.runtimes(f); ok {
				c.MemfdRuntimes = rts
			}
		case "notify":
			l.notify(d, f, &c.Notify, main, hookNames)
		case "metrics":
			listen = l.metrics(d, f, &c.Metrics)
		}
	}
	if main {
		checkReconcile(d, c, reconcile)
	}
	return includes, includeNodes, listen
}

// rules appends the rules of allow: or (deny set) deny: to list.
func (l *loader) rules(d *decoder, f field, names map[string]string, list []Rule, deny bool) []Rule {
	if f.v.Kind == yaml.ScalarNode && f.v.Tag == "!!null" {
		return list // "allow:" with nothing under it
	}
	if f.v.Kind != yaml.SequenceNode {
		d.errorf(f.v, "%s: expected a list of rules, got %s", f.key, kindName(f.v))
		return list
	}
	for _, n := range f.v.Content {
		if r, ok := l.rule(d, n, names, deny); ok {
			list = append(list, r)
		}
	}
	return list
}

// runtimes decodes memfd_runtimes: a list of program names, [] for none.
func (d *decoder) runtimes(f field) ([]string, bool) {
	if f.v.Kind == yaml.SequenceNode && len(f.v.Content) == 0 {
		return []string{}, true
	}
	items, ok := d.strs(f)
	if !ok {
		return nil, false
	}
	var out []string
	for _, it := range items {
		if !validRuntime(it.Value) {
			d.errorf(it, "memfd_runtimes: %q is not a program name (letters, digits, \".\", \"_\", \"-\")", clip(it.Value))
			ok = false
			continue
		}
		out = append(out, it.Value)
	}
	return out, ok
}

func validRuntime(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkReconcile ties reconcile_interval to interval, which may come after
// it in the file: when set (n is its value), it may not be shorter; when
// not, it is the default or interval, whichever is longer.
func checkReconcile(d *decoder, c *Config, n *yaml.Node) {
	switch {
	case n == nil:
		c.ReconcileInterval = max(DefaultReconcileInterval, c.Interval)
	case c.ReconcileInterval < c.Interval:
		d.errorf(n, "reconcile_interval: must be at least interval (%s)", c.Interval)
	}
}

// dropins expands the include: globs relative to the main file's directory
// and returns the files in lexical order. Hidden files (editor temporaries,
// ".#" locks) are skipped.
func (l *loader) dropins(d *decoder, mainName string, patterns []string, nodes []*yaml.Node) []string {
	dir := filepath.Dir(mainName)
	mainAbs, _ := filepath.Abs(mainName)
	seen := map[string]bool{}
	var out []string
	for i, p := range patterns {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			var n *yaml.Node
			if i < len(nodes) {
				n = nodes[i]
			}
			d.errorf(n, "include: invalid glob %q: %v", clip(patterns[i]), err)
			continue
		}
		for _, m := range matches {
			if strings.HasPrefix(filepath.Base(m), ".") || seen[m] {
				continue
			}
			if abs, _ := filepath.Abs(m); abs == mainAbs {
				continue
			}
			seen[m] = true
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}
