package notify

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// Run delivers spooled events until ctx ends or Drain stops the dispatcher.
// Whatever is not delivered stays spooled.
func (d *Dispatcher) Run(ctx context.Context) {
	d.mu.Lock()
	if d.stopped || d.runCtx != nil {
		d.mu.Unlock()
		return
	}
	d.runCtx = ctx
	for _, s := range d.sinks {
		d.start(ctx, s)
	}
	d.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-d.stopCh:
	}
	d.mu.Lock()
	d.runCtx = nil
	sinks := slices.Clone(d.sinks)
	d.mu.Unlock()
	for _, s := range sinks {
		stopWorker(s)
	}
}

// start runs the delivery worker of s under ctx. d.mu is held.
func (d *Dispatcher) start(ctx context.Context, s *sink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.cancel, s.done = cancel, done
	go func() {
		defer close(done)
		rctx, stopResend := context.WithCancel(wctx)
		resent := make(chan struct{})
		go func() {
			defer close(resent)
			d.resendLoop(rctx, s)
		}()
		d.deliver(wctx, s)
		stopResend()
		<-resent
		s.mu.Lock()
		if s.done == done {
			s.cancel()
			s.cancel = nil
		}
		s.mu.Unlock()
	}()
}

// stopWorker cancels the worker of s, if one runs, and waits for it. An
// interrupted request leaves its batch in the spool.
func stopWorker(s *sink) {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Merge limits: how much one delivery may carry when the pending batches of
// a sink are merged (after an outage, or when events come faster than the
// receiver answers). Chat formats show the first events and count the rest
// ("… and N more"), so a long outage is a few messages, not one per
// snapshot. Generic and Alertmanager receivers get every event, so their
// requests stay smaller.
const (
	mergeEventsChat = 1000
	mergeEventsList = 500
	mergeBytesMax   = 4 << 20 // of spool files; the request body is about as large
)

func mergeLimit(format string) int {
	switch format {
	case "generic", "alertmanager":
		return mergeEventsList
	}
	return mergeEventsChat
}

// deliver is the one retry loop for every webhook. It merges the oldest
// pending batches (up to mergeLimit) into one delivery and sends it until it
// is accepted (2xx) or refused for good (another 4xx, or a redirect),
// waiting with exponential backoff and jitter, or as long as Retry-After
// says, between attempts. Spool entries are removed only once the delivery
// that carried them is accepted. It returns when ctx ends, or when the spool
// is empty while draining.
//
// While a chat delivery is retried, batches spooled in the meantime join it,
// so the message sent when the receiver is back covers the whole outage. A
// generic delivery is retried as it was first tried, so its webhook-id
// (derived from its event ids) stays the same on every retry, as Standard
// Webhooks wants. A merged delivery refused for good is split: its batches
// are tried one at a time, so that one bad batch cannot take the others with
// it.
func (d *Dispatcher) deliver(ctx context.Context, s *sink) {
	attempt := 0
	wait := func(delay time.Duration) bool {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var (
		cur    []*batch // the batches of the delivery in progress, in order
		frozen bool     // cur must be retried as it is
		split  []*batch // batches of a refused merge, to be tried one at a time
	)
	for ctx.Err() == nil {
		h, n := s.current()
		switch {
		case len(cur) == 0 && len(split) > 0:
			cur, split, frozen = []*batch{split[0]}, split[1:], true
		case len(cur) == 0 || !frozen:
			var after uint64
			events, size := 0, 0
			for _, b := range cur {
				events += len(b.Events)
				size += b.size
			}
			if len(cur) > 0 {
				after = cur[len(cur)-1].seq
			}
			more, err := s.spool.take(after, len(cur) == 0, mergeLimit(h.Format)-events, mergeBytesMax-size)
			d.reportCorrupt(s)
			if err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("read spool")
				if len(cur) == 0 {
					attempt++
					if !wait(d.backoff.delay(attempt)) {
						return
					}
					continue
				}
			}
			cur = latestResend(append(cur, more...))
		}
		if len(cur) == 0 {
			if s.draining.Load() {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		var events []Event
		for _, b := range cur {
			events = append(events, b.Events...)
		}
		retry, err := n.Notify(ctx, events)
		if ctx.Err() != nil {
			// Stopped mid-request: the batches stay for the next start,
			// which may deliver them twice (with the same ids).
			return
		}
		if err == nil {
			d.observe(s.name, DeliveryOK, len(events))
			attempt = 0
			if err := s.spool.remove(seqs(cur)...); err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("remove delivered batch")
			}
			cur, frozen = nil, false
			continue
		}
		if !retry {
			attempt = 0
			if len(cur) > 1 {
				d.log.WithFields(logrus.Fields{"sink": s.name, "batches": len(cur), "events": len(events), "error": err.Error()}).
					Warn("webhook refused a merged delivery; trying its batches one at a time")
				split = append(slices.Clone(cur[1:]), split...)
				cur, frozen = cur[:1:1], true
				continue
			}
			d.observe(s.name, DeliveryRefused, len(events))
			d.report(MessageIDDropped, journal.PriErr,
				fmt.Sprintf("webhook %s: dropped %d events after a permanent failure: %v", s.name, len(events), err),
				map[string]string{"PORTWATCH_SINK": s.name, "PORTWATCH_FORMAT": h.Format, "PORTWATCH_DROPPED": strconv.Itoa(len(events)), "PORTWATCH_ERROR": err.Error()})
			if err := s.spool.remove(seqs(cur)...); err != nil {
				d.log.WithFields(logrus.Fields{"sink": s.name, "error": err}).Error("remove refused batch")
			}
			cur, frozen = nil, false
			continue
		}
		d.observe(s.name, DeliveryFailed, len(events))
		if h.Format == "generic" {
			frozen = true
		}
		attempt++
		delay := d.backoff.delay(attempt)
		if ra := retryAfterOf(err); ra > 0 {
			delay = ra
		}
		d.log.WithFields(logrus.Fields{
			"sink": s.name, "attempt": attempt, "events": len(events), "retry_in": delay.Round(time.Millisecond).String(), "error": err.Error(),
		}).Warn("webhook delivery failed; will retry")
		if !wait(delay) {
			return
		}
	}
}

func seqs(bs []*batch) []uint64 {
	out := make([]uint64, len(bs))
	for i, b := range bs {
		out[i] = b.seq
	}
	return out
}

// Drain waits up to grace for pending deliveries, then stops. Whatever is
// still pending stays in the spools for the next start. It may be called
// whether or not Run is running; after Drain, Send still spools but nothing
// is delivered.
func (d *Dispatcher) Drain(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	d.stopped = true
	sinks := slices.Clone(d.sinks)
	for _, s := range sinks {
		s.draining.Store(true)
		s.poke()
		d.start(ctx, s) // no-op when Run's worker is running
	}
	d.mu.Unlock()
	for _, s := range sinks {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	for _, s := range sinks {
		stopWorker(s)
	}
	close(d.stopCh)
}

// latestResend drops every re-send batch of bs but the newest. A re-send
// carries every alert firing when it was made, so one that a newer re-send
// replaced in the spool after the worker had read it adds nothing.
func latestResend(bs []*batch) []*batch {
	last := -1
	for i, b := range bs {
		if b.Resend {
			last = i
		}
	}
	var out []*batch
	for i, b := range bs {
		if !b.Resend || i == last {
			out = append(out, b)
		}
	}
	return out
}
