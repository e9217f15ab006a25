package exposure

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "record the live scenario tests' rulesets into testdata/*.json (root)")

// Record writes the namespace's Raw to testdata/NAME.json when the tests run
// with -update, so that fixture_test.go can evaluate the same ruleset
// without root. It reads again rather than reuse Read's dump: the live
// test must still go through Read.
func (ns *testNetns) Record(name string) {
	ns.t.Helper()
	if !*update {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := ReadRaw(ctx, ns.Path)
	if err != nil {
		ns.t.Fatalf("ReadRaw %s: %v", ns.Name, err)
	}
	b, err := json.MarshalIndent(raw, "", "\t")
	if err != nil {
		ns.t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".json")
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		ns.t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Logf("recorded %s", path)
}

// loadFixture reads a Raw recorded by Record.
func loadFixture(t testing.TB, name string) *Raw {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatalf("%v (record it with: go test -run . -update ./exposure, as root)", err)
	}
	var raw Raw
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &raw
}
