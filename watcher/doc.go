// Package watcher takes snapshots of the listening sockets on a host and in
// every network namespace on it, and attributes each socket to the processes
// that hold it.
//
// Sockets come from NETLINK_SOCK_DIAG with a states filter (LISTEN for TCP,
// CLOSE for UDP), as `ss -l` asks, so the kernel walks only what matches.
// Other namespaces are read through a sock_diag socket created inside them
// on a throwaway thread (setns), or, without CAP_SYS_ADMIN, by parsing
// /proc/PID/net of a process inside. Attribution reads /proc/PID/fd links and
// is cached between snapshots: see Watcher.
//
// Kernel I/O (netlink dumps, reads of /proc) is kept apart from the pure
// functions that parse what the kernel returned, so that the parsers are
// tested and fuzzed on recorded messages and a fixture /proc tree under
// testdata/ (refresh them with `go test -run TestRecord -record`). The
// package also owns a listener's identity across snapshots: its Key, its
// owners and their order (owners.go).
//
// One concern per file: watcher.go (the Watcher and the order of a tick),
// pids.go (the process table), procfs.go and holders.go (the descriptor
// scan, and the cache of who holds each socket), procinfo.go (a holder's
// details), exits.go (holders' exits, through pidfds), execs.go (holders
// that exec'd, told by the caller), rawsys.go (the raw system calls of a
// steady look), netns.go (namespaces: discovery, naming, entering, dumping),
// sockdiag.go and procnet.go (the dumps), build.go (the Snapshot, reused
// when nothing changed), names.go (user and interface names), parse.go
// (the parsers of what /proc and /etc hold). The evidence about holders
// (Flag): risk.go (per process and per executable), risknames.go (its
// names and parsers), dpkg.go and dpkgindex.go (package ownership: the
// database's I/O and rebuild, and the pure index), exehash.go (md5 cache).
//
// watcher imports neither policy nor notify.
package watcher
