package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// decision is a listener on 127.0.0.1:port held by exe, judged v.
func decision(netns string, port uint16, exe string, v policy.Verdict, sev policy.Severity) policy.Decision {
	return policy.Decision{
		Listener: watcher.Listener{Protocol: watcher.TCP, Family: watcher.IPv4, Address: netip.MustParseAddr("127.0.0.1"),
			Port: port, Netns: netns, Processes: []watcher.Process{{PID: 1, Exe: "/usr/lib/systemd/systemd"}, {PID: 200, Exe: exe, Unit: "x.service"}}},
		Verdict: v, Rule: "r", Severity: sev,
	}
}

func TestListenerSet(t *testing.T) {
	ok := func(port uint16) policy.Decision {
		return decision("host", port, "/usr/sbin/a", policy.Allowed, policy.SeverityInfo)
	}
	crit := decision("container:abc", 4444, "/tmp/x\xff", policy.Unexpected, policy.SeverityCritical)
	warn := decision("pid:77", 8080, "/usr/bin/python3", policy.Unexpected, policy.SeverityWarning)
	named := decision("blue", 53, "/usr/sbin/dnsmasq", policy.Ignored, policy.SeverityInfo)
	tests := []struct {
		name         string
		ds           []policy.Decision
		max          int
		exposure     func(*policy.Decision) string
		wantCounts   map[countKey]int
		wantInfoPort []string
		wantOverflow int
	}{
		{
			name: "counts by kind, info sorted, service holder not PID 1",
			ds:   []policy.Decision{ok(22), crit, warn, named, ok(22)}, max: 10,
			wantCounts: map[countKey]int{
				{"allowed", "info", "unknown", "host"}:             2,
				{"unexpected", "critical", "unknown", "container"}: 1,
				{"unexpected", "warning", "unknown", "process"}:    1,
				{"ignored", "info", "unknown", "named"}:            1,
			},
			// Two sockets with the same labels (SO_REUSEPORT) share one series.
			wantInfoPort: []string{"53", "4444", "22", "8080"},
		},
		{
			name: "cap keeps the unexpected first",
			ds:   []policy.Decision{ok(1), ok(2), warn, ok(3), crit}, max: 2,
			exposure: func(d *policy.Decision) string {
				if d.Port == 1 {
					return "public"
				}
				return "firewalled"
			},
			wantCounts: map[countKey]int{
				{"allowed", "info", "public", "host"}:                 1,
				{"allowed", "info", "firewalled", "host"}:             2,
				{"unexpected", "critical", "firewalled", "container"}: 1,
				{"unexpected", "warning", "firewalled", "process"}:    1,
			},
			wantInfoPort: []string{"4444", "8080"},
			wantOverflow: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := buildListenerSet(tt.ds, tt.max, tt.exposure)
			if diff := cmp.Diff(tt.wantCounts, s.counts); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			var ports []string
			for _, v := range s.info {
				ports = append(ports, v[3])
				if v[5] == "/usr/lib/systemd/systemd" {
					t.Errorf("info names PID 1 as the program: %q", v)
				}
			}
			if diff := cmp.Diff(tt.wantInfoPort, ports); diff != "" {
				t.Errorf("info ports (-want +got):\n%s", diff)
			}
			if s.overflow != tt.wantOverflow {
				t.Errorf("overflow %d, want %d", s.overflow, tt.wantOverflow)
			}
		})
	}
}

// gather returns the text form of m's registry, parsed.
func gather(t *testing.T, m *Metrics) map[string]*modelFamily {
	t.Helper()
	var b bytes.Buffer
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return parseText(t, b.Bytes())
}

type modelFamily struct {
	samples []map[string]string // labels of each sample, "" key holding the value
}

func parseText(t *testing.T, data []byte) map[string]*modelFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, data)
	}
	out := map[string]*modelFamily{}
	for name, f := range fams {
		mf := &modelFamily{}
		for _, m := range f.GetMetric() {
			if m.TimestampMs != nil {
				t.Errorf("%s has a timestamp: node_exporter refuses them", name)
			}
			s := map[string]string{}
			for _, l := range m.GetLabel() {
				s[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				s[""] = fmt.Sprint(m.GetGauge().GetValue())
			case m.Counter != nil:
				s[""] = fmt.Sprint(m.GetCounter().GetValue())
			}
			mf.samples = append(mf.samples, s)
		}
		out[name] = mf
	}
	return out
}

