package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/internal/journaltest"
	"github.com/portwatchd/portwatchd/notify"
)

// notifyTestConfig writes a config whose webhooks point at the given
// loopback URLs, each with a token in its path that must never be printed.
func notifyTestConfig(t *testing.T, journald bool, hooks ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nnotify:\n  journald: %v\n  webhooks:\n", journald)
	for i := 0; i+1 < len(hooks); i += 2 {
		fmt.Fprintf(&b, "    - name: %s\n      format: generic\n      url: %s/hooks/TOKEN%dsecret\n", hooks[i], hooks[i+1], i)
	}
	if len(hooks) == 0 {
		b.WriteString("    []\n")
	}
	path := filepath.Join(t.TempDir(), "portwatch.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNotifyTest(t *testing.T) {
	var got atomic.Int32
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"type": "test"`)) {
			got.Add(1)
		}
	}))
	defer ok.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no "+r.URL.Path, http.StatusInternalServerError)
	}))
	defer failing.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	tests := []struct {
		name   string
		config string
		code   int
		stdout string
	}{
		{
			name:   "all ok",
			config: notifyTestConfig(t, false, "good", ok.URL),
			code:   exitOK,
			stdout: "good: ok\n",
		},
		{
			name:   "one fails",
			config: notifyTestConfig(t, false, "good", ok.URL, "bad", failing.URL, "gone", downURL),
			code:   exitFound,
			stdout: "good: ok\nbad: HTTP 500 Internal Server Error: no <redacted path>\ngone: dial tcp " + strings.TrimPrefix(downURL, "http://") + ": connect: connection refused\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run([]string{"notify-test", "-c", tt.config}, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if diff := cmp.Diff(tt.stdout, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if all := stdout.String() + stderr.String(); strings.Contains(all, "TOKEN") || strings.Contains(all, "secret") {
				t.Errorf("a URL leaked:\n%s", all)
			}
		})
	}
	if got.Load() != 2 {
		t.Errorf("the good receiver got %d test events, want 2", got.Load())
	}

	var stdout, stderr bytes.Buffer
	if code := run([]string{"notify-test", "-c", notifyTestConfig(t, false)}, &stdout, &stderr); code != exitFound || !strings.Contains(stderr.String(), "no sinks configured") {
		t.Errorf("no sinks: exit %d, stderr %q", code, stderr.String())
	}
}

// TestNotifyTestJournald runs notify-test inside a real journald's namespace
// and finds its test entry.
func TestNotifyTestJournald(t *testing.T) {
	j := journaltest.Start(t)
	cfg := notifyTestConfig(t, true)
	out := j.RunHelper(t, "TestHelperNotifyTest", "NOTIFY_TEST_CONFIG="+cfg)
	if !strings.Contains(string(out), "journald: ok\n") {
		t.Errorf("output lacks \"journald: ok\":\n%s", out)
	}
	es := j.Wait(t, 1, "MESSAGE_ID="+notify.MessageIDTest)
	if es[0]["SYSLOG_IDENTIFIER"] != "portwatchd" || es[0]["PORTWATCH_EVENT"] != "test" {
		t.Errorf("test entry: %v", es[0])
	}
}

func TestHelperNotifyTest(t *testing.T) {
	if !journaltest.IsHelper() {
		t.Skip("helper process for TestNotifyTestJournald")
	}
	if code := run([]string{"notify-test", "-c", os.Getenv("NOTIFY_TEST_CONFIG")}, os.Stdout, os.Stderr); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
}
