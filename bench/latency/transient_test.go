package latency

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// transientEnv makes the test binary a transient listener: "tcp" or "udp",
// the address, and how long to hold it, space-separated. It listens (or
// binds), sleeps, closes and exits.
const transientEnv = "PORTWATCHD_LATENCY_TRANSIENT"

// TestLatencyHelperTransient is the transient listener child, not a test.
func TestLatencyHelperTransient(t *testing.T) {
	var proto, addr, holdText string
	if _, err := fmt.Sscan(os.Getenv(transientEnv), &proto, &addr, &holdText); err != nil {
		t.Skip("helper process for BenchmarkTransient")
	}
	hold, err := time.ParseDuration(holdText)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	var c interface{ Close() error }
	if proto == "udp" {
		c, err = net.ListenPacket("udp", addr)
	} else {
		c, err = net.Listen("tcp", addr)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	time.Sleep(hold)
	c.Close()
	os.Exit(0)
}

// BenchmarkTransient counts, for listeners that live a few milliseconds, how
// many the daemon reported as transient in journald with the right exe and
// port: an opened entry marked transient (gone before the daemon looked), or
// a closed entry marked transient (seen open, and its close resolved at
// once). It runs b.N trials of each kind (a TCP listener for 10 ms and for
// 1 ms, a UDP bind for 10 ms), one at a time, at random moments, and logs the
// rates. bench/latency/run.sh runs it with TRANSIENT=1.
func BenchmarkTransient(b *testing.B) {
	j, dir := setUp(b)
	kinds := []struct {
		name, proto string
		hold        time.Duration
	}{{"tcp-10ms", "tcp", 10 * time.Millisecond}, {"tcp-1ms", "tcp", time.Millisecond}, {"udp-10ms", "udp", 10 * time.Millisecond}}
	base := freeBlock(b)
	const block = 200
	// Each protocol has its own ports: the TCP kinds share the block, the
	// UDP one has it to itself.
	if 2*b.N > block {
		b.Fatalf("%d trials of each kind need more than %d ports", b.N, block)
	}
	portOf := func(kind, i int) int {
		if kinds[kind].proto == "udp" {
			return base + i
		}
		return base + kind*b.N + i
	}
	// The bench measures detection, not the per-program limit: with the
	// default 20 a minute most of its 300 trials would be counted in
	// summaries rather than reported one by one.
	cfg := writeConfig(b, dir, base, block, "transient_alerts_per_minute: 100000\n")
	startDaemon(b, j, dir, cfg)
	self, err := filepath.EvalSymlinks(os.Args[0])
	if err != nil {
		b.Fatal(err)
	}
	type trial struct{ kind, port int }
	var trials []trial
	for k := range kinds {
		for i := range b.N {
			trials = append(trials, trial{k, portOf(k, i)})
		}
	}
	rand.Shuffle(len(trials), func(i, k int) { trials[i], trials[k] = trials[k], trials[i] })
	b.ResetTimer()
	for _, tr := range trials {
		time.Sleep(time.Duration(rand.Int64N(int64(200 * time.Millisecond))))
		k := kinds[tr.kind]
		c := exec.Command(os.Args[0], "-test.run=^TestLatencyHelperTransient$", "-test.count=1")
		c.Env = append(os.Environ(), fmt.Sprintf("%s=%s 127.0.0.1:%d %s", transientEnv, k.proto, tr.port, k.hold))
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("transient child on port %d: %v\n%s", tr.port, err, out)
		}
	}
	b.StopTimer()
	// Every look the last trials triggered is over well within this.
	time.Sleep(3 * time.Second)
	es, err := j.Entries("SYSLOG_IDENTIFIER=portwatchd", "PORTWATCH_NETNS=host")
	if err != nil {
		b.Fatal(err)
	}
	type tally struct{ transient, opened, closed, wrongExe int }
	type key struct {
		proto string
		port  int
	}
	got := map[key]*tally{}
	for _, e := range es {
		port, err := strconv.Atoi(e["PORTWATCH_PORT"])
		if err != nil || port < base || port >= base+block {
			continue
		}
		kp := key{e["PORTWATCH_PROTOCOL"], port}
		if got[kp] == nil {
			got[kp] = &tally{}
		}
		t := got[kp]
		switch e["PORTWATCH_EVENT"] {
		case "opened":
			t.opened++
		case "closed":
			t.closed++
		}
		if e["PORTWATCH_TRANSIENT"] == "1" {
			if e["PORTWATCH_EXE"] == self {
				t.transient++
			} else {
				t.wrongExe++
				if os.Getenv("PORTWATCH_BENCH_VERBOSE") != "" {
					b.Logf("port %d: %s", port, e["MESSAGE"])
				}
			}
		}
	}
	for k, kind := range kinds {
		var transient, alerted, twoEntries, wrong int
		for i := range b.N {
			t := got[key{kind.proto, portOf(k, i)}]
			if t == nil {
				if os.Getenv("PORTWATCH_BENCH_VERBOSE") != "" {
					b.Logf("%s: port %d not alerted", kind.name, portOf(k, i))
				}
				continue
			}
			alerted++
			if t.transient > 0 {
				transient++
			}
			if t.opened+t.closed > 1 {
				twoEntries++
			}
			wrong += t.wrongExe
		}
		b.ReportMetric(100*float64(transient)/float64(b.N), "%transient-"+kind.name)
		b.Logf("%s: %d trials, %d alerted, %d reported transient with the right exe and port (%.0f%%), %d as opened+closed, %d transient entries with another exe",
			kind.name, b.N, alerted, transient, 100*float64(transient)/float64(b.N), twoEntries, wrong)
	}
}
