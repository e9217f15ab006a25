package watcher

import (
	"context"
	"errors"
)

// CONTRACT (owned by the watcher work): the signatures in this file are used by
// cmd/portwatchd and must stay; the bodies are placeholders to be replaced.

// Options configure a Watcher. The zero value watches the real host.
type Options struct {
	ProcRoot     string // default "/proc"
	NetnsDir     string // default "/run/netns"
	ServicesFile string // default "/etc/services"; read once by New
	// DisableSetns forces the /proc/PID/net fallback for namespaces other
	// than the host's, as when running without CAP_SYS_ADMIN.
	DisableSetns bool
	// DisableSockDiag forces /proc/net parsing everywhere.
	DisableSockDiag bool
	// Warn is called once per distinct condition worth telling an operator
	// (partial attribution, a namespace that cannot be inspected). May be nil.
	Warn func(msg string)
}

// Watcher takes snapshots. It caches attribution between calls, so the
// daemon's steady-state tick costs far less than the first snapshot. A
// Watcher is not safe for concurrent use.
type Watcher struct {
	opts Options
}

// New returns a Watcher.
func New(opts Options) (*Watcher, error) {
	return &Watcher{opts: opts}, nil
}

// Snapshot returns every listener now, sorted by netns, protocol, port and
// address. It fails only when nothing at all could be read.
func (w *Watcher) Snapshot(ctx context.Context) (*Snapshot, error) {
	return nil, errors.New("not implemented")
}
