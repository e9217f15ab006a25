package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/portwatchd/portwatchd/watcher"
)

// Metrics is the validated metrics: section (the fleet view: see the
// metrics package).
type Metrics struct {
	// Textfile is where the daemon writes its metrics for node_exporter's
	// textfile collector (metrics.textfile); "" writes none. Default
	// DefaultTextfile when its directory exists, else "".
	Textfile string
	// Listen is the address of the daemon's own /metrics endpoint
	// (metrics.listen), IP:port; "" opens none.
	Listen string
	// ListenNonLoopback allows Listen off the loopback interface
	// (metrics.listen_non_loopback).
	ListenNonLoopback bool
	// MaxListenerSeries caps the portwatch_listener_info series
	// (metrics.max_listener_series), default DefaultMaxListenerSeries.
	MaxListenerSeries int
}

// DefaultTextfile is metrics.textfile's default when its directory exists,
// as Debian's prometheus-node-exporter creates it.
const DefaultTextfile = "/var/lib/prometheus/node-exporter/portwatch.prom"

// DefaultMaxListenerSeries is metrics.max_listener_series' default.
const DefaultMaxListenerSeries = 2000

// MetricsRuleName is the name of the allow rule that metrics.listen makes
// for the daemon's own endpoint.
const MetricsRuleName = "metrics.listen"

var metricsKeys = []string{"textfile", "listen", "listen_non_loopback", "max_listener_series"}

// defaultMetrics is the metrics: section when the main file sets none.
func defaultMetrics(textfileDirExists func(string) bool) Metrics {
	m := Metrics{MaxListenerSeries: DefaultMaxListenerSeries}
	if textfileDirExists(filepath.Dir(DefaultTextfile)) {
		m.Textfile = DefaultTextfile
	}
	return m
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// metrics decodes the metrics: section of the main file. It returns the
// node of listen: when set and valid, for the rule metricsRule makes.
func (l *loader) metrics(d *decoder, f field, m *Metrics) *yaml.Node {
	if f.v.Kind == yaml.ScalarNode && f.v.Tag == "!!null" {
		return nil
	}
	var listen *yaml.Node
	for _, mf := range d.fields(f.v, "metrics", metricsKeys) {
		switch mf.key {
		case "textfile":
			if mf.v.Kind == yaml.ScalarNode && (mf.v.Tag == "!!null" || mf.v.Value == "") {
				m.Textfile = "" // off, whether or not node_exporter is installed
				continue
			}
			if v, ok := d.str(mf); ok {
				switch {
				case !filepath.IsAbs(v):
					d.errorf(mf.v, "textfile: must be an absolute path, got %q", clip(v))
				case !strings.HasSuffix(v, ".prom"):
					d.errorf(mf.v, "textfile: %q must end in .prom: node_exporter's textfile collector reads no other file", clip(v))
				default:
					m.Textfile = filepath.Clean(v)
				}
			}
		case "listen":
			if mf.v.Kind == yaml.ScalarNode && (mf.v.Tag == "!!null" || mf.v.Value == "") {
				m.Listen = ""
				continue
			}
			if v, ok := d.str(mf); ok {
				ap, err := netip.ParseAddrPort(v)
				switch {
				case err != nil:
					d.errorf(mf.v, "listen: %q is not IP:port (such as 127.0.0.1:9617 or [::1]:9617)", clip(v))
				case ap.Port() == 0:
					d.errorf(mf.v, "listen: port 0 is not allowed; name the port, so that the policy can allow it")
				case ap.Addr().Zone() != "":
					d.errorf(mf.v, "listen: an address with a zone is not allowed")
				default:
					m.Listen, listen = ap.String(), mf.v
				}
			}
		case "listen_non_loopback":
			if v, ok := d.boolean(mf); ok {
				m.ListenNonLoopback = v
			}
		case "max_listener_series":
			if v, ok := d.intIn(mf, 1, 1_000_000); ok {
				m.MaxListenerSeries = v
			}
		}
	}
	if listen != nil && !m.ListenNonLoopback {
		if ap := netip.MustParseAddrPort(m.Listen); !ap.Addr().Unmap().IsLoopback() {
			d.errorf(listen, "listen: %s is not a loopback address: the metrics tell which programs listen where; set listen_non_loopback: true to serve them there", m.Listen)
			m.Listen, listen = "", nil
		}
	}
	return listen
}

// metricsRule is the allow rule for the daemon's own endpoint on
// metrics.listen: TCP on that address and port, held by the daemon's own
// executable (selfExe). Allowed by construction, it shows in `list` as
// allowed by rule "metrics.listen". It accepts the high-risk flags of a
// development build of the daemon (run from /tmp or a home directory,
// unpackaged, started from a shell): the exe it names is the daemon's own,
// found by the running binary itself, not something a process chooses.
// It returns false when the daemon's executable cannot be found.
func (l *loader) metricsRule(d *decoder, m Metrics, n *yaml.Node) (Rule, bool) {
	exe, err := l.selfExe()
	if err != nil || exe == "" {
		l.warns = append(l.warns, fmt.Sprintf("%s:%d:%d: listen: the daemon's own executable is unknown (%v): its endpoint is not allowed by construction; allow it with a rule", d.file, n.Line, n.Column, err))
		return Rule{}, false
	}
	ap := netip.MustParseAddrPort(m.Listen)
	a := AddressMatch{Kind: AddressPrefix, Prefix: netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen())}
	if ap.Addr().IsUnspecified() {
		a = AddressMatch{Kind: AddressWildcard}
	}
	port := strconv.Itoa(int(ap.Port()))
	accept := []watcher.Flag{watcher.FlagExeInWritableDir, watcher.FlagExeUnpackaged, watcher.FlagSessionLaunched}
	return Rule{
		Name:      MetricsRuleName,
		File:      fmt.Sprintf("%s:%d", d.file, n.Line),
		Reason:    "portwatchd's own metrics endpoint (metrics.listen)",
		Protocols: []string{watcher.TCP},
		Ports:     []PortRange{{Lo: ap.Port(), Hi: ap.Port()}},
		Addresses: []AddressMatch{a},
		Exe:       globEscape(exe),
		Flags:     accept,
		flags:     watcher.FlagsOf(accept),
		Builtin:   true,
		portText:  port,
		addrText:  ap.Addr().String(),
	}, true
}

// globEscape quotes the glob metacharacters of s for path.Match.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[\\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
