package systest

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

const catalogPath = "../packaging/systemd/portwatchd.catalog"

// safeCatalogFields are the only fields the catalog may substitute:
// journalctl -x pastes @FIELD@ values into the terminal unescaped, so each
// of these must be made by portwatchd from a fixed alphabet (words,
// numbers, IP addresses, hex ids, webhook names checked by the config
// loader). Process names, paths, units, users, reasons and errors are not.
var safeCatalogFields = map[string]bool{
	"PORTWATCH_PROTOCOL": true,
	"PORTWATCH_ADDRESS":  true,
	"PORTWATCH_PORT":     true,
	"PORTWATCH_VERDICT":  true,
	"PORTWATCH_EVENT":    true,
	"PORTWATCH_EVENT_ID": true,
	"PORTWATCH_PID":      true,
	"PORTWATCH_DROPPED":  true,
	"PORTWATCH_PENDING":  true,
	"PORTWATCH_SINK":     true,
	"PORTWATCH_FORMAT":   true,
}

// TestCatalogSafeFields: no catalog text substitutes a field an attacker
// can fill with terminal escape sequences.
func TestCatalogSafeFields(t *testing.T) {
	b, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	id, used := "", 0
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			continue // comments are not part of any entry
		}
		if rest, ok := strings.CutPrefix(line, "-- "); ok {
			id = rest
			continue
		}
		for _, v := range catalogVarRE.FindAllString(line, -1) {
			used++
			if name := strings.Trim(v, "@"); !safeCatalogFields[name] {
				t.Errorf("%s:%d (entry %s) substitutes %s, which journalctl -x prints unescaped", catalogPath, i+1, id, v)
			}
		}
	}
	if used == 0 {
		t.Error("no substitutions found: is the catalog parsed right?")
	}
}

var catalogVarRE = regexp.MustCompile(`@[A-Za-z0-9_]+@`)
