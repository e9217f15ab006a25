package exposure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Raw is what the kernel answered for one network namespace, unparsed: the
// nf_tables dumps as the netlink message payloads (nfgenmsg and attributes),
// and what Read learnt from /proc and rtnetlink. Decode turns it into a
// Ruleset; tests keep Raws from real namespaces under testdata/.
type Raw struct {
	Tables [][]byte `json:"tables"`
	Chains [][]byte `json:"chains"`
	Sets   [][]byte `json:"sets"`
	Rules  [][]byte `json:"rules"`
	// Elements holds the NFT_MSG_NEWSETELEM payloads of each set, keyed by
	// SetKey(family, table, set).
	Elements map[string][][]byte `json:"elements"`
	// Legacy lists the iptables-legacy tables of the namespace
	// (/proc/net/ip_tables_names, ip6_tables_names, as "ip filter",
	// "ip6 nat").
	Legacy []string `json:"legacy,omitempty"`
	// Links are the namespace's interfaces: name, addresses, and what may
	// filter packets before nftables sees them (XDP, a tc ingress hook).
	Links []Link `json:"links,omitempty"`
}

// Link is one network interface of a namespace.
type Link struct {
	Index int      `json:"index"`
	Name  string   `json:"name"`
	Addrs []string `json:"addrs,omitempty"` // prefixes, "172.17.0.1/16"
	// XDP is true when an XDP program is attached.
	XDP bool `json:"xdp,omitempty"`
	// TCIngress names the ingress qdisc (clsact or ingress) that can hold tc
	// filters, including eBPF programs, or is empty.
	TCIngress string `json:"tc_ingress,omitempty"`
}

// SetKey is the key of Raw.Elements for a set.
func SetKey(family byte, table, set string) string {
	return familyName(family) + " " + table + " " + set
}

// Read reads and decodes the nftables ruleset of the network namespace at
// nsPath (/proc/PID/ns/net, /run/netns/NAME; "" for the caller's own),
// with the facts Evaluate needs besides: iptables-legacy tables, interfaces,
// their addresses, XDP programs and tc ingress qdiscs. It needs
// CAP_NET_ADMIN for the ruleset (an error wrapping ErrNoCapNetAdmin
// otherwise) and CAP_SYS_ADMIN to enter another namespace.
func Read(ctx context.Context, nsPath string) (*Ruleset, error) {
	raw, err := ReadRaw(ctx, nsPath)
	if err != nil {
		return nil, err
	}
	return Decode(raw)
}

// ReadRaw does the kernel I/O of Read: the nf_tables dumps, rtnetlink dumps,
// and /proc/net/ip{,6}_tables_names read inside the namespace.
func ReadRaw(ctx context.Context, nsPath string) (*Raw, error) {
	fd, done, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	defer done()
	raw := &Raw{Elements: map[string][][]byte{}}
	if err := dumpNftables(ctx, fd, raw); err != nil {
		return nil, err
	}
	links, err := dumpLinks(ctx, fd)
	if err != nil {
		return nil, err
	}
	raw.Links = links
	legacy, err := readLegacy(fd)
	if err != nil {
		return nil, err
	}
	raw.Legacy = legacy
	return raw, nil
}

func dial(ctx context.Context, family, fd int) (*netlink.Conn, error) {
	c, err := netlink.Dial(family, &netlink.Config{NetNS: fd, Strict: true})
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	} else {
		// A dump of a sane ruleset takes milliseconds; never hang the
		// daemon's loop on a wedged socket.
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return c, nil
}

// nftDump asks for every object of one kind (NFT_MSG_GET*) in every family,
// and returns the payloads of the answers.
func nftDump(c *netlink.Conn, msgType uint16, attrs []byte) ([][]byte, error) {
	req := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | int(msgType)),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	msgs, err := c.Execute(req)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("nftables dump: %w", ErrNoCapNetAdmin)
		}
		return nil, fmt.Errorf("nftables dump: %w", err)
	}
	out := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		if len(m.Data) >= 4 {
			out = append(out, m.Data)
		}
	}
	return out, nil
}

