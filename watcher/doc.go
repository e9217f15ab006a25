// Package watcher takes snapshots of the listening sockets on a host and in
// every network namespace on it, and attributes each socket to the processes
// that hold it.
//
// Kernel I/O (netlink sock_diag dumps, reads of /proc) is kept apart from the
// pure functions that parse what the kernel returned, so that the parsers can
// be tested and fuzzed on recorded messages and fixture /proc trees under
// testdata/. The package also owns the diff between two snapshots.
//
// watcher imports neither policy nor notify.
package watcher
