package policy

import (
	"errors"
	"time"

	"github.com/portwatchd/portwatchd/watcher"
)

// CONTRACT (owned by the policy work): the signatures in this file are used by
// cmd/portwatchd and notify and must stay; bodies are placeholders.

// DefaultPath is where the allowlist lives.
const DefaultPath = "/etc/portwatch.yaml"

// Config is a loaded, validated and built configuration.
type Config struct {
	Settings
	Notify Notify
	Rules  []Rule
	// Source is the main file's path, or "embedded default".
	Source string
	// Files lists every file read: the main file and its drop-ins.
	Files []string
	// Hash covers the content of every file read, including url_file and
	// secret_file targets; an unchanged hash means a reload has nothing to do.
	Hash [32]byte
}

// Rule is one validated allow rule.
type Rule struct {
	Name string
	File string // file:line of the rule, for messages
}

// Load reads the main file at path and its drop-ins, checks their
// permissions when running as root, and returns the built Config. Errors list
// every problem found, one "file:line:col: message" per line.
func Load(path string) (*Config, error) {
	return nil, errors.New("not implemented")
}

// Default returns the embedded default policy: only loopback listeners are
// allowed.
func Default() *Config {
	return &Config{Source: "embedded default"}
}

// Evaluate returns the verdict on l at time now.
func (c *Config) Evaluate(l watcher.Listener, now time.Time) Decision {
	return Decision{Listener: l, Verdict: Unexpected}
}
