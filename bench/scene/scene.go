package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// size describes one scene.
type size struct {
	listeners     int // listening sockets, tcp4/tcp6/udp4/udp6 in turn
	listenerProcs int // processes they are spread over
	conns         int // established loopback TCP connections
	connGroups    int // server/client process pairs holding them
	idleProcs     int // processes that hold only open files
	idleFiles     int // open files in each idle process
	wideProcs     int // processes that hold thousands of open files
	wideFiles     int // open files in each of them, in the churned layout
	layout        layout
}

var (
	small = size{listeners: 20, listenerProcs: 5, conns: 100, connGroups: 1, idleProcs: 50, idleFiles: 10}
	large = size{listeners: 1000, listenerProcs: 100, conns: 20000, connGroups: 10, idleProcs: 1000, idleFiles: 50}
)

// sizes are the scenes: the large one again with descriptor tables that are
// not dense from 3, as many a real host's are.
var sizes = map[string]size{
	"small":       small,
	"large":       large,
	"large-gaps":  with(large, func(z *size) { z.layout = gaps }),
	"large-stray": with(large, func(z *size) { z.layout = stray }),
	"large-wide":  with(large, func(z *size) { z.wideProcs, z.wideFiles = 4, 6000 }),
}

func with(z size, f func(*size)) size {
	f(&z)
	return z
}

// layout says at which numbers a holder's descriptors are, from 3 on.
type layout int

const (
	// dense: 3, 4, 5... as a process that opened everything it holds.
	dense layout = iota
	// gaps: a hole after every third descriptor, and 32 free numbers after
	// every sixteenth, as a process that closed some of what it opened.
	gaps
	// stray: dense, but the last descriptor at a high number (255 to 1023,
	// by process), as one inherited from a shell (bash keeps 255), flock,
	// a supervisor, or socket activation.
	stray
	// churned: runs of 64 descriptors and 16 free numbers, as a server
	// whose connections come and go.
	churned
)

func (l layout) String() string {
	return [...]string{"dense", "gaps", "stray", "churned"}[l]
}

// slot is the descriptor number of the i-th of n descriptors of holder p.
func (l layout) slot(i, n, p int) int {
	switch l {
	case gaps:
		return 3 + i + i/3 + 32*(i/16)
	case stray:
		if i == n-1 && n > 1 {
			return 255 + (p*37)%769
		}
	case churned:
		return 3 + i + 16*(i/64)
	}
	return 3 + i
}

// place returns files as exec.Cmd.ExtraFiles for holder p: entry k becomes
// descriptor 3+k, and nil entries are numbers left free.
func (l layout) place(files []*os.File, p int) []*os.File {
	if l == dense {
		return files
	}
	var out []*os.File
	for i, f := range files {
		at := l.slot(i, len(files), p) - 3
		for len(out) < at {
			out = append(out, nil)
		}
		out = append(out, f)
	}
	return out
}

// maxSlot is the highest descriptor number a holder of scene z has.
func (z size) maxSlot() int {
	most := max(z.conns/max(z.connGroups, 1)+1, z.idleFiles, z.listeners/max(z.listenerProcs, 1)+1)
	return max(z.layout.slot(most-1, most, 0), 1023, churned.slot(z.wideFiles, z.wideFiles+1, 0))
}

// Listener ports are listenerBase+i, below the ephemeral range so that UDP
// listeners are not marked ephemeral and do not clash with client ports.
const (
	listenerBase = 10000
	connPort     = 9000
)

type scene struct {
	size    size
	holders int // processes started
}

func (s *scene) summary() string {
	z := s.size
	return fmt.Sprintf("listeners=%d/%dprocs conns=%d/%dprocs idle=%dx%dfiles wide=%dx%dfiles layout=%s processes=%d",
		z.listeners, z.listenerProcs, z.conns, 2*z.connGroups, z.idleProcs, z.idleFiles, z.wideProcs, z.wideFiles, z.layout, s.holders+1)
}