// 5,000 listeners give max_listener_series info series and the rest in the
// overflow gauge, with the unexpected ones all kept.
func TestCardinality(t *testing.T) {
	m := New(Options{MaxListenerSeries: 2000, Version: "test"})
	var ds []policy.Decision
	for i := range 5000 {
		v, sev := policy.Allowed, policy.SeverityInfo
		if i%500 == 0 {
			v, sev = policy.Unexpected, policy.SeverityWarning
		}
		ds = append(ds, decision("host", uint16(10000+i), "/usr/bin/srv", v, sev))
	}
	if !m.Snapshot(ds, time.Millisecond, time.Now()) {
		t.Fatal("first snapshot: no change reported")
	}
	fams := gather(t, m)
	info := fams["portwatch_listener_info"]
	if n := len(info.samples); n != 2000 {
		t.Errorf("%d info series, want 2000", n)
	}
	unexpected := 0
	for _, s := range info.samples {
		if s["verdict"] == "unexpected" {
			unexpected++
		}
		if _, ok := s["pid"]; ok {
			t.Fatal("a pid label")
		}
	}
	if unexpected != 10 {
		t.Errorf("%d unexpected listeners kept, want all 10", unexpected)
	}
	if got := fams["portwatch_listener_info_overflow"].samples[0][""]; got != "3000" {
		t.Errorf("overflow %s, want 3000", got)
	}
	total := 0
	for _, s := range fams["portwatch_listeners"].samples {
		var n int
		fmt.Sscan(s[""], &n)
		total += n
	}
	if total != 5000 {
		t.Errorf("portwatch_listeners sums to %d, want 5000", total)
	}
	if m.Snapshot(ds, time.Millisecond, time.Now()) {
		t.Error("the same snapshot again reported a change")
	}
}

// The textfile: written when something changed or WriteEvery passed, with
// every metric of the set, no timestamps, accepted by promtool.
func TestTextfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "portwatch.prom")
	m := New(Options{Textfile: path, Version: "1.2.3"})
	now := time.Unix(1_800_000_000, 0)
	m.Snapshot([]policy.Decision{decision("host", 22, "/usr/sbin/sshd", policy.Allowed, policy.SeverityInfo)}, 3*time.Millisecond, now)
	m.Event("listener.opened", policy.Unexpected)
	m.Transient(policy.Unexpected)
	m.Config(true, now, map[string]int{"/etc/portwatch.yaml": 3, "/etc/portwatch.d/a.yaml": 0}, 1)
	m.Notification("journald", ResultOK)
	m.Spool("ops", 4)
	m.SpoolDropped("ops", 2)
	m.EBPF(false, true, 7)
	if wrote, err := m.Write(now); err != nil || !wrote {
		t.Fatalf("first write: %v, %v", wrote, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fams := parseText(t, data)
	want := []string{"portwatch_listeners", "portwatch_listener_info", "portwatch_listener_info_overflow", "portwatch_events_total",
		"portwatch_transient_listeners_total", "portwatch_snapshot_duration_seconds", "portwatch_last_snapshot_timestamp_seconds",
		"portwatch_config_last_reload_successful", "portwatch_config_last_reload_success_timestamp_seconds", "portwatch_rules",
		"portwatch_rules_expiring_7d", "portwatch_notifications_total", "portwatch_spool_events", "portwatch_spool_dropped_total",
		"portwatch_ebpf_active", "portwatch_ebpf_dropped_events_total", "portwatch_build_info"}
	for _, n := range want {
		if fams[n] == nil {
			t.Errorf("%s missing from the textfile", n)
		}
	}
	if len(fams) != len(want) {
		t.Errorf("%d families, want %d", len(fams), len(want))
	}
	// The listener series come from their cached text: the file says what
	// the endpoint's registry says.
	if diff := cmp.Diff(gather(t, m), fams, cmp.AllowUnexported(modelFamily{})); diff != "" {
		t.Errorf("textfile differs from the registry (-registry +file):\n%s", diff)
	}
	if got := fams["portwatch_ebpf_dropped_events_total"].samples[0][""]; got != "7" {
		t.Errorf("ebpf dropped %s, want 7", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("textfile mode: %v %v (node_exporter must read it)", fi.Mode(), err)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed (apt-get install prometheus): check metrics skipped")
	}

	// Nothing changed: no write until WriteEvery has passed.
	m.Snapshot([]policy.Decision{decision("host", 22, "/usr/sbin/sshd", policy.Allowed, policy.SeverityInfo)}, time.Millisecond, now.Add(time.Second))
	m.Spool("ops", 4)
	m.EBPF(false, true, 7)
	if wrote, _ := m.Write(now.Add(time.Second)); wrote {
		t.Error("written although nothing changed")
	}
	if wrote, _ := m.Write(now.Add(WriteEvery)); !wrote {
		t.Error("not written after WriteEvery")
	}
	// Another listener: the next write has it, and not the one gone.
	m.Snapshot([]policy.Decision{decision("host", 2222, "/usr/sbin/sshd", policy.Allowed, policy.SeverityInfo)}, time.Millisecond, now.Add(WriteEvery))
	if wrote, _ := m.Write(now.Add(WriteEvery)); !wrote {
		t.Error("not written after the listeners changed")
	}
	data, _ = os.ReadFile(path)
	if !bytes.Contains(data, []byte(`port="2222"`)) || bytes.Contains(data, []byte(`port="22"`)) {
		t.Errorf("textfile after the listeners changed:\n%s", data)
	}
	// ebpf: off: both eBPF metrics go.
	m.EBPF(true, false, 0)
	if wrote, _ := m.Write(now.Add(WriteEvery + time.Second)); !wrote {
		t.Fatal("not written after ebpf went off")
	}
	data, _ = os.ReadFile(path)
	if bytes.Contains(data, []byte("portwatch_ebpf_")) {
		t.Error("eBPF metrics left with ebpf: off")
	}
	// A write that fails is reported, and tried again.
	m.SetOptions(filepath.Join(dir, "missing", "portwatch.prom"), 0)
	if _, err := m.Write(now.Add(2 * WriteEvery)); err == nil {
		t.Error("no error writing into a missing directory")
	}
}

// A symbolic link owned by root is followed (the package's link to the
// runtime directory); one owned by another user is replaced.
func TestTextfileSymlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the link followed is root's")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "run", "portwatch.prom")
	if err := os.Mkdir(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "portwatch.prom")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Textfile: link})
	if _, err := m.Write(time.Now()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi, err)
	}
	if _, err := os.Stat(target); err != nil {
		t.Fatalf("target not written: %v", err)
	}
	// Another user's link: not followed.
	if err := os.Lchown(link, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	os.Remove(target)
	m.SetOptions(link, 0)
	if _, err := m.Write(time.Now().Add(WriteEvery)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("another user's link was followed: %v %v", fi, err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target written through another user's link: %v", err)
	}
}

func TestListen(t *testing.T) {
	m := New(Options{Version: "test"})
	m.Snapshot([]policy.Decision{decision("host", 22, "/usr/sbin/sshd", policy.Allowed, policy.SeverityInfo)}, time.Millisecond, time.Now())
	for _, addr := range []string{"0.0.0.0:9617", "[::]:9617", "192.0.2.1:9617"} {
		if _, err := Listen(addr, false, m, nil); !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%s): %v, want ErrNotLoopback", addr, err)
		}
	}
	if _, err := Listen("localhost:9617", false, m, nil); err == nil {
		t.Error("a host name accepted")
	}
	s, err := Listen("127.0.0.1:0", false, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `portwatch_listener_info{address="127.0.0.1"`) {
		t.Errorf("GET /metrics: %d\n%s", resp.StatusCode, body)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/metrics"); err == nil {
		t.Error("endpoint still answers after Close")
	}
}

