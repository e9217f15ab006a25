package policy

import (
	"strings"

	"github.com/portwatchd/portwatchd/watcher"
)

// DefaultMemfdRuntimes is memfd_runtimes' default: the container runtimes
// that run a copy of themselves from a memfd (runc since CVE-2019-5736,
// and those that copied its defence).
var DefaultMemfdRuntimes = []string{"runc", "crun", "youki"}

// HighRisk returns the flags of p that make a listener it holds high-risk,
// in watcher.AllFlags order, or nil when there are none. It is the one
// place where the risk of a flag is decided:
//
//	flag                 risk
//	exe_gone             high
//	exe_memfd            high, unless p is a container runtime of memfdRuntimes (see below)
//	exe_in_writable_dir  high
//	exe_unpackaged       high together with session_launched, interpreter or netcat_family
//	                     (those are then high-risk too), unless the executable is a verified
//	                     path under /usr/local/ or /opt/; low alone
//	exe_replaced         low (an upgrade whose restart is pending)
//	exe_modified         low (a hint: root can rewrite md5sums)
//	session_launched,
//	interpreter,
//	netcat_family        low alone
//	parent_shell,
//	parent_web_server,
//	comm_mismatch,
//	root_unprivileged_port low
//
// A flag in p.FlagsUnknown is not set: on a host without dpkg the
// exe_unpackaged pairs never apply.
//
// The /usr/local and /opt exception holds only for an executable the
// watcher verified (Process.ExeUnverified false): there the admin installs
// software by hand, and only root writes there (else exe_in_writable_dir is
// set, which is high-risk on its own). An unverified path is whatever the
// process's own mount namespace says, and vouches for nothing.
//
// A memfd executable is a runtime's when the process is in a container
// whose cgroup root chose (p.Container set, not under a user's systemd
// manager), and its process name (comm) or the memfd's name is one of
// memfdRuntimes, alone or followed by a character other than a letter or a
// digit: "runc" matches "runc:[2:INIT]" and "runc_cloned:/proc/self/exe",
// not "runcx". Both names are chosen by the process, so they prove nothing
// alone; the container cgroup bounds the exception to processes that root's
// container manager started. A rootless container's runtime (its cgroup is
// the user's to name) gets no exception: allow it with a rule whose flags:
// names exe_memfd, narrowed by container: or unit:.
func HighRisk(p *watcher.Process, memfdRuntimes []string) []watcher.Flag {
	return highRisk(p, memfdRuntimes).List()
}

// HighRisk is the package function HighRisk with c's memfd_runtimes.
func (c *Config) HighRisk(p *watcher.Process) []watcher.Flag {
	return highRisk(p, c.MemfdRuntimes).List()
}

var (
	bitGone       = watcher.FlagExeGone.Bit()
	bitMemfd      = watcher.FlagExeMemfd.Bit()
	bitWritable   = watcher.FlagExeInWritableDir.Bit()
	bitUnpackaged = watcher.FlagExeUnpackaged.Bit()
	// bitPairs are the flags that make exe_unpackaged high-risk.
	bitPairs = watcher.FlagSessionLaunched.Bit() | watcher.FlagInterpreter.Bit() | watcher.FlagNetcatFamily.Bit()
	// bitBroad are the flags that validate warns about when a rule
	// accepts them with nothing to narrow which program has them.
	bitBroad = bitGone | bitMemfd | bitWritable | bitUnpackaged
)

func highRisk(p *watcher.Process, runtimes []string) watcher.FlagSet {
	if len(p.Flags) == 0 {
		return 0
	}
	have := watcher.FlagsOf(p.Flags)
	m := have & (bitGone | bitWritable)
	if have&bitMemfd != 0 && !memfdRuntime(p, runtimes) {
		m |= bitMemfd
	}
	if have&bitUnpackaged != 0 && have&bitPairs != 0 && !installedByHand(p) {
		m |= bitUnpackaged | have&bitPairs
	}
	return m
}

// listenerRisk is the union of the high-risk flags of l's holders: a rule
// that allows the listener lets every holder use the socket, so each
// holder's risk must be accepted, not only that of the holder it matched.
func (c *Config) listenerRisk(l *watcher.Listener) watcher.FlagSet {
	var m watcher.FlagSet
	for i := range l.Processes {
		m |= highRisk(&l.Processes[i], c.MemfdRuntimes)
	}
	return m
}

// installedByHand reports whether p runs a verified executable under
// /usr/local or /opt, where exe_unpackaged is expected.
func installedByHand(p *watcher.Process) bool {
	if p.ExeUnverified || p.ExeDeleted {
		return false
	}
	return strings.HasPrefix(p.Exe, "/usr/local/") || strings.HasPrefix(p.Exe, "/opt/")
}

// memfdRuntime reports whether p, whose executable is a memfd, is one of
// the container runtimes (see HighRisk).
func memfdRuntime(p *watcher.Process, runtimes []string) bool {
	if p.Container == "" || watcher.UserManagedUnit(p.Unit) {
		return false
	}
	name, isMemfd := strings.CutPrefix(p.Exe, "/memfd:")
	for _, rt := range runtimes {
		if runtimeName(p.Comm, rt) || (isMemfd && runtimeName(name, rt)) {
			return true
		}
	}
	return false
}

// runtimeName reports whether s is rt, or rt followed by a character that
// is not a letter or a digit.
func runtimeName(s, rt string) bool {
	rest, ok := strings.CutPrefix(s, rt)
	if !ok || rt == "" {
		return false
	}
	if rest == "" {
		return true
	}
	c := rest[0]
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}

// flagPhrase names the flags of m for a reason: "high-risk flag exe_memfd"
// or "high-risk flags exe_gone, exe_memfd".
func flagPhrase(adj string, m watcher.FlagSet) string {
	s := "flag "
	if m&(m-1) != 0 {
		s = "flags "
	}
	if adj != "" {
		s = adj + " " + s
	}
	return s + m.String()
}