// setupNamespaces prepares the fresh namespaces PID 1 of the scene runs in.
func setupNamespaces() error {
	// Nothing mounted here may reach the host's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// A procfs of the scene's PID namespace: readers see only the scene.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// An empty /run, so that namespaces other tests bind under /run/netns
	// are not inspected by portwatchd (ss never looks at them).
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mount /run: %w", err)
	}
	if err := os.Mkdir("/run/netns", 0o755); err != nil {
		return fmt.Errorf("mkdir /run/netns: %w", err)
	}
	if err := loUp(); err != nil {
		return err
	}
	return nil
}

// loUp brings up the loopback interface of the new network namespace.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: set flags: %w", err)
	}
	return nil
}

// raiseNofile lets PID 1 hold a group's connections at once, and the holders
// (which inherit the limit) receive them. syscall.Setrlimit, unlike a raw
// prlimit, also tells the Go runtime, so children get the raised limit.
func raiseNofile(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if rl.Cur >= need && rl.Max >= need {
		return nil
	}
	rl.Cur = max(rl.Cur, need)
	rl.Max = max(rl.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", need, err)
	}
	return nil
}

// build creates the scene's sockets and files and hands them to holder
// processes: /bin/sleep with the descriptors passed as ExtraFiles. sleep
// costs far less memory than a Go process, which matters with a thousand
// of them, and a socket or file held that way looks to /proc exactly like
// one a server opened itself. PID 1 closes its own copies, so that only the
// holders hold them.
func build(z size, lifetime time.Duration) (*scene, error) {
	s := &scene{size: z}
	perGroup := (z.conns + z.connGroups - 1) / z.connGroups
	// PID 1 holds a group's connections at once. A holder's table reaches
	// its highest slot, and while the child places them, a descriptor may
	// be parked above the whole ExtraFiles list (syscall.forkExec's first
	// pass), so twice that.
	if err := raiseNofile(uint64(max(2*perGroup+z.idleFiles+z.listeners, 2*z.maxSlot()) + 256)); err != nil {
		return nil, err
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return nil, fmt.Errorf("find sleep: %w", err)
	}
	seconds := strconv.Itoa(int(lifetime.Seconds()) + 1)
	hold := func(files []*os.File, l layout) error {
		cmd := exec.Command(sleep, seconds)
		cmd.ExtraFiles = l.place(files, s.holders)
		err := cmd.Start()
		closeAll(files)
		if err != nil {
			return fmt.Errorf("start holder: %w", err)
		}
		// Drop the pidfd Go keeps for each child: a thousand of them in
		// PID 1 would add to what every fd scan reads. Holders are never
		// waited for; they die with PID 1.
		s.holders++
		return cmd.Process.Release()
	}

	// Listeners, spread evenly over their processes.
	next := 0
	for p := 0; p < z.listenerProcs; p++ {
		n := z.listeners / z.listenerProcs
		if p < z.listeners%z.listenerProcs {
			n++
		}
		var files []*os.File
		for j := 0; j < n; j++ {
			f, err := listen(next)
			if err != nil {
				closeAll(files)
				return nil, err
			}
			files = append(files, f)
			next++
		}
		if err := hold(files, z.layout); err != nil {
			return nil, err
		}
	}

	// Established connections: each group has its own server address, a
	// server process holding the accepted ends and a client process holding
	// the connecting ends. The listening socket is closed once every
	// connection is accepted, so the listener count stays exact.
	left := z.conns
	for g := 0; g < z.connGroups && left > 0; g++ {
		n := min(perGroup, left)
		left -= n
		server, client, err := connect(g, n)
		if err != nil {
			return nil, err
		}
		if err := hold(server, z.layout); err != nil {
			closeAll(client)
			return nil, err
		}
		if err := hold(client, z.layout); err != nil {
			return nil, err
		}
	}

	// Processes that hold only open files: idle ones, and a few with
	// thousands of descriptors.
	holdFiles := func(procs, files int, l layout) error {
		for range procs {
			f, err := openFiles(files)
			if err != nil {
				return err
			}
			if err := hold(f, l); err != nil {
				return err
			}
		}
		return nil
	}
	if err := holdFiles(z.idleProcs, z.idleFiles, z.layout); err != nil {
		return nil, err
	}
	if err := holdFiles(z.wideProcs, z.wideFiles, churned); err != nil {
		return nil, err
	}
	return s, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// listen opens listener number i. The kinds go tcp4, tcp6, udp4, udp6 in
// turn; the addresses go wildcard, loopback and a second loopback address for
// IPv4, and dual-stack wildcard, v6only wildcard and ::1 for IPv6.
func listen(i int) (*os.File, error) {
	port := listenerBase + i
	typ := unix.SOCK_STREAM
	if i%4 >= 2 {
		typ = unix.SOCK_DGRAM
	}
	v6 := i%2 == 1
	variant := (i / 4) % 3
	var sa unix.Sockaddr
	family := unix.AF_INET
	v6only := -1
	if v6 {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: port}
		switch variant {
		case 0:
			v6only = 0
		case 1:
			v6only = 1
		case 2:
			v6only = 1
			a.Addr[15] = 1
		}
		sa = a
	} else {
		a := &unix.SockaddrInet4{Port: port}
		switch variant {
		case 1:
			a.Addr = [4]byte{127, 0, 0, 1}
		case 2:
			a.Addr = [4]byte{127, 0, 0, 53}
		}
		sa = a
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listener %d: socket: %w", i, err)
	}
	fail := func(what string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listener %d (port %d): %s: %w", i, port, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if v6only >= 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 128); err != nil {
			return fail("listen", err)
		}
	}
	return os.NewFile(uintptr(fd), "listener"), nil
}

