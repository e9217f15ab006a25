package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// DefaultSpoolSize is the number of events kept per webhook when
// spool_size is not set.
const DefaultSpoolSize = 10000

// batch is one message for one sink: the events of one Send call that passed
// the sink's filters.
type batch struct {
	Events []Event `json:"events"`

	seq uint64 // file name; order of delivery
}

// spool is a durable FIFO of batches for one sink: one file per batch in dir,
// named by a zero-padded sequence number. A batch is written to a temporary
// file, fsynced, renamed into place and the directory fsynced before append
// returns, so it survives kill -9 and power loss, and a reader never sees a
// half-written batch.
//
// The spool holds at most max events. Appending beyond that drops the oldest
// batches (or, for a single huge batch, its oldest events) and counts them.
type spool struct {
	dir string
	max int

	mu      sync.Mutex
	queue   []spoolEntry // in delivery order
	events  int          // events in queue
	next    uint64       // next sequence number
	dropped uint64       // events dropped since the last call to takeDropped
}

type spoolEntry struct {
	seq uint64
	n   int // events in the batch
}

const spoolExt = ".json"

// openSpool opens or creates the spool in dir and recovers its batches.
// Leftover temporary files from an interrupted write are removed; a batch
// file that cannot be decoded is moved aside with a ".corrupt" suffix rather
// than blocking the queue.
func openSpool(dir string, max int) (*spool, error) {
	if max <= 0 {
		max = DefaultSpoolSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spool: %w", err)
	}
	s := &spool{dir: dir, max: max, next: 1}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		base, ok := strings.CutSuffix(name, spoolExt)
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		b, err := s.read(seq)
		if err != nil {
			_ = os.Rename(filepath.Join(dir, name), filepath.Join(dir, name+".corrupt"))
			continue
		}
		s.queue = append(s.queue, spoolEntry{seq: seq, n: len(b.Events)})
		s.events += len(b.Events)
		if seq >= s.next {
			s.next = seq + 1
		}
	}
	sort.Slice(s.queue, func(i, j int) bool { return s.queue[i].seq < s.queue[j].seq })
	return s, nil
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolExt))
}

func (s *spool) read(seq uint64) (*batch, error) {
	data, err := os.ReadFile(s.path(seq))
	if err != nil {
		return nil, err
	}
	var b batch
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Base(s.path(seq)), err)
	}
	b.seq = seq
	return &b, nil
}

// append stores events as one batch, durably, dropping the oldest events
// when the spool would hold more than max.
func (s *spool) append(events []Event) error {
	if len(events) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var dropped int
	if len(events) > s.max {
		dropped += len(events) - s.max
		events = events[len(events)-s.max:]
	}
	data, err := json.Marshal(batch{Events: events})
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	seq := s.next
	if err := writeFileSync(s.dir, s.path(seq), data); err != nil {
		return err
	}
	s.next++
	s.queue = append(s.queue, spoolEntry{seq: seq, n: len(events)})
	s.events += len(events)
	for s.events > s.max && len(s.queue) > 1 {
		old := s.queue[0]
		if err := os.Remove(s.path(old.seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("drop oldest batch: %w", err)
		}
		s.queue = s.queue[1:]
		s.events -= old.n
		dropped += old.n
	}
	s.dropped += uint64(dropped)
	return nil
}

// writeFileSync writes data to path atomically and durably: temporary file,
// fsync, rename, fsync of the directory.
func writeFileSync(dir, path string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: sync dir: %w", err)
	}
	return nil
}

// peek returns the oldest batch, or nil when the spool is empty.
func (s *spool) peek() (*batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		b, err := s.read(s.queue[0].seq)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back; nothing to deliver.
			s.events -= s.queue[0].n
			s.queue = s.queue[1:]
			continue
		}
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, nil
}

// remove deletes a delivered (or permanently refused) batch. A batch already
// dropped by an overflow is not an error.
func (s *spool) remove(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	for i, e := range s.queue {
		if e.seq == seq {
			s.events -= e.n
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			break
		}
	}
	return syncDir(s.dir)
}

// len returns the number of batches and of events pending.
func (s *spool) len() (batches, events int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), s.events
}

// takeDropped returns the number of events dropped since the last call.
func (s *spool) takeDropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dropped
	s.dropped = 0
	return d
}

// pendingEvents counts the events in the spool directory dir without opening
// it as a spool: used to report the spool of a removed sink.
func pendingEvents(dir string) (int, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, de := range des {
		if !strings.HasSuffix(de.Name(), spoolExt) || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			continue
		}
		var b batch
		if json.Unmarshal(data, &b) == nil {
			n += len(b.Events)
		}
	}
	return n, nil
}
