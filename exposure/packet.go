package exposure

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// okind is what a register byte holds when it is not a known value.
type okind uint8

const (
	oSource  okind = iota + 1 // from the packet's unknown source: a match restricts who may connect
	oIface                    // the input interface (any but lo): a match restricts it to interfaces
	oUnknown                  // a value the evaluator does not model: a match on it is unknown
	oDaddr                    // publication search: the destination address, bound by a match
)

// origin describes where a register's unknown value came from.
type origin struct {
	kind okind
	desc string // nft syntax of the field: "ip saddr", "iifname", "th sport"
	lo   []byte // oIface: the loopback interface's value, decided exactly
	not  []byte // oIface: the value of an interface the packet does not come in on
	mask []byte // a bitwise mask applied to it, for the description
	why  string // oUnknown: the reason a path through it is unknown
}

// regs is the register file of one rule: NFT_REG_1..4 (16 bytes each)
// overlay NFT_REG32_00..15 (4 bytes each). o[i] is nil for a known byte.
type regs struct {
	b [64]byte
	o [64]*origin
}

func regOff(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 16, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r-unix.NFT_REG32_00) * 4, true
	}
	return 0, false
}

// load writes n bytes at register r as the kernel does: the last 32-bit
// word is zeroed first, so a short value is padded with zeros.
func (g *regs) load(r uint32, b []byte, o []*origin) bool {
	off, ok := regOff(r)
	if !ok || off+len(b) > len(g.b) {
		return false
	}
	if rem := len(b) % 4; rem != 0 {
		w := off + len(b) - rem
		for i := w; i < w+4 && i < len(g.b); i++ {
			g.b[i], g.o[i] = 0, nil
		}
	}
	copy(g.b[off:], b)
	for i := range b {
		var x *origin
		if o != nil {
			x = o[i]
		}
		g.o[off+i] = x
	}
	return true
}

// loadOrigin loads n bytes all coming from one origin.
func (g *regs) loadOrigin(r uint32, n int, o *origin) bool {
	os := make([]*origin, n)
	for i := range os {
		os[i] = o
	}
	return g.load(r, make([]byte, n), os)
}

func (g *regs) read(r uint32, n int) ([]byte, []*origin, bool) {
	off, ok := regOff(r)
	if !ok || n < 0 || off+n > len(g.b) {
		return nil, nil, false
	}
	return g.b[off : off+n], g.o[off : off+n], true
}

// firstOrigin returns the origin of a span of the most decisive kind: an
// unknown byte makes the whole span unknown.
func firstOrigin(os []*origin) *origin {
	var first *origin
	for _, o := range os {
		if o == nil {
			continue
		}
		if o.kind == oUnknown {
			return o
		}
		if first == nil {
			first = o
		}
	}
	return first
}

// packet is the synthetic new connection being walked through the ruleset.
type packet struct {
	family  byte // NFPROTO_IPV4 or NFPROTO_IPV6
	l4proto byte
	daddr   netip.Addr // invalid in the publication search (oDaddr)
	dport   uint16
	ctStat  uint32 // conntrack status: IPS_DST_NAT after a DNAT
	loIndex uint32
	local   func(netip.Addr) bool // is it an address of the namespace
	oif     *Link                 // forward hook: the interface towards the destination, if known
	notIif  *Link                 // an interface the packet does not come in on
	pubMode bool
}

var (
	unknownField = func(desc string) *origin { return &origin{kind: oUnknown, desc: desc} }
	srcPort      = &origin{kind: oSource, desc: "th sport"}
	freeDaddr    = &origin{kind: oDaddr, desc: "daddr"}
)

func fill(n int, o *origin) []*origin {
	os := make([]*origin, n)
	for i := range os {
		os[i] = o
	}
	return os
}

// header returns the bytes of the packet's network (base 1) or transport
// (base 2) header at [off, off+n), with the origin of the unknown ones.
func (p *packet) header(base expr.PayloadBase, off, n int) ([]byte, []*origin) {
	var h []byte
	var o []*origin
	unk := unknownField("payload")
	switch base {
	case expr.PayloadBaseNetworkHeader:
		if p.family == unix.NFPROTO_IPV4 {
			h = make([]byte, 20)
			o = fill(20, unk)
			h[0], o[0] = 0x45, nil
			h[6], h[7], o[6], o[7] = 0x40, 0, nil, nil // DF, not a fragment
			h[9], o[9] = p.l4proto, nil
			copy(o[12:16], fill(4, &origin{kind: oSource, desc: "ip saddr"}))
			if p.daddr.IsValid() {
				a := p.daddr.As4()
				copy(h[16:20], a[:])
				copy(o[16:20], fill(4, nil))
			} else {
				copy(o[16:20], fill(4, freeDaddr))
			}
		} else {
			h = make([]byte, 40)
			o = fill(40, unk)
			h[6], o[6] = p.l4proto, nil
			copy(o[8:24], fill(16, &origin{kind: oSource, desc: "ip6 saddr"}))
			if p.daddr.IsValid() {
				a := p.daddr.As16()
				copy(h[24:40], a[:])
				copy(o[24:40], fill(16, nil))
			} else {
				copy(o[24:40], fill(16, freeDaddr))
			}
		}
	case expr.PayloadBaseTransportHeader:
		h = make([]byte, 20)
		o = fill(20, unk)
		copy(o[0:2], fill(2, srcPort))
		binary.BigEndian.PutUint16(h[2:4], p.dport)
		o[2], o[3] = nil, nil
		if p.l4proto == unix.IPPROTO_TCP {
			h[13], o[13] = 0x02, nil // a SYN
		}
	}
	if off < 0 || n < 0 || off+n > len(h) {
		return make([]byte, n), fill(n, unknownField("payload"))
	}
	return h[off : off+n], o[off : off+n]
}

