//go:build race

package watcher

// raceEnabled: the race detector slows everything several times over, so
// timing budgets are not checked.
const raceEnabled = true
