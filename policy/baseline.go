package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/watcher"
)

// Baseline writes a reviewable allowlist that allows every listener in ls.
// It makes one rule per program (the same network namespace, exe, user and
// unit), with the program's ports merged into a list, its protocols,
// "address: loopback" when it binds only to loopback, and a comment with its
// cmdline and the date it was seen. A rule whose listeners have holders
// with high-risk flags (HighRisk, with no memfd_runtimes exception, so that
// the rule holds whatever that setting says) names them in flags:, with a
// comment saying which processes had them. Ephemeral UDP listeners are left
// out when ignoreEphemeralUDP is set, since the policy ignores them then,
// unless a holder has a high-risk flag. Rule names derive from the unit or
// the exe, and are unique.
//
// The output validates and allows every listener of ls by construction:
// process fields are written only when they can be matched back exactly.
func Baseline(ls []watcher.Listener, seen time.Time, ignoreEphemeralUDP bool) []byte {
	return BaselineReserving(ls, seen, ignoreEphemeralUDP, nil)
}

// BaselineReserving is Baseline with rule names that avoid those in
// reserved: the rules that stay in force beside the output, such as the
// drop-ins' when the output replaces the main file (rule names must be
// unique across all files). reserved maps each name to where it is
// defined ("file:line"); a rule renamed to avoid one says so in a comment.
func BaselineReserving(ls []watcher.Listener, seen time.Time, ignoreEphemeralUDP bool, reserved map[string]string) []byte {
	type group struct {
		key       string
		netns     string
		proc      *watcher.Process // nil: unattributed
		exe, user string
		unit      string
		protos    []string
		ports     []int
		loopback  bool
		cmdlines  []string
		note      string // why exe is not pinned
		listeners int
		flags     watcher.FlagSet // the holders' high-risk flags
		flagNotes []string        // which processes had them
	}
	var groups []*group
	byKey := map[string]*group{}
	for i := range ls {
		l := &ls[i]
		var risk watcher.FlagSet
		for j := range l.Processes {
			risk |= highRisk(&l.Processes[j], nil)
		}
		if ignoreEphemeralUDP && l.Protocol == watcher.UDP && l.Ephemeral && risk == 0 {
			continue
		}
		g := &group{netns: l.Netns, loopback: true}
		if len(l.Processes) > 0 {
			p := &l.Processes[0]
			g.proc = p
			if p.Exe != "" && utf8.ValidString(p.Exe) && !hasControl(p.Exe) {
				if why := exeUnpinnable(p, l.Netns); why != "" {
					g.note = "exe " + textesc.Controls(p.Exe) + " not pinned: " + why
				} else {
					g.exe = p.Exe
				}
			}
			g.user = strconv.FormatUint(uint64(p.UID), 10)
			if p.User != "" && !isDigits(p.User) && utf8.ValidString(p.User) && !hasControl(p.User) {
				g.user = p.User
			}
			if p.Unit != "" && utf8.ValidString(p.Unit) && !hasControl(p.Unit) {
				g.unit = p.Unit
			}
		}
		// One rule per program: an exe left unpinned still tells
		// programs apart, and its note must fit every listener.
		g.key = strings.Join([]string{g.netns, strconv.FormatBool(g.proc != nil), g.exe, g.note, g.user, g.unit}, "\x00")
		if old, ok := byKey[g.key]; ok {
			g = old
		} else {
			byKey[g.key] = g
			groups = append(groups, g)
		}
		g.listeners++
		if !contains(g.protos, l.Protocol) {
			g.protos = append(g.protos, l.Protocol)
		}
		if !slices.Contains(g.ports, int(l.Port)) {
			g.ports = append(g.ports, int(l.Port))
		}
		if !l.Address.Unmap().IsLoopback() {
			g.loopback = false
		}
		if g.proc != nil && len(g.cmdlines) < 3 {
			c := cmdline(&l.Processes[0])
			if !contains(g.cmdlines, c) {
				g.cmdlines = append(g.cmdlines, c)
			}
		}
		g.flags |= risk
		for j := range l.Processes {
			p := &l.Processes[j]
			if m := highRisk(p, nil); m != 0 && len(g.flagNotes) < 3 {
				n := fmt.Sprintf("pid %d %s: %s", p.PID, textesc.Controls(describeExe(p)), m)
				if !contains(g.flagNotes, n) {
					g.flagNotes = append(g.flagNotes, n)
				}
			}
		}
	}

	var b strings.Builder
	day := seen.Format("2006-01-02")
	fmt.Fprintf(&b, "# portwatchd baseline: %d listeners seen on %s.\n", len(ls), seen.Format("2006-01-02 15:04:05 MST"))
	b.WriteString("# Review every rule before trusting it: this allows what runs now, good or bad.\n")
	b.WriteString("# Validate with: portwatchd validate -c FILE\n")
	b.WriteString("version: 1\n")
	fmt.Fprintf(&b, "ignore_ephemeral_udp: %t\n", ignoreEphemeralUDP)
	if len(groups) == 0 {
		b.WriteString("allow: []\n")
		return []byte(b.String())
	}
	b.WriteString("allow:\n")
	names := map[string]bool{}
	for _, g := range groups {
		base := "unattributed"
		if g.proc != nil {
			base = ruleBaseName(g.unit, g.exe, g.proc.Comm)
		}
		name := base
		for i := 2; names[name] || reserved[name] != ""; i++ {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		names[name] = true
		if where := reserved[base]; where != "" {
			fmt.Fprintf(&b, "  # named %s: rule %s is already defined at %s\n", textesc.Controls(name), textesc.Controls(base), textesc.Controls(where))
		}
		slices.Sort(g.ports)
		slices.Sort(g.protos)

		if g.proc == nil {
			b.WriteString("  # sockets with no known process (kernel sockets, or held by a process that exited)\n")
		}
		for _, c := range g.cmdlines {
			fmt.Fprintf(&b, "  # seen %s, %s\n", day, c)
		}
		if g.note != "" {
			fmt.Fprintf(&b, "  # %s\n", g.note)
		}
		for _, n := range g.flagNotes {
			fmt.Fprintf(&b, "  # high-risk, accepted by flags: below (review it): %s\n", n)
		}
		fmt.Fprintf(&b, "  - name: %s\n", yamlQuote(name))
		fmt.Fprintf(&b, "    netns: %s\n", yamlQuote(escapeGlob(g.netns)))
		fmt.Fprintf(&b, "    protocol: [%s]\n", strings.Join(g.protos, ", "))
		fmt.Fprintf(&b, "    port: [%s]\n", strings.Join(portList(g.ports), ", "))
		if g.loopback {
			b.WriteString("    address: loopback\n")
		}
		if g.exe != "" {
			fmt.Fprintf(&b, "    exe: %s\n", yamlQuote(escapeGlob(g.exe)))
		}
		if g.proc != nil {
			fmt.Fprintf(&b, "    user: %s\n", yamlQuote(g.user))
		}
		if g.unit != "" {
			fmt.Fprintf(&b, "    unit: %s\n", yamlQuote(escapeGlob(g.unit)))
		}
		if g.flags != 0 {
			fmt.Fprintf(&b, "    flags: [%s]\n", g.flags)
		}
		fmt.Fprintf(&b, "    reason: %s\n", yamlQuote("baseline "+day))
	}
	return []byte(b.String())
}

// exeUnpinnable says why an exe rule could not match p's exe, as the
// matcher has it, or "" when a rule pinning it (and the listener's netns, as
// baseline rules do) matches.
func exeUnpinnable(p *watcher.Process, netns string) string {
	// Baseline rules always name user:, which an exe_replaced holder needs.
	_, why := (&Rule{Netns: netns, User: "baseline"}).exeTrusted(p)
	return why
}

// describeExe names p's executable for a comment: its path, or its process
// name in brackets.
func describeExe(p *watcher.Process) string {
	if p.Exe == "" {
		return "[" + p.Comm + "]"
	}
	return p.Exe
}

// cmdline renders a process's command line for a YAML comment: one line,
// control characters escaped, clipped.
func cmdline(p *watcher.Process) string {
	s := strings.Join(p.Cmdline, " ")
	if s == "" {
		s = "[" + p.Comm + "]"
	}
	s = textesc.Controls(s)
	if len(s) > 160 {
		// Cut on a rune boundary.
		i := 157
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "..."
	}
	return fmt.Sprintf("pid %d: %s", p.PID, s)
}

// ruleBaseName derives a readable rule name from a service unit, else the
// exe's base name, else the process name.
func ruleBaseName(unit, exe, comm string) string {
	var s string
	switch {
	case strings.HasSuffix(unit, ".service"):
		s = strings.TrimSuffix(unit, ".service")
	case exe != "":
		s = exe[strings.LastIndexByte(exe, '/')+1:]
	default:
		s = comm
	}
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if len(out) > 40 {
		out = strings.TrimRight(out[:40], "-")
	}
	if out == "" {
		out = "listener"
	}
	return out
}

// escapeGlob quotes path.Match metacharacters so that the pattern matches s
// literally.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// plainYAML matches strings that YAML reads back as the same string when
// written unquoted.
var plainYAML = regexp.MustCompile(`^[A-Za-z_/.][A-Za-z0-9_/.@+-]*$`)

// yamlQuote writes s as a YAML scalar that reads back as the string s:
// plain when that is unambiguous, else double-quoted. Go's escapes for
// printable valid UTF-8 (\" and \\) are valid YAML; callers pass nothing
// else.
func yamlQuote(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "y", "n", ".inf", ".nan":
		return strconv.Quote(s)
	}
	if plainYAML.MatchString(s) {
		return s
	}
	return strconv.Quote(s)
}

// portList renders sorted ports, runs of three or more as a range "lo-hi".
func portList(ports []int) []string {
	var out []string
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if j-i >= 2 {
			out = append(out, fmt.Sprintf("%d-%d", ports[i], ports[j]))
		} else {
			for k := i; k <= j; k++ {
				out = append(out, strconv.Itoa(ports[k]))
			}
		}
		i = j + 1
	}
	return out
}
