package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds the loader arbitrary bytes, seeded with the reference
// config and every testdata file. It must never panic or hang; it returns
// either a usable Config or an ErrorList whose entries all carry a position.
func FuzzParse(f *testing.F) {
	seeds := []string{"../configs/portwatch.yaml", "default.yaml"}
	for _, glob := range []string{"../configs/examples/*.yaml", "testdata/bad/*.yaml", "testdata/bad/*/*.yaml", "testdata/bad/*/*/*.yaml", "testdata/fuzz-seeds/*.yaml"} {
		m, _ := filepath.Glob(glob)
		seeds = append(seeds, m...)
	}
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(Baseline(baselineListeners(), time.Unix(0, 0).UTC(), true))
	f.Add([]byte("memfd_runtimes: [runc]\nallow:\n  - name: a\n    unit: x.service\n    flags: [exe_memfd, exe_gone]\ndeny:\n  - name: d\n    flags: netcat_family\n    reason: no\n"))
	probe := append(baselineListeners(),
		listener("tcp", "0.0.0.0", 4444, memfdProc, ncatProc),
		listener("tcp", "127.0.0.1", 8000, tmpProc),
		listener("udp", "0.0.0.0", 41000, goneProc, upgradedNginx))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := testLoader(map[string]string{"CREDENTIALS_DIRECTORY": "/nonexistent"})
		l.followIncludes = false
		// Paths come from the input: read no file it names.
		l.readSecret = func(string) ([]byte, fs.FileInfo, error) { return nil, nil, fs.ErrNotExist }
		// A hang becomes a crash that names its input.
		timer := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("HANG on %q", data)) })
		defer timer.Stop()
		c, err := l.parse("fuzz.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is %T %v, want a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if e.File == "" || e.Msg == "" || strings.ContainsAny(e.Error(), "\n\r") {
					t.Fatalf("malformed error %q", e.Error())
				}
			}
			return
		}
		names := map[string]bool{}
		for _, r := range append(c.Rules, c.Deny...) {
			if r.Name == "" || names[r.Name] {
				t.Fatalf("rule name %q empty or duplicate", r.Name)
			}
			names[r.Name] = true
		}
		now := time.Now()
		for _, l := range probe {
			d := c.Evaluate(l, now)
			if strings.ContainsAny(d.Reason, "\n\r") {
				t.Fatalf("reason is not one line: %q", d.Reason)
			}
			// Critical exactly when unexpected with a high-risk holder.
			var risky bool
			for i := range l.Processes {
				risky = risky || len(c.HighRisk(&l.Processes[i])) > 0
			}
			if (d.Severity == SeverityCritical) != (d.Verdict == Unexpected && risky) {
				t.Fatalf("severity %s for a %s listener (high-risk holder: %t): %s", d.Severity, d.Verdict, risky, d.Reason)
			}
		}
	})
}

// FuzzParseServices checks that the services(5) parser never panics and
// only returns valid ports.
func FuzzParseServices(f *testing.F) {
	data, err := os.ReadFile("testdata/services")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("ssh 22/tcp ssh-alias\nx 0/udp\ny 65536/tcp\n#z 1/tcp\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, m := range ParseServices(data) {
			if name == "" || strings.ContainsAny(name, " \t\n#") {
				t.Fatalf("bad service name %q", name)
			}
			for proto, port := range m {
				if port == 0 || proto == "" {
					t.Fatalf("service %q: bad entry %s/%d", name, proto, port)
				}
			}
		}
	})
}
