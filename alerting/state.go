package alerting

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/portwatchd/portwatchd/internal/atomicfile"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// StateFileName is the alert state inside the state directory. The notify
// spools live next to it.
const StateFileName = "state.json"

// stateVersion is the version of the state file's format.
const stateVersion = 1

// Alert is one listener the daemon has alerted about and not yet resolved.
// It is persisted, so that a restart neither alerts again about what was
// already alerted nor forgets to resolve what closed while it was down.
type Alert struct {
	// Decision is the listener as alerted. Resolved events carry it
	// unchanged, so that receivers that deduplicate on the alert's fields
	// (Alertmanager's labels) match the resolve to the alert.
	Decision  policy.Decision `json:"decision"`
	Exes      []string        `json:"exes"`  // owners when alerted (watcher.Owners)
	Users     []string        `json:"users"` //
	Known     bool            `json:"known"` // false: alerted while unattributed
	AlertedAt time.Time       `json:"alerted_at"`
	LastSent  time.Time       `json:"last_sent"` // last alert or reminder, for repeat_interval
	// ClosedAt is zero while the listener is open. Once it closes, the
	// resolved event waits for flap_window: a reopening with the same
	// executables within it takes the alert back silently.
	ClosedAt time.Time `json:"closed_at,omitzero"`
	// EventID is the id of the event that raised the alert.
	EventID string `json:"event_id,omitempty"`
}

func (a *Alert) owners() watcher.Owners {
	return watcher.Owners{Exes: a.Exes, Users: a.Users, Known: a.Known}
}

// setOwners records o as the owners of the alerted listener.
func (a *Alert) setOwners(o watcher.Owners) {
	a.Exes, a.Users, a.Known = o.Exes, o.Users, o.Known
}

// stateFile is the JSON form of the state file.
type stateFile struct {
	Version int      `json:"version"`
	Alerts  []*Alert `json:"alerts"`
}

// LoadState reads the alert state in dir, for New. A missing file is an empty state.
func LoadState(dir string) (map[watcher.Key]*Alert, error) {
	alerts := map[watcher.Key]*Alert{}
	b, err := os.ReadFile(filepath.Join(dir, StateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return alerts, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", filepath.Join(dir, StateFileName), err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("state %s: unsupported version %d", filepath.Join(dir, StateFileName), sf.Version)
	}
	for _, a := range sf.Alerts {
		if a == nil {
			continue
		}
		alerts[a.Decision.Key()] = a
	}
	return alerts, nil
}

// encodeState returns the state file for alerts, in key order so that an
// unchanged state gives the same bytes.
func encodeState(alerts map[watcher.Key]*Alert) ([]byte, error) {
	sf := stateFile{Version: stateVersion, Alerts: []*Alert{}}
	for _, k := range sortedKeys(alerts) {
		sf.Alerts = append(sf.Alerts, alerts[k])
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(b, '\n'), nil
}

// SaveState writes the engine's alerts into dir atomically: a temporary file is
// written and fsynced, renamed over the old one, and the directory is fsynced
// so that the rename itself survives a crash.
func (e *Engine) SaveState(dir string) error {
	b, err := encodeState(e.alerts)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, StateFileName)
	if err := atomicfile.Write(path, b, 0o600, "."+StateFileName+".tmp*", false); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// sortedKeys returns the keys of m in the order of Snapshot.Listeners.
func sortedKeys[V any](m map[watcher.Key]V) []watcher.Key {
	keys := make([]watcher.Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, watcher.Key.Compare)
	return keys
}
