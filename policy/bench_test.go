package policy

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkEvaluate measures one verdict against a 100-rule policy for an
// unexpected listener: the worst case, which tries every rule and builds
// the reason.
func BenchmarkEvaluate(b *testing.B) {
	var y strings.Builder
	y.WriteString("allow:\n")
	for i := range 100 {
		fmt.Fprintf(&y, "  - name: r%d\n    protocol: tcp\n    port: [%d, %d-%d]\n    address: [loopback, 10.0.0.0/8]\n    exe: /usr/sbin/d%d\n    user: root\n", i, 1000+i, 2000+i*10, 2009+i*10, i)
	}
	l := testLoader(nil)
	l.followIncludes = false
	c, err := l.parse("bench.yaml", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	unexpected := listener("tcp", "0.0.0.0", 8080, python)
	allowed := listener("tcp", "127.0.0.1", 2995, python)
	allowed.Processes[0].Exe = "/usr/sbin/d99"
	allowed.Processes[0].User = "root"
	b.Run("unexpected", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Evaluate(unexpected, now)
		}
	})
	b.Run("allowed by the last rule", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := c.Evaluate(allowed, now); d.Verdict != Allowed {
				b.Fatal(d.Reason)
			}
		}
	})
}

// BenchmarkLoadReference measures loading the shipped reference config.
func BenchmarkLoadReference(b *testing.B) {
	data, err := os.ReadFile("../configs/portwatch.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l := testLoader(nil)
		l.followIncludes = false
		if _, err := l.parse("portwatch.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}