// meta returns what a meta expression loads.
func (p *packet) meta(k expr.MetaKey) ([]byte, []*origin) {
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	switch k {
	case expr.MetaKeyNFPROTO:
		return []byte{p.family}, nil
	case expr.MetaKeyL4PROTO:
		return []byte{p.l4proto}, nil
	case expr.MetaKeyPROTOCOL:
		if p.family == unix.NFPROTO_IPV4 {
			return []byte{0x08, 0x00}, nil
		}
		return []byte{0x86, 0xdd}, nil
	case expr.MetaKeyIIF:
		o := &origin{kind: oIface, desc: "iif", lo: u32(p.loIndex)}
		if p.notIif != nil {
			o.not = u32(uint32(p.notIif.Index))
		}
		return make([]byte, 4), fill(4, o)
	case expr.MetaKeyIIFNAME:
		lo := make([]byte, 16)
		copy(lo, "lo")
		o := &origin{kind: oIface, desc: "iifname", lo: lo}
		if p.notIif != nil {
			o.not = make([]byte, 16)
			copy(o.not, p.notIif.Name)
		}
		return make([]byte, 16), fill(16, o)
	case expr.MetaKeyIIFTYPE:
		return make([]byte, 2), fill(2, &origin{kind: oIface, desc: "iiftype",
			lo: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_LOOPBACK)})
	case expr.MetaKeyOIF, expr.MetaKeyOIFNAME:
		if p.oif == nil {
			if k == expr.MetaKeyOIF {
				return make([]byte, 4), fill(4, unknownField("oif"))
			}
			return make([]byte, 16), fill(16, unknownField("oifname"))
		}
		if k == expr.MetaKeyOIF {
			return u32(uint32(p.oif.Index)), nil
		}
		b := make([]byte, 16)
		copy(b, p.oif.Name)
		return b, nil
	case expr.MetaKeyMARK, expr.MetaKeyPKTTYPE:
		if k == expr.MetaKeyPKTTYPE {
			return []byte{unix.PACKET_HOST}, nil
		}
		return make([]byte, 4), nil
	}
	return make([]byte, 4), fill(4, unknownField("meta "+strconv.Itoa(int(k))))
}

// ct returns what a ct expression loads for a new connection.
func (p *packet) ct(k expr.CtKey) ([]byte, []*origin) {
	switch k {
	case expr.CtKeySTATE:
		return binary.NativeEndian.AppendUint32(nil, 1<<(2+1)), nil // NF_CT_STATE_BIT(IP_CT_NEW)
	case expr.CtKeySTATUS:
		return binary.NativeEndian.AppendUint32(nil, p.ctStat), nil
	case expr.CtKeyDIRECTION:
		return []byte{0}, nil // original
	case expr.CtKeyMARK:
		return make([]byte, 4), nil
	case expr.CtKeyL3PROTOCOL:
		return []byte{p.family}, nil
	case expr.CtKeyPROTOCOL:
		return []byte{p.l4proto}, nil
	}
	return make([]byte, 4), fill(4, unknownField("ct "+strconv.Itoa(int(k))))
}

// describe writes a condition on an origin in nft syntax.
func describe(o *origin, op expr.CmpOp, data []byte) string {
	neg := ""
	if op == expr.CmpOpNeq {
		neg = "!= "
	}
	switch o.desc {
	case "ip saddr", "ip6 saddr":
		n := 4
		if o.desc == "ip6 saddr" {
			n = 16
		}
		if len(data) < n && o.mask == nil {
			// iptables-nft loads only the bytes of a prefix: -s 10.0.0.0/8
			// is a one-byte compare.
			full := make([]byte, n)
			copy(full, data)
			a, _ := netip.AddrFromSlice(full)
			return o.desc + " " + neg + netip.PrefixFrom(a, 8*len(data)).String()
		}
		if len(data) < n && o.mask != nil {
			full, m := make([]byte, n), make([]byte, n)
			copy(full, data)
			copy(m, o.mask)
			a, _ := netip.AddrFromSlice(full)
			ma, _ := netip.AddrFromSlice(m)
			return o.desc + " " + neg + netip.PrefixFrom(a, maskBits(ma)).String()
		}
		if a, ok := netip.AddrFromSlice(data); ok {
			if o.mask != nil {
				if m, ok := netip.AddrFromSlice(o.mask); ok {
					if bits := maskBits(m); bits >= 0 {
						return o.desc + " " + neg + netip.PrefixFrom(a, bits).String()
					}
				}
			}
			return o.desc + " " + neg + a.String()
		}
	case "iifname":
		return "iifname " + neg + strconv.Quote(str(data))
	case "th sport":
		if len(data) == 2 {
			return "th sport " + neg + strconv.Itoa(int(binary.BigEndian.Uint16(data)))
		}
	}
	return o.desc + " " + neg + "0x" + hexs(data)
}

func maskBits(m netip.Addr) int {
	n := 0
	for _, x := range m.AsSlice() {
		for j := 7; j >= 0; j-- {
			if x&(1<<j) == 0 {
				return n
			}
			n++
		}
	}
	return n
}

func hexs(b []byte) string {
	const d = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, d[x>>4], d[x&15])
	}
	return string(out)
}
