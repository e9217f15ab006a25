package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portwatchd/portwatchd/internal/textesc"
	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

func init() {
	commands["list"] = command{"print every listening socket and the program behind it", runList}
}

// listOutput is the document `portwatchd list --json` prints.
type listOutput struct {
	Host      string            `json:"host"`
	Time      time.Time         `json:"time"`
	Listeners []policy.Decision `json:"listeners"`
	// EBPF is the config's ebpf: mode (auto, on, off). list itself is one
	// snapshot and never loads the kernel programs; the daemon's STATUS
	// says whether they run.
	EBPF policy.EBPFMode `json:"ebpf"`
}

func runList(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("list", stderr)
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd list: %s\n", errLine(err.Error()))
		return exitError
	}
	w, err := watcher.New(watcher.Options{
		Warn: func(msg string) { fmt.Fprintf(stderr, "portwatchd list: warning: %s\n", errLine(msg)) },
	})
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd list: %s\n", errLine(err.Error()))
		return exitError
	}
	defer w.Close()
	snap, err := w.Snapshot(context.Background())
	if err != nil {
		fmt.Fprintf(stderr, "portwatchd list: %s\n", errLine(err.Error()))
		return exitError
	}
	// exposure: read the rulesets once, as the daemon does at start.
	ev := exposedEvaluator{cfg: cfg}
	if cfg.Exposure != policy.ExposureOff {
		var note string
		ev.byKey, snap, note = assessOnce(context.Background(), snap)
		if note != "" {
			fmt.Fprintf(stderr, "portwatchd list: warning: %s\n", errLine(note))
		}
	}
	decisions := make([]policy.Decision, 0, len(snap.Listeners))
	for _, l := range snap.Listeners {
		decisions = append(decisions, ev.Evaluate(l, snap.Time))
	}
	if *asJSON {
		host, _ := os.Hostname()
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(listOutput{Host: host, Time: snap.Time, Listeners: decisions, EBPF: cfg.EBPF}); err != nil {
			fmt.Fprintf(stderr, "portwatchd list: write: %s\n", errLine(err.Error()))
			return exitError
		}
		return exitOK
	}
	if err := writeTable(stdout, decisions); err != nil {
		fmt.Fprintf(stderr, "portwatchd list: write: %s\n", errLine(err.Error()))
		return exitError
	}
	return exitOK
}

