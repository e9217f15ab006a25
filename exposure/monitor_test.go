package exposure

import (
	"context"
	"testing"
	"time"
)

// A ruleset change is seen within 2 s, and after it the re-read ruleset
// gives the new verdict.
func TestWatchSeesChange(t *testing.T) {
	needRoot(t, "nft")
	ns := newNetns(t)
	ns.withAddr("eth0", "192.0.2.10/24")
	ns.Nft("table inet f {\n chain input {\n type filter hook input priority 0; policy drop;\n }\n}\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := Watch(ctx, ns.Path, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got := Evaluate(ns.Read(), Facts{"tcp", ap("0.0.0.0"), 22}).Verdict; got != VerdictFiltered {
		t.Fatalf("before: %s, want filtered", got)
	}
	start := time.Now()
	ns.Nft("add rule inet f input tcp dport 22 accept\n")
	select {
	case <-ch:
	case <-time.After(2 * time.Second):
		t.Fatal("no change seen within 2 s")
	}
	t.Logf("change seen after %v", time.Since(start))
	if got := Evaluate(ns.Read(), Facts{"tcp", ap("0.0.0.0"), 22}).Verdict; got != VerdictOpen {
		t.Errorf("after: %s, want open", got)
	}
	cancel()
	for range ch { // closes when ctx ends
	}
}
