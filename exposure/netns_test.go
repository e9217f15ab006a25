package exposure

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var nsSeq atomic.Int32

// testNetns is a throwaway network namespace made with `ip netns add`.
type testNetns struct {
	t    *testing.T
	Name string
	Path string // /run/netns/NAME
}

// needRoot skips the test unless it runs as root with the tools it drives.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and nftables rulesets in them")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/apt-packages.txt)", tool)
		}
	}
}

// newNetns creates a namespace with lo up and removes it when the test ends.
func newNetns(t *testing.T) *testNetns {
	t.Helper()
	name := fmt.Sprintf("pwx%d-%d", os.Getpid(), nsSeq.Add(1))
	run(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := &testNetns{t: t, Name: name, Path: "/run/netns/" + name}
	ns.Exec("ip", "link", "set", "lo", "up")
	return ns
}

// Exec runs a command inside the namespace.
func (ns *testNetns) Exec(args ...string) string {
	ns.t.Helper()
	return run(ns.t, "", append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Nft loads a ruleset with `nft -f -` inside the namespace.
func (ns *testNetns) Nft(ruleset string) {
	ns.t.Helper()
	run(ns.t, ruleset, "ip", "netns", "exec", ns.Name, "nft", "-f", "-")
}

// Sh runs each line as a command inside the namespace (iptables scripts).
func (ns *testNetns) Sh(script string) {
	ns.t.Helper()
	for _, line := range strings.Split(script, "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ns.Exec(strings.Fields(line)...)
	}
}

// Read reads the namespace's ruleset with the package's own reader.
func (ns *testNetns) Read() *Ruleset {
	ns.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := Read(ctx, ns.Path)
	if err != nil {
		ns.t.Fatalf("Read %s: %v", ns.Name, err)
	}
	return rs
}

func run(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}
