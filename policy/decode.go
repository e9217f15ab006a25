package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/portwatchd/portwatchd/internal/textesc"
)

// Limits that keep hostile or mistaken input cheap to reject.
const (
	maxFileSize = 1 << 20 // bytes per file
	maxDepth    = 32      // nesting of YAML collections; the schema needs 6
)

// decoder turns the yaml.Node tree of one file into values, recording every
// problem with its position instead of stopping at the first.
type decoder struct {
	file string
	errs *ErrorList
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = max(n.Line, 1), max(n.Column, 1)
	} else {
		e.Line, e.Column = 1, 1
	}
	*d.errs = append(*d.errs, e)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML checks that data is plausible text and parses it into the
// mapping at the top of its single document. It returns nil after recording
// an error.
func (d *decoder) parseYAML(data []byte) *yaml.Node {
	fail := func(line int, msg string) *yaml.Node {
		*d.errs = append(*d.errs, &Error{File: d.file, Line: line, Column: 1, Msg: msg})
		return nil
	}
	if len(data) > maxFileSize {
		return fail(1, fmt.Sprintf("file is larger than %d bytes", maxFileSize))
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return fail(1+bytes.Count(data[:i], []byte("\n")), "file contains a NUL byte: not a YAML text file")
	}
	if !utf8.Valid(data) {
		line := 1
		for i := 0; i < len(data); {
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			if r == '\n' {
				line++
			}
			i += size
		}
		return fail(line, "file is not valid UTF-8: not a YAML text file")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fail(1, "file is empty")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return fail(1, "file has no YAML document (only comments?)")
		}
		return fail(yamlErrorPos(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fail(max(extra.Line, 1), "file has more than one YAML document")
	} else if !errors.Is(err, io.EOF) {
		return fail(yamlErrorPos(err))
	}
	if len(doc.Content) == 0 {
		return fail(1, "file has no YAML document (only comments?)")
	}
	root := doc.Content[0]
	if !d.checkTree(root, 0) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			return fail(1, "file has no YAML document (only comments?)")
		}
		d.errorf(root, "expected a mapping of keys (version, allow, ...), got %s", kindName(root))
		return nil
	}
	return root
}

// yamlErrorPos turns a yaml.v3 syntax error into a line and message.
// yaml.v3 reports a syntax error's line (often where the enclosing
// construct starts) but never its column, and a *yaml.Node carries no
// position for what failed to parse; the caller's column is then 1, which
// Error's doc comment says.
func yamlErrorPos(err error) (int, string) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return max(n, 1), "YAML syntax: " + m[2]
	}
	return 1, "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")
}

// checkTree rejects what the schema never needs and what makes a parser
// expensive: deep nesting and aliases (a "billion laughs" expands them).
func (d *decoder) checkTree(n *yaml.Node, depth int) bool {
	if depth > maxDepth {
		d.errorf(n, "nesting deeper than %d levels", maxDepth)
		return false
	}
	if n.Kind == yaml.AliasNode {
		d.errorf(n, "YAML aliases (*%s) are not supported", clip(n.Value))
		return false
	}
	if n.Anchor != "" {
		d.errorf(n, "YAML anchors (&%s) are not supported", clip(n.Anchor))
		return false
	}
	for _, c := range n.Content {
		if !d.checkTree(c, depth+1) {
			return false
		}
	}
	return true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing (null)"
		case "!!str":
			return fmt.Sprintf("the string %q", clip(n.Value))
		default:
			return fmt.Sprintf("%s %s", clip(strings.TrimPrefix(n.Tag, "!!")), clip(n.Value))
		}
	}
	return "an unexpected node"
}

// clip shortens a value quoted back in an error message, and escapes what
// would break the message's single line.
func clip(s string) string {
	if len(s) > 40 {
		i := 37
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "..."
	}
	return textesc.Controls(s)
}

// field is one key and its value in a mapping.
type field struct {
	key   string
	k, v  *yaml.Node
	known bool
}

