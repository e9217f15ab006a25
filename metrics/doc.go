// Package metrics owns portwatchd's Prometheus metrics: the registry and
// the metric set of the fleet view (issue 13), the textfile written for
// node_exporter's textfile collector, and the optional HTTP endpoint
// (metrics.listen).
//
// The daemon feeds it through a small API (Snapshot, Event, Transient,
// Config, Notification, Spool, EBPF) and asks it to write the textfile
// (Write) after each look. The listener series are built whole from each
// snapshot and swapped in under one lock, so a scrape never sees half of
// one snapshot and half of the next. Cardinality is bounded: no pid or uid
// label, and at most MaxListenerSeries series of portwatch_listener_info,
// the rest counted in portwatch_listener_info_overflow.
package metrics
