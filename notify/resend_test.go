package notify

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestSpoolResend: a spool holds at most one pending re-send; a new one
// replaces it, after every other batch, and survives a restart as such.
func TestSpoolResend(t *testing.T) {
	dir := t.TempDir()
	s := mustOpenSpool(t, dir, 100)
	steps := []struct {
		resend bool
		ids    []string
	}{
		{false, []string{"opened-a"}},
		{true, []string{"a", "b"}},
		{true, []string{"a", "b"}},
		{false, []string{"closed-a"}},
		{true, []string{"b"}},
		{true, []string{"b"}},
	}
	for _, st := range steps {
		var err error
		if st.resend {
			err = s.resend(evs(st.ids...))
		} else {
			err = s.append(evs(st.ids...))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	s2 := mustOpenSpool(t, dir, 100)
	want := [][]string{{"opened-a"}, {"closed-a"}, {"b"}}
	if diff := cmp.Diff(want, drainSpool(t, s2)); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	// An empty re-send (nothing fires any more) takes the pending one away.
	if err := s.resend(nil); err != nil {
		t.Fatal(err)
	}
	if _, n := s.len(); n != 2 {
		t.Errorf("%d events pending after an empty re-send, want 2", n)
	}
}

// amPayload is what portwatchd posts to Alertmanager.
type amPayload []struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

// TestResendDownSink: while Alertmanager is down, re-sends do not pile up:
// the spool holds one re-send per firing alert, no request carries an
// alert twice, and none carries a re-send of an alert after its resolve.
func TestResendDownSink(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	h := policy.Webhook{Name: "am", Format: "alertmanager", URL: rc.URL, Timeout: 5 * time.Second, ResendInterval: 5 * time.Millisecond}
	d, _ := startDispatcher(t, t.TempDir(), h)
	var firing []Event
	for _, port := range []uint16{5001, 5002, 5003} {
		firing = append(firing, NewEvent(TypeOpened, unexpected(port, "x"), "web-1", time.Now()))
	}
	d.SetFiring(firing)
	rc.waitRequests(t, 6)
	if diff := cmp.Diff(map[string]int{"am": 3}, d.Pending()); diff != "" {
		t.Errorf("pending while down (-want +got):\n%s", diff)
	}

	closed := NewEvent(TypeClosed, firing[0].Listener, "web-1", time.Now())
	// The daemon calls SetFiring after Send: re-sends made in between must
	// already leave the resolved alert out.
	if err := d.Send([]Event{closed}); err != nil {
		t.Fatal(err)
	}
	n := len(rc.requests())
	reqs := rc.waitRequests(t, n+6)
	if diff := cmp.Diff(map[string]int{"am": 3}, d.Pending()); diff != "" {
		t.Errorf("pending after a resolve (-want +got):\n%s", diff)
	}
	for i, r := range reqs {
		var p amPayload
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		seen := map[string]int{}
		resolved := map[string]bool{}
		for _, a := range p {
			port := a.Labels["port"]
			if !a.StartsAt.IsZero() {
				seen[port]++
				if resolved[port] {
					t.Errorf("request %d: port %s fires again after its resolve", i, port)
				}
			} else {
				resolved[port] = true
			}
		}
		for port, c := range seen {
			if c > 1 {
				t.Errorf("request %d carries the alert of port %s %d times", i, port, c)
			}
		}
	}
}

// TestAlertmanagerTimes: a firing alert starts when it was raised and ends
// 4 resend intervals after the request, however long it waited in the
// spool; a resolve ends at the time the listener closed.
func TestAlertmanagerTimes(t *testing.T) {
	raised := testTime
	sent := testTime.Add(time.Hour)
	tests := []struct {
		name       string
		ev         Event
		interval   time.Duration
		wantStarts time.Time
		wantEnds   time.Time
	}{
		{name: "opened", ev: NewEvent(TypeOpened, unexpected(4444, "x"), "web-1", raised), interval: 10 * time.Second,
			wantStarts: raised, wantEnds: sent.Add(40 * time.Second)},
		{name: "opened, default interval", ev: NewEvent(TypeOpened, unexpected(4444, "x"), "web-1", raised),
			wantStarts: raised, wantEnds: sent.Add(4 * time.Minute)},
		{name: "changed", ev: NewEvent(TypeChanged, unexpected(4444, "x"), "web-1", raised), interval: time.Minute,
			wantStarts: raised, wantEnds: sent.Add(4 * time.Minute)},
		{name: "closed", ev: NewEvent(TypeClosed, unexpected(4444, "x"), "web-1", raised.Add(time.Minute)), interval: time.Minute,
			wantEnds: raised.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := policy.Webhook{Name: "am", Format: "alertmanager", URL: "http://127.0.0.1:9093", ResendInterval: tt.interval}
			body, err := formats["alertmanager"].render([]Event{tt.ev}, h, sent)
			if err != nil {
				t.Fatal(err)
			}
			var p amPayload
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			if len(p) != 1 {
				t.Fatalf("%d alerts, want 1: %s", len(p), body)
			}
			got := []string{p[0].StartsAt.String(), p[0].EndsAt.String()}
			want := []string{tt.wantStarts.String(), tt.wantEnds.String()}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("startsAt, endsAt (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResendReload: the first SetFiring re-sends at once (Alertmanager may
// have lost the alerts while portwatchd was down), and a reload that
// shortens resend_interval applies without waiting out the old one.
func TestResendReload(t *testing.T) {
	rc := newReceiver(t, nil)
	h := policy.Webhook{Name: "am", Format: "alertmanager", URL: rc.URL, Timeout: 5 * time.Second, ResendInterval: time.Hour}
	d, _ := startDispatcher(t, t.TempDir(), h)
	d.SetFiring([]Event{NewEvent(TypeOpened, unexpected(5004, "x"), "web-1", time.Now())})
	rc.waitRequests(t, 1)
	h.ResendInterval = 5 * time.Millisecond
	if err := d.Reload(policy.Notify{Webhooks: []policy.Webhook{h}}); err != nil {
		t.Fatal(err)
	}
	for i, r := range rc.waitRequests(t, 6) {
		var p amPayload
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if len(p) != 1 || p[0].Labels["port"] != "5004" {
			t.Errorf("request %d: %s, want the alert of port 5004", i, r.Body)
		}
	}
}

// TestFiringSet: SetFiring replaces the set of alerts to re-send; Send
// takes out what its events resolve (a closed listener, the previous owner
// of a changed one) before the daemon's next SetFiring.
func TestFiringSet(t *testing.T) {
	d, err := New(policy.Notify{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := unexpected(6001, "x"), unexpected(6002, "x"), unexpected(6003, "x")
	c2 := c
	c2.Processes = []watcher.Process{{PID: 900, Comm: "y", Exe: "/tmp/y"}}
	changed := NewEvent(TypeChanged, c2, "web-1", testTime)
	changed.Previous = &c
	ports := func() []string {
		d.firing.mu.Lock()
		defer d.firing.mu.Unlock()
		var out []string
		for _, ev := range d.firing.alerts {
			if ev.Previous != nil {
				t.Errorf("port %d re-sends its previous owner", ev.Listener.Port)
			}
			out = append(out, fmt.Sprintf("%d %s", ev.Listener.Port, ev.Listener.Processes[0].Exe))
		}
		slices.Sort(out)
		return out
	}
	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"set", func() {
			d.SetFiring([]Event{
				NewEvent(TypeOpened, a, "web-1", testTime), NewEvent(TypeOpened, b, "web-1", testTime),
				NewEvent(TypeOpened, c, "web-1", testTime), NewEvent(TypeTest, policy.Decision{}, "web-1", testTime),
			})
		}, []string{"6001 /tmp/x", "6002 /tmp/x", "6003 /tmp/x"}},
		{"closed", func() { _ = d.Send([]Event{NewEvent(TypeClosed, a, "web-1", testTime)}) }, []string{"6002 /tmp/x", "6003 /tmp/x"}},
		{"changed owner", func() { _ = d.Send([]Event{changed}) }, []string{"6002 /tmp/x"}},
		{"set again", func() { d.SetFiring([]Event{NewEvent(TypeOpened, b, "web-1", testTime), changed}) }, []string{"6002 /tmp/x", "6003 /tmp/y"}},
		{"none", func() { d.SetFiring(nil) }, nil},
	}
	for _, st := range steps {
		st.do()
		if diff := cmp.Diff(st.want, ports()); diff != "" {
			t.Errorf("after %s: firing (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestAlertmanagerTransientClosed: the resolve of a listener that lived a
// few milliseconds is not sent to Alertmanager. Alertmanager notifies only
// alerts still firing at group_wait; resolved at once, the alert would never
// reach anyone. It ends by itself, at the endsAt its opened event set.
func TestAlertmanagerTransientClosed(t *testing.T) {
	raised := testTime
	h := policy.Webhook{Name: "am", Format: "alertmanager", URL: "http://127.0.0.1:9093", ResendInterval: time.Minute}
	tests := []struct {
		name string
		evs  []Event
		want []string // the alerts' event annotation
	}{
		{name: "transient closed", evs: []Event{
			NewEvent(TypeClosed, unexpected(4444, "x"), "web-1", raised, WithTransient(Transient{Lifetime: 12 * time.Millisecond})),
		}, want: []string{}},
		{name: "opened then transient closed", evs: []Event{
			NewEvent(TypeOpened, unexpected(4444, "x"), "web-1", raised),
			NewEvent(TypeClosed, unexpected(4444, "x"), "web-1", raised, WithTransient(Transient{Lifetime: 12 * time.Millisecond})),
		}, want: []string{"opened"}},
		{name: "closed", evs: []Event{
			NewEvent(TypeClosed, unexpected(4444, "x"), "web-1", raised),
		}, want: []string{"closed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := formats["alertmanager"].render(tt.evs, h, raised)
			if err != nil {
				t.Fatal(err)
			}
			var p amPayload
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, a := range p {
				got = append(got, a.Annotations["event"])
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("alerts (-want +got):\n%s", diff)
			}
		})
	}
}
