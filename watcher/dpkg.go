package watcher

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// errDiversions says /var/lib/dpkg/diversions is not a list of three-line
// entries.
var errDiversions = errors.New("diversions: not three lines per entry")

// dpkgDB is the dpkg database as the watcher uses it: the index of package
// ownership, built once and rebuilt in the background when dpkg changes
// the database, and the md5sums files, read when a holder's executable is
// checked.
type dpkgDB struct {
	dir string
	cur atomic.Pointer[dpkgIndex] // nil: no dpkg on this host, or no index built yet
	// ready is closed once the first build is over (or there is none to
	// do): wait for it before reading cur or gen.
	ready  chan struct{}
	noDpkg bool          // no dir/info: no build, ever
	gen    atomic.Uint32 // successful builds so far
	// failed is the last rebuild's error, until the tick reports it (the
	// old index stays in use meanwhile).
	failed atomic.Pointer[string]

	fw   *fsnotify.Watcher
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// dpkgDebounce is how long the database must stay quiet before the index
// is rebuilt: one apt run rewrites status dozens of times (after each
// package), and the index is wanted once, at the end. dpkgDebounceMax
// bounds the wait under a long run.
const (
	dpkgDebounce    = time.Second
	dpkgDebounceMax = 30 * time.Second
)

// openDpkg starts building the index of the dpkg database in dir, in the
// background, and watches dir for changes. A host without dpkg (no
// dir/info) gives a dpkgDB with no index and no watch: ownership is then
// unknown. A failed first build is reported by the first tick
// (takeFailure), and the index is built again at the next change; an error
// returned is the watch's.
func openDpkg(dir string) (*dpkgDB, error) {
	db := &dpkgDB{dir: dir, stop: make(chan struct{}), done: make(chan struct{}), ready: make(chan struct{})}
	if _, err := os.Stat(filepath.Join(dir, "info")); errors.Is(err, os.ErrNotExist) {
		close(db.done)
		close(db.ready)
		db.noDpkg = true
		return db, nil
	}
	// The first build (40 to 170 ms) runs beside the first snapshot's
	// netlink dumps and descriptor scan, which need no index: a one-shot
	// `portwatchd list` would otherwise wait for it first.
	go func() {
		defer close(db.ready)
		idx, err := loadDpkgIndex(dir, 0)
		if err != nil {
			msg := fmt.Sprintf("dpkg database: %v; packages are unknown until dpkg changes it", err)
			db.failed.Store(&msg)
			return
		}
		db.cur.Store(idx)
		db.gen.Add(1)
	}()
	var err error
	fw, werr := fsnotify.NewWatcher()
	if werr == nil {
		if werr = fw.Add(dir); werr != nil {
			fw.Close()
		}
	}
	if werr != nil {
		close(db.done)
		return db, errors.Join(err, fmt.Errorf("watch %s: %w; packages installed from now on are not noticed", dir, werr))
	}
	db.fw = fw
	go db.watch()
	return db, err
}

// building says whether a first build was started (dpkg is on this host).
func (db *dpkgDB) building() bool { return !db.noDpkg }

// isReady says, without waiting, whether the first build is over.
func (db *dpkgDB) isReady() bool {
	select {
	case <-db.ready:
		return true
	default:
		return false
	}
}

// wait returns once the first build is over.
func (db *dpkgDB) wait() { <-db.ready }

// index returns the current index, nil without one; after wait.
func (db *dpkgDB) index() *dpkgIndex { return db.cur.Load() }

// Close stops the watch.
func (db *dpkgDB) Close() {
	db.once.Do(func() {
		<-db.ready
		close(db.stop)
		if db.fw != nil {
			db.fw.Close()
		}
		<-db.done
	})
}

// watch rebuilds the index once dpkg has finished changing the database.
// dpkg ends each run by replacing status (status-new renamed over it), and
// dpkg-divert replaces diversions, so those two names are what is watched
// for: the info directory changes many times in between.
func (db *dpkgDB) watch() {
	defer close(db.done)
	var (
		timer   *time.Timer
		fire    <-chan time.Time
		pending time.Time // first change not yet indexed
	)
	for {
		select {
		case <-db.stop:
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-db.fw.Events:
			if !ok {
				return
			}
			if name := filepath.Base(ev.Name); name != "status" && name != "diversions" {
				continue
			}
			now := time.Now()
			if pending.IsZero() {
				pending = now
			}
			wait := min(dpkgDebounce, dpkgDebounceMax-now.Sub(pending))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		case err, ok := <-db.fw.Errors:
			if !ok {
				return
			}
			// An overflow lost events: rebuild, as if one had come.
			if errors.Is(err, fsnotify.ErrEventOverflow) && timer == nil {
				timer = time.NewTimer(dpkgDebounce)
				fire = timer.C
			}
		case <-fire:
			fire, pending = nil, time.Time{}
			db.rebuild()
		}
	}
}

// rebuild builds the index again. On failure the old index stays, and the
// error waits for the tick to report it.
func (db *dpkgDB) rebuild() {
	hint := 0
	if old := db.cur.Load(); old != nil {
		hint = len(old.ents) + len(old.ents)/16
	}
	idx, err := loadDpkgIndex(db.dir, hint)
	if err != nil {
		msg := fmt.Sprintf("dpkg database changed, but its index could not be rebuilt (the previous one stays in use): %v", err)
		db.failed.Store(&msg)
		return
	}
	db.cur.Store(idx)
	db.gen.Add(1)
}

// takeFailure returns a rebuild failure not yet reported, or "".
func (db *dpkgDB) takeFailure() string {
	if m := db.failed.Swap(nil); m != nil {
		return *m
	}
	return ""
}

// loadDpkgIndex reads dir/diversions and every dir/info/*.list into an
// index. sizeHint is the number of paths expected (0: unknown). The files
// are read a line at a time through one reused buffer (one .list is 4 MB
// on the host this was written on): the index is all that is kept.
func loadDpkgIndex(dir string, sizeHint int) (*dpkgIndex, error) {
	var divs []diversion
	switch b, err := os.ReadFile(filepath.Join(dir, "diversions")); {
	case err == nil:
		if divs, err = parseDiversions(b); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "diversions"), err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	info := filepath.Join(dir, "info")
	ents, err := os.ReadDir(info)
	if err != nil {
		return nil, err
	}
	if sizeHint == 0 {
		// About 150 paths a package on a Debian 12 server (125k of 841).
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".list") {
				sizeHint += 150
			}
		}
	}
	b := newIndexBuilder(divs, sizeHint)
	r := bufio.NewReaderSize(nil, 64<<10)
	for _, e := range ents {
		pkg, ok := strings.CutSuffix(e.Name(), ".list")
		if !ok || e.IsDir() {
			continue
		}
		f, err := os.Open(filepath.Join(info, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by dpkg since the listing: the next rebuild is on its way
		}
		if err != nil {
			return nil, err
		}
		r.Reset(f)
		err = b.addList(pkg, r)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
	}
	return b.done(), nil
}

// md5sums reads the md5sums file of pkg (a .list base name, as the index
// names packages). A package may have none (no regular files, or built
// without): that is os.ErrNotExist.
func (db *dpkgDB) md5sums(pkg string) ([]byte, error) {
	return os.ReadFile(filepath.Join(db.dir, "info", pkg+".md5sums"))
}
