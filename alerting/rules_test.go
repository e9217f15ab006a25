package alerting

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portwatchd/portwatchd/notify"
	"github.com/portwatchd/portwatchd/policy"
	"github.com/portwatchd/portwatchd/watcher"
)

// The tests in this file are the specification of the alert rules (see the
// package doc), one test per rule. Each case is a sequence of snapshots,
// reloads and restarts on a synthetic clock, with the events each must give.

// TestAlertOncePerUnexpectedListener: one alert per unexpected listener while
// it stays open, keyed on netns, protocol, address and port; allowed and
// ignored listeners alert nothing.
func TestAlertOncePerUnexpectedListener(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "first snapshot alerts every unexpected listener, and nothing twice",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected udp 0.0.0.0:53 [/tmp/y]",
				}},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engNo},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil), engL("udp", 53, procEvil2)), wantState: engNo},
			},
		},
		{
			name:   "an unexpected listener opening later alerts once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "reuseport sockets sharing a key are one listener, alerted once, and each counts in the figures",
			policy: allow22,
			steps: []engineStep{
				// Figures count sockets, as `portwatchd list` shows them.
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 8080, procEvil), engL("tcp", 8080, watcher.Process{PID: 202, Exe: "/tmp/x", User: "nobody"})), want: []string{
					"opened unexpected tcp 0.0.0.0:8080 [/tmp/x,/tmp/x]",
				}, wantStats: &Stats{Listeners: 3, Unexpected: 2, Namespaces: 1}},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 8080, procEvil)), wantStats: &Stats{Listeners: 2, Unexpected: 1, Namespaces: 1}},
			},
		},
		{
			name:   "allowed listeners are silent without log_allowed",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
				{at: 2 * time.Second, snap: engS()},
			},
		},
		{
			name:     "log_allowed gives info events for allowed listeners after the first snapshot",
			settings: policy.Settings{LogAllowed: true},
			policy:   engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 80: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 80, procHelper))},
				{at: time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 80, procHelper)), wantState: engNo, want: []string{"opened allowed tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 80, procHelper)), want: []string{"closed allowed tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 80, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 80, procEvil)), want: []string{"changed allowed tcp 0.0.0.0:80 [/tmp/x]"}},
			},
		},
		{
			name:   "ignored listeners give nothing",
			policy: engPolicy{ignore: map[uint16]bool{40000: true}},
			steps: []engineStep{
				{snap: engS(engL("udp", 40000, procEvil))},
				{at: time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("udp", 40000, procEvil))},
			},
		},
	})
}

// TestCloseResolvesAfterFlapWindow: an alerted listener that closes is resolved
// once flap_window has passed without it reopening with the same executables.
func TestCloseResolvesAfterFlapWindow(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "without a flap window, closing resolves at once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS(), wantState: engYes, want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 2 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:     "the resolve waits out the flap window",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS(), wantState: engYes},
				{at: 30 * time.Second, snap: engS()},
				{at: 31 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 32 * time.Second, snap: engS()},
			},
		},
		{
			name:     "flapping within the window with the same exe: one alert, one resolve",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS()},
				{at: 20 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 21 * time.Second, snap: engS()},
				{at: 50 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 51 * time.Second, snap: engS()},
				{at: 81 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:     "reopening within the window with another exe resolves and alerts again",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil2)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/y]",
				}},
			},
		},
		{
			name:     "reopening after the window alerts again",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 40 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 41 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:     "reopening after the window, before a snapshot saw the window pass",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 60 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}},
			},
		},
		{
			// The daemon's end-to-end flap case runs with a window of
			// minutes, then reloads a short one; the window's expiry is
			// tested here, on the synthetic clock.
			name:     "a long flap window holds the resolve; a reload to a short one lets it go",
			settings: policy.Settings{FlapWindow: 30 * time.Minute},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS()},
				{at: 5 * time.Minute, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 6 * time.Minute, snap: engS()},
				{at: 35 * time.Minute, snap: engS()},
				{at: 36*time.Minute + time.Second, reload: &allow22, settings: &policy.Settings{FlapWindow: 8 * time.Second}},
				{at: 36*time.Minute + 2*time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
	})
}

