// Package procnet counts sockets from /proc/net/{tcp,tcp6,udp,udp6}: the
// kernel's own account, which the benchmark checks both commands against.
package procnet

import (
	"os"
	"path/filepath"
	"strings"
)

// Counts are the sockets of the reader's network namespace.
type Counts struct {
	// Listeners per file: TCP in LISTEN, UDP bound and unconnected.
	Listeners map[string]int
	// Established counts TCP connection ends of both families.
	Established int
}

// Total is the number of listeners of every protocol and family.
func (c Counts) Total() int {
	n := 0
	for _, v := range c.Listeners {
		n += v
	}
	return n
}

// Read counts the sockets listed under procRoot/net.
func Read(procRoot string) (Counts, error) {
	c := Counts{Listeners: map[string]int{}}
	for _, name := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, err := os.ReadFile(filepath.Join(procRoot, "net", name))
		if err != nil {
			return c, err
		}
		Parse(name, b, &c)
	}
	return c, nil
}

// Parse adds the sockets of one /proc/net file to c.
func Parse(name string, b []byte, c *Counts) {
	tcp := strings.HasPrefix(name, "tcp")
	lines := strings.Split(string(b), "\n")
	for _, line := range lines[min(1, len(lines)):] { // the first line is a header
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		switch {
		case tcp && f[3] == "0A", !tcp && f[3] == "07" && strings.HasSuffix(f[2], ":0000"):
			c.Listeners[name]++
		case tcp && f[3] == "01":
			c.Established++
		}
	}
}
