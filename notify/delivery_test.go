package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/policy"
)

// failedSinks returns the sinks named by the *SinkErrors in err, sorted.
func failedSinks(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		var se *SinkError
		if errors.As(err, &se) && err == error(se) {
			out = append(out, se.Sink)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	slices.Sort(out)
	return out
}

// breakDir puts a file where dir was, so that nothing can be created in it,
// for root too (unlike a chmod); the returned func puts dir back.
func breakDir(t *testing.T, dir string) func() {
	t.Helper()
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir+".away", dir); err != nil {
			t.Fatal(err)
		}
	}
}

// slackText returns the text of a Slack payload.
func slackText(t *testing.T, body []byte) string {
	t.Helper()
	var p struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return p.Text
}

// TestPartialFailure: one webhook's spool cannot be written while the real
// journald and another webhook work. Send names only the failed sink; the
// caller sends the same events again with each tick, as the daemon does;
// the sinks that took them skip them, and once the spool is back only the
// failed sink gets them. journald ends with exactly one entry per event id,
// and each receiver with each event exactly once.
func TestPartialFailure(t *testing.T) {
	j := journaltest.Start(t)
	good := newReceiver(t, nil)
	flaky := newReceiver(t, nil)
	state := t.TempDir()
	j.RunHelper(t, "TestHelperPartialFailure", "NOTIFY_STATE="+state, "NOTIFY_GOOD="+good.URL, "NOTIFY_FLAKY="+flaky.URL)
	want := map[string]int{"pf-0": 1, "pf-1": 1, "pf-2": 1}

	j.Wait(t, 3, "SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=opened")
	time.Sleep(200 * time.Millisecond) // a duplicate written late would show
	es, err := j.Entries("SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_EVENT=opened")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range es {
		got[e["PORTWATCH_EVENT_ID"]]++
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journal entries per event id (-want +got):\n%s", diff)
	}

	got = map[string]int{}
	for _, r := range good.requests() {
		for _, id := range decodeEventIDs(t, r.Body) {
			got[id]++
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("good webhook deliveries per event id (-want +got):\n%s", diff)
	}

	// Slack messages carry no ids: count each event's port.
	got = map[string]int{}
	for _, r := range flaky.requests() {
		text := slackText(t, r.Body)
		for i := range 3 {
			got[fmt.Sprintf("pf-%d", i)] += strings.Count(text, fmt.Sprintf("0.0.0.0:%d ", 4000+i))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("recovered webhook deliveries per event (-want +got):\n%s", diff)
	}
}

// TestHelperPartialFailure runs inside the journal's namespace for
// TestPartialFailure.
func TestHelperPartialFailure(t *testing.T) {
	if !journaltest.IsHelper() {
		t.Skip("helper process for TestPartialFailure")
	}
	state := os.Getenv("NOTIFY_STATE")
	log, buf := newLog()
	d, err := New(policy.Notify{Journald: true, Webhooks: []policy.Webhook{
		hook("good", "generic", os.Getenv("NOTIFY_GOOD")),
		hook("flaky", "slack", os.Getenv("NOTIFY_FLAKY")),
	}}, Options{StateDir: state, Log: log, BackoffBase: 20 * time.Millisecond, BackoffCap: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d.jd.fallback != nil {
		t.Fatal("no journal socket inside the namespace")
	}
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	}()
	done := make(chan struct{})
	go func() { d.Run(t.Context()); close(done) }()
	defer func() { d.Drain(time.Second); <-done }()

	events := batchOf(3, "pf")
	repair := breakDir(t, filepath.Join(state, "spool", "flaky"))
	var unsent []Event
	send := func(evs ...Event) error {
		unsent = append(unsent, evs...)
		err := d.Send(unsent)
		if err == nil {
			unsent = nil
		}
		return err
	}
	// Two ticks while the flaky spool is broken, the second with a new
	// event.
	for i, evs := range [][]Event{events[:1], events[1:2]} {
		err := send(evs...)
		if diff := cmp.Diff([]string{"flaky"}, failedSinks(err)); diff != "" {
			t.Fatalf("tick %d: failed sinks (-want +got):\n%s\nerror: %v", i, diff, err)
		}
	}
	waitEmpty(t, d)
	repair()
	if err := send(); err != nil {
		t.Fatalf("after repair: %v", err)
	}
	if err := send(events[2]); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
}

// failingWriter fails every write while broken, and counts the others.
type failingWriter struct {
	mu     sync.Mutex
	broken bool
	after  int // writes allowed before it breaks, when not yet broken
	lines  []string
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken || len(w.lines) >= w.after {
		w.broken = true
		return 0, errors.New("disk full")
	}
	w.lines = append(w.lines, string(p))
	return len(p), nil
}

// TestJournaldPartialFailure: when the journal (here its stderr fallback)
// fails midway, Send names journald only; the retry writes only the
// entries that were missing, and the webhook spool gets nothing twice.
func TestJournaldPartialFailure(t *testing.T) {
	log, _ := newLog()
	d, err := New(policy.Notify{Journald: true, Webhooks: []policy.Webhook{hook("w", "generic", "http://127.0.0.1:1/")}},
		Options{StateDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	w := &failingWriter{after: 1}
	d.jd = &journald{fallback: w, now: time.Now}
	d.journal.Store(d.jd)
	events := batchOf(3, "jf")

	err = d.Send(events)
	if diff := cmp.Diff([]string{"journald"}, failedSinks(err)); diff != "" {
		t.Fatalf("failed sinks (-want +got):\n%s\nerror: %v", diff, err)
	}
	var se *SinkError
	if errors.As(err, &se) && se.Events != 2 {
		t.Errorf("journald left %d events unwritten, want 2", se.Events)
	}
	w.mu.Lock()
	w.broken, w.after = false, 100
	w.mu.Unlock()
	if err := d.Send(events); err != nil {
		t.Fatal(err)
	}
	if err := d.Send(events); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, l := range w.lines {
		for _, ev := range events {
			if strings.Contains(l, "event_id="+ev.ID+" ") {
				got[ev.ID]++
			}
		}
	}
	if diff := cmp.Diff(map[string]int{"jf-0": 1, "jf-1": 1, "jf-2": 1}, got); diff != "" {
		t.Errorf("journal lines per event id (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"w": 3}, d.Pending()); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
}

// switchable is a receiver that answers 503 until up, and records which
// requests it accepted.
type switchable struct {
	*receiver
	up atomic.Bool
	mu sync.Mutex
	ok []request
}

func newSwitchable(t *testing.T, refuse func(r request) bool) *switchable {
	s := &switchable{}
	// The handler reads s.receiver under mu: a client in another process
	// (which the race detector cannot see) may send before it is set.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.receiver = newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		req := s.requests()[n-1]
		switch {
		case !s.up.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		case refuse != nil && refuse(req):
			w.WriteHeader(http.StatusBadRequest)
		default:
			s.ok = append(s.ok, req)
		}
	})
	return s
}

func (s *switchable) accepted() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ok)
}

// sendEach sends one batch of a single event for each prefix.
func sendEach(t *testing.T, d *Dispatcher, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		if err := d.Send(batchOf(1, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitMore waits for more attempts than the receiver has seen so far.
func (s *switchable) waitMore(t *testing.T, more int) {
	t.Helper()
	s.waitRequests(t, len(s.requests())+more)
}

// comeBack brings the receiver up and waits until d has delivered
// everything.
func (s *switchable) comeBack(t *testing.T, d *Dispatcher) {
	t.Helper()
	s.up.Store(true)
	waitEmpty(t, d)
}

// acceptedIDs returns the event IDs of each accepted delivery, in order.
func (s *switchable) acceptedIDs(t *testing.T) [][]string {
	t.Helper()
	var got [][]string
	for _, r := range s.accepted() {
		got = append(got, decodeEventIDs(t, r.Body))
	}
	return got
}

// TestMergeChatAfterOutage: batches spooled while a chat receiver is down
// reach it as one message once it is back, and are removed from the spool
// only then.
func TestMergeChatAfterOutage(t *testing.T) {
	rc := newSwitchable(t, nil)
	d, _ := startDispatcher(t, t.TempDir(), hook("chat", "slack", rc.URL))
	for i := range 6 {
		sendEach(t, d, fmt.Sprintf("m%d", i))
	}
	// Wait for the second attempt after the last Send: the first may have
	// been on its way already, the second holds every batch.
	rc.waitMore(t, 2)
	if diff := cmp.Diff(map[string]int{"chat": 6}, d.Pending()); diff != "" {
		t.Errorf("pending while down (-want +got):\n%s", diff)
	}
	rc.comeBack(t, d)
	ok := rc.accepted()
	if len(ok) != 1 {
		t.Fatalf("%d messages accepted, want 1", len(ok))
	}
	text := slackText(t, ok[0].Body)
	if !strings.HasPrefix(text, "portwatchd on web-1: 6 unexpected listeners\n") {
		t.Errorf("summary title: %q", text)
	}
	// batchOf starts each batch at port 4000: the six events share it.
	if c := strings.Count(text, "0.0.0.0:4000 "); c != 6 {
		t.Errorf("message lists %d of the 6 events:\n%s", c, text)
	}
}

// TestMergeChatMore: a merge larger than the message holds one line per
// event is grouped by holder, within Slack's limits, and is one message.
func TestMergeChatMore(t *testing.T) {
	rc := newSwitchable(t, nil)
	d, _ := startDispatcher(t, t.TempDir(), hook("chat", "slack", rc.URL))
	for i := range 60 {
		sendEach(t, d, fmt.Sprintf("big%d", i))
	}
	rc.waitMore(t, 2) // as in TestMergeChatAfterOutage
	rc.comeBack(t, d)
	ok := rc.accepted()
	if len(ok) != 1 {
		t.Fatalf("%d messages accepted, want 1", len(ok))
	}
	text := slackText(t, ok[0].Body)
	if !strings.HasPrefix(text, "portwatchd on web-1: 60 unexpected listeners\n") || !strings.Contains(text, "): tcp 0.0.0.0:4000") || strings.Contains(text, " more") {
		t.Errorf("summary:\n%s", text)
	}
}

// TestMergeGenericStableID: a generic delivery is retried exactly as it was
// first tried (same events, same webhook-id); what was spooled meanwhile
// follows as one merged delivery.
func TestMergeGenericStableID(t *testing.T) {
	rc := newSwitchable(t, nil)
	d, _ := startDispatcher(t, t.TempDir(), hook("gen", "generic", rc.URL))
	if err := d.Send(batchOf(2, "g0")); err != nil {
		t.Fatal(err)
	}
	rc.waitRequests(t, 1)
	sendEach(t, d, "g1", "g2")
	rc.waitMore(t, 1)
	rc.comeBack(t, d)
	first := rc.requests()[0]
	for i, r := range rc.requests() {
		if slices.Equal(decodeEventIDs(t, r.Body), []string{"g0-0", "g0-1"}) {
			if r.Header.Get("webhook-id") != first.Header.Get("webhook-id") {
				t.Errorf("request %d: webhook-id %s, want %s as on the first try", i, r.Header.Get("webhook-id"), first.Header.Get("webhook-id"))
			}
		}
	}
	got := rc.acceptedIDs(t)
	want := [][]string{{"g0-0", "g0-1"}, {"g1-0", "g2-0"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("accepted deliveries (-want +got):\n%s", diff)
	}
	for _, r := range rc.requests() {
		if ids := decodeEventIDs(t, r.Body); !slices.Equal(ids, want[0]) && !slices.Equal(ids, want[1]) {
			t.Errorf("unexpected delivery %v", ids)
		}
	}
}

// TestMergeRefusedIsSplit: a merged delivery refused for good is retried
// one batch at a time, so that only the batch the receiver refuses is
// dropped (and reported).
func TestMergeRefusedIsSplit(t *testing.T) {
	rc := newSwitchable(t, func(r request) bool { return strings.Contains(string(r.Body), `"bad-0"`) })
	d, log := startDispatcher(t, t.TempDir(), hook("gen", "generic", rc.URL))
	if err := d.Send(batchOf(1, "a")); err != nil {
		t.Fatal(err)
	}
	rc.waitRequests(t, 1)
	sendEach(t, d, "b", "bad", "c")
	rc.waitMore(t, 1)
	rc.comeBack(t, d)
	got := rc.acceptedIDs(t)
	if diff := cmp.Diff([][]string{{"a-0"}, {"b-0"}, {"c-0"}}, got); diff != "" {
		t.Errorf("accepted deliveries (-want +got):\n%s", diff)
	}
	out := log.String()
	if !strings.Contains(out, "trying its batches one at a time") {
		t.Errorf("split not logged:\n%s", out)
	}
	if c := strings.Count(out, "webhook gen: dropped 1 events after a permanent failure"); c != 1 {
		t.Errorf("%d drop reports, want 1:\n%s", c, out)
	}
}

// TestCorruptSpoolReported: a spool file that does not decode, found at
// start or when it is about to be delivered, is set aside and reported
// with the sink and the file; the other batches are delivered.
func TestCorruptSpoolReported(t *testing.T) {
	rc := newReceiver(t, nil)
	state := t.TempDir()
	dir := filepath.Join(state, "spool", "c")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000001.json"), []byte(`{"events": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	h := hook("c", "generic", rc.URL)
	d, err := New(policy.Notify{Webhooks: []policy.Webhook{h}}, Options{StateDir: state, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sendEach(t, d, "x", "y")
	// Damage the first of them (numbered past the one set aside) before
	// the worker reads it.
	if err := os.WriteFile(filepath.Join(dir, "00000000000000000002.json"), []byte("\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	waitEmpty(t, d)
	d.Drain(time.Second)
	<-done

	var got []string
	for _, r := range rc.requests() {
		got = append(got, decodeEventIDs(t, r.Body)...)
	}
	if diff := cmp.Diff([]string{"y-0"}, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	var reports []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.Contains(fmt.Sprint(m["msg"]), "spool file unreadable") {
			reports = append(reports, m)
		}
	}
	if len(reports) != 2 {
		t.Fatalf("%d reports of unreadable spool files, want 2:\n%s", len(reports), buf.String())
	}
	for i, seq := range []string{"00000000000000000001", "00000000000000000002"} {
		m := reports[i]
		file := filepath.Join(dir, seq+".json.corrupt")
		if m["level"] != "error" || m["sink"] != "c" || m["spool"] != file || m["message_id"] != MessageIDDropped {
			t.Errorf("report %d: %v; want level error, sink c, spool %s, message_id %s", i, m, file, MessageIDDropped)
		}
		if _, err := os.Stat(file); err != nil {
			t.Errorf("corrupt batch not kept: %v", err)
		}
	}
}

// TestNtfySplit: where ntfy payloads are posted, and with which topic.
func TestNtfySplit(t *testing.T) {
	tests := []struct {
		name, url, topic string
		wantURL          string
		wantTopic        string
	}{
		{name: "topic in the path", url: "https://ntfy.sh/alerts", wantURL: "https://ntfy.sh/", wantTopic: "alerts"},
		{name: "trailing slash", url: "https://ntfy.sh/alerts/", wantURL: "https://ntfy.sh/", wantTopic: "alerts"},
		{name: "path prefix and auth query", url: "https://example.com/ntfy/alerts?auth=QmFzaWM", wantURL: "https://example.com/ntfy/?auth=QmFzaWM", wantTopic: "alerts"},
		{name: "topic set, root url", url: "https://ntfy.sh", topic: "ops", wantURL: "https://ntfy.sh/", wantTopic: "ops"},
		{name: "topic set, prefix url", url: "https://example.com/ntfy?auth=x", topic: "ops", wantURL: "https://example.com/ntfy/?auth=x", wantTopic: "ops"},
		{name: "topic set and in the url", url: "https://example.com/ntfy/ops", topic: "ops", wantURL: "https://example.com/ntfy/", wantTopic: "ops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			gotURL, gotTopic := ntfySplit(*u, tt.topic)
			if diff := cmp.Diff([]string{tt.wantURL, tt.wantTopic}, []string{gotURL.String(), gotTopic}); diff != "" {
				t.Errorf("ntfySplit(%s, %q) (-want +got):\n%s", tt.url, tt.topic, diff)
			}
		})
	}
	if _, err := newWebhook(hook("n", "ntfy", "https://ntfy.sh/"), nil); err == nil || !strings.Contains(err.Error(), "ntfy needs a topic") {
		t.Errorf("ntfy without a topic: err = %v", err)
	}
}

// TestNtfyPathAndQuery: a loopback ntfy behind a path prefix, with ?auth=,
// gets the JSON at its root with the query kept; the query never reaches
// a log line.
func TestNtfyPathAndQuery(t *testing.T) {
	const auth = "QmFzaWMgdXNlcjpTRUNSRVRwYXNz"
	var calls atomic.Int32
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Path != "/ntfy/" || r.URL.Query().Get("auth") != auth {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "forbidden: "+r.URL.String())
			return
		}
		if n == 1 {
			// A retry keeps the path and the query too.
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "busy: "+r.URL.String())
		}
	})
	d, log := startDispatcher(t, t.TempDir(), hook("ntfy", "ntfy", rc.URL+"/ntfy/alerts?auth="+auth))
	if err := d.Send(batchOf(1, "n")); err != nil {
		t.Fatal(err)
	}
	reqs := rc.waitRequests(t, 2)
	waitEmpty(t, d)
	for i, r := range reqs {
		if r.Path != "/ntfy/" || r.Query != "auth="+auth {
			t.Errorf("request %d to %s?%s, want /ntfy/?auth=…", i, r.Path, r.Query)
		}
		var p map[string]any
		if err := json.Unmarshal(r.Body, &p); err != nil || p["topic"] != "alerts" {
			t.Errorf("request %d: topic %v (%v), want alerts", i, p["topic"], err)
		}
	}
	if out := log.String(); !strings.Contains(out, "HTTP 503") || strings.Contains(out, auth) || strings.Contains(out, "/ntfy/alerts") {
		t.Errorf("log lacks the retry or holds the URL:\n%s", out)
	}
}

// TestAccepted: the remembered ids forget the oldest first, and a large
// Send makes room for all of its events.
func TestAccepted(t *testing.T) {
	a := newAccepted()
	a.max = 3
	a.add("a", "b", "c", "a")
	a.add("d")
	var got []string
	for _, id := range []string{"a", "b", "c", "d"} {
		if a.has(id) {
			got = append(got, id)
		}
	}
	if diff := cmp.Diff([]string{"b", "c", "d"}, got); diff != "" {
		t.Errorf("remembered (-want +got):\n%s", diff)
	}
	a.reserve(4)
	a.add("e", "f", "g", "h", "i")
	got = nil
	for _, id := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		if a.has(id) {
			got = append(got, id)
		}
	}
	if diff := cmp.Diff([]string{"b", "c", "d", "e", "f", "g", "h", "i"}, got); diff != "" {
		t.Errorf("after reserve(4) (-want +got):\n%s", diff)
	}
}

// TestAlertmanagerMerged: batches spooled while Alertmanager is unreachable
// (an opened and a closed event of one listener, an opened event of
// another) reach a real Alertmanager merged into one post, which it takes in
// order: the first alert ends resolved, the second fires.
func TestAlertmanagerMerged(t *testing.T) {
	base := startAlertmanager(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	am := func(url string) policy.Webhook {
		return policy.Webhook{Name: "am", Format: "alertmanager", URL: url, Timeout: 10 * time.Second}
	}
	d, log := startDispatcher(t, t.TempDir(), am(down))
	a, b := unexpected(4446, "x"), unexpected(4447, "x")
	t0 := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
	for i, ev := range []Event{
		NewEvent(TypeOpened, a, "web-1", t0),
		NewEvent(TypeClosed, a, "web-1", t0.Add(time.Second)),
		NewEvent(TypeOpened, b, "web-1", t0.Add(2*time.Second)),
	} {
		if err := d.Send([]Event{ev}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(waitTimeout)
	// Until an attempt carries the three batches merged.
	for !strings.Contains(log.String(), `"events":3,`) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt with the 3 events:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The same sink, now pointing at Alertmanager: its spool is kept.
	if err := d.Reload(policy.Notify{Webhooks: []policy.Webhook{am(base)}}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	waitAlerts(t, base, "port", map[string]string{"4446": "resolved", "4447": "active"})
}
