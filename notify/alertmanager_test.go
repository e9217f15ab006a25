package notify

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/proctest"
	"github.com/portwatchd/portwatchd/policy"
)

const alertmanagerBin = "/usr/bin/prometheus-alertmanager"

// startAlertmanager runs Debian's Alertmanager on a free loopback port with a
// temporary config and data dir, clustering off, and returns its base URL.
func startAlertmanager(t *testing.T) string {
	t.Helper()
	return runAlertmanager(t).base
}

// alertmanager is a running Debian Alertmanager, stopped when the test ends.
type alertmanager struct {
	t      *testing.T
	base   string
	args   []string
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan error
}

// runAlertmanager runs Alertmanager with a route to nowhere.
func runAlertmanager(t *testing.T) *alertmanager {
	t.Helper()
	return runAlertmanagerWith(t, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
}

// runAlertmanagerWith runs Alertmanager with the configuration config.
func runAlertmanagerWith(t *testing.T, config string) *alertmanager {
	t.Helper()
	if _, err := os.Stat(alertmanagerBin); err != nil {
		t.Skipf("%s not installed (apt-get install prometheus-alertmanager; scripts/apt-packages.txt lists it): %v", alertmanagerBin, err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(conf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	am := &alertmanager{
		t:    t,
		base: "http://" + addr,
		args: []string{"--config.file=" + conf, "--storage.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--cluster.listen-address=", "--log.level=debug"},
		out: &bytes.Buffer{},
	}
	am.start()
	t.Cleanup(func() {
		am.stop()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", am.out.String())
		}
	})
	return am
}

// start starts Alertmanager and waits until it is ready.
func (am *alertmanager) start() {
	t := am.t
	t.Helper()
	am.cmd = exec.Command(alertmanagerBin, am.args...)
	am.cmd.Stdout, am.cmd.Stderr = am.out, am.out
	am.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := am.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	am.exited = exited
	go func(cmd *exec.Cmd) { exited <- cmd.Wait() }(am.cmd)
	deadline := time.Now().Add(waitTimeout)
	for {
		select {
		case err := <-exited:
			t.Fatalf("alertmanager exited: %v\n%s", err, am.out.String())
		default:
		}
		resp, err := http.Get(am.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager not ready after %v\n%s", waitTimeout, am.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops Alertmanager (the process this test started), which forgets
// its alerts: it keeps them in memory only.
func (am *alertmanager) stop() {
	if am.exited == nil {
		return
	}
	proctest.Terminate(am.cmd.Process, am.exited, 10*time.Second)
	am.exited = nil
}

type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
	StartsAt time.Time `json:"startsAt"`
	EndsAt   time.Time `json:"endsAt"`
}

// getAlerts gets portwatchd's alerts from Alertmanager, those matching the
// label matchers filters too ("port=\"4444\"").
func getAlerts(t *testing.T, base string, filters ...string) []amAlert {
	t.Helper()
	q := url.Values{"filter": append([]string{"alertname=\"" + AlertName + "\""}, filters...)}
	resp, err := http.Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var as []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		t.Fatal(err)
	}
	return as
}

// TestAlertmanager: an opened event fires an alert with our labels in a real
// Alertmanager, its severity label that of the listener and its flags in
// annotations; the closed event, a notice, resolves it all the same.
func TestAlertmanager(t *testing.T) {
	base := startAlertmanager(t)
	d, _ := startDispatcher(t, t.TempDir(), policy.Webhook{Name: "am", Format: "alertmanager", URL: base, Timeout: 10 * time.Second})
	tests := []struct {
		name            string
		dec             policy.Decision
		wantLabels      map[string]string
		wantAnnotations map[string]string // those about flags
	}{
		{name: "warning", dec: unexpected(4444, hostile), wantLabels: map[string]string{
			"alertname": AlertName, "instance": "web-1", "protocol": "tcp", "address": "0.0.0.0", "port": "4444",
			"netns": "host", "exe": "/tmp/x", "rule": "web", "severity": "warning",
		}, wantAnnotations: map[string]string{}},
		{name: "critical", dec: critical(4445), wantLabels: map[string]string{
			"alertname": AlertName, "instance": "web-1", "protocol": "tcp", "address": "0.0.0.0", "port": "4445",
			"netns": "host", "exe": "/tmp/x", "rule": "web", "severity": "critical",
		}, wantAnnotations: map[string]string{
			"flags": "exe_gone,exe_in_writable_dir,session_launched", "risk_flags": "exe_gone,exe_in_writable_dir",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			filter := "port=\"" + tt.wantLabels["port"] + "\""
			opened := NewEvent(TypeOpened, tt.dec, "web-1", time.Now().Add(-time.Second).Truncate(time.Millisecond))
			if err := d.Send([]Event{opened}); err != nil {
				t.Fatal(err)
			}
			waitEmpty(t, d)
			deadline := time.Now().Add(waitTimeout)
			var as []amAlert
			for {
				as = getAlerts(t, base, filter)
				if len(as) == 1 && as[0].Status.State == "active" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no active alert after %v: %+v", waitTimeout, as)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if diff := cmp.Diff(tt.wantLabels, as[0].Labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			got := map[string]string{}
			for _, k := range []string{"flags", "risk_flags"} {
				if v, ok := as[0].Annotations[k]; ok {
					got[k] = v
				}
			}
			if diff := cmp.Diff(tt.wantAnnotations, got); diff != "" {
				t.Errorf("flag annotations (-want +got):\n%s", diff)
			}
			if !as[0].StartsAt.Equal(opened.Time) {
				t.Errorf("startsAt %v, want the event time %v", as[0].StartsAt, opened.Time)
			}

			closed := NewEvent(TypeClosed, tt.dec, "web-1", time.Now())
			if err := d.Send([]Event{closed}); err != nil {
				t.Fatal(err)
			}
			waitEmpty(t, d)
			deadline = time.Now().Add(waitTimeout)
			for {
				as = getAlerts(t, base, filter)
				// Alertmanager's API leaves resolved alerts out, or shows
				// them with an end in the past.
				if len(as) == 0 || (len(as) == 1 && !as[0].EndsAt.After(time.Now())) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("alert not resolved after %v: %+v", waitTimeout, as)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