// The shipped rules pass promtool's check and their unit tests.
func TestShippedRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus; scripts/apt-packages.txt lists it)")
	}
	dir := "../packaging/prometheus"
	for _, args := range [][]string{{"check", "rules", "portwatch-rules.yml"}, {"test", "rules", "portwatch-rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("SUCCESS")) {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// BenchmarkLook is the metrics' cost of one look that changed something:
// the listener series of n listeners and the textfile written.
func BenchmarkLook(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "portwatch.prom")
			m := New(Options{Textfile: path})
			ds := make([]policy.Decision, n)
			for i := range ds {
				ds[i] = decision("host", uint16(1000+i), "/usr/sbin/srv", policy.Allowed, policy.SeverityInfo)
			}
			now := time.Now()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				ds[0].Port = uint16(i) // a change every look
				m.Snapshot(ds, time.Millisecond, now)
				if _, err := m.Write(now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLookUnchanged is the cost of a look that changed nothing: no
// write.
func BenchmarkLookUnchanged(b *testing.B) {
	m, ds, now := benchMetrics(b, 100)
	if _, err := m.Write(now); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Snapshot(ds, time.Millisecond, now)
		if wrote, _ := m.Write(now); wrote {
			b.Fatal("written")
		}
	}
}

func TestSnapshotSame(t *testing.T) {
	m := New(Options{})
	m.Snapshot([]policy.Decision{decision("host", 22, "/usr/sbin/sshd", policy.Allowed, policy.SeverityInfo)}, time.Millisecond, time.Unix(100, 0))
	m.dirty.Store(false)
	m.SnapshotSame(2*time.Millisecond, time.Unix(200, 0))
	if m.dirty.Load() {
		t.Error("an unchanged snapshot marked the metrics changed")
	}
	fams := gather(t, m)
	if got := fams["portwatch_last_snapshot_timestamp_seconds"].samples[0][""]; got != "200" {
		t.Errorf("last snapshot %s, want 200", got)
	}
	if n := len(fams["portwatch_listener_info"].samples); n != 1 {
		t.Errorf("%d info series, want the 1 of the last Snapshot", n)
	}
}

// BenchmarkWriteDue is the textfile's write every WriteEvery when nothing
// changed: the listener series of 1,000 listeners written again.
func BenchmarkWriteDue(b *testing.B) {
	m, _, now := benchMetrics(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(WriteEvery)
		if wrote, err := m.Write(now); !wrote || err != nil {
			b.Fatal("not written", err)
		}
	}
}

// benchMetrics returns metrics writing a textfile in a temporary directory,
// with the listener series of n allowed listeners set at now.
func benchMetrics(b *testing.B, n int) (*Metrics, []policy.Decision, time.Time) {
	m := New(Options{Textfile: filepath.Join(b.TempDir(), "portwatch.prom")})
	ds := make([]policy.Decision, n)
	for i := range ds {
		ds[i] = decision("host", uint16(1000+i), "/usr/sbin/srv", policy.Allowed, policy.SeverityInfo)
	}
	now := time.Now()
	m.Snapshot(ds, time.Millisecond, now)
	return m, ds, now
}
