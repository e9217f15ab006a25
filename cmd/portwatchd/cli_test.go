package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCommandFlags: every command answers -h with its usage and exit 0, and
// an unknown flag with exit 2, without doing any work.
func TestCommandFlags(t *testing.T) {
	for name := range commands {
		if name == "version" {
			continue // takes no flags
		}
		for _, tt := range []struct {
			arg  string
			want int
		}{
			{"-h", exitOK},
			{"--no-such-flag", exitError},
		} {
			if name == "check" && tt.want == exitError {
				tt.want = checkUnknown // a monitoring plugin's bad usage
			}
			t.Run(name+" "+tt.arg, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				if got := run([]string{name, tt.arg}, &stdout, &stderr); got != tt.want {
					t.Errorf("exit %d, want %d; stderr:\n%s", got, tt.want, stderr.String())
				}
				if !strings.Contains(strings.ToLower(stderr.String()), "portwatchd "+name) || !strings.Contains(stderr.String(), "-c") {
					t.Errorf("stderr has no usage:\n%s", stderr.String())
				}
			})
		}
	}
	var stdout, stderr bytes.Buffer
	if got := run([]string{"no-such-command"}, &stdout, &stderr); got != exitError {
		t.Errorf("unknown command: exit %d, want %d", got, exitError)
	}
}
