package watcher

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Protocol names used in Listener.Protocol.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Address families used in Listener.Family.
const (
	IPv4 = "ipv4"
	IPv6 = "ipv6"
)

// HostNetns is the name of the host's (PID 1's) network namespace.
const HostNetns = "host"

// Process is one process that holds a listening socket.
type Process struct {
	PID        int      `json:"pid"`
	Comm       string   `json:"comm"`        // /proc/PID/comm: spoofable with prctl(PR_SET_NAME)
	Exe        string   `json:"exe"`         // readlink /proc/PID/exe, without the " (deleted)" suffix
	ExeDeleted bool     `json:"exe_deleted"` // the executable was deleted, or is a memfd
	Cmdline    []string `json:"cmdline"`
	UID        uint32   `json:"uid"` // real uid
	User       string   `json:"user"`
	Unit       string   `json:"unit"`      // systemd unit from /proc/PID/cgroup, empty when none; "user@UID.service/<unit>" under a user manager
	Container  string   `json:"container"` // container id from /proc/PID/cgroup, empty when none
	// Flags is the evidence about this process (see Flag), in AllFlags
	// order; empty, never nil, when there is none.
	Flags []Flag `json:"flags"`
	// FlagsUnknown lists the flags that could not be decided for this
	// process (exe_unpackaged and exe_modified on a host without dpkg, or
	// for an executable in a container; see the README's risk flags):
	// neither set nor cleared.
	FlagsUnknown []Flag `json:"flags_unknown,omitempty"`

	// ExeUnverified is true when Exe does not name, in the watcher's own
	// mount namespace, the file the process runs: the (device, inode) of
	// stat(/proc/PID/exe) differs from that of stat(Exe), or either cannot
	// be read. readlink(/proc/PID/exe) gives the path in the process's own
	// mount namespace, so a process in a private one (unshare -Urm; mount
	// --bind ~/evil /usr/bin/python3) shows any path it likes. A container
	// process (another root) is unverified too, as is a deleted executable.
	// Policy never matches an exe rule on an unverified holder, except a
	// container's under a rule that names the container (see policy).
	//
	// It is not part of the JSON output, whose keys are fixed. The zero
	// value means "verified" so that Process literals (tests, other
	// packages) keep their meaning; the watcher sets it on every process it
	// reads, and marks every process it could not verify.
	ExeUnverified bool `json:"-"`
}

// MarshalJSON writes p with "flags" an array, empty rather than null when
// Flags is nil (a Process made outside the watcher: from a kernel event, or
// a literal): consumers of `list --json` and the webhooks iterate it.
func (p Process) MarshalJSON() ([]byte, error) {
	type plain Process // without this method
	if p.Flags == nil {
		p.Flags = []Flag{}
	}
	// Not json.Marshal, which escapes <, > and & whatever the caller's
	// encoder says: a hostile comm would read differently in list --json
	// and in webhooks (which turn that escaping off).
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(plain(p)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Listener is one listening socket: a TCP socket in LISTEN, or a bound and
// unconnected UDP socket.
type Listener struct {
	Protocol   string     `json:"protocol"` // TCP or UDP
	Family     string     `json:"family"`   // IPv4 or IPv6; an IPv4-mapped IPv6 address is IPv4
	Address    netip.Addr `json:"address"`
	Port       uint16     `json:"port"`
	Service    string     `json:"service"`    // /etc/services name for Port and Protocol, or ""
	DualStack  bool       `json:"dual_stack"` // IPv6 wildcard without IPV6_V6ONLY: also accepts IPv4
	Ephemeral  bool       `json:"ephemeral"`  // UDP port inside the namespace's ip_local_port_range
	Netns      string     `json:"netns"`      // namespace name: host, /run/netns name, container:<id>, pid:<pid>; unique ("@<inode>" added to one taken)
	NetnsInode uint64     `json:"netns_inode"`
	Inode      uint64     `json:"inode"` // socket inode
	UID        uint32     `json:"uid"`   // socket owner
	Interface  string     `json:"interface"`
	// Processes holds every process with a descriptor for the socket. It is
	// empty, never nil, for an unattributed socket (a kernel socket, or one
	// whose holder exited during the snapshot).
	Processes []Process `json:"processes"`
	// Published is set on a listener of its own kind, which the watcher
	// never gives: a host port that a DNAT rule publishes with no socket of
	// the host behind it (the daemon adds it from the exposure). It says
	// where the port leads: "published → container:3f2a 172.17.0.2:80",
	// "forwarded to 10.0.0.5:80". Processes are then those of the socket
	// it leads to, when one is known.
	Published string `json:"published,omitempty"`
}

// Key identifies a listener across snapshots: the alert engine tracks
// listeners, and keeps its alerts, by it.
type Key struct {
	// Netns is the namespace's name when the name is stable (host, a
	// /run/netns name, container:<id>). A namespace named after its lowest
	// pid is keyed "netns:<inode>" instead: the name changes when that
	// process exits, the namespace and its listeners do not.
	Netns    string
	Protocol string
	Address  netip.Addr
	Port     uint16
}

// Key returns the listener's identity across snapshots.
func (l *Listener) Key() Key {
	return Key{Netns: netnsKey(l.Netns, l.NetnsInode), Protocol: l.Protocol, Address: l.Address, Port: l.Port}
}

// KeyNetns returns the Key.Netns of the listeners in ns.
func (ns *Namespace) KeyNetns() string { return netnsKey(ns.Name, ns.Inode) }

// netnsKey is Key.Netns for the namespace of that name and inode.
func netnsKey(name string, inode uint64) string {
	if strings.HasPrefix(name, "pid:") {
		return "netns:" + strconv.FormatUint(inode, 10)
	}
	return name
}

// Compare orders keys by netns, protocol, port and address, the order of
// Snapshot.Listeners; it suits slices.SortFunc.
func (k Key) Compare(o Key) int {
	if c := strings.Compare(k.Netns, o.Netns); c != 0 {
		return c
	}
	if c := strings.Compare(k.Protocol, o.Protocol); c != 0 {
		return c
	}
	if k.Port != o.Port {
		return int(k.Port) - int(o.Port)
	}
	return k.Address.Compare(o.Address)
}

// SameListeners reports whether a and b are the same list: the same slice,
// which Watcher.Snapshot hands out again when nothing in it changed. A
// caller that judged a may take b as judged. Lists equal in content but
// built apart are not the same (telling them apart would cost a compare of
// every listener, which is what the caller saves).
func SameListeners(a, b []Listener) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Namespace describes one network namespace seen by a snapshot.
type Namespace struct {
	Name  string `json:"name"`
	Inode uint64 `json:"inode"`
	// Inspected is false when the namespace could not be read, for example a
	// /run/netns namespace with no process inside that cannot be entered
	// without CAP_SYS_ADMIN. Err then says why.
	Inspected bool   `json:"inspected"`
	Err       string `json:"error,omitempty"`
}

// Snapshot is every listener seen at one moment.
//
// A Snapshot is read-only, and so is everything it refers to. When nothing
// changed since the last snapshot, Watcher.Snapshot hands out the same
// Listeners slice again (with the same Processes and Cmdline slices), so a
// caller that changed a listener in place would change its previous
// snapshots too, and the watcher's next ones. Callers that need a changed
// list copy it first (slices.Clone). SameListeners tells a list handed out
// again from a new one.
type Snapshot struct {
	Time       time.Time
	Listeners  []Listener  // sorted by netns, protocol, port, address
	Namespaces []Namespace // sorted by name
	// Partial is true when attribution could not see every process (not root,
	// or no CAP_SYS_PTRACE): holders may be missing.
	Partial bool
}
