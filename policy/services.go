package policy

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// DefaultServicesFile is the services database used to resolve names in
// port:.
const DefaultServicesFile = "/etc/services"

// Services maps a service name (or alias) and a protocol ("tcp", "udp") to a
// port, as listed in /etc/services.
type Services map[string]map[string]uint16

// ParseServices parses the services(5) format: "name port/protocol
// [aliases...] [# comment]". Malformed lines are skipped, as libc does. The
// first entry for a name and protocol wins.
func ParseServices(data []byte) Services {
	s := Services{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(f[1], "/")
		if !ok || proto == "" {
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			continue
		}
		proto = strings.ToLower(proto)
		for _, name := range append(f[:1:1], f[2:]...) {
			m := s[name]
			if m == nil {
				m = map[string]uint16{}
				s[name] = m
			}
			if _, dup := m[proto]; !dup {
				m[proto] = uint16(port)
			}
		}
	}
	return s
}
