package notify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/portwatchd/portwatchd/policy"
)

// Reload swaps in sinks built from cfg. Spools of sinks that remain are kept;
// the spool of a removed sink stays on disk and is reported. Everything that
// can fail is done before anything changes: on error the old sinks stay.
func (d *Dispatcher) Reload(cfg policy.Notify) error {
	var errs []error
	hooks := make(map[string]*webhook, len(cfg.Webhooks))
	for _, h := range cfg.Webhooks {
		if _, dup := hooks[h.Name]; dup {
			errs = append(errs, fmt.Errorf("webhook %s: defined twice", h.Name))
			continue
		}
		w, err := newWebhook(h, d.rt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hooks[h.Name] = w
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	d.mu.Lock()
	old := make(map[string]*sink, len(d.sinks))
	for _, s := range d.sinks {
		old[s.name] = s
	}
	d.mu.Unlock()
	spools := map[string]*spool{}
	for _, h := range cfg.Webhooks {
		if _, ok := old[h.Name]; ok {
			continue
		}
		sp, err := openSpool(filepath.Join(d.spoolRoot(), spoolDirName(h.Name)), cfg.SpoolSize)
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook %s: %w", h.Name, err))
			continue
		}
		spools[h.Name] = sp
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// Swap.
	if cfg.Journald {
		d.journal.Store(d.jd)
	} else {
		d.journal.Store(nil)
	}
	d.mu.Lock()
	var sinks, removed []*sink
	for _, h := range cfg.Webhooks {
		s, ok := old[h.Name]
		if ok {
			delete(old, h.Name)
			s.spool.mu.Lock()
			s.spool.max = spoolMax(cfg.SpoolSize)
			s.spool.mu.Unlock()
		} else {
			s = newSink(h.Name, spools[h.Name])
		}
		s.mu.Lock()
		s.hook, s.n = hooks[h.Name].hook, hooks[h.Name]
		s.mu.Unlock()
		signal(s.reconf)
		sinks = append(sinks, s)
		if !ok && d.runCtx != nil {
			d.start(d.runCtx, s)
		}
	}
	for _, s := range old {
		removed = append(removed, s)
	}
	d.sinks = sinks
	d.mu.Unlock()
	for _, s := range removed {
		stopWorker(s)
	}
	for _, s := range sinks {
		d.reportCorrupt(s)
	}
	d.reportOrphans(cfg)
	return nil
}

func spoolMax(n int) int {
	if n <= 0 {
		return DefaultSpoolSize
	}
	return n
}

// reportOrphans reports every spool directory that holds events but belongs
// to no configured webhook. The events are kept: re-adding a webhook of the
// same name delivers them.
func (d *Dispatcher) reportOrphans(cfg policy.Notify) {
	des, err := os.ReadDir(d.spoolRoot())
	if err != nil {
		return
	}
	known := map[string]bool{}
	for _, h := range cfg.Webhooks {
		known[spoolDirName(h.Name)] = true
	}
	for _, de := range des {
		if !de.IsDir() || known[de.Name()] {
			continue
		}
		dir := filepath.Join(d.spoolRoot(), de.Name())
		n, err := pendingEvents(dir)
		if err != nil || n == 0 {
			continue
		}
		d.report(MessageIDOrphanSpool, journal.PriWarning,
			fmt.Sprintf("spool %s holds %d undelivered events for webhook %q, which is no longer configured; they are kept until a webhook of that name returns or the directory is removed", dir, n, de.Name()),
			map[string]string{"PORTWATCH_SINK": de.Name(), "PORTWATCH_PENDING": strconv.Itoa(n), "PORTWATCH_SPOOL": dir})
	}
}