// TestUninspectedNamespaceClosesNothing: a listener the engine tracks is
// closed when a snapshot does not contain it, unless the snapshot could not
// inspect its namespace: what could not be seen is unknown, never closed. That
// holds at the first snapshot after a restart too.
func TestUninspectedNamespaceClosesNothing(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "a namespace not inspected this time closes nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, snap: engBlind(engS(), "container:abc")},
				{at: 2 * time.Second, snap: engS(engLN("container:abc", "tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
			},
		},
		{
			name:   "a namespace gone from the snapshot closes its listeners",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
			},
		},
		{
			name:   "restart: an alert in a namespace not inspected at the first snapshot stays open",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engBlind(engS(), "container:abc"), wantState: engNo},
				{at: 3 * time.Second, snap: engBlind(engS(), "container:abc"), wantState: engNo},
				{at: 4 * time.Second, snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), wantState: engNo},
				{at: 5 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
			},
		},
		{
			name:   "restart: an alert in a namespace not inspected at first is resolved once it is seen gone",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engBlind(engS(), "container:abc"), wantState: engNo},
				{at: 3 * time.Second, snap: engS(engLN("container:abc", "tcp", 80, procHelper)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:80 in netns container:abc [/usr/lib/helper]",
				}},
			},
		},
		{
			name:   "a namespace not inspected holds back nothing in the others",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLN("container:abc", "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns container:abc [/tmp/x]"}},
				{at: time.Second, snap: engBlind(engS(engL("tcp", 5555, procEvil2)), "container:abc"), want: []string{"opened unexpected tcp 0.0.0.0:5555 [/tmp/y]"}},
				{at: 2 * time.Second, snap: engBlind(engS(), "container:abc"), want: []string{"closed unexpected tcp 0.0.0.0:5555 [/tmp/y]"}},
			},
		},
	})
}

// TestListenerIdentityIsItsKey: a listener is known by its key
// (watcher.Listener.Key) everywhere: in the snapshots, the alerts and the
// state file. A namespace named after its lowest pid is keyed on its inode,
// so that the name passing to another namespace neither hides that the
// listeners of the first closed nor carries them over to the second.
func TestListenerIdentityIsItsKey(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "a pid:N name passing to another namespace closes the listeners of the first",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLNI("pid:100", 1, "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/x]"}},
				{at: time.Second, snap: engS(engLNI("pid:100", 2, "tcp", 4444, procEvil2)), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/y]",
				}},
				{at: 2 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/y]"}},
				{at: 3 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:   "a pid:N name passing to a namespace not inspected closes the listeners of the first",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLNI("pid:100", 1, "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/x]"}},
				{at: time.Second, snap: engBlindNS(engS(), "pid:100", 2), want: []string{"closed unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/x]"}},
			},
		},
		{
			name:   "a namespace keeps its key when its pid:N name changes",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engLNI("pid:100", 1, "tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 in netns pid:100 [/tmp/x]"}},
				{at: time.Second, snap: engS(engLNI("pid:200", 1, "tcp", 4444, procEvil)), wantState: engNo},
				{at: 2 * time.Second, restart: true},
				{at: 3 * time.Second, snap: engBlindNS(engS(), "pid:300", 1), wantState: engNo},
				{at: 4 * time.Second, snap: engS(engLNI("pid:300", 1, "tcp", 4444, procEvil)), wantState: engNo},
			},
		},
	})
}

// TestRepeatIntervalReminds: an alert in force is sent again every
// repeat_interval.
func TestRepeatIntervalReminds(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:     "repeat_interval sends reminders while open",
			settings: policy.Settings{RepeatInterval: 10 * time.Second},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 9 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 10 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x] note=reminder: open since 2026-01-01T00:00:00Z",
				}},
				{at: 15 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 20 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x] note=reminder: open since 2026-01-01T00:00:00Z",
				}},
				{at: 25 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 40 * time.Second, snap: engS()},
			},
		},
	})
}

