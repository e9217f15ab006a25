package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
	"unsafe"
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
	// DpkgDir is the dpkg database, read for the flags exe_unpackaged,
	// exe_modified and exe_replaced (see Flag); default "/var/lib/dpkg".
	// Without DpkgDir/info (a host without dpkg) those flags are in
	// Process.FlagsUnknown. It is read by New into an index, and again in
	// the background after dpkg changed it.
	DpkgDir string
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
	canPtrace bool
	selfPid   int32
	gen       uint32 // ticks so far: the current one
	warned    map[string]bool

	pids    pidTable      // the pids in /proc (pids.go)
	holders holderCache   // who holds each listening socket (holders.go)
	details holderDetails // what is recorded about each holder (procinfo.go)
	exits   exitWatch     // the holders' pidfds, to tell their exits (exits.go)
	ns      nsTable       // the network namespaces (netns.go)
	users   userNames     // user names (names.go)
	dpkg    *dpkgDB       // package ownership (dpkg.go)
	risk    *riskEnv      // the evidence about holders (risk.go)
	snap    snapshotCache // this tick's sockets, and the last snapshot (build.go)
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
	if opts.DpkgDir == "" {
		opts.DpkgDir = "/var/lib/dpkg"
	}
	proc, err := openProc(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	w := &Watcher{
		opts:    opts,
		proc:    proc,
		pids:    pidTable{byPid: make(map[int32]pidState), denied: make(map[int32]bool)},
		holders: newHolderCache(),
		exits:   newExitWatch(),
		details: holderDetails{byPid: make(map[int32]*procInfo)},
		ns:      nsTable{byInode: make(map[uint64]*nsState)},
		warned:  make(map[string]bool),
		selfPid: int32(os.Getpid()),
	}
	// Both files are optional: without them names are just left out.
	if b, err := os.ReadFile(opts.ServicesFile); err == nil {
		w.services = parseServices(b)
	}
	w.refreshUsers()
	var derr error
	w.dpkg, derr = openDpkg(opts.DpkgDir)
	if derr != nil {
		w.warn(fmt.Sprintf("dpkg database: %v", derr))
	}
	// The first build, underway, is generation 1: the holders the first
	// snapshot reads wait for it (risk.go), so they need no second read
	// once it is done (refreshDpkg).
	if w.dpkg.building() {
		w.details.dpkgGen = 1
	}
	w.risk = newRiskEnv(opts.ProcRoot, w.dpkg)
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		if caps, ok := parseCapEff(b); ok {
			w.canPtrace = caps&(1<<capSysPtrace) != 0
			w.ns.canSetns = caps&(1<<capSysAdmin) != 0
		}
	}
	s := scratchPool.Get().(*scratch)
	defer scratchPool.Put(s)
	// thread-self, not self: /proc/self is the main thread, which the runtime
	// may have parked inside another namespace after an inNetns call.
	if link, err := os.Readlink("/proc/thread-self/ns/net"); err == nil {
		w.ns.self, _ = parseNetnsLink([]byte(link))
	}
	if w.ns.host, err = w.proc.netnsOf(s, 1); err != nil {
		// PID 1's namespace is hidden from us: ours stands for the host.
		w.ns.host = w.ns.self
	}
	own := &nsState{inode: w.ns.self, lowPid: w.selfPid, ports: readPortRange(opts.ProcRoot), unprivStart: readUnprivStart(opts.ProcRoot)}
	if !opts.DisableSockDiag {
		if own.conn, err = dialSockDiag(); err != nil {
			w.warn(fmt.Sprintf("%v; reading /proc/net instead", err))
		}
	}
	own.name = w.nameNetns(own)
	w.ns.byInode[w.ns.self] = own
	return w, nil
}

// Close releases the watcher's sockets, and stops its watch of the dpkg
// database.
func (w *Watcher) Close() error {
	w.dpkg.Close()
	w.exits.close()
	w.closeLoadavg()
	for _, ns := range w.ns.byInode {
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
	newPids := w.pids.fresh[:0]
	if w.needFullRead() {
		var err error
		if newPids, err = w.readPids(newPids); err != nil {
			return nil, err
		}
	}
	w.pids.fresh = newPids

	// The own namespace is dumped while new processes are scanned: on the
	// first snapshot that scan is nearly all the work.
	own := w.ns.byInode[w.ns.self]
	var (
		ownSocks []sockEntry
		ownErr   error
		wg       sync.WaitGroup
	)
	if own.conn != nil {
		if len(newPids) > 32 {
			wg.Go(func() { ownSocks, ownErr = own.conn.dumpAll(w.snap.socks[:0]) })
		} else {
			// Nothing worth overlapping: spare the goroutine handoff.
			ownSocks, ownErr = own.conn.dumpAll(w.snap.socks[:0])
		}
	}
	nsOf := make([]uint64, len(newPids))
	refs := w.scan(newPids, nsOf, w.holders.refs[:0])
	wg.Wait()
	for i, pid := range newPids {
		if nsOf[i] == 1 { // gone before we could read it
			continue
		}
		// gen is set by readPids, which is what found the new pids.
		w.pids.byPid[pid] = pidState{gen: w.gen, scanned: w.gen, netns: nsOf[i]}
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
		socks = w.snap.socks[:0]
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
	// listening maps inodes to the entries of the array that socks
	// reuses from tick to tick. When the dump is the last one again, in
	// that same array, the map stands, and so does what was dropped for
	// it: the steady tick skips a map insert and two lookups a socket.
	w.snap.sameSocks = slices.Equal(socks, w.snap.lastSocks)
	if !w.snap.sameSocks || unsafe.SliceData(socks) != unsafe.SliceData(w.snap.socks) {
		w.indexListening(socks)
	}
	w.snap.socks = socks
	fresh := w.addRefs(refs)
	refs = w.searchParents(fresh, refs[:0])
	refs = w.rescanExeced(refs[:0])
	w.verifyHolders()
	refs = w.searchUnknown(refs[:0])
	w.holders.refs = refs[:0]
	w.readHolders()
	w.syncExits()

	snap := w.build(now)
	switch {
	case !w.canPtrace:
		snap.Partial = true
		w.warn("attribution is partial: without CAP_SYS_PTRACE the descriptors of other users' processes cannot be read, so some listeners show no process")
	case len(w.pids.denied) > 0:
		snap.Partial = true
		w.warn("attribution is partial: the descriptors of some processes cannot be read (permission denied), so some listeners show no process")
	}
	return snap, nil
}

// indexListening maps the inodes of socks, this tick's listening sockets,
// and forgets the holders and lost sockets of those that are gone.
func (w *Watcher) indexListening(socks []sockEntry) {
	clear(w.holders.listening)
	for i := range socks {
		w.holders.listening[socks[i].inode] = &socks[i]
	}
	for ino := range w.holders.byInode {
		if w.holders.listening[ino] == nil {
			delete(w.holders.byInode, ino)
			w.holders.touch()
		}
	}
	for ino := range w.holders.lost {
		if w.holders.listening[ino] == nil {
			delete(w.holders.lost, ino)
		}
	}
}
