package watcher

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// riskEnv is what computing a holder's flags needs beyond its /proc
// directory: the dpkg index, and the caches of what was found about each
// executable. Holders are read on several goroutines; riskEnv is safe for
// that.
type riskEnv struct {
	db       *dpkgDB // nil: ReadProcess, outside a Watcher
	md5      md5Cache
	bootTime int64  // btime from /proc/stat, 0 when unknown
	selfRoot fileID // our root directory

	mu    sync.Mutex
	byExe map[exeKey]exeFacts
}

// exeKey is one executable file at one path, as judged against one build
// of the dpkg index. The path is part of the key: a file has one inode and
// several paths (hard links, bind mounts), and the path is what is judged.
type exeKey struct {
	st   exeStamp
	path string
	root fileID // the process's root directory: a container's /opt is not ours
	gen  uint32
}

// exeFacts is what was found about an executable file.
type exeFacts struct {
	set, unknown FlagSet
}

// newRiskEnv returns the riskEnv of a watcher of the /proc at procRoot,
// with the dpkg database db (nil for none).
func newRiskEnv(procRoot string, db *dpkgDB) *riskEnv {
	r := &riskEnv{db: db}
	if b, err := os.ReadFile(filepath.Join(procRoot, "stat")); err == nil {
		r.bootTime, _ = parseBootTime(b)
	}
	r.selfRoot, _ = statID("/")
	return r
}

// maxExeFacts bounds riskEnv.byExe: past it, it starts again empty.
const maxExeFacts = 4096

// holderRisk is the evidence about one holder: its flags, and whether it
// runs as root, for root_unprivileged_port, which depends on the port of
// each listener.
type holderRisk struct {
	set, unknown FlagSet
	euid0        bool
}

// evaluate computes the flags of the process whose /proc directory is dir,
// described by p (read from it), whose executable is exeID (zero when
// unreadable).
//
// Flags that need the dpkg database (exe_unpackaged, exe_modified, and
// ownership for exe_replaced) are unknown on a host without it, and for an
// executable whose path does not name, in the watcher's mount namespace,
// the file the process runs (Process.ExeUnverified: a container, a private
// mount namespace): the host's database says nothing about that file.
func (r *riskEnv) evaluate(dir string, p *Process) holderRisk {
	var h holderRisk
	stat, statOK := procStat{}, false
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		stat, statOK = parseProcStat(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		if euid, ok := parseStatusEUID(b); ok {
			h.euid0 = euid == 0
		}
	}
	var idx *dpkgIndex
	var gen uint32
	if r.db != nil {
		r.db.wait()
		gen = r.db.gen.Load()
		idx = r.db.index()
	}
	memfd := strings.HasPrefix(p.Exe, "/memfd:")
	exeLink := filepath.Join(dir, "exe")
	st, stErr := statStamp(exeLink)
	rootID, rootErr := statID(filepath.Join(dir, "root"))
	switch {
	case p.Exe == "" || stErr != nil:
		// A kernel thread, or not allowed to look: nothing to say.
	case memfd:
		// A memfd is no file: no path, no package, no directory.
		h.set.Add(FlagExeMemfd)
	default:
		key := exeKey{st: st, path: p.Exe, root: rootID, gen: gen}
		f, ok := r.cached(key)
		if !ok {
			f = r.exeFacts(dir, p, st, rootErr == nil, idx)
			r.store(key, f)
		}
		h.set |= f.set
		h.unknown |= f.unknown
		if p.ExeDeleted {
			set, unknown := r.deleted(dir, p, stat, statOK, rootErr == nil && rootID == r.selfRoot, idx)
			h.set |= set
			h.unknown |= unknown
		}
	}
	if base := filepath.Base(p.Exe); p.Exe != "" && nameIs(base, []string{"busybox", "toybox"}) && nameIs(p.Comm, netcatNames) {
		// A multi-call binary run as nc: its comm is the applet's name.
		h.set.Add(FlagNetcatFamily)
	}
	if isSessionScope(lastUnit(p.Unit)) || (statOK && stat.ttyNr != 0) {
		h.set.Add(FlagSessionLaunched)
	}
	if statOK && stat.ppid > 0 {
		parent := filepath.Join(filepath.Dir(dir), strconv.Itoa(int(stat.ppid)))
		for _, name := range parentNames(parent) {
			if nameIs(name, shellNames) {
				h.set.Add(FlagParentShell)
			}
			if nameIs(name, webServerNames) {
				h.set.Add(FlagParentWebServer)
			}
		}
	}
	if !memfd && stErr == nil && commMismatch(dir, p, st.id) {
		h.set.Add(FlagCommMismatch)
	}
	h.unknown = h.unknown &^ h.set
	return h
}

