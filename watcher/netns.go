package watcher

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// errNetnsChanged is returned when the namespace file opened is not the
// namespace that was asked for (the process exited and its pid was reused).
var errNetnsChanged = errors.New("network namespace changed")

// inNetns runs fn on an OS thread that has entered the network namespace at
// path, which must have inode wantIno (0: any). Sockets fn creates stay in
// that namespace for their whole life.
//
// The thread is normally never unlocked, so the runtime throws it away when
// fn returns instead of handing a thread in a foreign namespace to other
// goroutines. The main thread is the exception: the runtime cannot end it,
// and parks it instead, for ever in the foreign namespace (pinning it, and
// making /proc/self describe it). So when the goroutine happens to run on
// the main thread, it enters the original namespace again and unlocks.
func inNetns(path string, wantIno uint64, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			// Without a way back, stay locked: the thread is thrown away
			// (or, the main thread, parked where it is).
			errc <- &os.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err}
			return
		}
		defer unix.Close(orig)
		mainThread := unix.Gettid() == unix.Getpid()
		entered, err := runInNetns(path, wantIno, fn)
		if !entered {
			runtime.UnlockOSThread() // still in its own namespace
		} else if mainThread && unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Else no UnlockOSThread: see above.
		errc <- err
	}()
	return <-errc
}

// runInNetns enters the network namespace at path, which must have inode
// wantIno (0: any), on the calling (locked) thread and runs fn there.
// entered tells whether the thread's namespace was changed.
func runInNetns(path string, wantIno uint64, fn func() error) (entered bool, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if wantIno != 0 && st.Ino != wantIno {
		return false, fmt.Errorf("%s: %w", path, errNetnsChanged)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return false, fmt.Errorf("setns %s: %w", path, err)
	}
	return true, fn()
}

// readPortRange reads ip_local_port_range as the calling thread's namespace
// sees it; /proc/sys/net follows the reading thread's network namespace.
func readPortRange(procRoot string) portRange {
	b, err := os.ReadFile(filepath.Join(procRoot, "sys/net/ipv4/ip_local_port_range"))
	if err != nil {
		return defaultPortRange
	}
	r, err := parsePortRange(b)
	if err != nil {
		return defaultPortRange
	}
	return r
}

// defaultUnprivStart is the kernel's default ip_unprivileged_port_start,
// assumed for a namespace the watcher cannot enter to read it.
const defaultUnprivStart = 1024

// readUnprivStart reads ip_unprivileged_port_start as the calling thread's
// namespace sees it (as readPortRange does).
func readUnprivStart(procRoot string) uint16 {
	b, err := os.ReadFile(filepath.Join(procRoot, "sys/net/ipv4/ip_unprivileged_port_start"))
	if err != nil {
		return defaultUnprivStart
	}
	if n, ok := parseUnprivPortStart(b); ok {
		return n
	}
	return defaultUnprivStart
}

// namedNetns lists the namespaces bound under dir (/run/netns, as `ip netns
// add` does): inode -> the first name in sorted order. pending says some
// name had no namespace mounted on it yet.
func namedNetns(dir string) (named map[uint64]string, pending bool) {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return nil, false
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	m := make(map[uint64]string, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, n), &st); err != nil {
			continue
		}
		// An unmounted placeholder file is on the /run tmpfs, not nsfs.
		var fs unix.Statfs_t
		if err := unix.Statfs(filepath.Join(dir, n), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
			pending = true
			continue
		}
		if _, dup := m[st.Ino]; !dup {
			m[st.Ino] = n
		}
	}
	return m, pending
}

// nsTable holds the network namespaces the watcher knows about.
type nsTable struct {
	byInode  map[uint64]*nsState
	self     uint64 // the watcher's own namespace
	host     uint64 // PID 1's, or self when that is hidden
	canSetns bool   // CAP_SYS_ADMIN: other namespaces can be entered

	// The namespaces bound under Options.NetnsDir, as last listed, and
	// what the directory was then (see runNames).
	named      map[uint64]string
	namedStamp dirStamp
	namedAt    uint32 // the tick of that listing
}

// dirStamp tells a directory's listing changed: `ip netns add` creates
// the name (the directory's mtime moves) and then mounts the namespace on
// it, `ip netns delete` unmounts and removes it.
type dirStamp struct {
	ok      bool
	ino     uint64
	mtime   unix.Timespec
	pending bool // a name was not mounted yet when listed
}

