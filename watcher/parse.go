package watcher

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// serviceKey indexes /etc/services by protocol and port.
type serviceKey struct {
	tcp  bool
	port uint16
}

// parseServices parses /etc/services. The first name given for a port and
// protocol wins, as getservbyport(3) does. Malformed lines are skipped: the
// file is advisory, and a bad line must not cost the names of the others.
func parseServices(data []byte) map[serviceKey]string {
	m := make(map[serviceKey]string)
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := bytes.Fields(line)
		if len(f) < 2 {
			continue
		}
		portStr, proto, ok := bytes.Cut(f[1], []byte{'/'})
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(string(portStr), 10, 16)
		if err != nil || port == 0 {
			continue
		}
		var k serviceKey
		switch string(proto) {
		case "tcp":
			k = serviceKey{tcp: true, port: uint16(port)}
		case "udp":
			k = serviceKey{tcp: false, port: uint16(port)}
		default:
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = string(f[0])
		}
	}
	return m
}

// parsePasswd parses /etc/passwd into uid -> user name. The first entry for
// a uid wins, as getpwuid(3) does.
func parsePasswd(data []byte) map[uint32]string {
	m := make(map[uint32]string)
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		f := bytes.SplitN(line, []byte{':'}, 4)
		if len(f) < 4 || len(f[0]) == 0 {
			continue
		}
		uid, err := strconv.ParseUint(string(f[2]), 10, 32)
		if err != nil {
			continue
		}
		if _, dup := m[uint32(uid)]; !dup {
			m[uint32(uid)] = string(f[0])
		}
	}
	return m
}

// unitSuffixes are the systemd unit types a process's cgroup can be named
// after.
var unitSuffixes = []string{".service", ".scope", ".socket"}

// parseCgroup reads /proc/PID/cgroup and returns the systemd unit and the
// container id when the path shows docker, containerd, podman (libpod) or
// CRI-O.
//
// The unit is the innermost .service, .scope or .socket element of the
// path, except under a user manager: a user's systemd (user@UID.service)
// owns a delegated subtree in which that user names and creates units
// freely (systemd-run --user --unit=nginx), so a unit there is reported as
// "user@UID.service/<innermost unit>", for example
// "user@1000.service/nginx.service", never as a bare "nginx.service" that a
// system unit rule would match (the manager's own process, in its
// init.scope, is "user@1000.service/init.scope"). The prefix is the
// outermost user@*.service element:
// that one is created by PID 1, while a user may name a cgroup inside the
// subtree "user@0.service" too.
//
// cgroup v2 has one line "0::/path". Under v1 (or hybrid) the systemd
// hierarchy is "N:name=systemd:/path"; the v2 line wins when present, and the
// container id is looked for on every line.
func parseCgroup(data []byte) (unit, container string) {
	var v2, named, other string
	for _, line := range strings.Split(string(data), "\n") {
		hier, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrl, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case hier == "0" && ctrl == "":
			v2 = path
		case ctrl == "name=systemd":
			named = path
		case other == "":
			other = path
		}
		if container == "" {
			container = containerID(path)
		}
	}
	path := v2
	if path == "" || path == "/" {
		if named != "" {
			path = named
		} else if path == "" {
			path = other
		}
	}
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0; i-- {
		if !isUnitName(elems[i]) {
			continue
		}
		for j := 0; j < i; j++ {
			if isUserManager(elems[j]) {
				return elems[j] + "/" + elems[i], container
			}
		}
		return elems[i], container
	}
	return "", container
}

func isUnitName(e string) bool {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(e, s) && len(e) > len(s) {
			return true
		}
	}
	return false
}

// UserManagedUnit reports whether unit, as Process.Unit gives it, lies
// under a user's systemd manager ("user@1000.service/..."). Such a unit,
// and any container id found with it (rootless podman), is named by that
// user, who can create cgroups there at will; elsewhere the cgroup path is
// chosen by root.
func UserManagedUnit(unit string) bool {
	first, _, _ := strings.Cut(unit, "/")
	return isUserManager(first)
}

// isUserManager reports whether a cgroup path element is a user manager's
// unit, user@UID.service.
func isUserManager(e string) bool {
	uid, ok := strings.CutPrefix(e, "user@")
	if !ok {
		return false
	}
	uid, ok = strings.CutSuffix(uid, ".service")
	return ok && uid != "" && strings.Trim(uid, "0123456789") == ""
}

// containerPrefixes are the scope names container engines give the cgroup
// of a container: docker-<id>.scope, cri-containerd-<id>.scope,
// crio-<id>.scope, libpod-<id>.scope.
var containerPrefixes = []string{"docker-", "cri-containerd-", "crio-", "libpod-"}