// forget drops what was found about executables (the dpkg index changed).
func (r *riskEnv) forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byExe = nil
}

func (r *riskEnv) cached(k exeKey) (exeFacts, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.byExe[k]
	return f, ok
}

func (r *riskEnv) store(k exeKey, f exeFacts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byExe == nil || len(r.byExe) >= maxExeFacts {
		r.byExe = make(map[exeKey]exeFacts)
	}
	r.byExe[k] = f
}

// exeFacts finds what the executable file says: its name, its directory,
// its package and whether it is as the package shipped it.
func (r *riskEnv) exeFacts(dir string, p *Process, st exeStamp, rootOK bool, idx *dpkgIndex) exeFacts {
	var f exeFacts
	base := filepath.Base(p.Exe)
	if nameIs(base, interpreterNames) {
		f.set.Add(FlagInterpreter)
	}
	if nameIs(base, netcatNames) {
		f.set.Add(FlagNetcatFamily)
	}
	if inWritablePath(p.Exe) || (rootOK && writableByOthers(filepath.Join(dir, "root"), filepath.Dir(p.Exe))) {
		f.set.Add(FlagExeInWritableDir)
	}
	if p.ExeDeleted {
		return f // the file at the path is not the one running: see deleted
	}
	if idx == nil || p.ExeUnverified {
		f.unknown.Add(FlagExeUnpackaged)
		f.unknown.Add(FlagExeModified)
		return f
	}
	owners := idx.owners(p.Exe, nil)
	if len(owners) == 0 {
		f.set.Add(FlagExeUnpackaged)
		return f
	}
	switch modified, known := r.modified(filepath.Join(dir, "exe"), p.Exe, st, owners, idx); {
	case !known:
		f.unknown.Add(FlagExeModified)
	case modified:
		f.set.Add(FlagExeModified)
	}
	return f
}

// modified compares the md5 of the executable with what the md5sums of its
// owners say. known is false when no owner lists a sum for it, or it could
// not be read. This is a hint, not a proof of integrity: root can rewrite
// the md5sums files (and a rootkit would), and a file changed with its
// size and mtime kept is not hashed again (see exeStamp).
func (r *riskEnv) modified(exeLink, exe string, st exeStamp, owners []string, idx *dpkgIndex) (modified, known bool) {
	names := idx.md5Names(exe)
	var got [16]byte
	hashed := false
	for _, pkg := range owners {
		b, err := r.db.md5sums(pkg)
		if err != nil {
			continue
		}
		want, ok := md5Lookup(b, names)
		if !ok {
			continue
		}
		if !hashed {
			if got, err = r.md5.sum(exeLink, st); err != nil {
				return false, false
			}
			hashed = true
		}
		if got == want {
			return false, true
		}
		known = true
	}
	return known, known
}

// deleted tells exe_replaced from exe_gone for a deleted executable: the
// path exists again, in the process's root, is owned by a package, and was
// put there after the process started (an upgrade whose restart is
// pending); else the executable is gone. Without a dpkg index, a newer
// file at the path cannot be told from one an intruder put there: both
// flags are unknown then.
//
// "Put there" is the file's ctime, not its mtime: dpkg keeps the mtime of
// the package's archive, older than any process, while the ctime is that
// of the rename into place, and cannot be set from user space.
func (r *riskEnv) deleted(dir string, p *Process, stat procStat, statOK, sameRoot bool, idx *dpkgIndex) (set, unknown FlagSet) {
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(dir, "root")+p.Exe, &st)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		set.Add(FlagExeGone)
		return set, 0
	}
	newer := err == nil && statOK && r.bootTime != 0 && st.Ctim.Sec >= r.bootTime+int64(stat.start/clockTicks)
	switch {
	case err != nil || !statOK || r.bootTime == 0 || idx == nil || !sameRoot:
		// Unknown (see above); the files under another root (a
		// container's) are not in our database.
		unknown.Add(FlagExeReplaced)
		unknown.Add(FlagExeGone)
	case newer && idx.owned(p.Exe):
		set.Add(FlagExeReplaced)
	default:
		set.Add(FlagExeGone)
	}
	return set, unknown
}

