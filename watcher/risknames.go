package watcher

import (
	"bytes"
	"strconv"
	"strings"
)

// This file holds the pure part of the evidence about a holder (see Flag):
// the names that make an executable an interpreter or a netcat, a parent a
// shell or a web server, the paths that are writable by anyone, and the
// parsers of what /proc says about a process's start.

// Executable base names, matched by nameIs: the name itself, or the name
// followed by a version (python3.11, perl5.36.0, php8.2, php-fpm8.2).
var (
	interpreterNames = []string{
		"python", "pypy", "perl", "ruby", "node", "nodejs", "deno", "bun", "php", "lua", "luajit", "tclsh",
		"wish", "expect", "gawk", "awk", "mawk", "nawk", "pwsh", "Rscript", "guile", "racket", "jshell",
		// Shells interpret scripts too: a listening bash is a /dev/tcp
		// trick or a script whose language is the shell.
		"sh", "bash", "dash", "zsh", "ksh", "mksh", "ksh93", "ash", "fish", "tcsh", "csh", "yash",
		// A multi-call binary that is a shell and a netcat at once.
		"busybox", "toybox",
	}
	netcatNames = []string{
		"nc", "ncat", "netcat", "nc.openbsd", "nc.traditional", "socat", "pwncat", "cryptcat", "sbd", "dbd",
	}
	shellNames = []string{
		"sh", "bash", "dash", "zsh", "ksh", "mksh", "ksh93", "ash", "fish", "tcsh", "csh", "yash", "busybox",
	}
	webServerNames = []string{
		"nginx", "apache2", "apache", "httpd", "lighttpd", "php-fpm", "php-cgi", "caddy", "uwsgi", "gunicorn",
		"h2o", "openresty", "hiawatha", "cherokee", "mini_httpd", "thttpd", "unitd", "traefik", "tomcat",
	}
)

// nameIs reports whether base is one of names, alone or followed by a
// version: digits, dots and dashes after the name, starting with a digit
// or a dot or dash followed by a digit.
func nameIs(base string, names []string) bool {
	for _, n := range names {
		rest, ok := strings.CutPrefix(base, n)
		if !ok {
			continue
		}
		if rest == "" || isVersion(rest) {
			return true
		}
	}
	return false
}

func isVersion(s string) bool {
	if s[0] == '.' || s[0] == '-' {
		s = s[1:]
	}
	if s == "" || s[0] < '0' || s[0] > '9' {
		return false
	}
	return strings.Trim(s, "0123456789.") == ""
}

// writableDirs are the directories anyone may write to on a Debian
// system. /run/user/UID is the user's own: an executable there belongs to
// a login session, not to the system.
var writableDirs = []string{"/tmp/", "/var/tmp/", "/dev/shm/", "/run/user/", "/var/crash/", "/run/lock/", "/var/lock/"}

// inWritablePath reports what the path of an executable alone says: it
// lies under one of writableDirs, or one of its components (the file
// included) is hidden (starts with a dot).
func inWritablePath(exe string) bool {
	for _, d := range writableDirs {
		if strings.HasPrefix(exe, d) {
			return true
		}
	}
	for _, c := range strings.Split(exe, "/") {
		if strings.HasPrefix(c, ".") {
			return true
		}
	}
	return false
}

// procStat is what /proc/PID/stat tells about a process's start.
type procStat struct {
	ppid  int32
	ttyNr int64  // controlling terminal, 0 for none
	start uint64 // clock ticks after boot
}

// parseProcStat parses /proc/PID/stat. The comm field is in parentheses
// and may itself contain ") ", so the fields are counted from the last ')':
// state(3) ppid(4) pgrp session tty_nr(7) ... starttime(22).
func parseProcStat(b []byte) (procStat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, err1 := strconv.ParseInt(string(f[1]), 10, 32)
	tty, err2 := strconv.ParseInt(string(f[4]), 10, 64)
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{ppid: int32(ppid), ttyNr: tty, start: start}, true
}

// parseStatusEUID returns the effective uid from /proc/PID/status: the
// second field of "Uid:\treal\teffective\tsaved\tfs".
func parseStatusEUID(data []byte) (uint32, bool) {
	i := bytes.Index(data, []byte("\nUid:"))
	if i < 0 {
		return 0, false
	}
	line := data[i+5:]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) < 2 {
		return 0, false
	}
	uid, err := strconv.ParseUint(string(f[1]), 10, 32)
	return uint32(uid), err == nil
}

// parseBootTime returns btime (seconds since the epoch) from /proc/stat.
func parseBootTime(data []byte) (int64, bool) {
	i := bytes.Index(data, []byte("\nbtime "))
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(data[i+7:])
	if len(f) == 0 {
		return 0, false
	}
	t, err := strconv.ParseInt(string(f[0]), 10, 64)
	return t, err == nil
}

// parseUnprivPortStart parses ip_unprivileged_port_start ("1024\n").
func parseUnprivPortStart(b []byte) (uint16, bool) {
	n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 16)
	return uint16(n), err == nil
}

// isSessionScope reports whether a unit is a logind session's scope
// (session-3.scope, session-c1.scope).
func isSessionScope(unit string) bool {
	s, ok := strings.CutPrefix(unit, "session-")
	return ok && strings.HasSuffix(s, ".scope") && len(s) > len(".scope")
}

// commOf is what the kernel makes of a file name for comm: its first 15
// bytes (TASK_COMM_LEN 16 with the NUL).
func commOf(base string) string {
	if len(base) > 15 {
		return base[:15]
	}
	return base
}