// TestUnattributedListenerWaitsForItsHolder: a new listener with no holder
// found is judged once attributed, or as unattributed after the watcher's
// attribution ticks and a margin.
func TestUnattributedListenerWaitsForItsHolder(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "a new listener briefly unattributed is judged once attributed",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			// Kernel sockets are real listeners: held back, never dropped.
			name:   "a new listener unattributed for three snapshots is judged as unattributed",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 2049: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 2049), engL("tcp", 22)), wantStats: &Stats{Listeners: 2, Unexpected: 1, Namespaces: 1}},
				{at: time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22)), want: []string{"opened unexpected tcp 0.0.0.0:22 []"}},
				// Attribution that shows an allowed owner resolves the
				// alert once two snapshots agree.
				{at: 3 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22, procSSHD))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 2049), engL("tcp", 22, procSSHD)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (now attributed); alert resolved`,
				}, wantStats: &Stats{Listeners: 2, Namespaces: 1}},
			},
		},
		{
			name:   "an unattributed alert learning its owner is no new alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444))},
				{at: time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444)), want: []string{"opened unexpected tcp 0.0.0.0:4444 []"}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
			},
		},
		{
			name:   "a new unattributed listener that closes at once gives nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS()},
				{at: time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS()},
			},
		},
		{
			// The watcher searches for the holders of unknown ephemeral
			// UDP sockets only every ephemeralSearchEvery snapshots
			// (ignore_ephemeral_udp: false here): the engine waits that
			// long, so no false alert and resolve.
			name:   "an ephemeral udp listener attributed at the watcher's next search gives nothing",
			policy: engPolicy{allow: map[uint16]string{40000: "/usr/lib/helper"}},
			steps: append(append([]engineStep{{snap: engS()}},
				engHold(time.Second, engEphTicks()+attributionMargin, func() *watcher.Snapshot {
					return engS(engEph(engL("udp", 40000)))
				})...),
				engineStep{at: time.Minute, snap: engS(engEph(engL("udp", 40000, procHelper))), wantState: engNo},
				engineStep{at: time.Minute + time.Second, snap: engS(), wantState: engNo},
			),
		},
		{
			name:   "an ephemeral udp listener that stays unattributed is judged after the search period",
			policy: engPolicy{allow: map[uint16]string{40000: "/usr/lib/helper"}},
			steps: append(append([]engineStep{{snap: engS()}},
				engHold(time.Second, engEphTicks()+attributionMargin, func() *watcher.Snapshot {
					return engS(engEph(engL("udp", 40000)))
				})...),
				engineStep{at: 30 * time.Second, snap: engS(engEph(engL("udp", 40000))), want: []string{"opened unexpected udp 0.0.0.0:40000 []"}},
			),
		},
		{
			// A service starting with the daemon (at boot) is found by
			// the next snapshot: no alert, and the figures follow.
			name:   "a listener unattributed at start and attributed next gives nothing",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22)), wantState: engNo, wantStats: &Stats{Listeners: 1, Unexpected: 1, Namespaces: 1}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo, wantStats: &Stats{Listeners: 1, Namespaces: 1}},
			},
		},
		{
			name:     "log_allowed: a listener held back at start is not logged as opened later",
			settings: policy.Settings{LogAllowed: true},
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 2222))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 2222, procSSHD2)), want: []string{
					"opened unexpected tcp 0.0.0.0:2222 [/usr/sbin/sshd]",
				}},
			},
		},
		{
			// The start summary line: the figures of the first snapshot
			// count an unattributed listener as unexpected although its
			// alert waits for the attribution grace.
			name:   "start figures count unattributed listeners held back for attribution",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd", 111: ""}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}, wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)),
					wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 111), engL("udp", 51820), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected udp 0.0.0.0:51820 []",
				}, wantStats: &Stats{Listeners: 4, Unexpected: 2, Namespaces: 1}},
			},
		},
	})
}

// TestOwnerChangeNeedsTwoSnapshots: an owner change (other executables or
// users) takes effect once two consecutive snapshots agree; unknown owners are
// no change.
func TestOwnerChangeNeedsTwoSnapshots(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "an owner change needs two snapshots to agree",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 22, procEvil)), want: []string{"changed unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
				{at: 5 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
			},
		},
		{
			name:   "unknown owners between two agreeing snapshots hold the change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procEvil))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procEvil)), want: []string{"changed unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
			},
		},
		{
			name:   "a holder briefly unattributed is no change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD2))},
			},
		},
		{
			name:   "a process exiting mid-snapshot is no change",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD, procHelper))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD, procHelper))},
			},
		},
		{
			name:   "an alerted listener taken over by an allowed owner is resolved",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:22 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [/tmp/x] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (owner changed); alert resolved`,
				}},
				{at: 3 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:   "an alerted listener changing to another unexpected owner alerts the change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444, procEvil2))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil2)), want: []string{"changed unexpected tcp 0.0.0.0:4444 [/tmp/y] prev=[/tmp/x]"}},
				{at: 3 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/y]"}},
			},
		},
	})
}

