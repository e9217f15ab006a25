package ebpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("ebpf probe closed")

// Options configure Open. The zero value is what the daemon uses.
type Options struct {
	// Cgroup2 is the cgroup2 directory the bind programs attach to, and so
	// see the binds of every process below. Empty finds the cgroup2 mount
	// in /proc/self/mountinfo (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
	// a hybrid host).
	Cgroup2 string

	// btfPath is the kernel BTF whose presence Open checks; tests change it.
	btfPath string
}

// Probe is the loaded and attached kernel programs and the reader of their
// ring buffer. Read is for one goroutine at a time; Dropped and Close may be
// called from any.
type Probe struct {
	objs    objects
	exit    *ebpf.Collection // listen_exit, nil when it could not load
	exitErr error
	links   []link.Link
	rd      *ringbuf.Reader
	rec     ringbuf.Record

	holdersMu sync.Mutex
	holders   map[uint32]bool // what the holders map holds (SetHolders)
	execErr   error           // why holders' execs are not reported (Execs)

	closeOnce sync.Once
	closeErr  error
}

// objects are the programs and maps loaded first, all but listen_exit (see
// loadListenExit).
type objects struct {
	SetState  *ebpf.Program `ebpf:"set_state"`
	PostBind4 *ebpf.Program `ebpf:"post_bind4"`
	PostBind6 *ebpf.Program `ebpf:"post_bind6"`
	Release   *ebpf.Program `ebpf:"sock_release"`
	Exec      *ebpf.Program `ebpf:"holder_exec"`
	Events    *ebpf.Map     `ebpf:"events"`
	Holders   *ebpf.Map     `ebpf:"holders"`
	UDPBound  *ebpf.Map     `ebpf:"udp_bound"`
	Drops     *ebpf.Map     `ebpf:"drops"`
	BSS       *ebpf.Map     `ebpf:".bss"`

	ExitReportsListen *ebpf.Variable `ebpf:"exit_reports_listen"`
	PidnsDev          *ebpf.Variable `ebpf:"pidns_dev"`
	PidnsIno          *ebpf.Variable `ebpf:"pidns_ino"`
}

func (o *objects) close() error {
	var errs []error
	for _, c := range []io.Closer{o.SetState, o.PostBind4, o.PostBind6, o.Release, o.Exec, o.Events, o.Holders, o.UDPBound, o.Drops, o.BSS} {
		errs = append(errs, c.Close()) // nil-safe: not all may have loaded
	}
	return errors.Join(errs...)
}

// Open loads the programs and attaches them. When the kernel or the
// process's privileges do not allow it, the error is an *UnavailableError
// whose Reason (ErrNoBTF, ErrPermission, ErrSeccomp, ErrLockdown,
// ErrRefused, ErrUnsupported, ErrNoCgroup2) says why.
func Open(opts Options) (_ *Probe, err error) {
	btfPath := opts.btfPath
	if btfPath == "" {
		btfPath = "/sys/kernel/btf/vmlinux"
	}
	if _, err := os.Stat(btfPath); err != nil {
		return nil, &UnavailableError{Reason: ErrNoBTF, Err: err}
	}
	cg := opts.Cgroup2
	if cg == "" {
		if cg, err = cgroup2Mount("/proc/self/mountinfo"); err != nil {
			return nil, &UnavailableError{Reason: ErrNoCgroup2, Err: err}
		}
	}
	cgDir, err := os.Open(cg)
	if err != nil {
		return nil, fmt.Errorf("open cgroup2 %s: %w", cg, err)
	}
	defer cgDir.Close()

	// A no-op on Linux >= 5.11, which charges BPF memory to the cgroup
	// instead of RLIMIT_MEMLOCK. Its failure shows in the load's error.
	memlockErr := rlimit.RemoveMemlock()

	spec, err := loadPortwatch()
	if err != nil {
		return nil, err
	}
	exitSpec := spec.Copy()
	delete(spec.Programs, portwatchProgListenExit)
	p := &Probe{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, classify("load", errors.Join(err, memlockErr), readHost())
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.execErr = p.setPidns("/proc/self/ns/pid")
	for _, prog := range []*ebpf.Program{p.objs.SetState, p.objs.Exec} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			return nil, classify("attach "+prog.String(), err, readHost())
		}
		p.links = append(p.links, l)
	}
	// AttachRawLink, not AttachCgroup: AttachCgroup falls back to
	// PROG_ATTACH on a kernel without bpf_link, and a program attached so
	// outlives the process.
	for _, a := range []struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{
		{p.objs.PostBind4, ebpf.AttachCGroupInet4PostBind},
		{p.objs.PostBind6, ebpf.AttachCGroupInet6PostBind},
		{p.objs.Release, ebpf.AttachCgroupInetSockRelease},
	} {
		l, err := link.AttachRawLink(link.RawLinkOptions{
			Target:  int(cgDir.Fd()),
			Program: a.prog,
			Attach:  a.attach,
		})
		if err != nil {
			return nil, classify(fmt.Sprintf("attach %s to %s", a.prog, cg), err, readHost())
		}
		p.links = append(p.links, l)
	}
	if p.rd, err = ringbuf.NewReader(p.objs.Events); err != nil {
		return nil, classify("read ring buffer", err, readHost())
	}
	p.exitErr = p.loadListenExit(exitSpec)
	return p, nil
}

