// Package procstatus reads numeric fields of /proc/PID/status for the
// benchmarks (VmRSS, VmHWM, Threads).
package procstatus

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Field returns the number in the line "key:   1234 kB" (or "key: 3") of
// the status file at path, such as /proc/self/status; ok is false when the
// file or the field cannot be read.
func Field(path, key string) (n int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, found := strings.CutPrefix(sc.Text(), key+":")
		if !found {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}