// writeTable prints decisions in the style of ss, one line per listener.
// Every field a process controls is escaped.
func writeTable(out io.Writer, ds []policy.Decision) error {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tLOCAL ADDRESS:PORT\tNETNS\tPID/PROGRAM\tEXE\tUSER\tUNIT\tFLAGS\tEXPOSURE\tVERDICT")
	for i := range ds {
		d := &ds[i]
		l := &d.Listener
		prog, exe, user, unit := "-", "-", "-", "-"
		if len(l.Processes) > 0 {
			// With socket activation PID 1 holds the socket too; the
			// service is the more telling holder to show.
			p := l.Processes[0]
			if i := slices.IndexFunc(l.Processes, func(p watcher.Process) bool { return p.PID != 1 }); i >= 0 {
				p = l.Processes[i]
			}
			prog = strconv.Itoa(p.PID) + "/" + escape(p.Comm)
			if n := len(l.Processes) - 1; n > 0 {
				prog += "+" + strconv.Itoa(n)
			}
			if p.Exe != "" {
				exe = escape(p.Exe)
				// Deleted, or not the file the path names here (a spoof
				// through a private mount namespace, a container's).
				switch {
				case p.ExeDeleted:
					exe += " (deleted)"
				case p.ExeUnverified:
					exe += " (unverified)"
				}
			}
			user = escape(p.User)
			switch {
			case p.Unit != "":
				unit = escape(p.Unit)
			case p.Container != "":
				unit = "container:" + escape(p.Container[:min(12, len(p.Container))])
			}
		}
		if l.Published != "" {
			// A listener of its own kind: a host port a DNAT rule sends
			// on, with no socket of the host behind it.
			exe = escape(l.Published)
		}
		verdict := string(d.Verdict)
		// For an unexpected listener Rule is only the closest rule: naming
		// it next to the verdict would read as if it matched.
		switch {
		case d.Rule != "" && d.Verdict != policy.Unexpected:
			verdict += " (" + escape(d.Rule) + ")"
		case d.Verdict == policy.Unexpected && d.Severity >= policy.SeverityCritical:
			verdict += " (critical)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			protoColumn(l), addrColumn(l), escape(l.Netns), prog, exe, user, unit, flagsColumn(l), exposureColumn(d), verdict)
	}
	return tw.Flush()
}

// flagShort is the short name of each flag in list's FLAGS column, which
// must stay narrow; list --json, journald and webhooks use the full names.
// The README's list section documents them.
var flagShort = map[watcher.Flag]string{
	watcher.FlagExeReplaced:          "replaced",
	watcher.FlagExeGone:              "gone",
	watcher.FlagExeMemfd:             "memfd",
	watcher.FlagExeInWritableDir:     "wdir",
	watcher.FlagExeUnpackaged:        "unpkg",
	watcher.FlagExeModified:          "mod",
	watcher.FlagSessionLaunched:      "session",
	watcher.FlagParentShell:          "pshell",
	watcher.FlagParentWebServer:      "pweb",
	watcher.FlagInterpreter:          "interp",
	watcher.FlagNetcatFamily:         "nc",
	watcher.FlagCommMismatch:         "comm",
	watcher.FlagRootUnprivilegedPort: "rootport",
}

// flagsColumn is the flags of every holder of l, short names in
// watcher.AllFlags order joined by ",", or "-" when there is none.
func flagsColumn(l *watcher.Listener) string {
	fs := notify.HolderFlags(*l)
	if len(fs) == 0 {
		return "-"
	}
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = flagShort[f]
	}
	return strings.Join(names, ",")
}

// exposureColumn is the classes of the listener's exposure, as a rule's
// exposure: names them (open, filtered, loopback, restricted, published,
// unknown), joined by ",". No exposure known is unknown; list --json has
// the whole object, with the reason.
func exposureColumn(d *policy.Decision) string {
	return strings.Join(policy.ExposureClassesOf(d.Exposure), ",")
}

// protoColumn is the protocol with its family, as netstat writes it:
// tcp, tcp6, and tcp46 for an IPv6 socket that also accepts IPv4.
func protoColumn(l *watcher.Listener) string {
	switch {
	case l.DualStack:
		return l.Protocol + "46"
	case l.Family == watcher.IPv6:
		return l.Protocol + "6"
	}
	return l.Protocol
}

// addrColumn is "address%interface:port (service)".
func addrColumn(l *watcher.Listener) string {
	var b strings.Builder
	a := l.Address
	switch {
	case a.Is6():
		b.WriteString("[" + a.String() + "]")
	case a == netip.IPv4Unspecified():
		b.WriteString("0.0.0.0")
	default:
		b.WriteString(a.String())
	}
	if l.Interface != "" {
		b.WriteString("%" + escape(l.Interface))
	}
	b.WriteString(":" + strconv.Itoa(int(l.Port)))
	if l.Service != "" {
		b.WriteString(" (" + escape(l.Service) + ")")
	}
	if l.Ephemeral {
		b.WriteString(" ephemeral")
	}
	return b.String()
}

// escape makes s safe for a terminal and for one table cell.
func escape(s string) string { return textesc.Line(s) }

// errLine shows an error or warning on one line. Their values are quoted
// already (policy and watcher errors quote names with %q), so backslashes
// stay; control characters left in them are escaped.
func errLine(s string) string { return textesc.Controls(oneLine(s)) }

// oneLine joins a multi-line message so that the error is one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
