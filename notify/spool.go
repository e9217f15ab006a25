package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/portwatchd/portwatchd/internal/atomicfile"
)

// DefaultSpoolSize is the number of events kept per webhook when
// spool_size is not set.
const DefaultSpoolSize = 10000

// batch is one message for one sink: the events of one Send call that passed
// the sink's filters.
type batch struct {
	Events []Event `json:"events"`
	// Resend marks a re-send of the firing alerts, of which a spool holds
	// at most one.
	Resend bool `json:"resend,omitempty"`

	seq  uint64 // file name; order of delivery
	size int    // bytes of the file
}

// spool is a durable FIFO of batches for one sink: one file per batch in dir,
// named by a zero-padded sequence number. A batch is written to a temporary
// file, fsynced, renamed into place and the directory fsynced before append
// returns, so it survives kill -9 and power loss, and a reader never sees a
// half-written batch.
//
// The spool holds at most max events. Appending beyond that drops the oldest
// events, one by one, and counts them: whole batches, then the oldest events
// of the oldest remaining batch, which is rewritten without them.
type spool struct {
	dir string
	max int

	mu      sync.Mutex
	queue   []spoolEntry  // in delivery order
	events  int           // events in queue
	next    uint64        // next sequence number
	dropped uint64        // events dropped since the last call to takeDropped
	dropErr error         // why dropping old events failed, since the last takeDropped
	corrupt []corruptFile // batches set aside by openSpool, for the dispatcher to report
}

// corruptFile is a batch file that could not be read or decoded and was set
// aside (renamed with a ".corrupt" suffix): its events are lost, which must
// be reported.
type corruptFile struct {
	path string // the new name, with ".corrupt"
	err  error
}

// errCorrupt marks a batch file that can never be delivered (it does not
// decode), as opposed to one that cannot be read right now.
var errCorrupt = errors.New("corrupt spool batch")

type spoolEntry struct {
	seq    uint64
	n      int  // events in the batch
	resend bool // a re-send of the firing alerts
}

const spoolExt = ".json"

// openSpool opens or creates the spool in dir and recovers its batches.
// Leftover temporary files from an interrupted write are removed; a batch
// file that cannot be read or decoded is moved aside with a ".corrupt"
// suffix rather than blocking the queue, and listed in s.corrupt for the
// dispatcher to report (its events are lost; the file stays for a
// post-mortem, or to be renamed back by hand).
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
		base, aside := strings.CutSuffix(name, spoolExt+".corrupt")
		if !aside {
			var ok bool
			if base, ok = strings.CutSuffix(name, spoolExt); !ok {
				continue
			}
		}
		seq, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		// Past every number in use, set-aside files included, so that a
		// new batch never replaces one of them.
		if seq >= s.next {
			s.next = seq + 1
		}
		if aside {
			continue
		}
		b, err := s.read(seq)
		if err != nil {
			s.corrupt = append(s.corrupt, s.setAside(seq, err))
			continue
		}
		s.queue = append(s.queue, spoolEntry{seq: seq, n: len(b.Events), resend: b.Resend})
		s.events += len(b.Events)
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
		return nil, fmt.Errorf("%w: decode %s: %w", errCorrupt, filepath.Base(s.path(seq)), err)
	}
	b.seq = seq
	b.size = len(data)
	return &b, nil
}

// setAside renames the batch file seq with a ".corrupt" suffix. The caller
// removes it from the queue.
func (s *spool) setAside(seq uint64, err error) corruptFile {
	p := s.path(seq)
	if rerr := os.Rename(p, p+".corrupt"); rerr != nil {
		// Cannot even rename it: remove it, or it would come back at the
		// next start. Either way its events are gone.
		_ = os.Remove(p)
		return corruptFile{path: p, err: err}
	}
	return corruptFile{path: p + ".corrupt", err: err}
}

// takeCorrupt returns the batches set aside since the last call.
func (s *spool) takeCorrupt() []corruptFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.corrupt
	s.corrupt = nil
	return c
}

// append stores events as one batch, durably, dropping the oldest events
// when the spool would hold more than max. An error means the batch was not
// stored; a failure to drop old events is kept for takeDropped instead,
// since the new batch is safe.
func (s *spool) append(events []Event) error {
	if len(events) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(batch{Events: events})
}

