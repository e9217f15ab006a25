package ebpf

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Reasons why Open cannot load the programs. Open's error is then an
// *UnavailableError whose Reason is one of these, so that the daemon can log
// it once and fall back to polling: errors.Is(err, ErrPermission).
var (
	ErrNoBTF       = errors.New("the kernel has no BTF (/sys/kernel/btf/vmlinux: needs CONFIG_DEBUG_INFO_BTF)")
	ErrPermission  = errors.New("not permitted (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or CAP_SYS_ADMIN)")
	ErrSeccomp     = errors.New("the bpf system call is refused by a seccomp filter")
	ErrLockdown    = errors.New("kernel lockdown (confidentiality) forbids BPF reading kernel memory")
	ErrRefused     = errors.New("refused although the process has the capabilities (a security module, or the kernel's configuration)")
	ErrUnsupported = errors.New("the kernel lacks a feature the programs need (ring buffer, fexit, bpf_link for cgroups: Linux 6.1 or later)")
	ErrNoCgroup2   = errors.New("no cgroup2 file system is mounted")
)

// UnavailableError says why the programs could not be loaded or attached.
type UnavailableError struct {
	Reason error  // one of the Err* reasons above
	Step   string // what failed: "load", "attach post_bind4", ...
	Err    error  // the error underneath, nil when a check found the reason
}

func (e *UnavailableError) Error() string {
	msg := "ebpf unavailable: " + e.Reason.Error()
	if e.Step != "" {
		msg += ": " + e.Step
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the reason and the error underneath.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}

// host is what classify needs to know about the process and the kernel to
// tell why a bpf() call failed.
type host struct {
	missingCaps []string // capabilities the programs need that the process lacks
	seccomp     bool     // a seccomp filter is installed (Seccomp: 2)
	lockdown    string   // the active lockdown level: none, integrity, confidentiality
}

// classify turns a failure of step into an *UnavailableError with the most
// likely reason. The kernel answers EPERM for a missing capability, for a
// seccomp filter (systemd's SystemCallFilter= default) and for lockdown
// alike, so the reason comes from what the process can see of each.
func classify(step string, err error, h host) *UnavailableError {
	e := &UnavailableError{Step: step, Err: err}
	perm := errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
	switch {
	case h.lockdown == "confidentiality":
		// Lockdown removes bpf_probe_read_kernel: the verifier refuses the
		// programs (EINVAL), or loading tracing programs fails with EPERM.
		e.Reason = ErrLockdown
	case len(h.missingCaps) > 0 && (perm || errors.Is(err, unix.EINVAL)):
		// Without CAP_PERFMON the verifier refuses pointer reads (EINVAL)
		// instead of the whole load.
		e.Reason = ErrPermission
		e.Step = step + " (missing " + strings.Join(h.missingCaps, ", ") + ")"
	case h.seccomp && (perm || errors.Is(err, unix.ENOSYS)):
		e.Reason = ErrSeccomp
	case perm:
		e.Reason = ErrRefused
	default:
		e.Reason = ErrUnsupported
	}
	return e
}

// Linux capability numbers (linux/capability.h); x/sys/unix lacks the newer
// ones on some versions.
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// missingCaps returns the capabilities, among those the programs need, that
// the calling thread lacks in its effective set. CAP_SYS_ADMIN stands for
// all three, as in the kernel.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) {
		return nil
	}
	var missing []string
	for _, c := range []struct {
		n    uint
		name string
	}{{capBPF, "CAP_BPF"}, {capPerfmon, "CAP_PERFMON"}, {capNetAdmin, "CAP_NET_ADMIN"}} {
		if !has(c.n) {
			missing = append(missing, c.name)
		}
	}
	return missing
}

// readHost looks at the process and the kernel for classify.
func readHost() host {
	h := host{missingCaps: missingCaps(), lockdown: "none"}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Seccomp:"); ok {
				h.seccomp = strings.TrimSpace(v) == "2"
			}
		}
	}
	// "none [integrity] confidentiality": the bracketed word is in force.
	if b, err := os.ReadFile("/sys/kernel/security/lockdown"); err == nil {
		s := string(b)
		if i := strings.IndexByte(s, '['); i >= 0 {
			if j := strings.IndexByte(s[i:], ']'); j > 0 {
				h.lockdown = s[i+1 : i+j]
			}
		}
	}
	return h
}
