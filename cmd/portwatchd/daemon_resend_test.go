package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// amPost is one alert of an Alertmanager request, as the receiver saw it.
type amPost struct {
	Labels   map[string]string `json:"labels"`
	StartsAt time.Time         `json:"startsAt"`
	EndsAt   time.Time         `json:"endsAt"`
	received time.Time
}

// amReceiver is a loopback stand-in for Alertmanager's /api/v2/alerts that
// keeps every alert posted, in order. (The notify tests run Debian's real
// Alertmanager; here what matters is what the daemon sends, and when.)
type amReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	posts []amPost
}

func newAMReceiver(t *testing.T) *amReceiver {
	r := &amReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		var alerts []amPost
		if req.URL.Path != "/api/v2/alerts" || json.NewDecoder(req.Body).Decode(&alerts) != nil {
			http.Error(rw, "bad request", http.StatusBadRequest)
			return
		}
		now := time.Now()
		r.mu.Lock()
		for _, a := range alerts {
			a.received = now
			r.posts = append(r.posts, a)
		}
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// forPort returns the alerts posted for the host's port.
func (r *amReceiver) forPort(port int) []amPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []amPost
	for _, a := range r.posts {
		if a.Labels["port"] == strconv.Itoa(port) && a.Labels["netns"] == "host" {
			out = append(out, a)
		}
	}
	return out
}

// wait waits until ok holds for the alerts posted for port.
func (r *amReceiver) wait(t *testing.T, port int, within time.Duration, what string, ok func([]amPost) bool) []amPost {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ps := r.forPort(port)
		if ok(ps) {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager receiver: %s not seen after %v; alerts for port %d: %+v", what, within, port, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDaemonAlertmanagerResend: the daemon re-sends every alert in force to
// Alertmanager each resend_interval, with endsAt four intervals ahead, so
// that an Alertmanager restart loses nothing and a dead host's alerts end by
// themselves; a daemon restart re-sends the alerts it kept at once; the
// resolve carries the time the listener closed.
func TestDaemonAlertmanagerResend(t *testing.T) {
	e := newDaemonE2E(t, "TestDaemonAlertmanagerResend")
	am := newAMReceiver(t)
	const resend = 10 * time.Second // the least the config accepts
	e.writeConfig(fmt.Sprintf(`version: 1
interval: 300ms
flap_window: 5s
shutdown_grace: 3s
allow:
  - name: everything-else
    port: ["1-%d", "%d-65535"]
    flags: [%s]
notify:
  journald: true
  webhooks:
    - name: am
      format: alertmanager
      url: %s
      resend_interval: %s
metrics:
  textfile: ""
`, e.base-1, e.base+50, testProgramFlags, am.srv.URL, resend))
	port := e.base
	p := e.start()
	e.waitLog(0, `msg="portwatchd started"`)
	c := startDaemonListener(t, port)
	defer c.close()

	first := am.wait(t, port, daemonWait, "the alert", func(ps []amPost) bool { return len(ps) >= 1 })[0]
	if life := first.EndsAt.Sub(first.received); life < 3*resend || life > 4*resend+time.Minute {
		t.Errorf("first send: endsAt %v is %v after it was received, want about 4 x %v", first.EndsAt, life, resend)
	}
	// The re-send: the same alert again, its endsAt pushed on.
	ps := am.wait(t, port, resend+daemonWait, "a re-send", func(ps []amPost) bool { return len(ps) >= 2 })
	if !ps[1].StartsAt.Equal(first.StartsAt) || !ps[1].EndsAt.After(first.EndsAt) {
		t.Errorf("re-send: startsAt %v endsAt %v, want startsAt %v and endsAt after %v", ps[1].StartsAt, ps[1].EndsAt, first.StartsAt, first.EndsAt)
	}

	// A restart keeps the alert, and gives it to Alertmanager again.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, daemonWait); code != 0 {
		t.Fatalf("daemon exited %d on SIGTERM", code)
	}
	n := len(am.forPort(port))
	logAt := e.logLen()
	e.start()
	e.waitLog(logAt, `msg="portwatchd started"`)
	ps = am.wait(t, port, daemonWait, "a send after the restart", func(ps []amPost) bool { return len(ps) > n })
	if !ps[n].StartsAt.Equal(first.StartsAt) {
		t.Errorf("after the restart: startsAt %v, want the alert's %v", ps[n].StartsAt, first.StartsAt)
	}

	// The resolve ends the alert when the listener closed, not flap_window
	// later when it is sent.
	n = len(am.forPort(port))
	closedAt := time.Now()
	c.close()
	ps = am.wait(t, port, daemonWait, "the resolve", func(ps []amPost) bool {
		return len(ps) > n && ps[len(ps)-1].EndsAt.Before(ps[len(ps)-1].received)
	})
	last := ps[len(ps)-1]
	if d := last.EndsAt.Sub(closedAt); d < -time.Second || d > 3*time.Second {
		t.Errorf("resolve: endsAt %v, %v from when the listener closed (%v); want the close time", last.EndsAt, d, closedAt)
	}
}