// TestHolderSwapIsJudgedAgain: other holders with the same owners are judged
// again (rules match units, containers, comm and cmdline too); a verdict they
// flip needs two snapshots.
func TestHolderSwapIsJudgedAgain(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			// Rules match the unit too, so a holder swap that keeps exe
			// and user is judged again, not left to the minute's full
			// evaluation.
			name:   "a holder swap with the same owners is judged again once two snapshots agree",
			policy: engPolicy{allow: map[uint16]string{8000: "/usr/bin/python3"}, units: map[uint16]string{8000: "good.service"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8000, procGood)), wantState: engNo},
				{at: 1 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 8000, procScope)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:8000 [/usr/bin/python3] note=holder changed",
				}, wantStats: &Stats{Listeners: 1, Unexpected: 1, Namespaces: 1}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 8000, procScope)), wantState: engNo},
				{at: 4 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
				{at: 5 * time.Second, snap: engS(engL("tcp", 8000, procGood)), want: []string{
					`closed unexpected tcp 0.0.0.0:8000 [/usr/bin/python3] msg=listener tcp 0.0.0.0:8000 is now allowed by rule "port-8000" (holder changed); alert resolved`,
				}},
				{at: 6 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:   "a holder swap seen once, between two agreeing snapshots, is no change",
			policy: engPolicy{allow: map[uint16]string{8000: "/usr/bin/python3"}, units: map[uint16]string{8000: "good.service"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8000, procGood))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 8000, procScope))},
				{at: 4 * time.Second, snap: engS(engL("tcp", 8000, procGood))},
			},
		},
		{
			// Flags are the holder's too: when they change for the same
			// process (its directory made writable by others), it is
			// judged again at once, not at the minute's full evaluation.
			name:   "a holder whose flags change is judged again once two snapshots agree",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHDWritable))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHDWritable)), wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:22 [/usr/sbin/sshd] note=holder changed",
				}},
			},
		},
		{
			// The dropper deletes its binary once started: still the
			// same owners and still unexpected, but now critical. Told
			// once two snapshots agree, as a change of the alert.
			name:   "an alerted listener whose severity rises with the same owners alerts the change once",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444, procEvilGone)), wantState: engNo},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvilGone)), wantState: engYes, want: []string{
					"changed unexpected tcp 0.0.0.0:4444 [/tmp/x] note=severity changed prev=[/tmp/x]",
				}},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvilGone)), wantState: engNo},
			},
		},
		{
			name:   "a severity change seen once is no change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444, procEvilGone))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
			},
		},
		{
			name:   "a holder swap keeping the verdict is silent",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 22, procSSHD2)), wantState: engNo},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD2)), wantState: engNo},
				{at: 3 * time.Second, snap: engS(engL("tcp", 22, procSSHD)), wantState: engNo},
			},
		},
	})
}

