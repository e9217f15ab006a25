package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portwatchd/portwatchd/policy"
)

// DefaultMaxListenerSeries is metrics.max_listener_series' default.
const DefaultMaxListenerSeries = 2000

// WriteEvery is the longest time between two writes of the textfile:
// node_exporter exposes the file's mtime, and the shipped staleness rule
// fires when it is older than 5m.
const WriteEvery = 60 * time.Second

// Notification results, the result label of portwatch_notifications_total.
const (
	// ResultOK: the sink took the delivery (journal written, 2xx).
	ResultOK = "ok"
	// ResultFailed: a delivery failed and will be retried.
	ResultFailed = "failed"
	// ResultRefused: a webhook refused a delivery for good (a 4xx other
	// than 408 and 429); its events are dropped from the spool.
	ResultRefused = "refused"
)

// Options configure a Metrics.
type Options struct {
	// Textfile is where Write writes the metrics for node_exporter's
	// textfile collector; "" writes none.
	Textfile string
	// MaxListenerSeries caps portwatch_listener_info; 0 means
	// DefaultMaxListenerSeries.
	MaxListenerSeries int
	// Version is portwatch_build_info's version label.
	Version string
	// Exposure gives a listener's exposure label (the daemon's: one of
	// the policy's exposure: values). Nil gives "unknown" for every
	// listener.
	Exposure func(*policy.Decision) string
}

// Metrics is the registry of portwatchd's metrics and what feeds it. Its
// methods are safe for concurrent use: notification results come from the
// delivery goroutines.
type Metrics struct {
	reg  *prometheus.Registry // every metric: the endpoint's
	rest *prometheus.Registry // all but the listener series: the textfile's, with their cached text

	listeners *listenerCollector

	events        *prometheus.CounterVec
	transients    *prometheus.CounterVec
	snapDuration  prometheus.Histogram
	lastSnapshot  prometheus.Gauge
	reloadOK      prometheus.Gauge
	reloadOKAt    prometheus.Gauge
	rules         *prometheus.GaugeVec
	expiring      prometheus.Gauge
	notifications *prometheus.CounterVec
	spoolEvents   *prometheus.GaugeVec
	spoolDropped  *prometheus.CounterVec
	ebpfActive    prometheus.Gauge
	ebpfDropped   prometheus.Counter

	mu          sync.Mutex // guards what follows
	opts        Options
	ebpfState   ebpfState
	ebpfSeen    uint64 // the probe's drop counter last seen
	ebpfWas     bool   // the last active value set
	sinks       map[string]bool
	waiting     map[string]int // portwatch_spool_events last set, by sink
	lastWrite   time.Time
	lastWritten string // the path last written, to notice a change of metrics.textfile

	dirty atomic.Bool // something changed since the last write
}

type ebpfState int

const (
	ebpfUnset ebpfState = iota
	ebpfOff
	ebpfOn
)