// clockTicks is USER_HZ, the unit of starttime in /proc/PID/stat: 100 on
// every Linux architecture Debian builds for.
const clockTicks = 100

// writableByOthers reports whether a directory from / down to dir, looked
// up under root (/proc/PID/root: the process's own view of its mounts),
// may be written by a user other than root: owned by another user, or
// writable by its group or by all. Such a directory lets its owner or
// group swap the executable for another.
func writableByOthers(root, dir string) bool {
	writable := func(p string) bool {
		var st unix.Stat_t
		return unix.Stat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && (st.Uid != 0 || st.Mode&0o022 != 0)
	}
	p := root
	if writable(p) {
		return true
	}
	for _, c := range strings.Split(dir, "/") {
		if c == "" {
			continue
		}
		p += "/" + c
		if writable(p) {
			return true
		}
	}
	return false
}

// parentNames returns the base name of the parent's executable and its
// comm (either may say shell: a login shell's comm is "-bash").
func parentNames(dir string) []string {
	var out []string
	if link, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		exe, _ := parseExe(link)
		out = append(out, filepath.Base(exe))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		out = append(out, strings.TrimPrefix(strings.TrimSuffix(string(b), "\n"), "-"))
	}
	return out
}

// lastUnit is the innermost unit of Process.Unit ("user@1000.service/x.scope"
// gives x.scope).
func lastUnit(unit string) string {
	return unit[strings.LastIndexByte(unit, '/')+1:]
}

// aliasDirs are where a command name may be a symlink to the executable
// (Debian's alternatives: /usr/bin/nc -> /etc/alternatives/nc ->
// /bin/nc.openbsd; python3 -> python3.11).
var aliasDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// commMismatch reports whether the process's name (comm) is not what exec
// gave it. exec sets comm to the first 15 bytes of the base name of the
// path it was given, and /proc/PID/exe gives the file after symlinks, so
// these are not a mismatch:
//   - comm is the base name of the executable;
//   - comm names, in the executable's directory, in argv[0]'s or in a
//     standard bin directory, a symlink to the executable itself (same
//     device and inode): an alternative, python3 for python3.11;
//   - the executable is an interpreter and comm is the base name of
//     argv[1] or argv[2]: a script run through "#!", whose comm is the
//     script's name. argv can be rewritten by the process, so this one
//     trusts the process; the interpreter flag still says what it runs.
//
// A memfd or an unreadable executable is never a mismatch.
func commMismatch(dir string, p *Process, exeID fileID) bool {
	if p.Comm == "" || p.Exe == "" {
		return false
	}
	base := filepath.Base(p.Exe)
	if commOf(base) == p.Comm {
		return false
	}
	if nameIs(base, interpreterNames) {
		for _, a := range p.Cmdline[min(1, len(p.Cmdline)):min(3, len(p.Cmdline))] {
			if commOf(filepath.Base(a)) == p.Comm {
				return false
			}
		}
	}
	if len(p.Comm) >= 15 || strings.Contains(p.Comm, "/") || p.Comm == "." || p.Comm == ".." {
		// Truncated: the full name cannot be looked up.
		return true
	}
	dirs := append([]string{filepath.Dir(p.Exe)}, aliasDirs...)
	if len(p.Cmdline) > 0 && strings.HasPrefix(p.Cmdline[0], "/") {
		dirs = append(dirs, filepath.Dir(p.Cmdline[0]))
	}
	root := filepath.Join(dir, "root")
	for _, d := range dirs {
		if id, err := statID(root + d + "/" + p.Comm); err == nil && id == exeID {
			return false
		}
	}
	return true
}
