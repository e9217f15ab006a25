// Package notify delivers events: structured journald entries and webhooks in
// several formats (generic signed JSON, Slack, Mattermost, Discord, Teams,
// Google Chat, ntfy and Prometheus Alertmanager).
//
// Every sink implements one small Notifier interface. Delivery to webhooks
// goes through one retry loop and a durable, bounded, per-sink spool, so that
// nothing is lost when a receiver is down or the daemon is killed.
package notify
