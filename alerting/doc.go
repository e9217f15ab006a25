// Package alerting is the alert engine: from each snapshot and the policy in
// force it decides which events to send, and it keeps the alert state file
// (state.json) that lets a restart carry on where the last run stopped. The
// engine does no I/O: the daemon loop feeds it snapshots and sends what it
// returns, and the tests feed it synthetic snapshots.
//
// The rules it keeps:
//   - One alert per unexpected listener while it stays open (keyed on netns,
//     protocol, address, port), with optional reminders every repeat_interval.
//   - A listener closes when a snapshot does not contain its key
//     (watcher.Listener.Key, the one identity of a listener in the alerts
//     and the state file), unless the snapshot could not inspect its
//     namespace: what could not be seen is unknown, never closed. The
//     alerts persisted from before a restart are judged the same way.
//   - An alerted listener that closes is resolved (a listener.closed event
//     carrying the decision as alerted). The resolve waits for flap_window: if
//     the same key reopens within it with the same executables, the alert is
//     simply still in force, and nothing is sent. A crash-looping service thus
//     gives one alert and, once it stays down, one resolve; and a listener that
//     is open is never shown as resolved.
//   - A new key with no holder found yet is held back until it is
//     attributed, or for attributionMargin snapshots more than the watcher
//     may take to find its holder (watcher.AttributionTicks: one snapshot,
//     or the ephemeral UDP search period), so that the watcher catching up is
//     not read as an unattributed (and so unexpected) listener. One that
//     stays unattributed is then judged as such: kernel sockets (NFS, WireGuard)
//     and processes the daemon may not read are real listeners. The price:
//     an unattributed listener is alerted at its third snapshot (its twelfth
//     for ephemeral UDP), two (eleven) intervals late, and one that closes
//     within its grace without ever being attributed gives nothing. The
//     first snapshot is held back the same way: the daemon usually starts
//     at boot, alongside the services whose listeners its first scan may
//     miss; judged at once, they would alert as unattributed and then
//     resolve. The figures (Stats) count held listeners at once.
//   - A holder swap with the same owners (a new pid, or another unit or
//     container behind the same executables and users) is judged again: rules
//     match more than owners. So is a holder whose risk flags change (its
//     executable deleted or replaced under it). A verdict it flips needs two
//     consecutive snapshots to agree, as an owner change does.
//   - An alerted listener whose severity changes with the same owners (its
//     executable deleted under it: warning to critical) gives one
//     listener.changed event saying both severities, once two consecutive
//     snapshots agree; the alert carries the new severity from then on.
//   - An owner change (watcher.Owners) needs two consecutive snapshots to
//     agree. Until then the previous owners hold. Unknown owners (no holder
//     found) are no information, never a change.
//   - A listener that becomes allowed (reload, owner change) is resolved; one
//     that becomes unexpected (reload, expired rule) alerts.
//   - A change of facts outside the snapshot (a listener's exposure, when a
//     ruleset changes) is judged again at once (Rejudge), with no second
//     snapshot awaited: one that becomes unexpected alerts with a
//     listener.changed event, an alerted one that no longer is resolves, an
//     alert whose decision changed (its exposure, its severity) is replaced
//     by a listener.changed event. The events carry the exposure before.
//   - Allowed listeners give info events only with log_allowed, and only for
//     what happens after the first snapshot.
package alerting
