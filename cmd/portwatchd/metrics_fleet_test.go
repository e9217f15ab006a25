package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fleet view end to end, with Debian 12's own packages run by hand on
// loopback ports (their systemd services stay untouched): the daemon writes
// its textfile, prometheus-node-exporter serves it, prometheus scrapes that
// with the shipped rules (a copy whose for: 1m is 5s, so that the test
// sees pending, then firing, in seconds; the shipped for: is unit-tested
// by promtool test rules), and prometheus-alertmanager receives the alert.

const (
	nodeExporterBin = "/usr/bin/prometheus-node-exporter"
	prometheusBin   = "/usr/bin/prometheus"
	amBin           = "/usr/bin/prometheus-alertmanager"
	promtoolBin     = "/usr/bin/promtool"
)

// freeLoopbackPort returns a TCP port free on 127.0.0.1 at the time of
// the call.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startService runs bin with args, its output kept for a failure report,
// until the test ends (killed by its pid), and waits until GET ready
// answers 200.
func startService(t *testing.T, name, bin, ready string, args ...string) {
	t.Helper()
	out := &bytes.Buffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	deadline := time.Now().Add(daemonWait)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited:\n%s", name, out.String())
		default:
		}
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v:\n%s", name, daemonWait, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getText GETs u and returns its body.
func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
	}
	return string(b)
}

// promSample is one sample of a Prometheus instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

// promQuery evaluates expr now and returns its result, failing the test on
// an error of the query itself.
func promQuery(t *testing.T, base, expr string) []promSample {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(getText(t, base+"/api/v1/query?query="+url.QueryEscape(expr))), &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "success" {
		t.Fatalf("query %s: %s", expr, r.Error)
	}
	var out []promSample
	switch r.Data.ResultType {
	case "vector":
		if err := json.Unmarshal(r.Data.Result, &out); err != nil {
			t.Fatal(err)
		}
	case "scalar":
		out = []promSample{{}}
	}
	return out
}

