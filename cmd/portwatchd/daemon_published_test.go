package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portwatchd/portwatchd/notify"
)

// TestDaemonExposurePublished is the ufw-bypass case end to end: a
// container-like namespace behind a veth pair listens on 80, the daemon's
// "host" (a throwaway namespace) publishes host port 8080 to it with a DNAT
// made by the iptables-nft commands Docker issues, and its input chain drops
// 8080. There is no socket on the host's 8080 (no userland proxy), yet the
// port is reachable: the daemon reports it as a listener of its own kind,
// published and joined to the container's listener, and judges it: no rule
// allows 8080, so it alerts.
func TestDaemonExposurePublished(t *testing.T) {
	dir, bin := exposureE2E(t, "iptables")
	host := fmt.Sprintf("pwpubh%d", os.Getpid())
	ctr := fmt.Sprintf("pwpubc%d", os.Getpid())
	addNetns(t, host)
	addNetns(t, ctr)
	veth := fmt.Sprintf("pwv%d", os.Getpid()%100000)
	runCmd(t, "ip", "-n", host, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ctr)
	runCmd(t, "ip", "-n", host, "addr", "add", "172.30.9.1/24", "dev", veth)
	runCmd(t, "ip", "-n", host, "link", "set", veth, "up")
	runCmd(t, "ip", "-n", ctr, "addr", "add", "172.30.9.2/24", "dev", "eth0")
	runCmd(t, "ip", "-n", ctr, "link", "set", "eth0", "up")
	// What Docker does for -p 8080:80 (iptables-nft), and an input chain
	// that drops 8080 as ufw would.
	for _, args := range [][]string{
		{"-t", "nat", "-N", "DOCKER"},
		{"-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
		{"-t", "nat", "-A", "DOCKER", "!", "-i", veth, "-p", "tcp", "-m", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "172.30.9.2:80"},
		{"-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"},
	} {
		runCmd(t, "ip", append([]string{"netns", "exec", host, "iptables"}, args...)...)
	}

	hook, hookPort := startHookIn(t, host)
	listenIn(t, ctr, "0.0.0.0:80")
	config := filepath.Join(dir, "portwatch.yaml")
	// The container's own listener is allowed; the published port is not.
	if err := os.WriteFile(config, fmt.Appendf(nil, `version: 1
interval: 200ms
ebpf: off
notify:
  journald: false
  webhooks:
    - name: hook
      format: generic
      url: http://127.0.0.1:%d/hook
allow:
  - name: hook-receiver
    port: %d
  - name: web-in-container
    port: 80
metrics:
  textfile: ""
`, hookPort, hookPort), 0o600); err != nil {
		t.Fatal(err)
	}
	// Both namespaces exist before the daemon starts: it finds the
	// container's through /run/netns, in the mount namespace it copies.
	startDaemonIn(t, host, bin, config, dir)

	ev := hook.wait(t, func(ev notify.Event) bool {
		return ev.Type == notify.TypeOpened && ev.Listener.Port == 8080
	})
	t.Logf("published port: %s", ev.Message)
	l := ev.Listener
	if l.Verdict != "unexpected" || l.Netns != "host" || l.Protocol != "tcp" {
		t.Errorf("published port: verdict %s in %s (%s), want unexpected tcp in host", l.Verdict, l.Netns, l.Protocol)
	}
	if !strings.Contains(l.Published, "172.30.9.2:80") {
		t.Errorf("published port: Published = %q, want it to lead to 172.30.9.2:80", l.Published)
	}
	if e := l.Exposure; e == nil || len(e.Published) == 0 || e.Published[0].Owner != "docker" || e.Published[0].ToPort != 80 {
		t.Errorf("published port: exposure %+v, want one publication by docker to port 80", e)
	} else if e.Published[0].Verdict != "open" {
		t.Errorf("published port: forward verdict %s (%s), want open although input drops 8080", e.Published[0].Verdict, e.Published[0].Reason)
	}
	for _, ev := range hook.events() {
		if ev.Listener.Port == 80 && ev.Type == notify.TypeOpened {
			t.Errorf("the container's listener on 80 alerted, want it allowed: %s", ev.Message)
		}
	}
}
