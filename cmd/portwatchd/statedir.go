package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// lockFileName is the daemon's lock inside the state directory.
const lockFileName = "daemon.lock"

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

// userStateDir is where an unprivileged run keeps its state:
// $XDG_STATE_HOME/portwatch, or ~/.local/state/portwatch.
func userStateDir() (string, bool) {
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "portwatch"), true
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", false
	}
	return filepath.Join(home, ".local", "state", "portwatch"), true
}