// New builds the registry with every metric that is always there.
func New(o Options) *Metrics {
	if o.MaxListenerSeries <= 0 {
		o.MaxListenerSeries = DefaultMaxListenerSeries
	}
	m := &Metrics{reg: prometheus.NewRegistry(), rest: prometheus.NewRegistry(), opts: o, sinks: map[string]bool{}, waiting: map[string]int{}}
	m.listeners = newListenerCollector()
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portwatch_events_total",
		Help: "Alert events handed to every sink, by type (listener.opened, listener.changed, listener.closed) and verdict.",
	}, []string{"type", "verdict"})
	m.transients = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portwatch_transient_listeners_total",
		Help: "Listeners the kernel programs saw open and close between two snapshots, by verdict.",
	}, []string{"verdict"})
	m.snapDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portwatch_snapshot_duration_seconds",
		Help:    "Time taken by one snapshot of every listener.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})
	m.lastSnapshot = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portwatch_last_snapshot_timestamp_seconds",
		Help: "Unix time of the last snapshot that worked.",
	})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portwatch_config_last_reload_successful",
		Help: "1 when the config in force is the latest on disk, 0 when the last reload failed (the previous config stays in force).",
	})
	m.reloadOKAt = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portwatch_config_last_reload_success_timestamp_seconds",
		Help: "Unix time of the last successful config load (start or reload).",
	})
	m.rules = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "portwatch_rules",
		Help: "Allow and deny rules in force, by the file that holds them.",
	}, []string{"file"})
	m.expiring = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portwatch_rules_expiring_7d",
		Help: "Rules whose expires: date falls within the next 7 days.",
	})
	m.notifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portwatch_notifications_total",
		Help: "Deliveries to each sink (journald, or a webhook's name), by result: ok, failed (retried), refused (dropped).",
	}, []string{"sink", "result"})
	m.spoolEvents = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "portwatch_spool_events",
		Help: "Events waiting in each webhook's spool.",
	}, []string{"sink"})
	m.spoolDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portwatch_spool_dropped_total",
		Help: "Events dropped from each webhook's spool undelivered: spool_size overflow or a delivery refused for good.",
	}, []string{"sink"})
	m.ebpfActive = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "portwatch_ebpf_active",
		Help: "1 while the kernel programs report listeners as they open, 0 when ebpf: auto or on could not load them or they failed; absent with ebpf: off.",
	})
	m.ebpfDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "portwatch_ebpf_dropped_events_total",
		Help: "Kernel events lost because the ring buffer was full (a full snapshot followed each time).",
	})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "portwatch_build_info",
		Help: "Always 1; the labels say which portwatchd runs.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(o.Version, runtime.Version()).Set(1)
	for _, reg := range []*prometheus.Registry{m.reg, m.rest} {
		reg.MustRegister(m.events, m.transients, m.snapDuration, m.lastSnapshot, m.reloadOK, m.reloadOKAt,
			m.rules, m.expiring, m.notifications, m.spoolEvents, m.spoolDropped, build)
	}
	m.reg.MustRegister(m.listeners)
	m.dirty.Store(true)
	return m
}

