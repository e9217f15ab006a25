package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// fileID identifies a file: the device and inode from stat(2).
type fileID struct {
	dev, ino uint64
}

// statID stats path (following symlinks, and so the /proc/PID/exe magic
// link to the file the process runs) without triggering an automount: the
// path is chosen by whoever runs the process.
func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(unix.AT_FDCWD, path, &st, unix.AT_NO_AUTOMOUNT); err != nil {
		return fileID{}, err
	}
	return fileID{dev: st.Dev, ino: st.Ino}, nil
}

// verifyExe reports whether exe, resolved in our own mount namespace, is
// the file that exeLink (/proc/PID/exe) refers to. It returns the file's id
// too (zero when /proc/PID/exe cannot be stat'ed), so that an exec of
// another file at the same path is noticed later. A deleted or memfd
// executable, or a path that is not absolute, is never verified.
//
// Order matters against a process that execs meanwhile: the id is read
// before the path is compared, so a race gives a mismatch (unverified) or
// an id that the next recheck finds changed, never a wrong "verified".
func verifyExe(exeLink, exe string, deleted bool) (fileID, bool) {
	id, err := statID(exeLink)
	if err != nil {
		return fileID{}, false
	}
	if deleted || !strings.HasPrefix(exe, "/") {
		return id, false
	}
	got, err := statID(exe)
	return id, err == nil && got == id
}

// readProcess reads what is recorded about a holder, and the id of its
// executable file. An error means the process has gone (or cannot be read
// at all); fields that cannot be read on their own (exe without
// CAP_SYS_PTRACE, a kernel thread) stay empty, and the exe is then
// unverified.
func readProcess(root string, pid int32, users map[uint32]string, risk *riskEnv) (Process, fileID, holderRisk, error) {
	dir := filepath.Join(root, strconv.Itoa(int(pid)))
	p := Process{PID: int(pid), Cmdline: []string{}, Flags: []Flag{}, ExeUnverified: true}
	var h holderRisk
	var id fileID
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return p, id, h, err
	}
	if uid, ok := parseStatusUID(status); ok {
		p.UID = uid
	}
	p.User = userName(users, p.UID)
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		p.Comm = strings.TrimSuffix(string(b), "\n")
	}
	if link, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.Exe, p.ExeDeleted = parseExe(link)
		var ok bool
		id, ok = verifyExe(filepath.Join(dir, "exe"), p.Exe, p.ExeDeleted)
		p.ExeUnverified = !ok
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = parseCmdline(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		p.Unit, p.Container = parseCgroup(b)
	}
	h = risk.evaluate(dir, &p)
	p.Flags = orEmpty(h.set.List())
	if h.unknown != 0 {
		p.FlagsUnknown = h.unknown.List()
	}
	return p, id, h, nil
}

// ReadProcess reads from /proc what a snapshot records about process pid,
// for a caller that learns of the process outside a snapshot: from the
// kernel programs' events, while the process may still live. User is the
// uid in decimal; the caller names it. An error means the process has gone.
//
// Its Flags are those that need no dpkg database: exe_unpackaged and
// exe_modified are in FlagsUnknown (a Watcher's snapshot decides them), as
// are exe_replaced and exe_gone for a deleted executable whose path exists
// again; root_unprivileged_port, which depends on the listener, is never
// set.
func ReadProcess(pid int) (Process, error) {
	p, _, _, err := readProcess("/proc", int32(pid), nil, standaloneRisk())
	return p, err
}

// ReadProcess is the package's ReadProcess with this watcher's dpkg index
// and caches: exe_unpackaged, exe_modified, exe_replaced and exe_gone are
// decided as in a snapshot. Safe to call while a snapshot runs (the daemon's
// reader of kernel events does, for a listener that may be gone before any
// snapshot sees it).
func (w *Watcher) ReadProcess(pid int) (Process, error) {
	p, _, _, err := readProcess(w.opts.ProcRoot, int32(pid), nil, w.risk)
	return p, err
}

// standaloneRisk is the riskEnv of ReadProcess: no dpkg index.
var standaloneRisk = sync.OnceValue(func() *riskEnv { return newRiskEnv("/proc", nil) })

// readCgroupContainer returns the container id of pid, or "".
func readCgroupContainer(root string, pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/cgroup", root, pid))
	if err != nil {
		return ""
	}
	_, c := parseCgroup(b)
	return c
}

// holderDetails holds what is recorded about each holder.
type holderDetails struct {
	byPid        map[int32]*procInfo          // never changed in place: see sameListeners
	recheckQueue roundRobin[int32, *procInfo] // byPid entries still to check this round
	dpkgGen      uint32                       // the build of the dpkg index byPid was judged against
	execed       []int32                      // the pids that exec'd, to read again (execs.go)
	execEvents   bool                         // execs are told (SetExecEvents)
	// gen counts the changes to byPid: those that use it remember the gen
	// they last saw (readHolders, syncExits, sameListeners), and a tick
	// where it did not move skips them.
	gen uint64
	// The holderCache.gen and gen readHolders last matched the two at.
	matchedHolders, matchedDetails uint64
}

