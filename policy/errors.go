package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/portwatchd/portwatchd/internal/textesc"
)

// Error is one problem found in a configuration file. Line and Column are
// 1-based; a Line of 0 means the problem concerns the file as a whole (it
// cannot be read, or its permissions are unsafe). For a YAML syntax error
// the Column is always 1: yaml.v3 reports the line of a syntax error but
// not its column.
type Error struct {
	File   string
	Line   int
	Column int
	Msg    string
	// more is, on the last entry of a capped list, how many errors were
	// left out after it.
	more int
}

// MaxErrors is how many errors one Load or Parse reports; the rest are
// counted in a last "... and N more errors" entry. A file of 40,000
// duplicate rule names does not need 40,000 lines to be fixed.
const MaxErrors = 100

// Error formats e as "file:line:col: message", or "file: message", on one
// line: file names and values quoted from the input may hold control
// characters, which are escaped.
func (e *Error) Error() string {
	if e.Line == 0 {
		return textesc.Controls(e.File + ": " + e.Msg)
	}
	return textesc.Controls(fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg))
}

// ErrorList is every problem found by one Load or Parse. Its Error method
// prints one problem per line, in file order.
type ErrorList []*Error

// Error implements error.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Total is the number of problems found, counting those left out of a
// capped list.
func (l ErrorList) Total() int {
	n := len(l)
	for _, e := range l {
		if e.more > 0 {
			n += e.more - 1
		}
	}
	return n
}

// finish sorts the list and caps it at MaxErrors entries, replacing the
// rest with one entry that counts them. That entry names the file of the
// first error left out, with no line.
func (l ErrorList) finish(fileOrder map[string]int) ErrorList {
	l.sort(fileOrder)
	if len(l) <= MaxErrors {
		return l
	}
	n := len(l) - MaxErrors
	out := append(l[:MaxErrors:MaxErrors], &Error{
		File: l[MaxErrors].File,
		Msg:  fmt.Sprintf("... and %d more errors (fix these first)", n),
		more: n,
	})
	return out
}

// sort orders the list by the order in which files were read, then by
// position, so that output is stable and reads top to bottom.
func (l ErrorList) sort(fileOrder map[string]int) {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(fileOrder[a.File], fileOrder[b.File]),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
		)
	})
}

// suggest returns the known key closest to key, or "" when none is close
// enough to be a plausible typo. A unique prefix ("prot" for "protocol")
// counts as close.
func suggest(key string, known []string) string {
	if len(key) >= 2 {
		var match string
		n := 0
		for _, k := range known {
			if strings.HasPrefix(k, key) {
				match = k
				n++
			}
		}
		if n == 1 {
			return match
		}
	}
	best, bestD := "", 0
	for _, k := range known {
		d := editDistance(key, k)
		if best == "" || d < bestD {
			best, bestD = k, d
		}
	}
	limit := max(2, len(key)/3)
	if best != "" && bestD <= limit && bestD < len(key) {
		return best
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