// runNames returns the namespaces bound under Options.NetnsDir. The
// directory is listed again (a readdir, and a stat and statfs per name)
// only when its inode or mtime moved, when a name was still unmounted at
// the last listing, or every fullReadEvery ticks (a namespace mounted over
// a name that stayed): otherwise a stat a tick.
func (w *Watcher) runNames() map[uint64]string {
	var st unix.Stat_t
	stamp := dirStamp{}
	if statPath(w.opts.NetnsDir, &st) == nil {
		stamp = dirStamp{ok: true, ino: st.Ino, mtime: st.Mtim}
	}
	t := &w.ns
	last := t.namedStamp
	if stamp.ok && last.ok && stamp.ino == last.ino && stamp.mtime == last.mtime && !last.pending && w.gen-t.namedAt < fullReadEvery {
		return t.named
	}
	if !stamp.ok {
		t.named, t.namedStamp, t.namedAt = nil, stamp, w.gen
		return nil
	}
	t.named, stamp.pending = namedNetns(w.opts.NetnsDir)
	t.namedStamp, t.namedAt = stamp, w.gen
	return t.named
}

// nsState is one network namespace the watcher knows about.
type nsState struct {
	inode   uint64
	name    string
	runName string // name under Options.NetnsDir, if any
	lowPid  int32  // lowest pid inside this tick, 0 for none
	conn    *sockDiagConn
	ports   portRange
	// unprivStart is ip_unprivileged_port_start: a root listener at or
	// above it is root_unprivileged_port. Containers often set it to 0.
	unprivStart uint16
	ifnames     map[uint32]string
	ifAt        uint32          // tick ifnames was read
	warned      map[string]bool // kinds of warning said about it (see warnNS)
	err         string          // why it is not inspected this tick
	opened      bool            // open has decided between sock_diag and /proc/PID/net
	seen        uint32
}

// netnsPath is a file that refers to ns, for setns.
func (w *Watcher) netnsPath(ns *nsState) string {
	if ns.runName != "" {
		return filepath.Join(w.opts.NetnsDir, ns.runName)
	}
	return filepath.Join(w.opts.ProcRoot, strconv.Itoa(int(ns.lowPid)), "ns/net")
}

// updateNamespaces finds the namespaces of this tick: those of the
// processes, and those bound under /run/netns. New ones are named and opened;
// vanished ones are closed.
func (w *Watcher) updateNamespaces() {
	for _, ns := range w.ns.byInode {
		ns.lowPid = 0
	}
	for pid, st := range w.pids.byPid {
		if st.netns == 0 {
			continue
		}
		ns := w.ns.byInode[st.netns]
		if ns == nil {
			ns = &nsState{inode: st.netns}
			w.ns.byInode[st.netns] = ns
		}
		ns.seen = w.gen
		if ns.lowPid == 0 || pid < ns.lowPid {
			ns.lowPid = pid
		}
	}
	own := w.ns.byInode[w.ns.self]
	own.seen = w.gen
	if own.lowPid == 0 {
		own.lowPid = w.selfPid
	}
	for ino, name := range w.runNames() {
		ns := w.ns.byInode[ino]
		if ns == nil {
			ns = &nsState{inode: ino}
			w.ns.byInode[ino] = ns
		}
		ns.seen = w.gen
		ns.runName = name
	}
	var fresh []*nsState
	for ino, ns := range w.ns.byInode {
		if ns.seen != w.gen {
			if ns.conn != nil {
				ns.conn.Close()
			}
			delete(w.ns.byInode, ino)
			continue
		}
		ns.err = ""
		if ns.name == "" || (!ns.opened && ns.inode != w.ns.self) {
			fresh = append(fresh, ns)
		}
	}
	// In a fixed order, so that of two namespaces that would have one name
	// the same one keeps it plain.
	slices.SortFunc(fresh, func(a, b *nsState) int { return cmp.Compare(a.inode, b.inode) })
	for _, ns := range fresh {
		if ns.name == "" {
			ns.name = w.nameNetns(ns)
			ns.ports = defaultPortRange
			ns.unprivStart = defaultUnprivStart
		}
		if !ns.opened && ns.inode != w.ns.self {
			w.open(ns)
		}
	}
}

// nameNetns names a namespace (see netnsName), unique among those known.
// The name is kept for the namespace's life, so that listeners keep their
// key.
func (w *Watcher) nameNetns(ns *nsState) string {
	var container string
	if ns.inode != w.ns.host && ns.runName == "" && ns.lowPid != 0 {
		container = readCgroupContainer(w.opts.ProcRoot, ns.lowPid)
	}
	return netnsName(ns.inode == w.ns.host, w.opts.NetnsDir, ns.runName, container, ns.lowPid, ns.inode, func(name string) bool {
		for _, o := range w.ns.byInode {
			if o != ns && o.name == name {
				return true
			}
		}
		return false
	})
}