// TestReloadJudgesAgain: a reload, and the full evaluation every minute, judge
// every listener again: what became unexpected alerts, what became allowed
// resolves.
func TestReloadJudgesAgain(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "reload: newly unexpected alerts, unexpected now allowed resolves",
			policy: engPolicy{allow: map[uint16]string{22: "/usr/sbin/sshd"}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, reload: &engPolicy{allow: map[uint16]string{4444: "/tmp/x"}}, wantState: engYes, want: []string{
					"opened unexpected tcp 0.0.0.0:22 [/usr/sbin/sshd] note=config reloaded",
					`closed unexpected tcp 0.0.0.0:4444 [/tmp/x] msg=listener tcp 0.0.0.0:4444 is now allowed by rule "port-4444" (config reloaded); alert resolved`,
				}},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, reload: &engPolicy{allow: map[uint16]string{4444: "/tmp/x"}}, wantState: engNo},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), want: []string{"closed unexpected tcp 0.0.0.0:22 [/usr/sbin/sshd]"}},
			},
		},
		{
			name:   "reload to an ignoring policy resolves",
			policy: engPolicy{},
			steps: []engineStep{
				{snap: engS(engL("udp", 40000, procEvil)), want: []string{"opened unexpected udp 0.0.0.0:40000 [/tmp/x]"}},
				{at: time.Second, reload: &engPolicy{ignore: map[uint16]bool{40000: true}}, want: []string{
					"closed unexpected udp 0.0.0.0:40000 [/tmp/x] msg=listener udp 0.0.0.0:40000 is now ignored (config reloaded); alert resolved",
				}},
			},
		},
		{
			name:   "reload to a new flap window applies to the next close",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, reload: &allow22, settings: &engFlap30},
				{at: 2 * time.Second, snap: engS()},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "an expiring rule alerts at the next full evaluation",
			policy: engPolicy{allow: map[uint16]string{8080: ""}, expires: map[uint16]time.Time{8080: engT0.Add(10 * time.Second)}},
			steps: []engineStep{
				{snap: engS(engL("tcp", 8080, procHelper))},
				{at: 30 * time.Second, snap: engS(engL("tcp", 8080, procHelper))},
				{at: 61 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), want: []string{"opened unexpected tcp 0.0.0.0:8080 [/usr/lib/helper] note=policy re-evaluated"}},
				{at: 200 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), wantState: engNo},
			},
		},
		{
			name:     "a rule whose expiry the config tells alerts at the first snapshot after it, and nothing is judged again before",
			policy:   engPolicy{allow: map[uint16]string{8080: ""}, expires: map[uint16]time.Time{8080: engT0.Add(100 * time.Second)}},
			byExpiry: true,
			steps: []engineStep{
				{snap: engS(engL("tcp", 8080, procHelper))},
				{at: 61 * time.Second, snap: engS(engL("tcp", 8080, procHelper))},
				{at: 99 * time.Second, snap: engS(engL("tcp", 8080, procHelper))},
				{at: 100 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), want: []string{"opened unexpected tcp 0.0.0.0:8080 [/usr/lib/helper] note=policy re-evaluated"}},
				{at: 200 * time.Second, snap: engS(engL("tcp", 8080, procHelper)), wantState: engNo},
			},
		},
	})
}

