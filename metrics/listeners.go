package metrics

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// The listener series are rebuilt whole from each snapshot and swapped in
// under one lock (a GaugeVec's Reset and re-set would let a scrape in
// between see an empty inventory). A set never changes once built, so its
// metrics and their text are made once, on first use, however many scrapes
// and textfile writes follow: with thousands of listeners they are nearly
// all the cost of a write.

var (
	listenersDesc = prometheus.NewDesc("portwatch_listeners",
		"Listening sockets by verdict, severity, firewall exposure and kind of network namespace (host, named, container, process).",
		[]string{"verdict", "severity", "exposure", "netns_kind"}, nil)
	infoDesc = prometheus.NewDesc("portwatch_listener_info",
		"Always 1: one series per listener, with its socket, program and verdict; at most metrics.max_listener_series, unexpected listeners first.",
		infoLabels, nil)
	overflowDesc = prometheus.NewDesc("portwatch_listener_info_overflow",
		"Listeners left out of portwatch_listener_info by metrics.max_listener_series.",
		nil, nil)
)

var infoLabels = []string{"netns", "protocol", "address", "port", "service", "exe", "unit", "container", "verdict", "rule"}

// countKey is the label values of one portwatch_listeners series.
type countKey struct{ verdict, severity, exposure, netnsKind string }

// listenerSet is the listener series of one snapshot.
type listenerSet struct {
	counts   map[countKey]int
	info     [][10]string // label values, in infoLabels order, sorted
	overflow int

	metricsOnce sync.Once
	metrics     []prometheus.Metric
	textOnce    sync.Once
	text        []byte
	textErr     error
}

// constMetrics returns the series of s, made on the first call.
func (s *listenerSet) constMetrics() []prometheus.Metric {
	s.metricsOnce.Do(func() {
		ms := make([]prometheus.Metric, 0, len(s.counts)+len(s.info)+1)
		for k, n := range s.counts {
			ms = append(ms, prometheus.MustNewConstMetric(listenersDesc, prometheus.GaugeValue, float64(n), k.verdict, k.severity, k.exposure, k.netnsKind))
		}
		for _, v := range s.info {
			ms = append(ms, prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, v[:]...))
		}
		s.metrics = append(ms, prometheus.MustNewConstMetric(overflowDesc, prometheus.GaugeValue, float64(s.overflow)))
	})
	return s.metrics
}

// textFormat returns the series of s in the text exposition format, made on
// the first call: they are gathered (sorted and checked) by a registry of
// their own, as the daemon's registry would.
func (s *listenerSet) textFormat() ([]byte, error) {
	s.textOnce.Do(func() {
		reg := prometheus.NewRegistry()
		if err := reg.Register(setCollector{s}); err != nil {
			s.textErr = err
			return
		}
		mfs, err := reg.Gather()
		if err != nil {
			s.textErr = err
			return
		}
		var b bytes.Buffer
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				s.textErr = err
				return
			}
		}
		s.text = b.Bytes()
	})
	return s.text, s.textErr
}

// setCollector serves one listenerSet, for its textFormat.
type setCollector struct{ s *listenerSet }

func (c setCollector) Describe(ch chan<- *prometheus.Desc) { describeListeners(ch) }

func (c setCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.s.constMetrics() {
		ch <- m
	}
}

func (a *listenerSet) equal(b *listenerSet) bool {
	if a.overflow != b.overflow || len(a.counts) != len(b.counts) || len(a.info) != len(b.info) {
		return false
	}
	for k, n := range a.counts {
		if b.counts[k] != n {
			return false
		}
	}
	return slices.Equal(a.info, b.info)
}

// listenerCollector serves the current listenerSet.
type listenerCollector struct {
	mu  sync.Mutex
	cur *listenerSet
}

func newListenerCollector() *listenerCollector {
	return &listenerCollector{cur: &listenerSet{counts: map[countKey]int{}}}
}

// set swaps s in and reports whether it differs from the set in force.
func (c *listenerCollector) set(s *listenerSet) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	same := c.cur.equal(s)
	c.cur = s
	return !same
}

// current returns the set in force.
func (c *listenerCollector) current() *listenerSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Describe implements prometheus.Collector.
func (c *listenerCollector) Describe(ch chan<- *prometheus.Desc) { describeListeners(ch) }

func describeListeners(ch chan<- *prometheus.Desc) {
	ch <- listenersDesc
	ch <- infoDesc
	ch <- overflowDesc
}

// Collect implements prometheus.Collector.
func (c *listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.current().constMetrics() {
		ch <- m
	}
}

// buildListenerSet counts every decision and keeps at most max info
// series: unexpected critical listeners first, then the other unexpected
// ones, then the rest, each in snapshot order. Listeners with the same
// labels (the sockets of an SO_REUSEPORT group) share one series.
func buildListenerSet(ds []policy.Decision, max int, exposure func(*policy.Decision) string) *listenerSet {
	s := &listenerSet{counts: map[countKey]int{}}
	order := make([]int, len(ds))
	for i := range ds {
		d := &ds[i]
		exp := "unknown"
		if exposure != nil {
			exp = clean(exposure(d))
		}
		s.counts[countKey{string(d.Verdict), d.Severity.String(), exp, netnsKind(d.Netns)}]++
		order[i] = i
	}
	rank := func(d *policy.Decision) int {
		switch {
		case d.Verdict == policy.Unexpected && d.Severity == policy.SeverityCritical:
			return 0
		case d.Verdict == policy.Unexpected:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rank(&ds[a]), rank(&ds[b])) })
	seen := make(map[[10]string]bool, min(len(ds), max))
	for _, i := range order {
		v := infoValues(&ds[i])
		if seen[v] {
			continue
		}
		if len(s.info) >= max {
			s.overflow++
			continue
		}
		seen[v] = true
		s.info = append(s.info, v)
	}
	slices.SortFunc(s.info, func(a, b [10]string) int { return slices.Compare(a[:], b[:]) })
	return s
}

// infoValues is the label values of d's portwatch_listener_info series.
// The program is that of the holder `list` shows: with socket activation
// PID 1 holds the socket too, and the service is the more telling one.
func infoValues(d *policy.Decision) [10]string {
	var exe, unit, container string
	if ps := d.Processes; len(ps) > 0 {
		p := &ps[0]
		if i := slices.IndexFunc(ps, func(p watcher.Process) bool { return p.PID != 1 }); i >= 0 {
			p = &ps[i]
		}
		exe, unit, container = p.Exe, p.Unit, p.Container
	}
	addr := ""
	if d.Address.IsValid() {
		addr = d.Address.String()
	}
	return [10]string{clean(d.Netns), d.Protocol, addr, strconv.Itoa(int(d.Port)), clean(d.Service),
		clean(exe), clean(unit), clean(container), string(d.Verdict), clean(d.Rule)}
}

// netnsKind is the netns_kind label: host, named (/run/netns), container,
// or process (a namespace named after a process in it).
func netnsKind(name string) string {
	switch {
	case name == watcher.HostNetns:
		return "host"
	case strings.HasPrefix(name, "container:"):
		return "container"
	case strings.HasPrefix(name, "pid:"):
		return "process"
	}
	return "named"
}

// maxLabelLen bounds a label value taken from what a process chose (its
// executable's path, its unit): the text format has no limit, but a
// Prometheus server may refuse long ones.
const maxLabelLen = 256

// clean makes s a valid label value: UTF-8 (a process may name its
// executable with any bytes) and at most maxLabelLen bytes.
func clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > maxLabelLen {
		cut := maxLabelLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
