package watcher_test

// An external test package, so that it may use policy (which imports
// watcher) on a real snapshot: the watcher itself never imports policy.

import (
	"fmt"
	"testing"

	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// TestPolicyExeSpoof: a rule "exe: PATH" allows the program that really
// runs from PATH, and not a process that shows PATH as its exe because it
// bound another file over PATH in a private mount namespace, even on the
// host network namespace and on the same address. The scene's program is
// a copy of python3 in a temporary directory, which its risk flags say: the
// rules accept them (flags:), or nothing would be allowed at all.
func TestPolicyExeSpoof(t *testing.T) {
	sc := watcher.NewSpoofScene(t)
	const flags = "flags: [exe_in_writable_dir, exe_unpackaged, interpreter]"
	for _, rule := range []string{
		fmt.Sprintf("{name: app, exe: %q, %s}", sc.Path, flags),
		fmt.Sprintf("{name: app, netns: host, protocol: tcp, address: loopback, exe: %q, %s}", sc.Path, flags),
	} {
		cfg, err := policy.Parse("p.yaml", []byte("version: 1\nallow:\n  - "+rule+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if d := cfg.Evaluate(*sc.Genuine, sc.Snapshot.Time); d.Verdict != policy.Allowed {
			t.Errorf("%s: genuine process: %s %q, want allowed", rule, d.Verdict, d.Reason)
		}
		d := cfg.Evaluate(*sc.Spoofed, sc.Snapshot.Time)
		if d.Verdict != policy.Unexpected {
			t.Errorf("%s: spoofed process: %s, want unexpected", rule, d.Verdict)
		}
		t.Logf("spoofed: %s", d.Reason)
	}
}
