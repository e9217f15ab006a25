package policy

import (
	"time"

	"github.com/portwatchd/portwatchd/watcher"
)

// AllowedIfAttributed reports whether l, a listener with no known holder,
// would be allowed by some rule that names process fields, had its holder
// been seen: that rule's socket fields match l, and no deny rule matches l
// as it is. It returns that rule's name.
//
// When attribution is partial (portwatchd not run as root cannot see other
// users' processes), such an unexpected verdict rests only on the missing
// holder and says nothing about the listener: check reports UNKNOWN for it
// rather than a false CRITICAL.
func (c *Config) AllowedIfAttributed(l watcher.Listener, now time.Time) (string, bool) {
	if len(l.Processes) > 0 {
		return "", false
	}
	for i := range c.Deny {
		if _, ok := c.Deny[i].denies(&l, nil, now); ok {
			return "", false // denied whoever holds it
		}
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if !r.hasProcessFields() {
			continue // it judged l as it is
		}
		if s := r.socketOnly(); s.Matches(l, now) {
			return r.Name, true
		}
	}
	return "", false
}
