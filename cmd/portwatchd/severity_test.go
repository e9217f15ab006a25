package main

import "testing"

// checkAlertPriority: the journal entry of an alert (an unexpected listener
// opened or changed) has the PRIORITY of its PORTWATCH_SEVERITY: 2 (crit)
// for critical, which the policy gives a test binary run from a writable
// directory such as /tmp, 4 for warning.
func checkAlertPriority(t *testing.T, what string, ent map[string]string) {
	t.Helper()
	want, ok := map[string]string{"critical": "2", "warning": "4"}[ent["PORTWATCH_SEVERITY"]]
	if !ok || ent["PRIORITY"] != want {
		t.Errorf("%s: PORTWATCH_SEVERITY %q, PRIORITY %q; want critical and 2, or warning and 4", what, ent["PORTWATCH_SEVERITY"], ent["PRIORITY"])
	}
}