// connect makes n established connections to 127.0.1.(g+1):connPort and
// returns the accepted (server) and connecting (client) ends.
func connect(g, n int) (server, client []*os.File, err error) {
	addr := &unix.SockaddrInet4{Port: connPort, Addr: [4]byte{127, 0, 1, byte(g + 1)}}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("conn group %d: socket: %w", g, err)
	}
	defer unix.Close(lfd)
	fail := func(what string, err error) ([]*os.File, []*os.File, error) {
		closeAll(server)
		closeAll(client)
		return nil, nil, fmt.Errorf("conn group %d: %s: %w", g, what, err)
	}
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.Bind(lfd, addr); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(lfd, 1024); err != nil {
		return fail("listen", err)
	}
	for j := 0; j < n; j++ {
		// A blocking connect on loopback returns once the handshake is
		// done, so the accept below never waits.
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fail("socket", err)
		}
		client = append(client, os.NewFile(uintptr(c), "client"))
		if err := unix.Connect(c, addr); err != nil {
			return fail("connect", err)
		}
		a, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			return fail("accept", err)
		}
		server = append(server, os.NewFile(uintptr(a), "server"))
	}
	return server, client, nil
}

// idleCandidates are files an ordinary process might hold open.
var idleCandidates = []string{"/dev/null", "/etc/passwd", "/etc/group", "/etc/services", "/etc/hostname", "/dev/zero", "/etc/os-release", "/dev/urandom"}

// openFiles opens n read-only files, cycling over idleCandidates.
func openFiles(n int) ([]*os.File, error) {
	var paths []string
	for _, p := range idleCandidates {
		if _, err := os.Stat(p); err == nil {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no file to open among %v", idleCandidates)
	}
	files := make([]*os.File, 0, n)
	for i := 0; i < n; i++ {
		f, err := os.Open(paths[i%len(paths)])
		if err != nil {
			closeAll(files)
			return nil, fmt.Errorf("open idle file: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}
