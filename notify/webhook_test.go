package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/internal/syncbuf"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// waitTimeout is how long tests wait for something to happen: generous,
// machines are shared and slow. Nothing is asserted about speed.
const waitTimeout = 60 * time.Second

// request is one request seen by a receiver.
type request struct {
	Path   string
	Query  string // raw
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a loopback webhook receiver. respond decides the answer to
// the n-th request (1-based); nil answers 200.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int, w http.ResponseWriter, r *http.Request)
	got     chan struct{}
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{respond: respond, got: make(chan struct{}, 1000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, At: time.Now()})
		n := len(rc.reqs)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(n, w, r)
		}
		rc.got <- struct{}{}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// waitRequests waits until the receiver has answered n requests.
func (rc *receiver) waitRequests(t *testing.T, n int) []request {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		if r := rc.requests(); len(r) >= n {
			// Let the handler finish answering the n-th.
			time.Sleep(10 * time.Millisecond)
			return rc.requests()
		}
		select {
		case <-rc.got:
		case <-deadline:
			t.Fatalf("receiver got %d requests after %v, want %d", len(rc.requests()), waitTimeout, n)
		}
	}
}

func newLog() (*logrus.Logger, *syncbuf.Buffer) {
	buf := &syncbuf.Buffer{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.DebugLevel)
	return l, buf
}

