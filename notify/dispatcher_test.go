package notify

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
)

// TestDurability: a process delivering to a receiver that is down is killed
// with SIGKILL while it sends; after a restart the receiver gets every event
// whose Send had returned, each exactly once by id, and nothing it was not
// sent. A repeat is allowed only as the same delivery (same webhook-id).
func TestDurability(t *testing.T) {
	rc := newSwitchable(t, nil)
	state := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NOTIFY_HELPER=durability", "NOTIFY_STATE="+state, "NOTIFY_URL="+rc.URL)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once 30 batches are confirmed, while it keeps sending.
	sent := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	confirmed := 0
	for confirmed < 30 && sc.Scan() {
		if ids, ok := strings.CutPrefix(sc.Text(), "sent "); ok {
			for _, id := range strings.Fields(ids) {
				sent[id] = true
			}
			confirmed++
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if confirmed < 30 {
		t.Fatalf("helper confirmed only %d batches", confirmed)
	}
	if n := len(rc.requests()); n == 0 {
		t.Fatal("the helper made no delivery attempt before the kill")
	}

	// Restart with the receiver up.
	rc.up.Store(true)
	before := len(rc.requests())
	d, _ := startDispatcher(t, state, hook("dur", "generic", rc.URL))
	waitEmpty(t, d)

	got := map[string][]string{} // event id -> webhook-ids that delivered it
	for _, r := range rc.requests()[before:] {
		for _, id := range decodeEventIDs(t, r.Body) {
			got[id] = append(got[id], r.Header.Get("webhook-id"))
		}
	}
	for id := range sent {
		if len(got[id]) == 0 {
			t.Errorf("event %s was confirmed by Send but never delivered", id)
		}
	}
	for id, whs := range got {
		if !strings.HasPrefix(id, "dur-") {
			t.Errorf("unknown event %s delivered", id)
		}
		for _, wh := range whs[1:] {
			if wh != whs[0] {
				t.Errorf("event %s delivered under two ids: %v", id, whs)
			}
		}
		if len(whs) > 1 {
			t.Logf("event %s delivered %d times (same webhook-id)", id, len(whs))
		}
	}
	t.Logf("%d events confirmed before the kill, %d delivered after the restart", len(sent), len(got))
}

// TestHelperDurability sends batches forever, printing each batch's ids once
// Send has returned.
func TestHelperDurability(t *testing.T) {
	if os.Getenv("NOTIFY_HELPER") != "durability" {
		t.Skip("helper process for TestDurability")
	}
	d, err := New(policy.Notify{Webhooks: []policy.Webhook{hook("dur", "generic", os.Getenv("NOTIFY_URL"))}},
		Options{StateDir: os.Getenv("NOTIFY_STATE"), BackoffBase: 5 * time.Millisecond, BackoffCap: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go d.Run(context.Background())
	for i := 0; i < 100000; i++ {
		events := batchOf(3, fmt.Sprintf("dur-%d", i))
		if err := d.Send(events); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("sent %s\n", strings.Join(ids(events), " "))
		time.Sleep(time.Millisecond)
	}
	t.Fatal("not killed")
}

// TestDrain: with the receiver down, Drain gives up after the grace and the
// batch stays spooled; a new dispatcher delivers it.
func TestDrain(t *testing.T) {
	rc := newSwitchable(t, nil)
	state := t.TempDir()
	log, _ := newLog()
	d, err := New(policy.Notify{Webhooks: []policy.Webhook{hook("drain", "generic", rc.URL)}},
		Options{StateDir: state, Log: log, BackoffBase: 10 * time.Millisecond, BackoffCap: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()
	if err := d.Send(batchOf(2, "drain")); err != nil {
		t.Fatal(err)
	}
	rc.waitRequests(t, 2)
	d.Drain(200 * time.Millisecond)
	select {
	case <-ran:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after Drain")
	}
	if diff := cmp.Diff(map[string]int{"drain": 2}, d.Pending()); diff != "" {
		t.Errorf("pending after drain (-want +got):\n%s", diff)
	}
	// A request cancelled by Drain may still reach the receiver a little
	// later; let it land, then no worker may make another attempt (with a
	// 20 ms backoff, a live one would make several).
	time.Sleep(200 * time.Millisecond)
	n := len(rc.requests())
	time.Sleep(300 * time.Millisecond)
	if m := len(rc.requests()); m != n {
		t.Errorf("%d attempts after Drain returned", m-n)
	}

	// Drain with a receiver that is up delivers what is pending, even when
	// Run has already stopped (the daemon may cancel Run first).
	rc.up.Store(true)
	d2, err := New(policy.Notify{Webhooks: []policy.Webhook{hook("drain", "generic", rc.URL)}}, Options{StateDir: state, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	d2.Drain(waitTimeout)
	if diff := cmp.Diff(map[string]int{"drain": 0}, d2.Pending()); diff != "" {
		t.Errorf("pending after the second drain (-want +got):\n%s", diff)
	}
}

// TestReload: a removed sink's worker stops and its spool stays and is
// reported; a new sink starts; a kept sink keeps its spool; a bad config
// changes nothing.
func TestReload(t *testing.T) {
	a := newSwitchable(t, nil)
	b := newReceiver(t, nil)
	state := t.TempDir()
	d, log := startDispatcher(t, state, hook("a", "generic", a.URL), hook("keep", "generic", b.URL))
	if err := d.Send(batchOf(2, "r1")); err != nil {
		t.Fatal(err)
	}
	a.waitRequests(t, 1)

	// A bad config is refused whole.
	bad := policy.Notify{Webhooks: []policy.Webhook{hook("keep", "generic", b.URL), hook("x", "generic", "http://example.com/")}}
	if err := d.Reload(bad); err == nil || !strings.Contains(err.Error(), "webhook x: plain http") {
		t.Fatalf("Reload(bad) = %v", err)
	}
	if diff := cmp.Diff([]string{"a", "keep"}, names(d)); diff != "" {
		t.Errorf("sinks after a bad reload (-want +got):\n%s", diff)
	}

	c := newReceiver(t, nil)
	if err := d.Reload(policy.Notify{Webhooks: []policy.Webhook{hook("keep", "generic", b.URL), hook("c", "slack", c.URL)}}); err != nil {
		t.Fatal(err)
	}
	n := len(a.requests())
	time.Sleep(300 * time.Millisecond)
	if m := len(a.requests()); m != n {
		t.Errorf("removed sink made %d more attempts", m-n)
	}
	if out := log.String(); !strings.Contains(out, `holds 2 undelivered events for webhook \"a\"`) {
		t.Errorf("orphaned spool not reported:\n%s", out)
	}
	if n, err := pendingEvents(filepath.Join(state, "spool", "a")); err != nil || n != 2 {
		t.Errorf("removed sink's spool: %d events, %v; want 2", n, err)
	}
	if err := d.Send(batchOf(1, "r2")); err != nil {
		t.Fatal(err)
	}
	c.waitRequests(t, 1)
	waitEmpty(t, d)

	// Adding "a" back delivers what it kept.
	a.up.Store(true)
	if err := d.Reload(policy.Notify{Webhooks: []policy.Webhook{hook("a", "generic", a.URL)}}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	last := a.requests()[len(a.requests())-1]
	if diff := cmp.Diff([]string{"r1-0", "r1-1"}, decodeEventIDs(t, last.Body)); diff != "" {
		t.Errorf("kept events (-want +got):\n%s", diff)
	}
}

func names(d *Dispatcher) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s []string
	for _, k := range d.sinks {
		s = append(s, k.name)
	}
	return s
}

// TestOverflow: a full spool drops the oldest events and reports how many.
func TestOverflow(t *testing.T) {
	log, buf := newLog()
	d, err := New(policy.Notify{SpoolSize: 5, Webhooks: []policy.Webhook{hook("small", "generic", "http://127.0.0.1:1/")}},
		Options{StateDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := d.Send(batchOf(2, "o"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The newest 5 of 8 events: the oldest batch goes whole, the next one
	// loses its oldest event.
	if diff := cmp.Diff(map[string]int{"small": 5}, d.Pending()); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	out := buf.String()
	if c := strings.Count(out, "spool full"); c != 2 {
		t.Errorf("%d overflow reports, want 2:\n%s", c, out)
	}
	if !strings.Contains(out, `"dropped":"1"`) || !strings.Contains(out, `"dropped":"2"`) || !strings.Contains(out, `"sink":"small"`) {
		t.Errorf("overflow report lacks counts or sink:\n%s", out)
	}
}