// fields checks that n is a mapping whose keys are all in known, reporting
// unknown keys (with a suggestion) and duplicates. It returns the known
// fields in file order.
func (d *decoder) fields(n *yaml.Node, what string, known []string) []field {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping, got %s", what, kindName(n))
		return nil
	}
	var out []field
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!null" {
			d.errorf(k, "%s: keys must be plain names, got %s", what, kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, "duplicate key %q (first at line %d)", k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		ok := false
		for _, kn := range known {
			if kn == k.Value {
				ok = true
				break
			}
		}
		if !ok {
			if s := suggest(k.Value, known); s != "" {
				d.errorf(k, "unknown key %q; did you mean %q?", clip(k.Value), s)
			} else {
				d.errorf(k, "unknown key %q in %s; known keys: %s", clip(k.Value), what, strings.Join(known, ", "))
			}
			continue
		}
		out = append(out, field{key: k.Value, k: k, v: v, known: true})
	}
	return out
}

// str decodes a non-empty scalar as a string.
func (d *decoder) str(f field) (string, bool) {
	v := f.v
	if v.Kind != yaml.ScalarNode {
		d.errorf(v, "%s: expected a string, got %s", f.key, kindName(v))
		return "", false
	}
	if v.Tag == "!!null" || v.Value == "" {
		d.errorf(v, "%s: empty value", f.key)
		return "", false
	}
	if hasControl(v.Value) {
		d.errorf(v, "%s: control characters are not allowed", f.key)
		return "", false
	}
	return v.Value, true
}

// strs decodes a string or a list of strings.
func (d *decoder) strs(f field) ([]*yaml.Node, bool) {
	v := f.v
	var items []*yaml.Node
	switch v.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{v}
	case yaml.SequenceNode:
		items = v.Content
		if len(items) == 0 {
			d.errorf(v, "%s: empty list", f.key)
			return nil, false
		}
	default:
		d.errorf(v, "%s: expected a string or a list of strings, got %s", f.key, kindName(v))
		return nil, false
	}
	ok := true
	for _, it := range items {
		if it.Kind != yaml.ScalarNode || it.Tag == "!!null" || it.Value == "" {
			d.errorf(it, "%s: expected a string, got %s", f.key, kindName(it))
			ok = false
		} else if hasControl(it.Value) {
			d.errorf(it, "%s: control characters are not allowed", f.key)
			ok = false
		}
	}
	return items, ok
}

func (d *decoder) boolean(f field) (bool, bool) {
	var b bool
	if f.v.Kind != yaml.ScalarNode || f.v.Tag != "!!bool" || f.v.Decode(&b) != nil {
		d.errorf(f.v, "%s: expected true or false, got %s", f.key, kindName(f.v))
		return false, false
	}
	return b, true
}

func (d *decoder) integer(f field) (int64, bool) {
	var i int64
	if f.v.Kind != yaml.ScalarNode || f.v.Tag != "!!int" || f.v.Decode(&i) != nil {
		d.errorf(f.v, "%s: expected an integer, got %s", f.key, kindName(f.v))
		return 0, false
	}
	return i, true
}

// intIn decodes an integer between lo and hi.
func (d *decoder) intIn(f field, lo, hi int64) (int, bool) {
	v, ok := d.integer(f)
	if ok && (v < lo || v > hi) {
		d.errorf(f.v, "%s: must be between %d and %d, got %d", f.key, lo, hi, v)
		return 0, false
	}
	return int(v), ok
}

// duration decodes a Go duration ("1s", "500ms") of at least lo.
func (d *decoder) duration(f field, lo time.Duration) (time.Duration, bool) {
	if f.v.Kind != yaml.ScalarNode || f.v.Tag == "!!null" {
		d.errorf(f.v, "%s: expected a duration such as 1s or 500ms, got %s", f.key, kindName(f.v))
		return 0, false
	}
	// A bare 0 is unambiguous; any other number lacks its unit.
	if f.v.Value == "0" {
		if lo > 0 {
			d.errorf(f.v, "%s: must be at least %s", f.key, lo)
			return 0, false
		}
		return 0, true
	}
	dur, err := time.ParseDuration(f.v.Value)
	if err != nil {
		d.errorf(f.v, "%s: invalid duration %q (use a unit: 1s, 500ms, 2m)", f.key, clip(f.v.Value))
		return 0, false
	}
	if dur < 0 {
		d.errorf(f.v, "%s: must not be negative", f.key)
		return 0, false
	}
	if dur < lo {
		d.errorf(f.v, "%s: must be at least %s", f.key, lo)
		return 0, false
	}
	return dur, true
}

// hasControl reports whether s holds a control character, which would break
// one-line messages and journald fields.
func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}
