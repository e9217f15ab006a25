package journaltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	out := `{"MESSAGE":"hello","A":[104,105,10,27],"B":["x",[121]],"C":null}
{"MESSAGE":"second"}
`
	got, err := parse([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{"MESSAGE": "hello", "A": "hi\n\x1b", "B": "x\ny", "C": ""},
		{"MESSAGE": "second"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parse (-want +got):\n%s", diff)
	}
}

// TestJournal writes through go-systemd's journal package from a helper
// process inside the namespace and reads the entry back.
func TestJournal(t *testing.T) {
	j := Start(t)
	j.RunHelper(t, "TestHelperSend", "JT_MESSAGE=hello from helper")
	es := j.Wait(t, 1, "SYSLOG_IDENTIFIER=journaltest")
	if len(es) != 1 {
		t.Fatalf("got %d entries, want 1:\n%s", len(es), format(es))
	}
	got := map[string]string{"MESSAGE": es[0]["MESSAGE"], "JT_FIELD": es[0]["JT_FIELD"], "PRIORITY": es[0]["PRIORITY"]}
	want := map[string]string{"MESSAGE": "hello from helper", "JT_FIELD": "line1\nline2", "PRIORITY": "4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}

	// Command runs arbitrary programs inside the namespace too.
	cmd := j.Command("systemd-cat", "-t", "journaltest-cat", "echo", "via systemd-cat")
	if _, err := exec.LookPath("systemd-cat"); err == nil {
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("systemd-cat: %v\n%s", err, out)
		}
		es := j.Wait(t, 1, "SYSLOG_IDENTIFIER=journaltest-cat")
		if !strings.Contains(es[0]["MESSAGE"], "via systemd-cat") {
			t.Errorf("MESSAGE = %q", es[0]["MESSAGE"])
		}
	}
}

func TestHelperSend(t *testing.T) {
	if !IsHelper() {
		t.Skip("helper process for TestJournal")
	}
	if !journal.Enabled() {
		t.Fatal("journal not enabled inside the namespace")
	}
	err := journal.Send(os.Getenv("JT_MESSAGE"), journal.PriWarning, map[string]string{
		"SYSLOG_IDENTIFIER": "journaltest",
		"JT_FIELD":          "line1\nline2",
	})
	if err != nil {
		t.Fatal(err)
	}
}