// Registry is the registry holding every metric, for the HTTP endpoint and
// tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetOptions applies a reloaded config's textfile and max_listener_series;
// the next Snapshot and Write use them.
func (m *Metrics) SetOptions(textfile string, maxListenerSeries int) {
	if maxListenerSeries <= 0 {
		maxListenerSeries = DefaultMaxListenerSeries
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.Textfile != textfile || m.opts.MaxListenerSeries != maxListenerSeries {
		m.dirty.Store(true)
	}
	m.opts.Textfile, m.opts.MaxListenerSeries = textfile, maxListenerSeries
}

// Snapshot sets the listener series from one snapshot's decisions, taken
// at at in took. It reports whether the listener series changed; the
// duration and time of the snapshot alone do not count as a change.
func (m *Metrics) Snapshot(ds []policy.Decision, took time.Duration, at time.Time) bool {
	m.mu.Lock()
	max, exposure := m.opts.MaxListenerSeries, m.opts.Exposure
	m.mu.Unlock()
	m.snapDuration.Observe(took.Seconds())
	m.lastSnapshot.Set(float64(at.UnixNano()) / 1e9)
	changed := m.listeners.set(buildListenerSet(ds, max, exposure))
	if changed {
		m.dirty.Store(true)
	}
	return changed
}

// SnapshotSame records a snapshot, taken at at in took, whose decisions
// are those of the last Snapshot: the listener series stay as they are,
// and are not built again.
func (m *Metrics) SnapshotSame(took time.Duration, at time.Time) {
	m.snapDuration.Observe(took.Seconds())
	m.lastSnapshot.Set(float64(at.UnixNano()) / 1e9)
}

// Event counts one alert event of type typ about a listener judged v.
func (m *Metrics) Event(typ string, v policy.Verdict) {
	m.events.WithLabelValues(typ, string(v)).Inc()
	m.dirty.Store(true)
}

// Transient counts one transient listener judged v.
func (m *Metrics) Transient(v policy.Verdict) {
	m.transients.WithLabelValues(string(v)).Inc()
	m.dirty.Store(true)
}

// Config sets the config's health: ok says the config in force is the
// latest (the last load or reload worked), loadedAt is when it was loaded,
// rules counts the rules in force by file, and expiring those that expire
// within 7 days.
func (m *Metrics) Config(ok bool, loadedAt time.Time, rules map[string]int, expiring int) {
	if ok {
		m.reloadOK.Set(1)
	} else {
		m.reloadOK.Set(0)
	}
	m.reloadOKAt.Set(float64(loadedAt.Unix()))
	m.rules.Reset()
	for f, n := range rules {
		m.rules.WithLabelValues(clean(f)).Set(float64(n))
	}
	m.expiring.Set(float64(expiring))
	m.dirty.Store(true)
}

// Notification counts one delivery to sink with result (ResultOK,
// ResultFailed, ResultRefused).
func (m *Metrics) Notification(sink, result string) {
	sink = clean(sink)
	m.sinkSeen(sink)
	m.notifications.WithLabelValues(sink, result).Inc()
	m.dirty.Store(true)
}

// Spool sets the events waiting in a webhook sink's spool.
func (m *Metrics) Spool(sink string, waiting int) {
	sink = clean(sink)
	m.sinkSeen(sink)
	m.spoolEvents.WithLabelValues(sink).Set(float64(waiting))
	m.mu.Lock()
	if old, ok := m.waiting[sink]; !ok || old != waiting {
		m.waiting[sink] = waiting
		m.dirty.Store(true)
	}
	m.mu.Unlock()
}

// SpoolDropped counts n events a webhook sink dropped from its spool
// undelivered: spool_size overflow, or a delivery refused for good.
func (m *Metrics) SpoolDropped(sink string, n int) {
	sink = clean(sink)
	m.sinkSeen(sink)
	m.spoolDropped.WithLabelValues(sink).Add(float64(n))
	m.dirty.Store(true)
}

// sinkSeen starts the counters of a new webhook sink at 0, so that
// increase() and rate() see its first failure.
func (m *Metrics) sinkSeen(sink string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sinks[sink] {
		return
	}
	m.sinks[sink] = true
	for _, r := range []string{ResultOK, ResultFailed, ResultRefused} {
		m.notifications.WithLabelValues(sink, r)
	}
	if sink != "journald" {
		m.spoolDropped.WithLabelValues(sink)
	}
}

// EBPF sets the kernel programs' state: off (ebpf: off; both eBPF metrics
// absent), else whether they are active, with the probe's cumulative drop
// counter.
func (m *Metrics) EBPF(off, active bool, droppedTotal uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	want := ebpfOn
	if off {
		want = ebpfOff
	}
	if want != m.ebpfState {
		for _, reg := range []*prometheus.Registry{m.reg, m.rest} {
			if want == ebpfOff {
				reg.Unregister(m.ebpfActive)
				reg.Unregister(m.ebpfDropped)
			} else if m.ebpfState != ebpfOn {
				reg.MustRegister(m.ebpfActive, m.ebpfDropped)
			}
		}
		if want != ebpfOff {
			// A transient listener counted from the first one on.
			m.transients.WithLabelValues(string(policy.Unexpected))
			m.transients.WithLabelValues(string(policy.Allowed))
		}
		m.ebpfState = want
		m.dirty.Store(true)
	}
	if off {
		return
	}
	v := 0.0
	if active {
		v = 1
	}
	m.ebpfActive.Set(v)
	if active != m.ebpfWas {
		m.ebpfWas = active
		m.dirty.Store(true)
	}
	if droppedTotal > m.ebpfSeen {
		m.ebpfDropped.Add(float64(droppedTotal - m.ebpfSeen))
		m.dirty.Store(true)
	}
	m.ebpfSeen = droppedTotal
}