// waitFor polls f every 200 ms until it says true, for daemonWait.
func waitFor(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(daemonWait)
	for {
		ok, last := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v; last seen: %s", what, daemonWait, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestFleetView(t *testing.T) {
	for _, b := range []string{nodeExporterBin, prometheusBin, amBin, promtoolBin} {
		if _, err := os.Stat(b); err != nil {
			t.Skipf("%s not installed (apt-get install prometheus prometheus-node-exporter prometheus-alertmanager; scripts/apt-packages.txt lists them): %v", b, err)
		}
	}
	e := newDaemonE2E(t, "TestFleetView")
	selfExe, err := filepath.EvalSymlinks(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	textDir := filepath.Join(e.dir, "textfile")
	if err := os.Mkdir(textDir, 0o755); err != nil {
		t.Fatal(err)
	}
	textfile := filepath.Join(textDir, "portwatch.prom")
	listenPort := freeLoopbackPort(t)
	// The test's own block of ports is unexpected; every other port is
	// allowed, so the rest of the machine stays quiet.
	e.writeConfig(fmt.Sprintf(`version: 1
interval: 300ms
allow:
  - name: everything-else
    port: ["1-%d", "%d-65535"]
notify:
  journald: true
  webhooks:
    - name: receiver
      format: generic
      url: %s
ebpf: auto
metrics:
  textfile: %s
  listen: 127.0.0.1:%d
`, e.base-1, e.base+50, e.hook.srv.URL, textfile, listenPort))
	e.start()
	e.waitLog(0, `msg="portwatchd started"`)
	waitFor(t, "textfile written", func() (bool, string) {
		_, err := os.Stat(textfile)
		return err == nil, fmt.Sprint(err)
	})

	// The Debian packages, on loopback, with temporary directories.
	nePort, amPort, promPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	ne := fmt.Sprintf("http://127.0.0.1:%d", nePort)
	startService(t, "node_exporter", nodeExporterBin, ne+"/metrics",
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", nePort), "--collector.disable-defaults",
		"--collector.textfile", "--collector.textfile.directory="+textDir)
	amDir := t.TempDir()
	amConf := filepath.Join(amDir, "alertmanager.yml")
	if err := os.WriteFile(amConf, []byte("route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	am := fmt.Sprintf("http://127.0.0.1:%d", amPort)
	startService(t, "alertmanager", amBin, am+"/-/ready", "--config.file="+amConf,
		"--storage.path="+filepath.Join(amDir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", amPort), "--cluster.listen-address=")
	promDir := t.TempDir()
	rules, err := os.ReadFile("../../packaging/prometheus/portwatch-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	short := strings.ReplaceAll(string(rules), "for: 1m\n", "for: 5s\n")
	if short == string(rules) {
		t.Fatal("the shipped rules have no for: 1m to shorten")
	}
	if err := os.WriteFile(filepath.Join(promDir, "rules.yml"), []byte(short), 0o644); err != nil {
		t.Fatal(err)
	}
	promConf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:%d"]
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, amPort, nePort)
	if err := os.WriteFile(filepath.Join(promDir, "prometheus.yml"), []byte(promConf), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	startService(t, "prometheus", prometheusBin, prom+"/-/ready", "--config.file="+filepath.Join(promDir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(promDir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))

	t.Run("node_exporter serves the textfile", func(t *testing.T) {
		body := getText(t, ne+"/metrics")
		for _, s := range []string{"node_textfile_scrape_error 0", "portwatch_build_info{", "portwatch_listeners{", "portwatch_last_snapshot_timestamp_seconds "} {
			if !strings.Contains(body, s) {
				t.Errorf("node_exporter /metrics lacks %q", s)
			}
		}
		data, err := os.ReadFile(textfile)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(promtoolBin, "check", "metrics")
		cmd.Stdin = bytes.NewReader(data)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	t.Run("the daemon's own endpoint is allowed by construction", func(t *testing.T) {
		series := regexp.MustCompile(`(?m)^portwatch_listener_info\{.*\} 1$`)
		waitFor(t, "own listener in the endpoint's metrics", func() (bool, string) {
			body := getText(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", listenPort))
			for _, s := range series.FindAllString(body, -1) {
				if strings.Contains(s, fmt.Sprintf(`port="%d"`, listenPort)) && strings.Contains(s, `exe="`+e.bin+`"`) &&
					strings.Contains(s, `rule="metrics.listen"`) && strings.Contains(s, `verdict="allowed"`) {
					return true, ""
				}
			}
			return false, body
		})
		out, err := exec.Command(e.bin, "list", "-c", e.config).CombinedOutput()
		if err != nil {
			t.Fatalf("list: %v\n%s", err, out)
		}
		line := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, fmt.Sprintf("127.0.0.1:%d ", listenPort)) {
				line = l
			}
		}
		if !strings.Contains(line, "allowed (metrics.listen)") {
			t.Errorf("list shows the endpoint as %q, want allowed (metrics.listen); list:\n%s", line, out)
		}
	})

	port := e.base
	c := startDaemonListener(t, port)
	defer c.close()
	e.waitEvents("opened", port, 1)

	t.Run("PromQL finds the unexpected listener", func(t *testing.T) {
		q := `portwatch_listener_info{verdict="unexpected"}`
		waitFor(t, q, func() (bool, string) {
			for _, s := range promQuery(t, prom, q) {
				if s.Metric["port"] == strconv.Itoa(port) && s.Metric["exe"] == selfExe && s.Metric["address"] == "127.0.0.1" {
					return true, ""
				}
			}
			return false, fmt.Sprint(promQuery(t, prom, q))
		})
	})

	t.Run("the rule goes pending, then firing, into Alertmanager", func(t *testing.T) {
		type promAlert struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		}
		state := func() (string, string) {
			var r struct {
				Data struct {
					Alerts []promAlert `json:"alerts"`
				} `json:"data"`
			}
			body := getText(t, prom+"/api/v1/alerts")
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatal(err)
			}
			for _, a := range r.Data.Alerts {
				if a.Labels["alertname"] == "PortwatchUnexpectedListener" && a.Labels["port"] == strconv.Itoa(port) {
					return a.State, body
				}
			}
			return "", body
		}
		seen := map[string]bool{}
		waitFor(t, "PortwatchUnexpectedListener firing", func() (bool, string) {
			s, body := state()
			seen[s] = true
			return s == "firing", body
		})
		if !seen["pending"] {
			t.Error("the alert never showed as pending before firing (for: 5s at 1s evaluations)")
		}
		waitFor(t, "the alert in Alertmanager", func() (bool, string) {
			var alerts []struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			}
			body := getText(t, am+"/api/v2/alerts?filter="+url.QueryEscape(`alertname="PortwatchUnexpectedListener"`))
			if err := json.Unmarshal([]byte(body), &alerts); err != nil {
				t.Fatal(err)
			}
			for _, a := range alerts {
				if a.Labels["port"] == strconv.Itoa(port) && a.Labels["exe"] == selfExe &&
					strings.Contains(a.Annotations["summary"], fmt.Sprintf("127.0.0.1:%d", port)) &&
					strings.Contains(a.Annotations["description"], "closest rule: everything-else") {
					return true, ""
				}
			}
			return false, body
		})
	})

	t.Run("every dashboard expression returns data", func(t *testing.T) {
		data, err := os.ReadFile("../../packaging/grafana/portwatch-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(data, &dash); err != nil {
			t.Fatal(err)
		}
		// Grafana's variables, as "All" and a short rate window.
		vars := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*", "$verdict", ".*")
		n := 0
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				n++
				expr := vars.Replace(tg.Expr)
				if strings.Contains(expr, "$") {
					t.Errorf("panel %q: variable left in %s", p.Title, expr)
					continue
				}
				waitFor(t, fmt.Sprintf("panel %q: %s", p.Title, expr), func() (bool, string) {
					return len(promQuery(t, prom, expr)) > 0, "no data"
				})
			}
		}
		if n < 8 {
			t.Errorf("%d expressions in the dashboard, want at least 8", n)
		}
	})
}
