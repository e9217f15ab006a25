package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/portwatchd/portwatchd/policy"
)

func TestDaemonLogger(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, format, journalStream string
		check                       func(t *testing.T, line string)
	}{
		{
			name: "text with timestamps outside journald", format: "text",
			check: func(t *testing.T, line string) {
				if !strings.HasPrefix(line, "time=") {
					t.Errorf("line %q has no timestamp", line)
				}
			},
		},
		{
			name: "text without timestamps under journald", format: "text", journalStream: fmt.Sprintf("%d:%d", st.Dev, st.Ino),
			check: func(t *testing.T, line string) {
				if !strings.HasPrefix(line, "level=info msg=hello") {
					t.Errorf("line %q: want no timestamp under journald", line)
				}
			},
		},
		{
			name: "JOURNAL_STREAM of another file is not journald", format: "text", journalStream: "1:2",
			check: func(t *testing.T, line string) {
				if !strings.HasPrefix(line, "time=") {
					t.Errorf("line %q has no timestamp", line)
				}
			},
		},
		{
			name: "json", format: "json",
			check: func(t *testing.T, line string) {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] != "hello" || m["k"] != "v" {
					t.Errorf("line %q is not the JSON entry: %v", line, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.journalStream)
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				t.Fatal(err)
			}
			log, err := newLogger(f, tt.format, "info")
			if err != nil {
				t.Fatal(err)
			}
			log.WithField("k", "v").Info("hello")
			log.Debug("not at info level")
			b, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1: %q", len(lines), b)
			}
			tt.check(t, lines[0])
		})
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := newLogger(f, bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) = nil error", bad[0], bad[1])
		}
	}
}

func TestDaemonExpiredRulesReportedOnce(t *testing.T) {
	cfg, err := policy.Parse("test.yaml", []byte(`version: 1
allow:
  - name: old
    port: 8080
    expires: 2020-01-01
  - name: current
    port: 22
`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	d := &daemon{log: log, cfg: cfg, expired: map[string]bool{}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.logExpired(now)
	d.logExpired(now.Add(time.Hour))
	d.logConfigWarnings(now.Add(2 * time.Hour)) // as after a reload
	if n := strings.Count(buf.String(), "expired"); n != 1 {
		t.Errorf("expired rule reported %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), `test.yaml:3: rule \"old\" expired after 2020-01-01`) {
		t.Errorf("report does not name the rule and its place:\n%s", buf.String())
	}
}
