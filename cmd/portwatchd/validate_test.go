package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/filetest"
)

// writePolicyFiles creates files (path relative to dir: content) under a new
// temporary directory and returns it. Modes are 0644 under root-owned
// directories, so the StrictModes checks pass when running as root.
func writePolicyFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	filetest.Write(t, dir, files)
	return dir
}

func TestValidate(t *testing.T) {
	dir := writePolicyFiles(t, map[string]string{
		"good/portwatch.yaml":       "version: 1\nallow:\n  - name: ssh\n    protocol: tcp\n    port: 22\n",
		"good/portwatch.d/web.yaml": "allow:\n  - name: web\n    port: [80, 443]\n  - name: dns\n    port: 53\n",
		"bad/portwatch.yaml":        "version: 1\nallow:\n  - name: ssh\n    prot: tcp\n",
		"bad/portwatch.d/web.yaml":  "interval: 2s\nallow:\n  - name: web\n    port: 70000\n",
		"one/portwatch.yaml":        "include: []\nallow:\n  - name: only\n    expires: 2001-01-01\n",
		"risk/portwatch.yaml":       "include: []\nallow:\n  - name: any-8080\n    port: 8080\n    flags: [exe_memfd]\ndeny:\n  - name: no-nc\n    flags: netcat_family\n",
	})
	risk := filepath.Join(dir, "risk/portwatch.yaml")
	good := filepath.Join(dir, "good/portwatch.yaml")
	bad := filepath.Join(dir, "bad/portwatch.yaml")
	one := filepath.Join(dir, "one/portwatch.yaml")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "valid with a drop-in",
			args:       []string{"validate", "-c", good},
			wantCode:   exitOK,
			wantStdout: good + ": ok (3 rules in 2 files)\n",
		},
		{
			name:       "alias check-config and --config",
			args:       []string{"check-config", "--config", good},
			wantCode:   exitOK,
			wantStdout: good + ": ok (3 rules in 2 files)\n",
		},
		{
			name:       "expired rule warns",
			args:       []string{"validate", "-c", one},
			wantCode:   exitOK,
			wantStdout: one + ": ok (1 rule in 1 file)\n",
			wantStderr: "warning: " + one + ":3: rule \"only\" expired after 2001-01-01 and allows nothing\n",
		},
		{
			name:       "a rule that accepts a high-risk flag for any program warns",
			args:       []string{"validate", "-c", risk},
			wantCode:   exitOK,
			wantStdout: risk + ": ok (2 rules in 1 file)\n",
			wantStderr: "warning: " + risk + ":5:12: rule \"any-8080\" accepts high-risk flag exe_memfd with no exe:, unit: or container: to say which program: any program with them is allowed on what the rule matches\n",
		},
		{
			name:     "every error in every file",
			args:     []string{"validate", "-c", bad},
			wantCode: exitFound,
			wantStderr: bad + ":4:5: unknown key \"prot\"; did you mean \"protocol\"?\n" +
				filepath.Join(dir, "bad/portwatch.d/web.yaml") + ":1:1: \"interval\" may be set only in the main file, not in a drop-in (drop-ins may add allow and deny rules and notify.webhooks)\n" +
				filepath.Join(dir, "bad/portwatch.d/web.yaml") + ":4:11: port: 70000 is outside 1..65535\n" +
				"portwatchd: config invalid: 3 errors\n",
		},
		{
			name:       "explicit path that does not exist",
			args:       []string{"validate", "-c", filepath.Join(dir, "nope.yaml")},
			wantCode:   exitFound,
			wantStderr: filepath.Join(dir, "nope.yaml") + ": cannot read: no such file or directory\nportwatchd: config invalid: 1 error\n",
		},
		{
			name:       "stray argument",
			args:       []string{"validate", "extra"},
			wantCode:   exitError,
			wantStderr: "portwatchd validate: unexpected argument \"extra\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, &stdout, &stderr)
			}
			if diff := cmp.Diff(tt.wantStdout, stdout.String()); diff != "" {
				t.Errorf("stdout mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStderr, stderr.String()); diff != "" {
				t.Errorf("stderr mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateReferenceConfig runs validate on the shipped reference config
// (its drop-in directory does not exist beside it, which is fine).
func TestValidateReferenceConfig(t *testing.T) {
	if os.Geteuid() == 0 {
		// As root the StrictModes checks would judge the checkout's
		// directories; copy the file somewhere root owns instead.
		data, err := os.ReadFile("../../configs/portwatch.yaml")
		if err != nil {
			t.Fatal(err)
		}
		dir := writePolicyFiles(t, map[string]string{"portwatch.yaml": string(data)})
		var stdout, stderr bytes.Buffer
		if code := run([]string{"validate", "-c", filepath.Join(dir, "portwatch.yaml")}, &stdout, &stderr); code != exitOK {
			t.Fatalf("validate configs/portwatch.yaml: exit %d\n%s", code, &stderr)
		}
		if !strings.HasSuffix(stdout.String(), ": ok (2 rules in 1 file)\n") {
			t.Errorf("stdout = %q", &stdout)
		}
		return
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"validate", "-c", "../../configs/portwatch.yaml"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("validate configs/portwatch.yaml: exit %d\n%s", code, &stderr)
	}
}

func TestValidateUnsafePermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the StrictModes checks apply only when running as root")
	}
	dir := writePolicyFiles(t, map[string]string{"portwatch.yaml": "version: 1\n"})
	p := filepath.Join(dir, "portwatch.yaml")
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"validate", "-c", p}, &stdout, &stderr)
	want := p + ": refusing: " + p + " is writable by group or others (mode 0666)\nportwatchd: config invalid: 1 error\n"
	if code != exitFound {
		t.Errorf("exit code = %d, want %d", code, exitFound)
	}
	if diff := cmp.Diff(want, stderr.String()); diff != "" {
		t.Errorf("stderr mismatch (-want +got):\n%s", diff)
	}
}
