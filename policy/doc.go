// Package policy owns the allowlist in /etc/portwatch.yaml: it parses the
// bytes into raw structs, validates them (collecting every error with its
// file:line:col), builds typed values, and matches listeners from package
// watcher against the rules.
//
// It also parses the notify: and daemon settings, so that one loader, one
// validation pass and one content hash cover the whole configuration.
package policy