// put records pi as pid's details.
func (d *holderDetails) put(pid int32, pi *procInfo) {
	d.byPid[pid] = pi
	d.gen++
}

// drop forgets pid's details.
func (d *holderDetails) drop(pid int32) {
	if _, ok := d.byPid[pid]; ok {
		delete(d.byPid, pid)
		d.gen++
	}
}

type procInfo struct {
	p     Process
	exeID fileID // the file /proc/PID/exe referred to when p was read
	used  uint32 // last tick it held a listener
	// rootFlags is p.Flags with root_unprivileged_port, for the listeners
	// at or above their namespace's ip_unprivileged_port_start; nil when
	// the process does not run as root (effective uid).
	rootFlags []Flag
}

// newProcInfo records what readProcess read.
func newProcInfo(p Process, id fileID, h holderRisk, gen uint32) *procInfo {
	pi := &procInfo{p: p, exeID: id, used: gen}
	if h.euid0 {
		pi.rootFlags = append(slices.Clip(p.Flags), FlagRootUnprivilegedPort)
	}
	return pi
}

// recheckPerTick is how many cached holders a tick checks, in turn, for an
// exec (a new executable behind the same pid): a readlink each, so that with
// a hundred holders each is checked every few seconds for a few tens of
// microseconds a tick.
const recheckPerTick = 16

// readHolders reads the details of holders not yet known, re-reads those
// whose executable changed, and forgets those that are no longer holders.
//
// An executable changed when the path read from /proc/PID/exe, or the file
// it refers to, did. The file matters as much as the path: a process that
// enters a private mount namespace and execs a file bound over the same path
// would otherwise keep the verdict "verified" of the file it ran before.
func (w *Watcher) readHolders() {
	var todo []int32
	w.refreshUsers()
	w.refreshDpkg()
	s := scratchPool.Get().(*scratch)
	n := recheckPerTick
	if w.details.execEvents {
		n = recheckPerTickExecEvents
	}
	for range n {
		pid, ok := w.details.recheckQueue.next(w.details.byPid)
		if !ok {
			break
		}
		pi := w.details.byPid[pid]
		if pi == nil {
			continue
		}
		link, err := w.holderLink(s, pid, "exe", -1)
		if err != nil {
			continue // gone: found by the next full read; or not allowed
		}
		if exe, deleted := parseExe(string(link)); exe != pi.p.Exe || deleted != pi.p.ExeDeleted {
			w.details.drop(pid)
			continue
		}
		if id, err := w.holderExeID(s, pid); err == nil && id != pi.exeID {
			w.details.drop(pid)
		}
	}
	scratchPool.Put(s)
	// What follows matches the details to the holders: those without
	// are read, those no longer holders forgotten. When neither side
	// changed since it last ran, it would only mark every one in use
	// again: a steady tick skips it.
	if w.holders.gen == w.details.matchedHolders && w.details.gen == w.details.matchedDetails {
		return
	}
	defer func() { w.details.matchedHolders, w.details.matchedDetails = w.holders.gen, w.details.gen }()
	for _, h := range w.holders.byInode {
		for _, pid := range h {
			if pi := w.details.byPid[pid]; pi != nil {
				pi.used = w.gen
			} else if !slices.Contains(todo, pid) {
				todo = append(todo, pid)
			}
		}
	}
	got := make([]*procInfo, len(todo))
	var next atomic.Int64
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), 4, (len(todo)+7)/8)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(todo) {
					return
				}
				if p, id, h, err := readProcess(w.opts.ProcRoot, todo[i], w.users.byUID, w.risk); err == nil {
					got[i] = newProcInfo(p, id, h, w.gen)
				}
			}
		})
	}
	wg.Wait()
	for i, pid := range todo {
		if got[i] != nil {
			w.details.put(pid, got[i])
		} else {
			// Gone between the fd scan and now.
			w.dropHolder(pid)
		}
	}
	for pid, pi := range w.details.byPid {
		if pi.used != w.gen {
			w.details.drop(pid)
		}
	}
}

// refreshDpkg reports a failed rebuild of the dpkg index, and forgets the
// details of every holder when the index was rebuilt: their flags were
// judged against the old one (a package installed, upgraded or removed).
// They are read again in this tick, as new holders are.
func (w *Watcher) refreshDpkg() {
	if msg := w.dpkg.takeFailure(); msg != "" {
		w.warn(msg)
	}
	if !w.dpkg.isReady() {
		return // the first build: what this tick reads waits for it
	}
	if g := w.dpkg.gen.Load(); g != w.details.dpkgGen {
		w.details.dpkgGen = g
		clear(w.details.byPid)
		w.details.gen++
		w.risk.forget()
	}
}

// orEmpty returns fs, or an empty list for none: Process.Flags is never nil.
func orEmpty(fs []Flag) []Flag {
	if fs == nil {
		return []Flag{}
	}
	return fs
}
