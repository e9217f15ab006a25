// Package notify delivers events: structured journald entries and webhooks in
// several formats (generic signed JSON, Slack, Mattermost, Discord, Teams,
// Google Chat, ntfy and Prometheus Alertmanager).
//
// Every sink implements one small Notifier interface. Delivery to webhooks
// goes through one retry loop and a durable, bounded, per-sink spool, so that
// nothing is lost when a receiver is down or the daemon is killed.
//
// Layout: event.go and message.go build events (NewEvent and its options:
// id, severity, the one-line message, escaped once with internal/textesc);
// journald.go writes them to the journal with fixed MESSAGE_IDs (explained by
// packaging/systemd/portwatchd.catalog), every text field escaped and its
// exact bytes in NAME_RAW, or as logfmt on stderr without a journal;
// format.go renders a batch per service, with summary.go listing a chat
// message's events (grouped by holder with port ranges when they do not fit,
// and split over several messages); webhook.go does HTTP (no redirects,
// https outside loopback, redaction, Standard Webhooks signatures); spool.go
// keeps batches on disk;
// dispatcher.go routes events to the sinks; deliver.go runs the retry loop
// (with backoff.go's delays) and drain; reload.go swaps sinks on reload;
// resend.go re-sends the alerts still firing to Alertmanager.
package notify
