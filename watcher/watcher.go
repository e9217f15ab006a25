package watcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Watcher. The zero value watches the real host.
type Options struct {
	ProcRoot     string // default "/proc"
	NetnsDir     string // default "/run/netns"
	ServicesFile string // default "/etc/services"; read once by New
	// PasswdFile names users; default "/etc/passwd". It is read by New,
	// and read again on a tick when its size, mtime or inode changed, so
	// that users created after the start get their names.
	PasswdFile string
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
//
// The cache maps each listening socket inode to the pids holding it. A tick
// dumps the sockets of every namespace, then:
//   - reads the pid list from /proc only when a pid was allocated since the
//     last read (the last field of /proc/loadavg) or every fullReadEvery
//     ticks, and scans the descriptors of new pids only;
//   - drops holders that exited (kill 0 on each), and scans the parent of a
//     new process that holds a new socket (the socket was inherited);
//   - searches existing processes only for sockets it has never seen: first
//     those whose /proc owner is the socket's uid, then the rest. A socket
//     searched for and not found (a kernel socket) is remembered as
//     unattributed and not searched for again; a new process holding it is
//     still found by the new-pid scan;
//   - checks a few cached holders in turn: that each still has the socket
//     (a launcher that handed it on and closed its copy), and that its
//     executable did not change (exec: the path /proc/PID/exe shows, or the
//     file behind it); a holder's details are re-read then;
//   - reads a new holder's details once, including whether its exe path
//     names the file it runs (two stats: see Process.ExeUnverified), and
//     /etc/passwd again only when a stat shows it changed;
//   - reads the network namespace of a few known processes in turn, each
//     within netnsRecheckEvery ticks, so that one entered by a process seen
//     before (unshare -n then exec: no new pid) is found.
//
// Namespaces other than its own are read through a sock_diag socket opened
// inside them, or else through /proc/PID/net of the lowest pid inside,
// checked to be still inside before and after. Each has a unique name (see
// netnsName).
//
// Known limit: an existing process that is passed a known socket over a
// unix socket (SCM_RIGHTS) while the sender keeps its copy is not noticed as
// a holder; once the sender closes its copy or exits, the socket is searched
// for and the new holder found.
type Watcher struct {
	opts      Options
	proc      *procDir
	services  map[serviceKey]string
	users     map[uint32]string
	passwdID  passwdStamp // /etc/passwd as last read
	canPtrace bool
	canSetns  bool
	selfNS    uint64
	hostNS    uint64
	selfPid   int32

	gen     uint32
	pids    map[int32]pidState
	holders map[uint64][]int32 // listening socket inode -> holder pids, ascending
	// holderFD is a descriptor through which each holder was seen holding
	// the socket, rechecked a few at a time so that a holder that closed
	// its copy (a launcher that handed the socket on) is dropped.
	holderFD map[holderKey]int32
	procs    map[int32]*procInfo
	lost     map[uint64]struct{} // listening inodes searched for and not found
	nss      map[uint64]*nsState
	warned   map[string]bool
	// denied holds the pids whose descriptors we may not read; while one
	// lives, snapshots are partial.
	denied   map[int32]bool
	deniedMu sync.Mutex

	lastPidSeen         int    // last allocated pid at the last full read of /proc
	lastEphemeralSearch uint32 // tick of the last search set off by ephemeral UDP alone
	sinceFull           int    // ticks since then

	verifyQueue  roundRobin[holderKey, int32] // holderFD entries still to check this round
	recheckQueue roundRobin[int32, *procInfo] // procs entries still to check this round
	netnsNext    int32                        // the pid whose network namespace recheckNetns reads next

	// Buffers reused across ticks.
	pidList   []int32
	newPids   []int32
	refs      []sockRef
	socks     []sockEntry
	order     []int32 // indexes of socks in the order of Snapshot.Listeners
	listening map[uint64]*sockEntry
	unknown   map[uint64]uint32 // unknown inode -> socket uid

	// The last snapshot's Listeners and what they were built from, so
	// that a tick where nothing changed hands them out again (see build).
	lastSocks     []sockEntry
	lastListeners []Listener
	lastHolders   []*procInfo // the holders of each listener, in turn
	lastHolderEnd []int32     // per listener, the end of its holders in lastHolders
}

// nsState is one network namespace the watcher knows about.
type nsState struct {
	inode   uint64
	name    string
	runName string // name under Options.NetnsDir, if any
	lowPid  int32  // lowest pid inside this tick, 0 for none
	conn    *sockDiagConn
	ports   portRange
	ifnames map[uint32]string
	ifAt    uint32          // tick ifnames was read
	warned  map[string]bool // kinds of warning said about it (see warnNS)
	err     string          // why it is not inspected this tick
	opened  bool            // open has decided between sock_diag and /proc/PID/net
	seen    uint32
}

// New returns a Watcher. It reads /etc/services once and /etc/passwd (again
// when it changes) and opens a sock_diag socket in its own network namespace.
func New(opts Options) (*Watcher, error) {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.NetnsDir == "" {
		opts.NetnsDir = "/run/netns"
	}
	if opts.ServicesFile == "" {
		opts.ServicesFile = "/etc/services"
	}
	if opts.PasswdFile == "" {
		opts.PasswdFile = "/etc/passwd"
	}
	proc, err := openProc(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	w := &Watcher{
		opts:      opts,
		proc:      proc,
		pids:      make(map[int32]pidState),
		holders:   make(map[uint64][]int32),
		holderFD:  make(map[holderKey]int32),
		procs:     make(map[int32]*procInfo),
		lost:      make(map[uint64]struct{}),
		nss:       make(map[uint64]*nsState),
		warned:    make(map[string]bool),
		denied:    make(map[int32]bool),
		listening: make(map[uint64]*sockEntry),
		unknown:   make(map[uint64]uint32),
		selfPid:   int32(os.Getpid()),
	}
	// Both files are optional: without them names are just left out.
	if b, err := os.ReadFile(opts.ServicesFile); err == nil {
		w.services = parseServices(b)
	}
	w.refreshUsers()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		if caps, ok := parseCapEff(b); ok {
			w.canPtrace = caps&(1<<capSysPtrace) != 0
			w.canSetns = caps&(1<<capSysAdmin) != 0
		}
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	// thread-self, not self: /proc/self is the main thread, which the runtime
	// may have parked inside another namespace after an inNetns call.
	if link, err := os.Readlink("/proc/thread-self/ns/net"); err == nil {
		w.selfNS, _ = parseNetnsLink([]byte(link))
	}
	if w.hostNS, err = w.proc.netnsOf(s, 1); err != nil {
		// PID 1's namespace is hidden from us: ours stands for the host.
		w.hostNS = w.selfNS
	}
	own := &nsState{inode: w.selfNS, lowPid: int32(os.Getpid()), ports: readPortRange(opts.ProcRoot)}
	if !opts.DisableSockDiag {
		if own.conn, err = dialSockDiag(); err != nil {
			w.warn(fmt.Sprintf("%v; reading /proc/net instead", err))
		}
	}
	own.name = w.nameNetns(own)
	w.nss[w.selfNS] = own
	return w, nil
}

// Close releases the watcher's sockets.
func (w *Watcher) Close() error {
	for _, ns := range w.nss {
		if ns.conn != nil {
			ns.conn.Close()
		}
	}
	return w.proc.Close()
}

// maxWarned bounds the warnings remembered as said. Past it they are
// forgotten, and one may be said again: better than growing for ever with
// messages that name things (errors with paths in them).
const maxWarned = 256

// warn tells the operator msg, once.
func (w *Watcher) warn(msg string) {
	if w.warned[msg] {
		return
	}
	if len(w.warned) >= maxWarned {
		clear(w.warned)
	}
	w.warned[msg] = true
	if w.opts.Warn != nil {
		w.opts.Warn(msg)
	}
}

// warnNS tells the operator msg about ns, once per kind of trouble for the
// namespace's life: what is remembered goes with the namespace, however
// many come and go.
func (w *Watcher) warnNS(ns *nsState, kind, msg string) {
	if ns.warned[kind] {
		return
	}
	if ns.warned == nil {
		ns.warned = make(map[string]bool)
	}
	ns.warned[kind] = true
	if w.opts.Warn != nil {
		w.opts.Warn(msg)
	}
}

// Snapshot returns every listener now, sorted by netns, protocol, port and
// address. It fails only when nothing at all could be read.
func (w *Watcher) Snapshot(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	w.gen++
	newPids := w.newPids[:0]
	if w.needFullRead() {
		var err error
		if newPids, err = w.readPids(newPids); err != nil {
			return nil, err
		}
	}
	w.newPids = newPids

	// The own namespace is dumped while new processes are scanned: on the
	// first snapshot that scan is nearly all the work.
	own := w.nss[w.selfNS]
	var (
		ownSocks []sockEntry
		ownErr   error
		wg       sync.WaitGroup
	)
	if own.conn != nil {
		if len(newPids) > 32 {
			wg.Go(func() { ownSocks, ownErr = own.conn.dumpAll(w.socks[:0]) })
		} else {
			// Nothing worth overlapping: spare the goroutine handoff.
			ownSocks, ownErr = own.conn.dumpAll(w.socks[:0])
		}
	}
	nsOf := make([]uint64, len(newPids))
	refs := w.scan(newPids, nsOf, w.refs[:0])
	wg.Wait()
	for i, pid := range newPids {
		if nsOf[i] == 1 { // gone before we could read it
			continue
		}
		// gen is set by readPids, which is what found the new pids.
		w.pids[pid] = pidState{gen: w.gen, scanned: w.gen, netns: nsOf[i]}
	}
	w.recheckNetns()
	w.updateNamespaces()
	socks := ownSocks
	if own.conn != nil && ownErr != nil {
		// inet_diag missing (a module not loaded), say: the loop below
		// reads /proc/net instead, now and from now on.
		w.warnNS(own, "sock_diag", fmt.Sprintf("network namespace %s: %v; reading /proc/net instead", own.name, ownErr))
		own.conn.Close()
		own.conn = nil
	}
	if own.conn == nil {
		socks = w.socks[:0]
	}
	for i := range socks {
		socks[i].ns = own
	}
	for _, ns := range w.sortedNamespaces() {
		if ns == own && own.conn != nil {
			continue // dumped above
		}
		start := len(socks)
		var err error
		if socks, err = w.dump(ns, socks); err != nil {
			ns.err = err.Error()
			if !errors.Is(err, errProcessLeft) {
				w.warnNS(ns, "inspect", fmt.Sprintf("network namespace %s not inspected: %v", ns.name, err))
			}
		}
		for i := start; i < len(socks); i++ {
			socks[i].ns = ns
		}
	}
	w.socks = socks

	clear(w.listening)
	for i := range socks {
		w.listening[socks[i].inode] = &socks[i]
	}
	for ino := range w.holders {
		if w.listening[ino] == nil {
			delete(w.holders, ino)
		}
	}
	for ino := range w.lost {
		if w.listening[ino] == nil {
			delete(w.lost, ino)
		}
	}
	fresh := w.addRefs(refs)
	refs = w.searchParents(fresh, refs[:0])
	w.verifyHolders()
	refs = w.searchUnknown(refs[:0])
	w.refs = refs[:0]
	w.readHolders()

	snap := w.build(now)
	switch {
	case !w.canPtrace:
		snap.Partial = true
		w.warn("attribution is partial: without CAP_SYS_PTRACE the descriptors of other users' processes cannot be read, so some listeners show no process")
	case len(w.denied) > 0:
		snap.Partial = true
		w.warn("attribution is partial: the descriptors of some processes cannot be read (permission denied), so some listeners show no process")
	}
	return snap, nil
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
	for _, ns := range w.nss {
		ns.lowPid = 0
	}
	for pid, st := range w.pids {
		if st.netns == 0 {
			continue
		}
		ns := w.nss[st.netns]
		if ns == nil {
			ns = &nsState{inode: st.netns}
			w.nss[st.netns] = ns
		}
		ns.seen = w.gen
		if ns.lowPid == 0 || pid < ns.lowPid {
			ns.lowPid = pid
		}
	}
	own := w.nss[w.selfNS]
	own.seen = w.gen
	if own.lowPid == 0 {
		own.lowPid = int32(os.Getpid())
	}
	for ino, name := range namedNetns(w.opts.NetnsDir) {
		ns := w.nss[ino]
		if ns == nil {
			ns = &nsState{inode: ino}
			w.nss[ino] = ns
		}
		ns.seen = w.gen
		ns.runName = name
	}
	var fresh []*nsState
	for ino, ns := range w.nss {
		if ns.seen != w.gen {
			if ns.conn != nil {
				ns.conn.Close()
			}
			delete(w.nss, ino)
			continue
		}
		ns.err = ""
		if ns.name == "" || (!ns.opened && ns.inode != w.selfNS) {
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
		}
		if !ns.opened && ns.inode != w.selfNS {
			w.open(ns)
		}
	}
}

// nameNetns names a namespace (see netnsName), unique among those known.
// The name is kept for the namespace's life, so that listeners keep their
// key.
func (w *Watcher) nameNetns(ns *nsState) string {
	var container string
	if ns.inode != w.hostNS && ns.runName == "" && ns.lowPid != 0 {
		container = readCgroupContainer(w.opts.ProcRoot, ns.lowPid)
	}
	return netnsName(ns.inode == w.hostNS, w.opts.NetnsDir, ns.runName, container, ns.lowPid, ns.inode, func(name string) bool {
		for _, o := range w.nss {
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
	if w.opts.DisableSockDiag || w.opts.DisableSetns || !w.canSetns {
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
		if w.opts.DisableSetns || !w.canSetns {
			return out, errors.New("no process inside, and entering it needs CAP_SYS_ADMIN")
		}
		return out, errors.New("cannot enter it")
	}
	start := len(out)
	pid := strconv.Itoa(int(ns.lowPid))
	if ns.inode == w.selfNS {
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
	if ns.inode != w.selfNS {
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
		if st, ok := w.pids[ns.lowPid]; ok {
			st.netns = ino
			w.pids[ns.lowPid] = st
		}
		return fmt.Errorf("%w: pid %d moved to another network namespace", errProcessLeft, ns.lowPid)
	}
	return nil
}

// sortedNamespaces returns the namespaces in a fixed order.
func (w *Watcher) sortedNamespaces() []*nsState {
	out := make([]*nsState, 0, len(w.nss))
	for _, ns := range w.nss {
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b *nsState) int { return cmp.Compare(a.inode, b.inode) })
	return out
}
