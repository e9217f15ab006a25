package policy

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/watcher"
)

func TestMetricsSection(t *testing.T) {
	tests := []struct {
		name      string
		yaml      string
		dirExists bool
		want      Metrics
	}{
		{name: "default with node_exporter", yaml: "version: 1\n", dirExists: true,
			want: Metrics{Textfile: DefaultTextfile, MaxListenerSeries: DefaultMaxListenerSeries}},
		{name: "default without node_exporter", yaml: "version: 1\n",
			want: Metrics{MaxListenerSeries: DefaultMaxListenerSeries}},
		{name: "textfile off", yaml: "metrics:\n  textfile: \"\"\n", dirExists: true,
			want: Metrics{MaxListenerSeries: DefaultMaxListenerSeries}},
		{name: "empty section", yaml: "metrics:\n", dirExists: true,
			want: Metrics{Textfile: DefaultTextfile, MaxListenerSeries: DefaultMaxListenerSeries}},
		{name: "everything", yaml: "metrics:\n  textfile: /srv/prom/../prom/pw.prom\n  listen: \"[::1]:9617\"\n  max_listener_series: 50\n",
			want: Metrics{Textfile: "/srv/prom/pw.prom", Listen: "[::1]:9617", MaxListenerSeries: 50}},
		{name: "non-loopback allowed", yaml: "metrics:\n  listen: 0.0.0.0:9617\n  listen_non_loopback: true\n",
			want: Metrics{Listen: "0.0.0.0:9617", ListenNonLoopback: true, MaxListenerSeries: DefaultMaxListenerSeries}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := testLoader(nil)
			l.dirExists = func(string) bool { return tt.dirExists }
			l.selfExe = func() (string, error) { return "/usr/sbin/portwatchd", nil }
			c, err := l.parse("portwatch.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, c.Metrics); diff != "" {
				t.Errorf("metrics (-want +got):\n%s", diff)
			}
			n := 0
			for _, r := range c.Rules {
				if r.Builtin {
					n++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.want.Listen != ""]; n != want {
				t.Errorf("%d built-in rules, want %d", n, want)
			}
		})
	}
}

// The endpoint's own listener is allowed by the rule metrics.listen makes,
// and only when held by the daemon's executable, on that address and port.
func TestMetricsListenRule(t *testing.T) {
	self := "/opt/port[watch]/portwatchd" // glob characters are quoted
	l := testLoader(nil)
	l.selfExe = func() (string, error) { return self, nil }
	c, err := l.parse("/etc/portwatch.yaml", []byte("version: 1\nmetrics:\n  listen: 127.0.0.1:9617\nallow: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	holder := func(exe string, flags ...watcher.Flag) []watcher.Process {
		return []watcher.Process{{PID: 42, Comm: "portwatchd", Exe: exe, User: "portwatchd", Flags: flags}}
	}
	ln := func(addr string, port uint16, ps []watcher.Process) watcher.Listener {
		return watcher.Listener{Protocol: watcher.TCP, Family: watcher.IPv4, Address: netip.MustParseAddr(addr), Port: port,
			Netns: watcher.HostNetns, Processes: ps}
	}
	tests := []struct {
		name string
		l    watcher.Listener
		want Verdict
	}{
		{"own endpoint", ln("127.0.0.1", 9617, holder(self)), Allowed},
		{"development build under /tmp", ln("127.0.0.1", 9617, holder(self, watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged)), Allowed},
		{"another program", ln("127.0.0.1", 9617, holder("/usr/bin/python3")), Unexpected},
		{"a memfd copy", ln("127.0.0.1", 9617, holder(self, watcher.FlagExeMemfd)), Unexpected},
		{"another port", ln("127.0.0.1", 9618, holder(self)), Unexpected},
		{"another address", ln("127.0.0.2", 9617, holder(self)), Unexpected},
		{"unattributed", ln("127.0.0.1", 9617, []watcher.Process{}), Unexpected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.Evaluate(tt.l, time.Now())
			if d.Verdict != tt.want {
				t.Fatalf("verdict %s (%s), want %s", d.Verdict, d.Reason, tt.want)
			}
			if tt.want == Allowed && (d.Rule != MetricsRuleName || d.Reason != "portwatchd's own metrics endpoint (metrics.listen)") {
				t.Errorf("allowed by %q (%q), want the built-in rule", d.Rule, d.Reason)
			}
		})
	}
	// Unknown executable: no rule, and a warning that says so.
	l = testLoader(nil)
	l.selfExe = func() (string, error) { return "", errors.New("no /proc") }
	c, err = l.parse("/etc/portwatch.yaml", []byte("version: 1\nmetrics:\n  listen: 127.0.0.1:9617\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != 0 || len(c.Warnings) != 1 {
		t.Errorf("rules %v, warnings %q; want no rule and one warning", c.Rules, c.Warnings)
	}
}

// The default textfile follows the host: on when Debian's node_exporter
// made its directory.
func TestMetricsDefaultTextfileHost(t *testing.T) {
	c, err := Parse("portwatch.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, statErr := os.Stat("/var/lib/prometheus/node-exporter")
	if want := map[bool]string{true: DefaultTextfile, false: ""}[statErr == nil]; c.Metrics.Textfile != want {
		t.Errorf("textfile %q, want %q (stat: %v)", c.Metrics.Textfile, want, statErr)
	}
}

// Every key of metrics: is documented in the reference file.
func TestMetricsKeysDocumented(t *testing.T) {
	data, err := os.ReadFile("../configs/portwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range metricsKeys {
		if !strings.Contains(string(data), "#   "+k+":") {
			t.Errorf("metrics.%s is not documented in configs/portwatch.yaml", k)
		}
	}
}
