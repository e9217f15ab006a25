package metrics

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Write writes the textfile when something changed since the last write,
// or WriteEvery has passed, or metrics.textfile changed; it reports whether
// it wrote. With no textfile it does nothing. A failed write is tried again
// at the next call.
//
// prometheus.WriteToTextfile writes a temporary file in the same directory
// (its name does not end in .prom, so node_exporter skips it) and renames
// it over the target: node_exporter never reads half a file. The text
// format it writes has no timestamps, which node_exporter refuses.
func (m *Metrics) Write(now time.Time) (bool, error) {
	m.mu.Lock()
	path := m.opts.Textfile
	due := m.dirty.Load() || now.Sub(m.lastWrite) >= WriteEvery || path != m.lastWritten
	m.mu.Unlock()
	if path == "" || !due {
		return false, nil
	}
	// Cleared before gathering: a change made during the write is written
	// next time.
	m.dirty.Store(false)
	target, err := resolveTextfile(path)
	if err == nil {
		err = prometheus.WriteToTextfile(target, m.reg)
	}
	if err != nil {
		m.dirty.Store(true)
		return false, fmt.Errorf("write metrics textfile %s: %w", path, err)
	}
	m.mu.Lock()
	m.lastWrite, m.lastWritten = now, path
	m.mu.Unlock()
	return true, nil
}

// resolveTextfile returns where to write the textfile named path. When
// path is a symbolic link owned by root, the file is written where it
// points, and the link stays: the package links
// /var/lib/prometheus/node-exporter/portwatch.prom to the daemon's runtime
// directory, since the unit's dynamic user may not write node_exporter's
// directory (root's, mode 0755), and node_exporter follows the link. A link
// owned by anyone else is not followed (it could point the daemon's writes
// anywhere it may write): the file replaces the link.
func resolveTextfile(path string) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return path, nil
	}
	if err != nil {
		return "", err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 {
		return path, nil
	}
	to, err := os.Readlink(path)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(to) {
		to = filepath.Join(filepath.Dir(path), to)
	}
	return to, nil
}