func dumpNftables(ctx context.Context, fd int, raw *Raw) error {
	c, err := dial(ctx, unix.NETLINK_NETFILTER, fd)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.Close()
	if raw.Tables, err = nftDump(c, unix.NFT_MSG_GETTABLE, nil); err != nil {
		return err
	}
	if raw.Chains, err = nftDump(c, unix.NFT_MSG_GETCHAIN, nil); err != nil {
		return err
	}
	if raw.Sets, err = nftDump(c, unix.NFT_MSG_GETSET, nil); err != nil {
		return err
	}
	if raw.Rules, err = nftDump(c, unix.NFT_MSG_GETRULE, nil); err != nil {
		return err
	}
	for _, b := range raw.Sets {
		s, err := decodeSet(b)
		if err != nil {
			return fmt.Errorf("nftables set: %w", err)
		}
		attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(s.Table + "\x00")},
			{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(s.Name + "\x00")},
		})
		if err != nil {
			return err
		}
		req := netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
				Flags: netlink.Request | netlink.Dump,
			},
			Data: append([]byte{s.family, unix.NFNETLINK_V0, 0, 0}, attrs...),
		}
		msgs, err := c.Execute(req)
		if err != nil {
			// The set went away between the two dumps: the monitor
			// will report the change and the next read sees it.
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
		k := SetKey(s.family, s.Table, s.Name)
		for _, m := range msgs {
			raw.Elements[k] = append(raw.Elements[k], m.Data)
		}
	}
	return nil
}

// dumpLinks lists the interfaces with their addresses, XDP programs and
// ingress qdiscs (rtnetlink: RTM_GETLINK, RTM_GETADDR, RTM_GETQDISC).
func dumpLinks(ctx context.Context, fd int) ([]Link, error) {
	c, err := dial(ctx, unix.NETLINK_ROUTE, fd)
	if err != nil {
		return nil, fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	get := func(t uint16, hdr []byte) ([]netlink.Message, error) {
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request | netlink.Dump},
			Data:   hdr,
		})
		if err != nil {
			return nil, fmt.Errorf("rtnetlink dump %d: %w", t, err)
		}
		return msgs, nil
	}
	links, err := get(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	if err != nil {
		return nil, err
	}
	addrs, err := get(unix.RTM_GETADDR, make([]byte, unix.SizeofIfAddrmsg))
	if err != nil {
		return nil, err
	}
	qdiscs, err := get(unix.RTM_GETQDISC, make([]byte, sizeofTcMsg))
	if err != nil {
		return nil, err
	}
	return parseLinks(data(links), data(addrs), data(qdiscs))
}

func data(msgs []netlink.Message) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = m.Data
	}
	return out
}

// readLegacy lists the iptables-legacy tables of the namespace behind fd (0:
// the caller's). /proc/net shows the namespace of the reading thread's
// process, so it reads /proc/thread-self/net on a thread that entered it.
func readLegacy(fd int) ([]string, error) {
	var out []string
	read := func() error {
		for _, f := range []struct{ file, family string }{
			{"ip_tables_names", "ip"}, {"ip6_tables_names", "ip6"},
		} {
			b, err := os.ReadFile("/proc/thread-self/net/" + f.file)
			if errors.Is(err, os.ErrNotExist) {
				continue // module not loaded: no legacy tables
			}
			if err != nil {
				return fmt.Errorf("iptables-legacy tables: %w", err)
			}
			for _, name := range strings.Fields(string(bytes.TrimSpace(b))) {
				out = append(out, f.family+" "+name)
			}
		}
		return nil
	}
	if fd == 0 {
		return out, read()
	}
	return out, inNetns(fd, read)
}

// inNetns runs fn on a locked OS thread that entered the namespace behind fd,
// and returns the thread to its own namespace after; a thread that cannot go
// back is left locked, so that the runtime ends it.
func inNetns(fd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own netns: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns: %w", err)
			return // stay locked: the thread exits with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// openNetns opens the namespace file nsPath for netlink's NetNS, and returns
// its descriptor and what closes it; "" is the caller's own namespace (0).
func openNetns(nsPath string) (fd int, done func(), err error) {
	if nsPath == "" {
		return 0, func() {}, nil
	}
	f, err := os.Open(nsPath)
	if err != nil {
		return 0, nil, fmt.Errorf("open netns: %w", err)
	}
	return int(f.Fd()), func() { f.Close() }, nil
}