// netnsName names a namespace: host, its name under netnsDir, the
// container whose processes are inside, or the lowest pid inside. It is
// pure, and so tested alone.
//
// Names must tell namespaces apart: listeners are keyed on them. A name
// taken already by another namespace (two namespaces whose lowest pids are
// in one container, a pid:N whose process moved to another namespace) gets
// "@<inode>". A name under netnsDir that looks like one of ours (host,
// container:..., pid:..., netns:...) is shown as its path, so that `ip netns
// add host` cannot pass for the host.
func netnsName(host bool, netnsDir, runName, container string, lowPid int32, inode uint64, taken func(string) bool) string {
	var name string
	switch {
	case host:
		return HostNetns
	case runName != "":
		name = runName
		if looksOurs(runName) {
			name = filepath.Join(netnsDir, runName)
		}
	case container != "":
		name = "container:" + container[:min(len(container), 12)]
	case lowPid != 0:
		name = "pid:" + strconv.Itoa(int(lowPid))
	default:
		name = "netns:" + strconv.FormatUint(inode, 10)
	}
	if taken(name) {
		name += "@" + strconv.FormatUint(inode, 10)
	}
	return name
}

// looksOurs reports whether a /run/netns name could be taken for a name the
// watcher makes.
func looksOurs(name string) bool {
	if name == HostNetns {
		return true
	}
	for _, p := range []string{"container:", "pid:", "netns:"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// open prepares a new namespace for dumps: a sock_diag socket created inside
// it when we may enter it, else nothing (the /proc/PID/net fallback).
func (w *Watcher) open(ns *nsState) {
	if w.opts.DisableSockDiag || w.opts.DisableSetns || !w.ns.canSetns {
		ns.opened = true
		return
	}
	err := inNetns(w.netnsPath(ns), ns.inode, func() error {
		c, err := dialSockDiag()
		if err != nil {
			return err
		}
		ns.conn = c
		ns.ports = readPortRange("/proc")
		ns.unprivStart = readUnprivStart("/proc")
		return nil
	})
	switch {
	case err == nil:
		ns.opened = true
	case isGone(err) || errors.Is(err, errNetnsChanged):
		// The process we entered through exited: try again next tick.
	default:
		ns.opened = true
		w.warnNS(ns, "enter", fmt.Sprintf("network namespace %s: cannot enter, reading /proc/PID/net instead: %v", ns.name, err))
	}
}

// errProcessLeft says a namespace was not read because the process it was
// to be read through exited: normal, and not worth a warning.
var errProcessLeft = errors.New("process inside exited")

// dump appends the listening sockets of a namespace other than our own.
func (w *Watcher) dump(ns *nsState, out []sockEntry) ([]sockEntry, error) {
	if ns.conn != nil {
		got, err := ns.conn.dumpAll(out)
		if err == nil {
			return got, nil
		}
		// out keeps its length: whatever the failed dump appended is dropped.
		w.warnNS(ns, "sock_diag", fmt.Sprintf("network namespace %s: %v; reading /proc/PID/net instead", ns.name, err))
		ns.conn.Close()
		ns.conn = nil
	}
	if ns.lowPid == 0 {
		if w.opts.DisableSetns || !w.ns.canSetns {
			return out, errors.New("no process inside, and entering it needs CAP_SYS_ADMIN")
		}
		return out, errors.New("cannot enter it")
	}
	start := len(out)
	pid := strconv.Itoa(int(ns.lowPid))
	if ns.inode == w.ns.self {
		pid = "thread-self" // see New on why not self
	} else if err := w.stillIn(ns); err != nil {
		return out, err
	}
	out, err := readProcNet(filepath.Join(w.opts.ProcRoot, pid, "net"), out)
	if err != nil {
		if isGone(err) {
			// The next tick uses another process.
			return out[:start], fmt.Errorf("%w: %w", errProcessLeft, err)
		}
		return out[:start], err
	}
	if ns.inode != w.ns.self {
		// /proc/PID/net shows the namespace the process is in when each
		// table is opened: one it moved to meanwhile must not have its
		// sockets listed under this one's name.
		if err := w.stillIn(ns); err != nil {
			return out[:start], err
		}
	}
	return out, nil
}

// stillIn checks that ns.lowPid, through which ns is read, is still inside
// ns. A process that left (unshare, setns) is recorded in its new namespace
// and ns is not read this tick; the next tick reads it through another.
func (w *Watcher) stillIn(ns *nsState) error {
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	ino, err := w.proc.netnsOf(s, ns.lowPid)
	switch {
	case err != nil && isGone(err):
		return fmt.Errorf("%w: %w", errProcessLeft, err)
	case err != nil:
		return err
	case ino != ns.inode:
		if st, ok := w.pids.byPid[ns.lowPid]; ok {
			st.netns = ino
			w.pids.byPid[ns.lowPid] = st
		}
		return fmt.Errorf("%w: pid %d moved to another network namespace", errProcessLeft, ns.lowPid)
	}
	return nil
}

// sortedNamespaces returns the namespaces in a fixed order.
func (w *Watcher) sortedNamespaces() []*nsState {
	out := make([]*nsState, 0, len(w.ns.byInode))
	for _, ns := range w.ns.byInode {
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b *nsState) int { return cmp.Compare(a.inode, b.inode) })
	return out
}
