package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// checkSafe applies sshd's StrictModes to a file about to be trusted: the
// file, every directory on the way to it and every symlink met while
// resolving its path must be owned by root, and the file and directories
// must not be writable by group or others. A root-owned directory with the
// sticky bit (/tmp) is accepted, since others cannot rename or remove what
// root put there. Whoever can write the allowlist can hide a backdoor in it.
//
// The path is resolved one component at a time with Lstat, as the kernel
// does, so that a symlink in the middle of a chain (a link to a directory
// that holds another link) cannot lead through an unsafe directory unseen.
func checkSafe(name string, fi fs.FileInfo) error {
	return checkSafeIn(name, fi, "")
}

// checkSafeIn is checkSafe, except that under roDir (systemd's
// $CREDENTIALS_DIRECTORY) a file or directory may have any owner when it
// sits on a read-only mount. systemd hands LoadCredential= files to a
// DynamicUser= service by chowning them to its uid when the file system
// (ramfs) has no ACLs, then remounts the directory read-only: nobody can
// change them without a remount, whoever owns them.
func checkSafeIn(name string, fi fs.FileInfo, roDir string) error {
	abs, err := filepath.Abs(name)
	if err != nil {
		return fmt.Errorf("refusing: %w", err)
	}
	if roDir != "" {
		roDir = filepath.Clean(roDir)
	}
	final, err := walkSafe(abs, roDir)
	if err != nil {
		return err
	}
	// The file opened must be the one whose path was checked.
	if !os.SameFile(final, fi) {
		return fmt.Errorf("refusing: %s changed while its path was checked", abs)
	}
	return nil
}

// maxSymlinks bounds the links followed in one path, as the kernel's ELOOP.
const maxSymlinks = 40

// walkSafe resolves abs from the root down, checking "/", each directory
// entered and each symlink followed, and returns the final file's Lstat
// after checking it too.
func walkSafe(abs, roDir string) (fs.FileInfo, error) {
	under := func(p string) bool {
		return roDir != "" && (p == roDir || strings.HasPrefix(p, roDir+"/"))
	}
	rootFI, err := os.Lstat("/")
	if err != nil {
		return nil, fmt.Errorf("refusing: /: %w", unwrapPath(err))
	}
	if err := safeMode("/", rootFI); err != nil {
		return nil, err
	}
	cur := "/" // resolved so far: a real directory, no symlinks in it
	rest := splitPath(abs)
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		nfi, err := os.Lstat(next)
		if err != nil {
			return nil, fmt.Errorf("refusing: %s: %w", next, unwrapPath(err))
		}
		if nfi.Mode()&fs.ModeSymlink != 0 {
			links++
			if links > maxSymlinks {
				return nil, fmt.Errorf("refusing: %s: too many levels of symbolic links", abs)
			}
			// A link's own mode means nothing; its owner is who may
			// have made it point elsewhere (in a sticky directory).
			if err := safeOwnerIn(next, nfi, under(next)); err != nil {
				return nil, err
			}
			target, err := os.Readlink(next)
			if err != nil {
				return nil, fmt.Errorf("refusing: %s: %w", next, unwrapPath(err))
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		if len(rest) > 0 && !nfi.IsDir() {
			return nil, fmt.Errorf("refusing: %s: not a directory", next)
		}
		if err := safeOwnerIn(next, nfi, under(next)); err != nil {
			return nil, err
		}
		if err := safePerm(next, nfi); err != nil {
			return nil, err
		}
		cur = next
		if len(rest) == 0 {
			return nfi, nil
		}
	}
	// The path ended in "/", ".", or "..": a directory, never a config.
	return nil, fmt.Errorf("refusing: %s: not a regular file", abs)
}

func splitPath(p string) []string {
	return strings.Split(p, "/")
}

// safeOwnerIn is safeOwner, except that with readOnlyOK any owner will do
// when p lies on a read-only mount.
func safeOwnerIn(p string, fi fs.FileInfo, readOnlyOK bool) error {
	err := safeOwner(p, fi)
	if err != nil && readOnlyOK {
		var st syscall.Statfs_t
		if syscall.Statfs(p, &st) == nil && st.Flags&stRdonly != 0 {
			return nil
		}
		return fmt.Errorf("%w, and is not on a read-only mount", err)
	}
	return err
}

// stRdonly is ST_RDONLY in statfs(2)'s f_flags.
const stRdonly = 0x1

// safeOwner checks that p is owned by root.
func safeOwner(p string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return fmt.Errorf("refusing: %s is owned by uid %d, not root", p, st.Uid)
	}
	return nil
}

// safeMode checks one file or directory's owner and mode.
func safeMode(p string, fi fs.FileInfo) error {
	if err := safeOwner(p, fi); err != nil {
		return err
	}
	return safePerm(p, fi)
}

// safePerm checks that p is not writable by group or others, unless it is
// a sticky directory.
func safePerm(p string, fi fs.FileInfo) error {
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
