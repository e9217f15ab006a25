// Command portwatchd watches the listening sockets of a host and its
// containers, checks them against an allowlist, and alerts on unexpected ones.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
