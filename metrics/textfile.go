package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
)

// Write writes the textfile when something changed since the last write,
// or WriteEvery has passed, or metrics.textfile changed; it reports whether
// it wrote. With no textfile it does nothing. A failed write is tried again
// at the next call.
//
// The file is written as prometheus.WriteToTextfile writes it: a temporary
// file in the same directory (its name does not end in .prom, so
// node_exporter skips it), mode 0644, renamed over the target, so that
// node_exporter never reads half a file; the text format has no
// timestamps, which node_exporter refuses. The listener series come from
// their cached text (see listenerSet): a write when nothing changed
// gathers only the daemon's own few dozen series.
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
		err = m.writeText(target)
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

// text returns every metric in the text exposition format, as Write writes
// it, in two parts: the daemon's own series, and the listener series.
func (m *Metrics) text() (own, listeners []byte, err error) {
	mfs, err := m.rest.Gather()
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			return nil, nil, err
		}
	}
	listeners, err = m.listeners.current().textFormat()
	return b.Bytes(), listeners, err
}

// writeText writes the text to path through a temporary file renamed over
// it.
func (m *Metrics) writeText(path string) (err error) {
	own, listeners, err := m.text()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	for _, b := range [][]byte{own, listeners} {
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
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
