package notify

import (
	"strings"

	"github.com/portwatchd/portwatchd/watcher"
)

// HolderFlags is the union of the flags of l's holders, in
// watcher.AllFlags order: what journald's PORTWATCH_FLAGS, the Alertmanager
// flags annotation, the messages and `portwatchd list` show. Names that are
// not one of watcher.AllFlags (a hand-edited state file) are left out, so
// that only fixed names, which need no escaping, reach a message or a field.
func HolderFlags(l watcher.Listener) []watcher.Flag {
	var all watcher.FlagSet
	for _, p := range l.Processes {
		all |= watcher.FlagsOf(p.Flags)
	}
	return all.List()
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

// knownNames is fs as field or label text: the names in watcher.AllFlags,
// once each, in that order, comma-separated (unknown names left out).
func knownNames(fs []watcher.Flag) string {
	return joinFlags(watcher.FlagsOf(fs).List(), ",")
}
