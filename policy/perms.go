package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkSafe applies sshd's StrictModes to a file about to be trusted: the
// file, and every directory above it (both along the path as given and
// along the path with symlinks resolved), must be owned by root and not
// writable by group or others. A root-owned directory with the sticky bit
// (/tmp) is accepted, since others cannot rename or remove what root put
// there. Whoever can write the allowlist can hide a backdoor in it.
func checkSafe(name string, fi fs.FileInfo) error {
	if err := safeMode(name, fi); err != nil {
		return err
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return fmt.Errorf("refusing: %w", err)
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
		rfi, err := os.Stat(real)
		if err != nil {
			return fmt.Errorf("refusing: %w", unwrapPath(err))
		}
		if err := safeMode(real, rfi); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, p := range paths {
		for dir := filepath.Dir(p); !seen[dir]; dir = filepath.Dir(dir) {
			seen[dir] = true
			dfi, err := os.Stat(dir)
			if err != nil {
				return fmt.Errorf("refusing: %s: %w", dir, unwrapPath(err))
			}
			if err := safeMode(dir, dfi); err != nil {
				return err
			}
		}
	}
	return nil
}

// safeMode checks one file or directory's owner and mode.
func safeMode(p string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return fmt.Errorf("refusing: %s is owned by uid %d, not root", p, st.Uid)
	}
	m := fi.Mode()
	if m.Perm()&0o022 != 0 && !(m.IsDir() && m&fs.ModeSticky != 0) {
		return fmt.Errorf("refusing: %s is writable by group or others (mode %s)", p, modeString(m))
	}
	return nil
}

// modeString prints a mode as octal permission bits, with the sticky bit.
func modeString(m fs.FileMode) string {
	bits := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	return fmt.Sprintf("%04o", bits)
}
