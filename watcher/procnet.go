package watcher

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// procNetFiles are the /proc/PID/net tables read by the fallback, with the
// protocol each holds.
var procNetFiles = []struct {
	name string
	tcp  bool
}{{"tcp", true}, {"tcp6", true}, {"udp", false}, {"udp6", false}}

// parseProcNet parses one /proc/net/{tcp,tcp6,udp,udp6} table and appends its
// listening sockets: TCP in LISTEN (0A), UDP in CLOSE (07) with no remote port.
// It is pure; errors name the line.
func parseProcNet(data []byte, tcp bool, out []sockEntry) ([]sockEntry, error) {
	lineNo := 0
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		lineNo++
		if lineNo == 1 {
			continue // header
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, ok, err := parseProcNetLine(line, tcp)
		if err != nil {
			return out, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

var errProcNetFields = errors.New("too few fields")

func parseProcNetLine(line []byte, tcp bool) (e sockEntry, ok bool, err error) {
	// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
	var f [10][]byte
	n := 0
	for _, fld := range bytes.Fields(line) {
		if n == len(f) {
			break
		}
		f[n] = fld
		n++
	}
	if n < len(f) {
		return e, false, errProcNetFields
	}
	addr, port, err := parseProcNetAddr(f[1])
	if err != nil {
		return e, false, fmt.Errorf("local address: %w", err)
	}
	_, rport, err := parseProcNetAddr(f[2])
	if err != nil {
		return e, false, fmt.Errorf("remote address: %w", err)
	}
	st, err := strconv.ParseUint(string(f[3]), 16, 8)
	if err != nil {
		return e, false, fmt.Errorf("state: %w", err)
	}
	uid, err := strconv.ParseUint(string(f[7]), 10, 32)
	if err != nil {
		return e, false, fmt.Errorf("uid: %w", err)
	}
	inode, err := strconv.ParseUint(string(f[9]), 10, 64)
	if err != nil {
		return e, false, fmt.Errorf("inode: %w", err)
	}
	e = sockEntry{tcp: tcp, port: port, v6only: -1, uid: uint32(uid), inode: inode}
	e.v6 = addr.Is6() && !addr.Is4In6()
	e.addr = addr.Unmap()
	if port == 0 {
		return e, false, nil
	}
	if tcp {
		return e, st == tcpListen, nil
	}
	return e, st == tcpClose && rport == 0, nil
}

// parseProcNetAddr parses "0100007F:0035": the address as 32-bit words in
// host byte order, then the port in hex.
func parseProcNetAddr(s []byte) (netip.Addr, uint16, error) {
	i := bytes.IndexByte(s, ':')
	if i < 0 {
		return netip.Addr{}, 0, fmt.Errorf("%q: no port", s)
	}
	hexAddr, hexPort := s[:i], s[i+1:]
	port, err := strconv.ParseUint(string(hexPort), 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%q: bad port", s)
	}
	var raw [16]byte
	switch len(hexAddr) {
	case 8, 32:
	default:
		return netip.Addr{}, 0, fmt.Errorf("%q: bad address length", s)
	}
	for w := 0; w < len(hexAddr)/8; w++ {
		v, err := strconv.ParseUint(string(hexAddr[w*8:w*8+8]), 16, 32)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("%q: bad address", s)
		}
		binary.NativeEndian.PutUint32(raw[w*4:], uint32(v))
	}
	if len(hexAddr) == 8 {
		return netip.AddrFrom4([4]byte(raw[:4])), uint16(port), nil
	}
	return netip.AddrFrom16(raw), uint16(port), nil
}

// readProcNet reads the four tables under dir (a /proc/PID/net directory) and
// returns the listening sockets in them. A missing table (no IPv6) is skipped.
func readProcNet(dir string, out []sockEntry) ([]sockEntry, error) {
	for _, f := range procNetFiles {
		data, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f.name[len(f.name)-1] == '6' {
				continue
			}
			return out, err
		}
		if out, err = parseProcNet(data, f.tcp, out); err != nil {
			return out, fmt.Errorf("%s: %w", filepath.Join(dir, f.name), err)
		}
	}
	return out, nil
}
