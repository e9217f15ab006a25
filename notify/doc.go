// Package notify delivers events: structured journald entries and webhooks in
// several formats (generic signed JSON, Slack, Mattermost, Discord, Teams,
// Google Chat, ntfy and Prometheus Alertmanager).
//
// Every sink implements one small Notifier interface. Delivery to webhooks
// goes through one retry loop and a durable, bounded, per-sink spool, so that
// nothing is lost when a receiver is down or the daemon is killed.
//
// Layout: event.go and message.go build events (id, severity, the escaped
// one-line message); journald.go writes them to the journal with fixed
// MESSAGE_IDs (explained by packaging/systemd/portwatchd.catalog), or as
// logfmt on stderr without a journal; format.go renders one batch per
// service; webhook.go does HTTP (no redirects, https outside loopback,
// redaction, Standard Webhooks signatures); spool.go keeps batches on disk;
// dispatcher.go routes events to the sinks; deliver.go runs the retry loop
// (with backoff.go's delays) and drain; reload.go swaps sinks on reload;
// resend.go re-sends the alerts still firing to Alertmanager.
package notify
