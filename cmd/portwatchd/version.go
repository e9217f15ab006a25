package main

import (
	"fmt"
	"io"
	"runtime"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	commands["version"] = command{"print the version", func(args []string, stdout, stderr io.Writer) int {
		fmt.Fprintf(stdout, "portwatchd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	}}
}