// loadListenExit loads and attaches listen_exit, which reports each listen
// with its final port and return code, and then turns off the tracepoint's
// own listen events. Where fexit cannot attach (no BPF trampoline on the
// architecture, or a security module that refuses it) the tracepoint goes on
// reporting listens, with less detail; the probe works either way.
func (p *Probe) loadListenExit(spec *ebpf.CollectionSpec) error {
	for name := range spec.Programs {
		if name != portwatchProgListenExit {
			delete(spec.Programs, name)
		}
	}
	// Its maps are the first load's (below); the others would be made
	// again for nothing.
	delete(spec.Maps, portwatchMapUdpBound)
	delete(spec.Maps, portwatchMapHolders)
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{
			portwatchMapEvents: p.objs.Events,
			portwatchMapDrops:  p.objs.Drops,
			".bss":             p.objs.BSS,
		},
	})
	if err != nil {
		return classify("load "+portwatchProgListenExit, err, readHost())
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[portwatchProgListenExit]})
	if err != nil {
		coll.Close()
		return classify("attach "+portwatchProgListenExit, err, readHost())
	}
	if err := p.objs.ExitReportsListen.Set(uint32(1)); err != nil {
		l.Close()
		coll.Close()
		return fmt.Errorf("switch listen events to %s: %w", portwatchProgListenExit, err)
	}
	p.exit = coll
	p.links = append(p.links, l)
	return nil
}

// ListenExit returns nil when listen events come from the exit of
// inet_csk_listen_start, with the final port and listen's return code, and
// otherwise why not: then they come from the state tracepoint, before the
// port is chosen (Port is 0 for a socket that listens without bind) and with
// Ret 0 even for a listen that fails (a KindClose follows at once).
func (p *Probe) ListenExit() error {
	return p.exitErr
}

// Read returns the next event, waiting for one until ctx ends. It returns
// ctx.Err() when ctx ends, ErrClosed after Close, and an error for a record
// it cannot parse (the caller can go on reading).
func (p *Probe) Read(ctx context.Context) (Event, error) {
	b, err := p.readRecord(ctx)
	if err != nil {
		return Event{}, err
	}
	return ParseEvent(b)
}

// readRecord returns the next raw record, valid until the next call.
func (p *Probe) readRecord(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The reader's deadline cannot be changed while it waits; Flush wakes it.
	stop := context.AfterFunc(ctx, func() { p.rd.Flush() })
	defer stop()
	for {
		err := p.rd.ReadInto(&p.rec)
		switch {
		case err == nil:
			return p.rec.RawSample, nil
		case errors.Is(err, ringbuf.ErrFlushed):
			// A flush by an earlier call's context is spurious for this one.
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		case errors.Is(err, ringbuf.ErrClosed):
			return nil, ErrClosed
		default:
			return nil, fmt.Errorf("read ring buffer: %w", err)
		}
	}
}

// setPidns gives holder_exec the PID namespace of path, the daemon's own,
// whose pids the holders map and the exec events use.
func (p *Probe) setPidns(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("exec events off: %w", err)
	}
	if err := p.objs.PidnsDev.Set(uint64(st.Dev)); err != nil {
		return fmt.Errorf("exec events off: %w", err)
	}
	if err := p.objs.PidnsIno.Set(st.Ino); err != nil {
		return fmt.Errorf("exec events off: %w", err)
	}
	return nil
}

// Execs returns nil when the execs of the processes given to SetHolders are
// reported (KindExec), and otherwise why not.
func (p *Probe) Execs() error {
	return p.execErr
}

// SetHolders sets the processes whose execs are reported (KindExec) to
// pids, the holders of listening sockets: it adds to the kernel's map the
// pids not in it and removes those no longer given. A pid that does not fit
// (65,536 at most) is not reported; the error says how many did not. It may
// be called from any goroutine.
func (p *Probe) SetHolders(pids []int32) error {
	p.holdersMu.Lock()
	defer p.holdersMu.Unlock()
	want := make(map[uint32]bool, len(pids))
	for _, pid := range pids {
		want[uint32(pid)] = true
	}
	var errs []error
	for pid := range p.holders {
		if !want[pid] {
			if err := p.objs.Holders.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
				continue
			}
			delete(p.holders, pid)
		}
	}
	if p.holders == nil {
		p.holders = make(map[uint32]bool, len(want))
	}
	failed := 0
	for pid := range want {
		if p.holders[pid] {
			continue
		}
		if err := p.objs.Holders.Put(pid, uint8(1)); err != nil {
			if failed++; failed == 1 {
				errs = append(errs, err)
			}
			continue
		}
		p.holders[pid] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("holders map: %d of %d holders not watched for exec: %w", failed, len(want), errors.Join(errs...))
	}
	return nil
}

// Dropped returns how many events did not fit in the ring buffer since Open,
// summed over the CPUs. The daemon takes a full snapshot when it rises.
func (p *Probe) Dropped() (uint64, error) {
	var perCPU []uint64
	if err := p.objs.Drops.Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("read drop counter: %w", err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Close detaches the programs and frees the ring buffer. A Read in progress
// returns ErrClosed.
func (p *Probe) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.rd != nil {
			errs = append(errs, p.rd.Close())
		}
		for _, l := range p.links {
			errs = append(errs, l.Close())
		}
		if p.exit != nil {
			p.exit.Close()
		}
		errs = append(errs, p.objs.close())
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// cgroup2Mount returns the mount point of the first cgroup2 file system in
// mountinfo, in the process's own mount namespace.
func cgroup2Mount(mountinfo string) (string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" {
			return unescapeMount(pf[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no cgroup2 mount", mountinfo)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal3(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal3(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}
