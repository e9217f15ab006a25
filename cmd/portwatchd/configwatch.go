package main

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/policy"
)

// configDebounce is how long the config files must be quiet before a reload:
// an editor or a config management run writes several files, and a rename
// over a file gives several events.
const configDebounce = 200 * time.Millisecond

// configWatcher asks for a reload when the config files change. It watches
// directories, not files: a file replaced by rename (the atomic way editors,
// config management and the Kubernetes ConfigMap writer save) is a new inode
// that a watch on the old file would never report. In those directories only
// the files that make up the config count:
//   - the main file and every drop-in read, and the targets their symlinks
//     resolve to (so a symlink pointing elsewhere is followed);
//   - *.yaml and *.yml in drop-in directories (a new drop-in), and the default
//     drop-in directory itself appearing;
//   - names starting with "..", the Kubernetes atomic writer's ..data symlink
//     and timestamped directories;
//   - any event after which the main file resolves to another target (a
//     symlink swap of any style).
//
// Editors' temporary and backup files (.x.swp, x~, 4913) match none of these.
// Whether a reload then does anything is for the content hash to say.
type configWatcher struct {
	log     logrus.FieldLogger
	fw      *fsnotify.Watcher
	changed chan struct{} // capacity 1: a pending reload absorbs later ones
	main    string        // absolute path of the main file
	done    chan struct{}

	mu       sync.Mutex
	files    []string        // the config's files at the last sync
	dirs     map[string]bool // directories watched
	names    map[string]bool // paths whose events count
	dropDirs map[string]bool // directories where any *.yaml counts
	target   string          // what main resolved to at the last look
}

// newConfigWatcher watches the config whose main file is main and whose
// files (main and drop-ins) are files.
func newConfigWatcher(main string, files []string, log logrus.FieldLogger) (*configWatcher, error) {
	abs, err := filepath.Abs(main)
	if err != nil {
		return nil, err
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	cw := &configWatcher{
		log:     log,
		fw:      fw,
		changed: make(chan struct{}, 1),
		main:    abs,
		done:    make(chan struct{}),
		dirs:    map[string]bool{},
	}
	cw.sync(files)
	if len(cw.dirs) == 0 {
		fw.Close()
		return nil, errors.New("no config directory could be watched")
	}
	go cw.loop()
	return cw, nil
}

// sync sets the watches for the config files files.
func (cw *configWatcher) sync(files []string) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	cw.files = files
	names := map[string]bool{}
	dropDirs := map[string]bool{}
	dirs := map[string]bool{}
	add := func(p string) {
		names[p] = true
		dirs[filepath.Dir(p)] = true
		if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
			names[r] = true
			dirs[filepath.Dir(r)] = true
		}
	}
	add(cw.main)
	dd := filepath.Join(filepath.Dir(cw.main), filepath.Dir(policy.DefaultInclude))
	names[dd] = true
	dropDirs[dd] = true
	dirs[dd] = true
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil || abs == cw.main {
			continue
		}
		add(abs)
		dropDirs[filepath.Dir(abs)] = true
	}
	for d := range dirs {
		if cw.dirs[d] {
			continue
		}
		if err := cw.fw.Add(d); err != nil {
			// A drop-in directory that does not exist yet: its
			// creation in the main directory is an event that
			// counts, and the next sync adds it.
			cw.log.WithError(err).WithField("dir", d).Debug("not watching config directory")
			continue
		}
		cw.dirs[d] = true
	}
	for d := range cw.dirs {
		if !dirs[d] {
			_ = cw.fw.Remove(d) // fails when the directory is gone, which is fine
			delete(cw.dirs, d)
		}
	}
	cw.names, cw.dropDirs = names, dropDirs
	cw.target, _ = filepath.EvalSymlinks(cw.main)
}

// counts reports whether an event on path may change the config.
func (cw *configWatcher) counts(path string) bool {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	base := filepath.Base(path)
	switch {
	case cw.names[path]:
		return true
	case strings.HasPrefix(base, ".."):
		return true
	case cw.dropDirs[filepath.Dir(path)] && !strings.HasPrefix(base, ".") &&
		(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")):
		return true
	}
	t, _ := filepath.EvalSymlinks(cw.main)
	return t != cw.target
}

func (cw *configWatcher) loop() {
	defer close(cw.done)
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case ev, ok := <-cw.fw.Events:
			if !ok {
				return
			}
			if !cw.counts(ev.Name) {
				continue
			}
			cw.log.WithField("event", ev.String()).Debug("config file event")
			cw.mu.Lock()
			files := cw.files
			cw.mu.Unlock()
			cw.sync(files) // a new drop-in directory, a swapped symlink
			debounce.Reset(configDebounce)
		case err, ok := <-cw.fw.Errors:
			if !ok {
				return
			}
			cw.log.WithError(err).Warn("config file watch")
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				debounce.Reset(configDebounce) // events lost: look anyway
			}
		case <-debounce.C:
			select {
			case cw.changed <- struct{}{}:
			default:
			}
		}
	}
}

// close stops watching.
func (cw *configWatcher) close() {
	cw.fw.Close()
	<-cw.done
}
