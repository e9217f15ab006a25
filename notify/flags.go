package notify

import (
	"slices"
	"strings"

	"github.com/portwatchd/portwatchd/watcher"
)

// HolderFlags is the union of the flags of l's holders, in
// watcher.AllFlags order: what journald's PORTWATCH_FLAGS, the Alertmanager
// flags annotation, the messages and `portwatchd list` show. Names that are
// not one of watcher.AllFlags (a hand-edited state file) are left out, so
// that only fixed names, which need no escaping, reach a message or a field.
func HolderFlags(l watcher.Listener) []watcher.Flag {
	var all []watcher.Flag
	for _, p := range l.Processes {
		all = append(all, p.Flags...)
	}
	return knownFlags(all)
}

// knownFlags returns the flags of fs that are in watcher.AllFlags, once
// each, in that order.
func knownFlags(fs []watcher.Flag) []watcher.Flag {
	var out []watcher.Flag
	for _, f := range watcher.AllFlags {
		if slices.Contains(fs, f) {
			out = append(out, f)
		}
	}
	return out
}

// joinFlags writes flags as their names separated by sep.
func joinFlags(fs []watcher.Flag, sep string) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(string(f))
	}
	return b.String()
}
