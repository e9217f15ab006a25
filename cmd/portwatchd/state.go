package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portwatchd/portwatchd/internal/atomicfile"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// stateFileName is the daemon's alert state inside the state directory. The
// notify spools live next to it.
const (
	stateFileName = "state.json"
	lockFileName  = "daemon.lock"
	stateVersion  = 1
)

// alert is one listener the daemon has alerted about and not yet resolved.
// It is persisted, so that a restart neither alerts again about what was
// already alerted nor forgets to resolve what closed while it was down.
type alert struct {
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
}

func (a *alert) owners() watcher.Owners {
	return watcher.Owners{Exes: a.Exes, Users: a.Users, Known: a.Known}
}

// stateFile is the JSON form of the state file.
type stateFile struct {
	Version int      `json:"version"`
	Alerts  []*alert `json:"alerts"`
}

// loadState reads the alert state in dir. A missing file is an empty state.
func loadState(dir string) (map[watcher.Key]*alert, error) {
	alerts := map[watcher.Key]*alert{}
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return alerts, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", filepath.Join(dir, stateFileName), err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("state %s: unsupported version %d", filepath.Join(dir, stateFileName), sf.Version)
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
func encodeState(alerts map[watcher.Key]*alert) ([]byte, error) {
	sf := stateFile{Version: stateVersion, Alerts: []*alert{}}
	for _, k := range sortedKeys(alerts) {
		sf.Alerts = append(sf.Alerts, alerts[k])
	}
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(b, '\n'), nil
}

// saveState writes the alert state into dir atomically: a temporary file is
// written and fsynced, renamed over the old one, and the directory is fsynced
// so that the rename itself survives a crash.
func saveState(dir string, alerts map[watcher.Key]*alert) error {
	b, err := encodeState(alerts)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, stateFileName)
	if err := atomicfile.Write(path, b, 0o600, "."+stateFileName+".tmp*", false); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// lockStateDir takes an exclusive lock in dir, so that two daemons never share
// one state directory (and one set of spools). The lock goes with the process,
// even on kill -9.
func lockStateDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is in use by another portwatchd", dir)
		}
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	return f, nil
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
