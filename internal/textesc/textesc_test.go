package textesc

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestLine(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "/usr/sbin/sshd", want: "/usr/sbin/sshd"},
		{name: "empty", in: "", want: ""},
		{name: "letters kept", in: "/opt/größe/日本", want: "/opt/größe/日本"},
		{name: "space kept", in: "my server", want: "my server"},
		{name: "newline and ESC", in: "/tmp/x\n\x1b[31mname", want: `/tmp/x\n\x1b[31mname`},
		{name: "tab and CR", in: "a\tb\rc", want: `a\tb\rc`},
		{name: "backslash", in: `/tmp/a\x1bb`, want: `/tmp/a\\x1bb`},
		{name: "NUL and DEL", in: "a\x00b\x7f", want: `a\x00b\x7f`},
		{name: "bell, backspace, form feed, vertical tab", in: "\a\b\f\v", want: `\a\b\f\v`},
		{name: "C1 control", in: "a\u0085b", want: `a\u0085b`},
		{name: "bidi override", in: "evil\u202egpj.exe", want: `evil\u202egpj.exe`},
		{name: "zero-width space", in: "ss\u200bhd", want: `ss\u200bhd`},
		{name: "line separator", in: "a\u2028b", want: `a\u2028b`},
		{name: "tag character", in: "a\U000e0041", want: `a\U000e0041`},
		{name: "invalid UTF-8", in: "a\xffb\xc3", want: `a\xffb\xc3`},
		{name: "replacement character kept", in: "a\uFFFDb", want: "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Line(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Line(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
			if Needed(tt.in) != (got != tt.in) {
				t.Errorf("Needed(%q) = %v, but Line changes it: %v", tt.in, Needed(tt.in), got != tt.in)
			}
		})
	}
}

// TestLineReversible checks that Line loses nothing: for valid UTF-8,
// unquoting the result as a Go string gives the input back.
func TestLineReversible(t *testing.T) {
	for _, s := range []string{"/tmp/x\n\x1b[31mname\a", `a\x1b`, "evil\u202egpj", "\\\\", "ss\u200bhd\t"} {
		got, err := strconv.Unquote(`"` + strings.ReplaceAll(Line(s), `"`, `\"`) + `"`)
		if err != nil || got != s {
			t.Errorf("Unquote(Line(%q)) = %q, %v; want the input", s, got, err)
		}
	}
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"", "a\x1bb", "\xff", "\u202e", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Line(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Line(%q) = %q: invalid UTF-8", s, got)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || r == '\u202e' {
				t.Fatalf("Line(%q) = %q holds %U", s, got, r)
			}
		}
		if got == s && strings.Contains(s, `\`) {
			t.Fatalf("Line(%q) left a backslash unescaped", s)
		}
		if Needed(s) != (got != s) {
			t.Fatalf("Needed(%q) = %v, Line changed it: %v", s, Needed(s), got != s)
		}
	})
}

func BenchmarkLineClean(b *testing.B) {
	s := "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
	b.ReportAllocs()
	for b.Loop() {
		Line(s)
	}
}

func TestControls(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: `unit: invalid glob "foo\\"`, want: `unit: invalid glob "foo\\"`},
		{name: "raw path in a quoted message", in: "open /etc/p\x1b.yaml: \"a\\tb\"", want: `open /etc/p\x1b.yaml: "a\tb"`},
		{name: "bidi", in: "a\u202eb", want: `a\u202eb`},
		{name: "invalid UTF-8", in: "a\xff", want: `a\xff`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Controls(tt.in)); diff != "" {
				t.Errorf("Controls(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