// TestRestartCarriesAlerts: the alert state carries alerts over a restart:
// nothing already alerted is alerted again, and what closed while the daemon
// was down is resolved.
func TestRestartCarriesAlerts(t *testing.T) {
	runEngineCases(t, []engineCase{
		{
			name:   "restart with an alerted listener still open: no second alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 4 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
			},
		},
		{
			name:   "restart with an alerted listener still open but unattributed waits, then keeps the alert",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:     "restart after the alerted listener closed while down: resolved",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil), engL("tcp", 5555, procEvil2)), want: []string{
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:5555 [/tmp/y]",
				}},
				{at: time.Second, snap: engS(engL("tcp", 4444, procEvil))},
				{at: 2 * time.Second, restart: true},
				{at: 3 * time.Second, snap: engS(), want: []string{
					"closed unexpected tcp 0.0.0.0:4444 [/tmp/x]",
					"closed unexpected tcp 0.0.0.0:5555 [/tmp/y]",
				}},
				{at: 4 * time.Second, snap: engS(), wantState: engNo},
			},
		},
		{
			name:     "restart within the flap window of a closed alert, listener back: silent",
			settings: engFlap30,
			policy:   allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444, procEvil)), want: []string{"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]"}},
				{at: time.Second, snap: engS()},
				{at: 2 * time.Second, restart: true},
				{at: 3 * time.Second, snap: engS(engL("tcp", 4444, procEvil))},
			},
		},
		{
			name:   "restart with an alerted listener now allowed or changed hands",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 22, procEvil), engL("tcp", 4444, procEvil)), want: []string{
					"opened unexpected tcp 0.0.0.0:22 [/tmp/x]",
					"opened unexpected tcp 0.0.0.0:4444 [/tmp/x]",
				}},
				{at: time.Second, restart: true},
				{at: 2 * time.Second, snap: engS(engL("tcp", 22, procSSHD), engL("tcp", 4444, procEvil2)), want: []string{
					`closed unexpected tcp 0.0.0.0:22 [/tmp/x] msg=listener tcp 0.0.0.0:22 is now allowed by rule "port-22" (since the last run); alert resolved`,
					"changed unexpected tcp 0.0.0.0:4444 [/tmp/y] prev=[/tmp/x]",
				}},
			},
		},
		{
			name:   "restart: an alert raised unattributed, attributed after the restart, is no change",
			policy: allow22,
			steps: []engineStep{
				{snap: engS(engL("tcp", 4444))},
				{at: 1 * time.Second, snap: engS(engL("tcp", 4444))},
				{at: 2 * time.Second, snap: engS(engL("tcp", 4444)), want: []string{"opened unexpected tcp 0.0.0.0:4444 []"}},
				{at: 3 * time.Second, restart: true},
				{at: 4 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engYes},
				{at: 5 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 6 * time.Second, restart: true},
				{at: 7 * time.Second, snap: engS(engL("tcp", 4444, procEvil)), wantState: engNo},
				{at: 8 * time.Second, snap: engS(), want: []string{"closed unexpected tcp 0.0.0.0:4444 []"}},
			},
		},
	})
}

// TestResolveClosed: a close the kernel reported resolves at once the alert
// on a listener the last Step found closed, with its lifetime, and only
// that: not a listener still open (another socket of its SO_REUSEPORT
// group), not one without an alert; and the flap window then sends nothing
// more.
func TestResolveClosed(t *testing.T) {
	evil := engL("tcp", 4444, procEvil)
	sshd := engL("tcp", 22, procSSHD)
	life := notify.Transient{Lifetime: 12 * time.Millisecond}
	tests := []struct {
		name   string
		second *watcher.Snapshot // the Step after the one that saw both open
		key    watcher.Key
		want   []string
	}{
		{name: "alerted, closed", second: engS(sshd), key: evil.Key(),
			want: []string{"closed unexpected tcp 0.0.0.0:4444 [/tmp/x] transient=12ms"}},
		{name: "alerted, still open", second: engS(sshd, evil), key: evil.Key()},
		{name: "allowed, closed", second: engS(evil), key: sshd.Key()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Settings: engFlap30, Evaluator: allow22}
			e := New(nil)
			e.Step(engS(sshd), cfg, engT0)
			e.Step(engS(sshd, evil), cfg, engT0.Add(time.Second))
			e.Step(tt.second, cfg, engT0.Add(2*time.Second))
			r := e.ResolveClosed(tt.key, engT0.Add(2*time.Second), life)
			var got []string
			for i, s := range engSummarize(r.Emit) {
				if tr := r.Emit[i].Transient; tr != nil {
					s += " transient=" + tr.String()
				}
				got = append(got, s)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ResolveClosed (-want +got):\n%s", diff)
			}
			if later := e.Step(tt.second, cfg, engT0.Add(time.Hour)); len(later.Emit) != 0 && tt.want != nil {
				t.Errorf("after the flap window: %v, want nothing", engSummarize(later.Emit))
			}
		})
	}
}
