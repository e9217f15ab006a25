package watcher

import "strings"

// Flag is one piece of evidence about the process that holds a listener:
// where its executable came from and how it was started. Flags are facts,
// not judgements: policy decides which of them make a listener risky (see
// policy.Severity), and which a rule accepts (flags:).
type Flag string

// Flags, in the order they are listed. Their names are part of the config
// (flags:, deny:), of `list --json`, of journald (PORTWATCH_FLAGS) and of
// every webhook format: never rename one.
const (
	// FlagExeReplaced: the executable was deleted and its path exists again,
	// owned by a package and newer than the process (an upgrade whose
	// restart is pending).
	FlagExeReplaced Flag = "exe_replaced"
	// FlagExeGone: the executable was deleted, and its path has no file or
	// a file no package owns.
	FlagExeGone Flag = "exe_gone"
	// FlagExeMemfd: the executable is a memfd (memfd_create, then execveat).
	FlagExeMemfd Flag = "exe_memfd"
	// FlagExeInWritableDir: the executable lies under /tmp, /var/tmp,
	// /dev/shm, /run/user/*, a hidden directory, or a directory that a user
	// other than root may write.
	FlagExeInWritableDir Flag = "exe_in_writable_dir"
	// FlagExeUnpackaged: no installed Debian package owns the executable.
	FlagExeUnpackaged Flag = "exe_unpackaged"
	// FlagExeModified: the executable's md5 differs from its package's
	// md5sums. An integrity hint only: root can rewrite md5sums.
	FlagExeModified Flag = "exe_modified"
	// FlagSessionLaunched: the process runs in a login session (a
	// session-N.scope, or with a controlling terminal), not in a service.
	FlagSessionLaunched Flag = "session_launched"
	// FlagParentShell: the parent process is a shell.
	FlagParentShell Flag = "parent_shell"
	// FlagParentWebServer: the parent process is a web server.
	FlagParentWebServer Flag = "parent_web_server"
	// FlagInterpreter: the executable is a script interpreter (python,
	// perl, ruby, node, php, a shell...).
	FlagInterpreter Flag = "interpreter"
	// FlagNetcatFamily: the executable is nc, ncat, socat or the like.
	FlagNetcatFamily Flag = "netcat_family"
	// FlagCommMismatch: the process name (comm) is not the executable's
	// base name, as when a process renames itself.
	FlagCommMismatch Flag = "comm_mismatch"
	// FlagRootUnprivilegedPort: effective uid 0 on a port at or above the
	// namespace's net.ipv4.ip_unprivileged_port_start. Per listener: the
	// same process may hold a privileged port too. Never set in a
	// namespace whose start is 0 (no privileged port: Docker's default),
	// nor on an ephemeral UDP port (a client's).
	FlagRootUnprivilegedPort Flag = "root_unprivileged_port"
)

// AllFlags lists every flag, in order.
var AllFlags = []Flag{
	FlagExeReplaced, FlagExeGone, FlagExeMemfd, FlagExeInWritableDir, FlagExeUnpackaged, FlagExeModified,
	FlagSessionLaunched, FlagParentShell, FlagParentWebServer, FlagInterpreter, FlagNetcatFamily,
	FlagCommMismatch, FlagRootUnprivilegedPort,
}

// Known says whether f is one of AllFlags.
func (f Flag) Known() bool { return f.Bit() != 0 }

// FlagSet is a set of flags, bit i standing for AllFlags[i]: the watcher,
// the policy and the sinks combine, test and list flags with it without
// allocating.
type FlagSet uint32

// Bit returns the set of f alone; empty for a name not in AllFlags.
func (f Flag) Bit() FlagSet {
	for i, k := range AllFlags {
		if k == f {
			return 1 << i
		}
	}
	return 0
}

// FlagsOf returns the set of the flags in fs (unknown names left out).
func FlagsOf(fs []Flag) FlagSet {
	var s FlagSet
	for _, f := range fs {
		s |= f.Bit()
	}
	return s
}

// Add adds f to s.
func (s *FlagSet) Add(f Flag) { *s |= f.Bit() }

// List returns the flags of s in AllFlags order; nil when s is empty.
func (s FlagSet) List() []Flag {
	if s == 0 {
		return nil
	}
	var out []Flag
	for i, f := range AllFlags {
		if s&(1<<i) != 0 {
			out = append(out, f)
		}
	}
	return out
}

// String lists the names of s, comma-separated.
func (s FlagSet) String() string {
	var b strings.Builder
	for _, f := range s.List() {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(f))
	}
	return b.String()
}
