package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/internal/filetest"
)

// The config watcher on a real file system, with real inotify. Each case
// prepares a layout, starts the watcher, does one thing to the files, and
// checks whether a reload was asked for.

// configQuiet is how long a case waits before deciding that no reload was
// asked for: several debounce periods. A slow machine can only make a
// "no reload" case pass wrongly, never fail wrongly.
const configQuiet = 5 * configDebounce

// cwWrite writes a file in place, making its directory.
func cwWrite(t *testing.T, path, content string) {
	t.Helper()
	filetest.Mkdir(t, filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cwReplace replaces a file the atomic way: a new file renamed over it.
func cwReplace(t *testing.T, path, content string) {
	t.Helper()
	cwWrite(t, path+".new", content)
	filetest.Rename(t, path+".new", path)
}

// cwSwapLink points link at target the atomic way: a new symlink tmp
// renamed over link.
func cwSwapLink(t *testing.T, target, tmp, link string) {
	t.Helper()
	filetest.Symlink(t, target, tmp)
	filetest.Rename(t, tmp, link)
}

// cwConfigMapUpdate is what the kubelet's atomic writer does to a
// cwConfigMap volume on an update: a new data directory, then ..data
// swapped to it.
func cwConfigMapUpdate(t *testing.T, dir string) {
	t.Helper()
	cwWrite(t, dir+"/..2026_02_02/portwatch.yaml", "b")
	cwSwapLink(t, "..2026_02_02", dir+"/..data_tmp", dir+"/..data")
}

// The layouts several cases start from. Each returns the main file and the
// config's files as the loader would list them.

// cwMainOnly is a main file alone.
func cwMainOnly(t *testing.T, dir string) (string, []string) {
	cwWrite(t, dir+"/portwatch.yaml", "a")
	return dir + "/portwatch.yaml", []string{dir + "/portwatch.yaml"}
}

// cwWithDropIn is a main file and one drop-in.
func cwWithDropIn(t *testing.T, dir string) (string, []string) {
	cwWrite(t, dir+"/portwatch.yaml", "a")
	cwWrite(t, dir+"/portwatch.d/a.yaml", "a")
	return dir + "/portwatch.yaml", []string{dir + "/portwatch.yaml", dir + "/portwatch.d/a.yaml"}
}

// cwConfigMap is a Kubernetes ConfigMap volume: the main file a symlink
// through ..data, itself a symlink to a timestamped data directory.
func cwConfigMap(t *testing.T, dir string) (string, []string) {
	cwWrite(t, dir+"/..2026_01_01/portwatch.yaml", "a")
	filetest.Symlink(t, "..2026_01_01", dir+"/..data")
	filetest.Symlink(t, "..data/portwatch.yaml", dir+"/portwatch.yaml")
	return dir + "/portwatch.yaml", []string{dir + "/portwatch.yaml"}
}

func TestConfigWatcher(t *testing.T) {
	tests := []struct {
		name string
		// setup builds the layout in dir and returns the main file and
		// the config's files as the loader would list them.
		setup      func(t *testing.T, dir string) (main string, files []string)
		act        func(t *testing.T, dir string, cw *configWatcher)
		wantReload bool
	}{
		{
			name:       "main file rewritten in place",
			setup:      cwMainOnly,
			act:        func(t *testing.T, dir string, cw *configWatcher) { cwWrite(t, dir+"/portwatch.yaml", "b") },
			wantReload: true,
		},
		{
			name:       "main file replaced by rename",
			setup:      cwMainOnly,
			act:        func(t *testing.T, dir string, cw *configWatcher) { cwReplace(t, dir+"/portwatch.yaml", "b") },
			wantReload: true,
		},
		{
			name:  "editor swap and backup files beside the main file",
			setup: cwMainOnly,
			act: func(t *testing.T, dir string, cw *configWatcher) {
				cwWrite(t, dir+"/.portwatch.yaml.swp", "x")
				cwWrite(t, dir+"/portwatch.yaml~", "x")
				cwWrite(t, dir+"/4913", "x")
				os.Remove(dir + "/4913")
				cwWrite(t, dir+"/other.conf", "x")
			},
			wantReload: false,
		},
		{
			name:       "new drop-in",
			setup:      cwWithDropIn,
			act:        func(t *testing.T, dir string, cw *configWatcher) { cwWrite(t, dir+"/portwatch.d/b.yaml", "b") },
			wantReload: true,
		},
		{
			name:       "drop-in removed",
			setup:      cwWithDropIn,
			act:        func(t *testing.T, dir string, cw *configWatcher) { filetest.Remove(t, dir+"/portwatch.d/a.yaml") },
			wantReload: true,
		},
		{
			name:  "editor temp file in the drop-in directory",
			setup: cwWithDropIn,
			act: func(t *testing.T, dir string, cw *configWatcher) {
				cwWrite(t, dir+"/portwatch.d/.a.yaml.swp", "x")
				cwWrite(t, dir+"/portwatch.d/a.yaml~", "x")
				cwWrite(t, dir+"/portwatch.d/README", "x")
			},
			wantReload: false,
		},
		{
			name:  "drop-in directory created after start, then a drop-in in it",
			setup: cwMainOnly,
			act: func(t *testing.T, dir string, cw *configWatcher) {
				filetest.Mkdir(t, dir+"/portwatch.d", 0o700)
				// The directory appearing counts (it may hold
				// drop-ins already); then it is watched too.
				select {
				case <-cw.changed:
				case <-time.After(daemonWait):
					t.Fatal("no reload asked for when the drop-in directory appeared")
				}
				cwWrite(t, dir+"/portwatch.d/new.yaml", "b")
			},
			wantReload: true,
		},
		{
			name:  "Kubernetes ConfigMap update: ..data symlink swapped",
			setup: cwConfigMap,
			act: func(t *testing.T, dir string, cw *configWatcher) {
				// What the kubelet's atomic writer does.
				cwConfigMapUpdate(t, dir)
				filetest.Remove(t, dir+"/..2026_01_01")
			},
			wantReload: true,
		},
		{
			name:  "..data symlink swapped, old data directory left in place",
			setup: cwConfigMap,
			act: func(t *testing.T, dir string, cw *configWatcher) {
				cwConfigMapUpdate(t, dir)
			},
			wantReload: true,
		},
		{
			name: "symlinked directory swapped under a plain name",
			setup: func(t *testing.T, dir string) (string, []string) {
				cwWrite(t, dir+"/v1/portwatch.yaml", "a")
				filetest.Symlink(t, "v1", dir+"/current")
				filetest.Symlink(t, "current/portwatch.yaml", dir+"/portwatch.yaml")
				return dir + "/portwatch.yaml", []string{dir + "/portwatch.yaml"}
			},
			act: func(t *testing.T, dir string, cw *configWatcher) {
				cwWrite(t, dir+"/v2/portwatch.yaml", "b")
				cwSwapLink(t, "v2", dir+"/current.tmp", dir+"/current")
			},
			wantReload: true,
		},
		{
			name: "main file a symlink into another directory, target rewritten",
			setup: func(t *testing.T, dir string) (string, []string) {
				cwWrite(t, dir+"/real/pw.yaml", "a")
				filetest.Symlink(t, dir+"/real/pw.yaml", dir+"/etc/portwatch.yaml")
				return dir + "/etc/portwatch.yaml", []string{dir + "/etc/portwatch.yaml"}
			},
			act:        func(t *testing.T, dir string, cw *configWatcher) { cwReplace(t, dir+"/real/pw.yaml", "b") },
			wantReload: true,
		},
		{
			name: "main file symlink repointed",
			setup: func(t *testing.T, dir string) (string, []string) {
				cwWrite(t, dir+"/real/a.yaml", "a")
				cwWrite(t, dir+"/real/b.yaml", "b")
				filetest.Symlink(t, dir+"/real/a.yaml", dir+"/etc/portwatch.yaml")
				return dir + "/etc/portwatch.yaml", []string{dir + "/etc/portwatch.yaml"}
			},
			act: func(t *testing.T, dir string, cw *configWatcher) {
				cwSwapLink(t, dir+"/real/b.yaml", dir+"/etc/.pw.tmp", dir+"/etc/portwatch.yaml")
			},
			wantReload: true,
		},
		{
			name: "main file that did not exist appears",
			setup: func(t *testing.T, dir string) (string, []string) {
				return dir + "/etc/portwatch.yaml", nil // the embedded default was in force
			},
			act:        func(t *testing.T, dir string, cw *configWatcher) { cwReplace(t, dir+"/etc/portwatch.yaml", "a") },
			wantReload: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			filetest.Mkdir(t, dir+"/etc", 0o700)
			main, files := tt.setup(t, dir)
			log := logrus.New()
			log.SetOutput(io.Discard)
			cw, err := newConfigWatcher(main, files, log)
			if err != nil {
				t.Fatal(err)
			}
			defer cw.close()
			tt.act(t, dir, cw)
			// A reload is waited for long; its absence, for configQuiet.
			wait := configQuiet
			if tt.wantReload {
				wait = daemonWait
			}
			var got bool
			select {
			case <-cw.changed:
				got = true
			case <-time.After(wait):
			}
			if got != tt.wantReload {
				t.Errorf("reload asked for: %v, want %v", got, tt.wantReload)
			}
		})
	}
}