// resend stores events as the one pending re-send of the firing alerts: it
// replaces the re-send already pending, if any (the newest carries every
// alert still firing), and stores nothing when events is empty.
func (s *spool) resend(events []Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	s.queue = slices.DeleteFunc(s.queue, func(e spoolEntry) bool {
		if !e.resend {
			return false
		}
		if err := s.unlink(e.seq); err != nil {
			errs = append(errs, fmt.Errorf("spool: replace pending re-send: %w", err))
			return false
		}
		s.events -= e.n
		return true
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(events) == 0 {
		return nil
	}
	return s.add(batch{Events: events, Resend: true})
}

// add stores b, durably, and drops the oldest events beyond max. s.mu is
// held.
func (s *spool) add(b batch) error {
	events := b.Events
	var dropped int
	if len(events) > s.max {
		dropped += len(events) - s.max
		events = events[len(events)-s.max:]
	}
	b.Events = events
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	seq := s.next
	if err := writeFileSync(s.path(seq), data); err != nil {
		return err
	}
	s.next++
	s.queue = append(s.queue, spoolEntry{seq: seq, n: len(events), resend: b.Resend})
	s.events += len(events)
	n, err := s.dropOldest(s.events - s.max)
	if err != nil {
		s.dropErr = err
	}
	s.dropped += uint64(dropped + n)
	return nil
}

// dropOldest drops the n oldest events, never from the newest batch (which
// append has already cut to max): whole batches while they fit in n, then
// the oldest remaining batch is rewritten without its oldest events, so that
// the spool keeps exactly the newest max events. It returns how many it
// dropped. s.mu is held.
func (s *spool) dropOldest(n int) (int, error) {
	dropped := 0
	for n > 0 && len(s.queue) > 1 {
		old := s.queue[0]
		if old.n <= n {
			if err := s.unlink(old.seq); err != nil {
				return dropped, fmt.Errorf("drop oldest batch: %w", err)
			}
			s.queue = s.queue[1:]
			s.events -= old.n
			dropped += old.n
			n -= old.n
			continue
		}
		kept, err := s.trim(old.seq, n)
		if err != nil {
			return dropped, err
		}
		if kept == 0 {
			s.queue = s.queue[1:]
		} else {
			s.queue[0].n = kept
		}
		s.events -= old.n - kept
		dropped += old.n - kept
		n -= old.n - kept
	}
	return dropped, nil
}

// trim rewrites batch seq, atomically, without its n oldest events, and
// returns how many it keeps. A batch that no longer decodes is set aside
// and reported as corrupt; one removed behind our back keeps nothing.
func (s *spool) trim(seq uint64, n int) (int, error) {
	b, err := s.read(seq)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil
	case errors.Is(err, errCorrupt):
		s.corrupt = append(s.corrupt, s.setAside(seq, err))
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("drop oldest events: %w", err)
	}
	if n >= len(b.Events) {
		// The file holds fewer events than the queue says: drop it whole.
		if err := s.unlink(seq); err != nil {
			return 0, fmt.Errorf("drop oldest batch: %w", err)
		}
		return 0, nil
	}
	b.Events = b.Events[n:]
	data, err := json.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("encode batch: %w", err)
	}
	if err := writeFileSync(s.path(seq), data); err != nil {
		return 0, fmt.Errorf("drop oldest events: %w", err)
	}
	return len(b.Events), nil
}

// unlink removes the file of batch seq; one already gone is no error.
func (s *spool) unlink(seq uint64) error {
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// writeFileSync writes data to path atomically and durably. Its temporary
// file is named .tmp-*, which openSpool clears away after a crash.
func writeFileSync(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o600, ".tmp-", false); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// peek returns the oldest batch, or nil when the spool is empty.
func (s *spool) peek() (*batch, error) {
	bs, err := s.take(0, true, 1, math.MaxInt)
	if err != nil || len(bs) == 0 {
		return nil, err
	}
	return bs[0], nil
}

// take returns, in order, the batches queued after sequence number after,
// as many as fit in maxEvents and maxBytes; with first, the first one is included whatever its size. Batches
// removed behind its back are skipped. A batch that does not decode is set
// aside, reported through takeCorrupt, and skipped: it must not block the
// queue. Any other read error is returned, with the batches read before it
// not returned, so that a retry sees the same batches.
//
// The files are read without holding the lock, so Send is not held up by a
// large merge.
func (s *spool) take(after uint64, first bool, maxEvents, maxBytes int) ([]*batch, error) {
	s.mu.Lock()
	var cand []spoolEntry
	n := 0
	for _, e := range s.queue {
		if e.seq <= after {
			continue
		}
		if (len(cand) > 0 || !first) && n+e.n > maxEvents {
			break
		}
		cand = append(cand, e)
		n += e.n
	}
	s.mu.Unlock()

	var out []*batch
	size := 0
	for _, e := range cand {
		b, err := s.read(e.seq)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Removed behind our back (dropped by an overflow); nothing to
			// deliver.
			s.forget(e.seq, nil)
			continue
		case errors.Is(err, errCorrupt):
			s.forget(e.seq, err)
			continue
		case err != nil:
			return nil, err
		}
		if (len(out) > 0 || !first) && size+b.size > maxBytes {
			break
		}
		size += b.size
		out = append(out, b)
	}
	return out, nil
}

// forget removes seq from the queue; with a non-nil err, the file is set
// aside as corrupt first.
func (s *spool) forget(seq uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, e := range s.queue {
		if e.seq == seq {
			if err != nil {
				s.corrupt = append(s.corrupt, s.setAside(seq, err))
			}
			s.events -= e.n
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return
		}
	}
}

// remove deletes delivered (or permanently refused) batches, then syncs the
// directory once. A batch already dropped by an overflow is not an error.
func (s *spool) remove(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, seq := range seqs {
		if err := s.unlink(seq); err != nil {
			errs = append(errs, fmt.Errorf("spool: %w", err))
			continue
		}
		for i, e := range s.queue {
			if e.seq == seq {
				s.events -= e.n
				s.queue = append(s.queue[:i], s.queue[i+1:]...)
				break
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return syncDir(s.dir)
}

// len returns the number of batches and of events pending.
func (s *spool) len() (batches, events int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), s.events
}

// takeDropped returns the number of events dropped since the last call, and
// the last failure to drop one.
func (s *spool) takeDropped() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.dropped, s.dropErr
	s.dropped, s.dropErr = 0, nil
	return d, err
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
