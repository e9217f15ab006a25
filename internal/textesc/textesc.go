// Package textesc makes text that others chose (process names, executable
// paths, user, unit and namespace names, bytes read from a peer) safe to show
// on one line of a terminal, a journal field or a chat message.
//
// There is one rule, Line, applied once where the text leaves the program
// (the "edge"): values are kept raw inside, so that a message built from
// escaped parts is never escaped again, which would double its backslashes.
package textesc

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns s with every backslash, control or format character
// (newlines, ESC, bidi overrides, zero-width characters), other
// non-printable character and invalid UTF-8 byte written as a Go escape:
// \\, \n, \r, \t, \a, \x1b, \u202e, \U000e0001, \xff, as strconv.Quote
// writes them. Printable text, non-ASCII letters included, is kept, so the
// result reads as s did. The result holds no control character, and s can be
// told back from it: escaping the backslash keeps a literal "\x1b" apart
// from the byte ESC.
//
// Line allocates nothing when s needs no escape.
func Line(s string) string {
	if !Needed(s) {
		return s
	}
	return escape(s, true)
}

// Controls is Line for text that already holds Go-quoted values (an error
// message quoting the input with %q): it escapes control and format
// characters and invalid UTF-8 the same way, but keeps backslashes, which
// there are escapes already. Use Line for everything else.
func Controls(s string) string {
	if !needed(s, false) {
		return s
	}
	return escape(s, false)
}

func escape(s string, backslash bool) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case (r == '\\' && backslash) || !unicode.IsPrint(r):
			// strconv has the same idea of printable as unicode.IsPrint.
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// Needed reports whether Line(s) differs from s.
func Needed(s string) bool { return needed(s, true) }

func needed(s string, backslash bool) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			// ASCII fast path: printable and not a backslash.
			if c < 0x20 || c == 0x7f || (c == '\\' && backslash) {
				return true
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n <= 1) || !unicode.IsPrint(r) {
			return true
		}
		i += n
	}
	return false
}