// containerID finds a container id in a cgroup path: a 64-hex element, as
// under /docker/<id>, /kubepods/.../<id> or containerd's /<namespace>/<id>,
// or an engine's <prefix><id>.scope. The innermost match wins. Conmon's
// libpod-conmon-<id>.scope is the monitor, not the container.
func containerID(path string) string {
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if isHex64(e) {
			return e
		}
		e = strings.TrimSuffix(e, ".scope")
		for _, p := range containerPrefixes {
			if id, ok := strings.CutPrefix(e, p); ok && isHex64(id) {
				return id
			}
		}
	}
	return ""
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// portRange is a namespace's ip_local_port_range, inclusive.
type portRange struct{ lo, hi uint16 }

// defaultPortRange is the kernel's default ip_local_port_range, which every
// new network namespace starts with.
var defaultPortRange = portRange{32768, 60999}

func (r portRange) contains(p uint16) bool { return r.lo <= p && p <= r.hi }

var errPortRange = errors.New("want two ports")

// parsePortRange parses /proc/sys/net/ipv4/ip_local_port_range ("32768\t60999\n").
func parsePortRange(data []byte) (portRange, error) {
	f := bytes.Fields(data)
	if len(f) != 2 {
		return portRange{}, fmt.Errorf("ip_local_port_range %q: %w", data, errPortRange)
	}
	lo, err1 := strconv.ParseUint(string(f[0]), 10, 16)
	hi, err2 := strconv.ParseUint(string(f[1]), 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return portRange{}, fmt.Errorf("ip_local_port_range %q: %w", data, err)
	}
	return portRange{uint16(lo), uint16(hi)}, nil
}

// parseStatusUID returns the real uid from /proc/PID/status ("Uid:\t0\t0\t0\t0").
func parseStatusUID(data []byte) (uint32, bool) {
	f, ok := statusField(data, "Uid")
	if !ok {
		return 0, false
	}
	uid, err := strconv.ParseUint(string(f), 10, 32)
	return uint32(uid), err == nil
}

// statusField returns the first word of the line "key:" of a
// /proc/PID/status file (never its first line, Name:).
func statusField(data []byte, key string) ([]byte, bool) {
	i := bytes.Index(data, []byte("\n"+key+":"))
	if i < 0 {
		return nil, false
	}
	f := bytes.Fields(data[i+len(key)+2:])
	if len(f) == 0 {
		return nil, false
	}
	return f[0], true
}

// parseCmdline splits /proc/PID/cmdline on NULs. A process that rewrote its
// argv (setproctitle) may have one string with spaces; it is kept as is.
func parseCmdline(data []byte) []string {
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return []string{}
	}
	parts := bytes.Split(data, []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// parseExe interprets readlink(/proc/PID/exe): a deleted executable has the
// suffix " (deleted)", and a memfd one is "/memfd:NAME (deleted)".
func parseExe(link string) (exe string, deleted bool) {
	exe, deleted = strings.CutSuffix(link, " (deleted)")
	if strings.HasPrefix(exe, "/memfd:") {
		deleted = true
	}
	return exe, deleted
}

// parseSocketLink parses a /proc/PID/fd link "socket:[12345]" without
// allocating. ok is false for anything else.
func parseSocketLink(b []byte) (inode uint64, ok bool) {
	return parseInodeLink(b, "socket:[")
}

// parseNetnsLink parses a /proc/PID/ns/net link "net:[4026531840]".
func parseNetnsLink(b []byte) (inode uint64, ok bool) {
	return parseInodeLink(b, "net:[")
}

// parseInodeLink parses prefix + decimal inode + "]" without allocating.
func parseInodeLink(b []byte, prefix string) (inode uint64, ok bool) {
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix || b[len(b)-1] != ']' {
		return 0, false
	}
	for _, c := range b[len(prefix) : len(b)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		inode = inode*10 + uint64(c-'0')
	}
	return inode, true
}

// parseLoadavgLastPid returns the last field of /proc/loadavg
// ("0.00 0.01 0.05 1/123 4567"): the last pid allocated.
func parseLoadavgLastPid(b []byte) (int, bool) {
	f := bytes.Fields(b)
	if len(f) != 5 {
		return 0, false
	}
	return atoiBytes(f[4])
}

// parseStatPPid returns the parent pid from /proc/PID/stat. The comm field
// is in parentheses and may itself contain ") ", so the fields are counted
// from the last ')'.
func parseStatPPid(b []byte) (int32, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:]) // state ppid ...
	if len(f) < 2 {
		return 0, false
	}
	ppid, ok := atoiBytes(f[1])
	return int32(ppid), ok
}

// Capability bits from <linux/capability.h>.
const (
	capSysPtrace = 19
	capSysAdmin  = 21
)

// parseCapEff returns the effective capability set from /proc/self/status.
func parseCapEff(status []byte) (uint64, bool) {
	f, ok := statusField(status, "CapEff")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f), 16, 64)
	return v, err == nil
}