// startDispatcher builds a dispatcher for hooks with fast backoff (the
// journald sink is off, so that reports go to the returned log) and runs it
// until the test ends.
func startDispatcher(t *testing.T, stateDir string, hooks ...policy.Webhook) (*Dispatcher, *syncbuf.Buffer) {
	t.Helper()
	log, buf := newLog()
	d, err := New(policy.Notify{Webhooks: hooks}, Options{
		StateDir: stateDir, Log: log, BackoffBase: 20 * time.Millisecond, BackoffCap: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return d, buf
}

func hook(name, format, url string) policy.Webhook {
	return policy.Webhook{Name: name, Format: format, URL: url, Timeout: 5 * time.Second}
}

// waitEmpty waits until every spool of d is empty.
func waitEmpty(t *testing.T, d *Dispatcher) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		empty := true
		for _, n := range d.Pending() {
			if n > 0 {
				empty = false
			}
		}
		if empty {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spools still pending after %v: %v", waitTimeout, d.Pending())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func decodeEventIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var p struct {
		Events []Event `json:"events"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return ids(p.Events)
}

// verifySignature checks a Standard Webhooks signature independently of
// sign.
func verifySignature(t *testing.T, secret []byte, r request) {
	t.Helper()
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	if id == "" || ts == "" {
		t.Fatalf("missing webhook-id or webhook-timestamp: %v", r.Header)
	}
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		t.Errorf("webhook-timestamp %q is not a current Unix time", ts)
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(r.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := r.Header.Get("webhook-signature"); got != want {
		t.Errorf("webhook-signature = %q, want %q", got, want)
	}
}

func batchOf(n int, prefix string) []Event {
	var events []Event
	for i := 0; i < n; i++ {
		ev := NewEvent(TypeOpened, unexpected(uint16(4000+i), "x"), "web-1", testTime)
		ev.ID = fmt.Sprintf("%s-%d", prefix, i)
		events = append(events, ev)
	}
	return events
}

// TestGenericSigned: one Send is one signed request holding every event of
// the batch.
func TestGenericSigned(t *testing.T) {
	rc := newReceiver(t, nil)
	h := hook("signed", "generic", rc.URL+"/hook")
	h.Secret = []byte("whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	d, _ := startDispatcher(t, t.TempDir(), h)
	events := batchOf(3, "sig")
	if err := d.Send(events); err != nil {
		t.Fatal(err)
	}
	reqs := rc.waitRequests(t, 1)
	waitEmpty(t, d)
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	verifySignature(t, []byte("0123456789abcdef0123456789abcdef"), reqs[0])
	if diff := cmp.Diff(ids(events), decodeEventIDs(t, reqs[0].Body)); diff != "" {
		t.Errorf("event ids (-want +got):\n%s", diff)
	}
	if got, want := reqs[0].Header.Get("webhook-id"), deliveryID(events); got != want {
		t.Errorf("webhook-id = %q, want %q", got, want)
	}
	if ct := reqs[0].Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

// TestRetries covers the status codes: each case's receiver answers the
// given statuses in turn, then 200.
func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int
		attempts  int  // requests the receiver must see
		delivered bool // false: the batch was dropped as a permanent failure
		logged    string
	}{
		{name: "503 three times", statuses: []int{503, 503, 503}, attempts: 4, delivered: true, logged: "HTTP 503"},
		{name: "500 then ok", statuses: []int{500}, attempts: 2, delivered: true, logged: "HTTP 500"},
		{name: "408 is retried", statuses: []int{408}, attempts: 2, delivered: true, logged: "HTTP 408"},
		{name: "400 once only", statuses: []int{400}, attempts: 1, logged: "HTTP 400"},
		{name: "404 once only", statuses: []int{404}, attempts: 1, logged: "HTTP 404"},
		{name: "201 is success", statuses: []int{201}, attempts: 1, delivered: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= len(tt.statuses) {
					w.WriteHeader(tt.statuses[n-1])
					fmt.Fprint(w, "receiver says no")
				}
			})
			d, log := startDispatcher(t, t.TempDir(), hook("r", "generic", rc.URL))
			events := batchOf(2, "retry")
			if err := d.Send(events); err != nil {
				t.Fatal(err)
			}
			rc.waitRequests(t, tt.attempts)
			waitEmpty(t, d)
			// Give a wrong extra attempt the chance to show up.
			time.Sleep(300 * time.Millisecond)
			reqs := rc.requests()
			if len(reqs) != tt.attempts {
				t.Fatalf("receiver saw %d requests, want %d", len(reqs), tt.attempts)
			}
			for i, r := range reqs {
				if diff := cmp.Diff(ids(events), decodeEventIDs(t, r.Body)); diff != "" {
					t.Errorf("attempt %d event ids (-want +got):\n%s", i+1, diff)
				}
				if got := r.Header.Get("webhook-id"); got != reqs[0].Header.Get("webhook-id") {
					t.Errorf("attempt %d webhook-id %q differs from the first %q", i+1, got, reqs[0].Header.Get("webhook-id"))
				}
			}
			out := log.String()
			if tt.logged != "" && !strings.Contains(out, tt.logged) {
				t.Errorf("log lacks %q:\n%s", tt.logged, out)
			}
			if !tt.delivered && !(strings.Contains(out, "dropped 2 events after a permanent failure") && strings.Contains(out, `"sink":"r"`)) {
				t.Errorf("permanent failure not reported with the sink name:\n%s", out)
			}
		})
	}
}

// TestRetryAfter: a 429 with Retry-After makes the loop wait that long,
// whatever the (here tiny) backoff says.
func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name  string
		value func() string
		min   time.Duration
	}{
		{name: "seconds", value: func() string { return "2" }, min: 1900 * time.Millisecond},
		{name: "http date", value: func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, min: 1 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.value())
					w.WriteHeader(http.StatusTooManyRequests)
				}
			})
			d, _ := startDispatcher(t, t.TempDir(), hook("ra", "generic", rc.URL))
			if err := d.Send(batchOf(1, "ra")); err != nil {
				t.Fatal(err)
			}
			reqs := rc.waitRequests(t, 2)
			// A lower bound only: waiting less than asked is the bug.
			if gap := reqs[1].At.Sub(reqs[0].At); gap < tt.min {
				t.Errorf("retried after %v, want at least %v", gap, tt.min)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{name: "empty", in: "", want: 0},
		{name: "seconds", in: "7", want: 7 * time.Second},
		{name: "negative", in: "-1", want: 0},
		{name: "huge", in: "99999999999", want: maxRetryAfter},
		{name: "date", in: "Fri, 02 Jan 2026 03:04:35 GMT", want: 30 * time.Second},
		{name: "past date", in: "Fri, 02 Jan 2026 03:00:00 GMT", want: 0},
		{name: "garbage", in: "soon", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRetryAfter(tt.in, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestHang: a receiver that hangs past the sink's timeout is a retried
// failure; the batch arrives on a later attempt.
func TestHang(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}
	})
	defer close(release)
	h := hook("hang", "generic", rc.URL)
	h.Timeout = 300 * time.Millisecond
	d, log := startDispatcher(t, t.TempDir(), h)
	if err := d.Send(batchOf(1, "hang")); err != nil {
		t.Fatal(err)
	}
	rc.waitRequests(t, 2)
	waitEmpty(t, d)
	if out := log.String(); !strings.Contains(out, "Client.Timeout") && !strings.Contains(out, "timeout") {
		t.Errorf("log does not mention the timeout:\n%s", out)
	}
}

// TestRedirectNotFollowed: a 3xx is a failure and the redirect target never
// gets a request.
func TestRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, nil)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/stolen", http.StatusTemporaryRedirect)
	})
	d, log := startDispatcher(t, t.TempDir(), hook("redir", "slack", rc.URL))
	if err := d.Send(batchOf(1, "redir")); err != nil {
		t.Fatal(err)
	}
	rc.waitRequests(t, 1)
	waitEmpty(t, d)
	time.Sleep(300 * time.Millisecond)
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target got %d requests, want 0", n)
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	if out := log.String(); !strings.Contains(out, "HTTP 307") || !strings.Contains(out, "redirects are not followed") {
		t.Errorf("log lacks the redirect failure:\n%s", out)
	}
}

// TestOrderPerSink: batches arrive in the order they were sent, even across
// failures.
func TestOrderPerSink(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n%3 == 1 {
			w.WriteHeader(http.StatusBadGateway)
		}
	})
	d, _ := startDispatcher(t, t.TempDir(), hook("order", "generic", rc.URL))
	var want []string
	for i := 0; i < 8; i++ {
		b := batchOf(1, fmt.Sprintf("b%d", i))
		want = append(want, b[0].ID)
		if err := d.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	waitEmpty(t, d)
	var got []string
	seen := map[string]bool{}
	for _, r := range rc.requests() {
		// Batches pending together are merged into one request.
		for _, id := range decodeEventIDs(t, r.Body) {
			if !seen[id] {
				seen[id] = true
				got = append(got, id)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delivery order (-want +got):\n%s", diff)
	}
}

// TestRouting: info events never reach a webhook; filters apply per sink.
func TestRouting(t *testing.T) {
	all := newReceiver(t, nil)
	closedOnly := newReceiver(t, nil)
	h2 := hook("closed-only", "generic", closedOnly.URL)
	h2.Events = []string{"closed"}
	d, _ := startDispatcher(t, t.TempDir(), hook("all", "generic", all.URL), h2)
	info := NewEvent(TypeOpened, allowed(22), "h", testTime)
	opened := NewEvent(TypeOpened, unexpected(1, "x"), "h", testTime)
	closed := NewEvent(TypeClosed, unexpected(1, "x"), "h", testTime)
	if err := d.Send([]Event{info, opened, closed}); err != nil {
		t.Fatal(err)
	}
	waitEmpty(t, d)
	got := map[string][]string{}
	for name, rc := range map[string]*receiver{"all": all, "closed-only": closedOnly} {
		for _, r := range rc.requests() {
			got[name] = append(got[name], decodeEventIDs(t, r.Body)...)
		}
	}
	want := map[string][]string{"all": {opened.ID, closed.ID}, "closed-only": {closed.ID}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routing (-want +got):\n%s", diff)
	}
}

func TestNewWebhookChecks(t *testing.T) {
	tests := []struct {
		name    string
		hook    policy.Webhook
		wantErr string
	}{
		{name: "https ok", hook: policy.Webhook{Name: "a", Format: "slack", URL: "https://hooks.example/T/B/secret"}},
		{name: "http to loopback ok", hook: policy.Webhook{Name: "a", Format: "slack", URL: "http://127.0.0.1:9/x"}},
		{name: "http to ::1 ok", hook: policy.Webhook{Name: "a", Format: "slack", URL: "http://[::1]:9/x"}},
		{name: "http to localhost ok", hook: policy.Webhook{Name: "a", Format: "slack", URL: "http://localhost:9/x"}},
		{name: "plain http refused", hook: policy.Webhook{Name: "a", Format: "slack", URL: "http://hooks.example/secret"},
			wantErr: "webhook a: plain http is only allowed to loopback; use https or set insecure: true"},
		{name: "plain http with insecure", hook: policy.Webhook{Name: "a", Format: "slack", URL: "http://hooks.example/secret", Insecure: true}},
		{name: "other scheme", hook: policy.Webhook{Name: "a", Format: "slack", URL: "ftp://hooks.example/secret"},
			wantErr: "webhook a: url scheme must be https or http"},
		{name: "relative", hook: policy.Webhook{Name: "a", Format: "slack", URL: "/secret"},
			wantErr: "webhook a: url is not an absolute http(s) URL"},
		{name: "unknown format", hook: policy.Webhook{Name: "a", Format: "irc", URL: "https://h.example/"},
			wantErr: `webhook a: unknown format "irc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newWebhook(tt.hook, newTransport())
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTLSVerified: a loopback https receiver with a certificate we do not
// trust is refused.
func TestTLSVerified(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	d, err := New(policy.Notify{Webhooks: []policy.Webhook{hook("tls", "generic", srv.URL+"/secret-path")}}, Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rs := d.Test(context.Background(), NewEvent(TypeTest, policy.Decision{}, "h", time.Now()))
	if len(rs) != 1 || rs[0].Err == nil || !strings.Contains(rs[0].Err.Error(), "certificate") {
		t.Fatalf("results %v, want a certificate error", rs)
	}
	if strings.Contains(rs[0].Err.Error(), "secret-path") {
		t.Errorf("error holds the URL: %v", rs[0].Err)
	}
}

// TestRedaction drives every failure path with a URL and a secret that must
// never appear in a log line, a report or an error.
func TestRedaction(t *testing.T) {
	const token, key, secret, pass = "TOKENtoken1234", "KEYkey5678", "SIGNsecret9012", "PASSpw3456"
	secrets := []string{token, key, secret, pass}
	// A hostile receiver echoes back what it got, URL included.
	echo := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader([]int{503, 400}[min(n-1, 1)])
		fmt.Fprintf(w, "bad request to %s %s sig=%s", r.URL.String(), r.URL.RawQuery, r.Header.Get("webhook-signature"))
	})
	redir := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:1/"+token, http.StatusFound)
	})
	hang := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()

	withSecrets := func(name, base string) policy.Webhook {
		u := strings.Replace(base, "http://", "http://user:"+pass+"@", 1) + "/hooks/" + token + "?key=" + key
		h := hook(name, "generic", u)
		h.Secret = []byte(secret)
		h.Timeout = 300 * time.Millisecond
		return h
	}
	hooks := []policy.Webhook{
		withSecrets("echo", echo.URL),
		withSecrets("redir", redir.URL),
		withSecrets("hang", hang.URL),
		withSecrets("down", "http://"+down),
	}
	d, log := startDispatcher(t, t.TempDir(), hooks...)
	var texts []string
	for _, r := range d.Test(context.Background(), NewEvent(TypeTest, policy.Decision{}, "h", time.Now())) {
		if r.Err == nil {
			t.Errorf("%s: test delivery succeeded, want an error", r.Sink)
			continue
		}
		texts = append(texts, r.Sink+": "+r.Err.Error())
	}
	if err := d.Send(batchOf(1, "redact")); err != nil {
		texts = append(texts, err.Error())
	}
	// Wait for the permanent failures and a few retries of the others.
	deadline := time.Now().Add(waitTimeout)
	for !(strings.Contains(log.String(), "webhook echo: dropped") && strings.Contains(log.String(), "webhook redir: dropped") &&
		strings.Count(log.String(), "webhook hang:") >= 2 && strings.Count(log.String(), "webhook down:") >= 2) {
		if time.Now().After(deadline) {
			t.Fatalf("expected failures not all logged:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A sink whose URL does not parse must not echo it either.
	bad := policy.Webhook{Name: "bad", Format: "generic", URL: "http://h.example/" + token + "\x7f"}
	if _, err := New(policy.Notify{Webhooks: []policy.Webhook{bad}}, Options{StateDir: t.TempDir()}); err != nil {
		texts = append(texts, err.Error())
	}
	all := strings.Join(texts, "\n") + "\n" + log.String()
	if testing.Verbose() {
		t.Logf("errors and log:\n%s", all)
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("%q leaked:\n%s", s, all)
		}
	}
	for _, want := range []string{"echo: HTTP 503", "redir: HTTP 302", "down: ", "connection refused", "hang: "} {
		if !strings.Contains(all, want) {
			t.Errorf("output lacks %q:\n%s", want, all)
		}
	}
}

// TestWebhookAcceptsWhatValidationAccepts: a URL that passes the config's
// validation starts a sink, and one it refuses is refused by the sink too,
// so a config that validates never stops the daemon.
func TestWebhookAcceptsWhatValidationAccepts(t *testing.T) {
	for _, u := range []string{
		"http://localhost:9093/", "http://LOCALHOST:9093/", "http://LocalHost/x", "http://127.0.0.1:9/",
		"http://127.1.2.3/", "http://[::1]:9/", "http://[::ffff:127.0.0.1]:9/", "http://[::1%25lo]:9/",
		"http://localhost.example.com/", "http://x.localhost/", "http://192.0.2.1/", "http://[::ffff:192.0.2.1]/",
		"https://hooks.example/T/B/secret", "https://LOCALHOST/",
	} {
		t.Run(u, func(t *testing.T) {
			yaml := fmt.Sprintf("version: 1\nnotify:\n  webhooks:\n    - name: a\n      format: slack\n      url: %q\n", u)
			cfg, cfgErr := policy.Parse("p.yaml", []byte(yaml))
			var sinkErr error
			if cfgErr == nil {
				_, sinkErr = newWebhook(cfg.Notify.Webhooks[0], newTransport())
			} else {
				_, sinkErr = newWebhook(policy.Webhook{Name: "a", Format: "slack", URL: u}, newTransport())
			}
			if (cfgErr == nil) != (sinkErr == nil) {
				t.Errorf("validation: %v; sink: %v", cfgErr, sinkErr)
			}
		})
	}
}

// stormEvents returns 500 unexpected listeners: from one holder on
// consecutive ports, or from several holders (processes, namespaces,
// protocols) on random ports.
func stormEvents(mixed bool) []Event {
	rng := rand.New(rand.NewPCG(1, 2))
	ports := rng.Perm(60000)
	var events []Event
	for i := range 500 {
		port := uint16(40000 + i)
		d := unexpected(port, "python3")
		d.Processes[0].Exe, d.Processes[0].PID = "/usr/bin/python3.11", 4242
		if mixed {
			port = uint16(1024 + ports[i])
			d = unexpected(port, "x")
			h := i % 7
			d.Processes[0].PID = 1000 + h
			d.Processes[0].Exe = fmt.Sprintf("/opt/app%d/bin/server", h)
			if h == 3 {
				d.Protocol = watcher.UDP
			}
			if h == 5 {
				d.Netns = "container:web"
			}
		}
		events = append(events, fixedEvent(i, TypeOpened, d))
	}
	return events
}

// chatLimits gives, per chat format, the text of a payload that the
// service bounds and its bound (characters; bytes for ntfy and Teams).
var chatLimits = map[string]struct {
	text func(m map[string]any) string
	max  int
}{
	"slack": {max: 3000, text: func(m map[string]any) string {
		return m["blocks"].([]any)[1].(map[string]any)["text"].(map[string]any)["text"].(string)
	}},
	"mattermost": {max: 16383, text: func(m map[string]any) string { return m["text"].(string) }},
	"discord":    {max: 2000, text: func(m map[string]any) string { return m["content"].(string) }},
	"googlechat": {max: 4096, text: func(m map[string]any) string { return m["text"].(string) }},
	"ntfy":       {max: 4096, text: func(m map[string]any) string { return m["message"].(string) }},
	"teams": {max: 28000, text: func(m map[string]any) string {
		b, _ := json.Marshal(m)
		return string(b)
	}},
}

// portList finds the ports named in chat text: ":22", ":40000-40499",
// ":22,80,443-445".
var portList = regexp.MustCompile(`:(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)`)

func namedPorts(t *testing.T, text string) map[int]bool {
	t.Helper()
	got := map[int]bool{}
	for _, m := range portList.FindAllStringSubmatch(text, -1) {
		for _, run := range strings.Split(m[1], ",") {
			lo, hi, _ := strings.Cut(run, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if hi != "" {
				b, _ = strconv.Atoi(hi)
			}
			for p := a; p <= b; p++ {
				got[p] = true
			}
		}
	}
	return got
}

// TestStormMessages: a storm of 500 unexpected listeners reaches every chat
// receiver (on loopback) naming every port, in at most 10 messages, each
// within the service's limit.
func TestStormMessages(t *testing.T) {
	for _, mixed := range []bool{false, true} {
		events := stormEvents(mixed)
		want := map[int]bool{}
		for _, ev := range events {
			want[int(ev.Listener.Port)] = true
		}
		for format, lim := range chatLimits {
			t.Run(fmt.Sprintf("%s/mixed=%v", format, mixed), func(t *testing.T) {
				rc := newReceiver(t, nil)
				w, err := newWebhook(hook("storm", format, rc.URL+"/alerts"), newTransport())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Notify(t.Context(), events); err != nil {
					t.Fatal(err)
				}
				reqs := rc.requests()
				if len(reqs) == 0 || len(reqs) > 10 {
					t.Fatalf("%d messages, want 1 to 10", len(reqs))
				}
				got := map[int]bool{}
				for i, r := range reqs {
					var m map[string]any
					if err := json.Unmarshal(r.Body, &m); err != nil {
						t.Fatal(err)
					}
					text := lim.text(m)
					n := utf8.RuneCountInString(text)
					if format == "ntfy" || format == "teams" {
						n = len(text)
					}
					if n > lim.max {
						t.Errorf("message %d: %d, want <= %d", i, n, lim.max)
					}
					if strings.Contains(text, " more") {
						t.Errorf("message %d drops events: %q", i, truncate(text, 300))
					}
					maps.Copy(got, namedPorts(t, text))
				}
				for p := range want {
					if !got[p] {
						t.Errorf("port %d not named in any of %d messages", p, len(reqs))
					}
				}
				t.Logf("%d messages", len(reqs))
			})
		}
	}
}

// TestStormRetryPostsOnce: when one message of a split delivery fails, the
// retry posts only the messages not yet accepted, so no listener is
// announced twice.
func TestStormRetryPostsOnce(t *testing.T) {
	events := stormEvents(true)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	w, err := newWebhook(hook("storm", "slack", rc.URL), newTransport())
	if err != nil {
		t.Fatal(err)
	}
	retry, err := w.Notify(t.Context(), events)
	if err == nil || !retry {
		t.Fatalf("first delivery: retry %v, err %v; want a retryable error", retry, err)
	}
	if _, err := w.Notify(t.Context(), events); err != nil {
		t.Fatalf("retry: %v", err)
	}
	reqs := rc.requests()
	if len(reqs) < 3 {
		t.Fatalf("%d requests, want the delivery split in 2 or more and one retried", len(reqs))
	}
	seen := map[int]int{}
	for i, r := range reqs {
		if i == 1 {
			continue // refused
		}
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatal(err)
		}
		for p := range namedPorts(t, chatLimits["slack"].text(m)) {
			seen[p]++
		}
	}
	for _, ev := range events {
		if n := seen[int(ev.Listener.Port)]; n != 1 {
			t.Errorf("port %d named in %d accepted messages, want 1", ev.Listener.Port, n)
		}
	}
	// Everything was posted: a third delivery of the same events sends nothing.
	if _, err := w.Notify(t.Context(), events); err != nil || len(rc.requests()) != len(reqs) {
		t.Errorf("redelivery: %v, %d new requests; want none", err, len(rc.requests())-len(reqs))
	}
}
