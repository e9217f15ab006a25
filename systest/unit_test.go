package systest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

const unitPath = "../packaging/systemd/portwatchd.service"

// maxExposure is the highest systemd-analyze security score the unit may
// have (0 is fully locked down, 10 is unprotected). It was 1.8 before the
// kernel programs; CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and bpf(2) make 2.1.
const maxExposure = 2.2

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)

// TestUnitSecurity scores the unit offline, as a reviewer would, and fails
// on a regression of its sandboxing.
func TestUnitSecurity(t *testing.T) {
	analyze := lookSystemdAnalyze(t)
	// --threshold=22 makes systemd-analyze itself fail above 2.2.
	cmd := exec.Command(analyze, "security", "--offline=true", "--threshold=22", "--no-pager", unitPath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --threshold=22: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	if score > maxExposure {
		t.Errorf("exposure %.1f, want <= %.1f:\n%s", score, maxExposure, out)
	}
	t.Logf("systemd-analyze security exposure: %.1f", score)
}

// TestUnitVerify runs systemd-analyze verify on the unit. verify insists that
// ExecStart= binaries exist, so a copy points them at an executable that
// does; the installed unit, with the real paths and man pages, is verified
// inside the sandbox by the system test.
func TestUnitVerify(t *testing.T) {
	analyze := lookSystemdAnalyze(t)
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.ReplaceAll(data, []byte("/usr/sbin/portwatchd"), []byte(self))
	copyPath := filepath.Join(t.TempDir(), "portwatchd.service")
	if err := os.WriteFile(copyPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// The man pages are not installed here: --man=no.
	cmd := exec.Command(analyze, "verify", "--man=no", copyPath)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func lookSystemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	return p
}
