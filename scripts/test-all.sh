#!/usr/bin/env bash
# Runs the whole portwatchd test suite on a fresh Debian 12 machine, as root.
# It installs what the tests need (Debian packages from scripts/apt-packages.txt,
# Go modules and the pinned Go tools from the module proxy), then runs the
# Makefile's targets in order: make lint (gofmt, go vet, staticcheck), make
# test-root (go test -race, every test), make fuzz (a short run of every fuzz
# target, FUZZTIME executions each), and the system test under a real
# systemd in a throwaway sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
	echo "test-all.sh: run as root: the tests open sockets in network namespaces, start journald and boot systemd in a sandbox" >&2
	exit 2
fi

step "install Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(grep -v '^#' scripts/apt-packages.txt | sort -u) >/dev/null

export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
if ! command -v go >/dev/null; then
	# Debian 12's own Go is too old to build this module; a Go >= 1.21 from
	# bookworm-backports fetches the toolchain go.mod asks for from the proxy.
	echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/backports.list
	apt-get update -qq
	apt-get install -y -qq -t bookworm-backports golang-1.23-go >/dev/null
	export PATH="/usr/lib/go-1.23/bin:$PATH" GOTOOLCHAIN=auto
fi
go version

step "download Go modules and tools"
go mod download
make -s tools

step "make lint: gofmt -l, go vet, staticcheck"
make -s lint

# Verbose test output goes to a log; the console gets each package's result,
# and the whole log when something failed. The counts close the run.
LOGDIR=$(mktemp -d /tmp/portwatchd-tests.XXXXXX)
trap 'summary' EXIT
summary() {
	rc=$?
	local pass fail skip
	pass=$(cat "$LOGDIR"/*.log 2>/dev/null | grep -c -- '--- PASS' || true)
	fail=$(cat "$LOGDIR"/*.log 2>/dev/null | grep -c -- '--- FAIL' || true)
	skip=$(cat "$LOGDIR"/*.log 2>/dev/null | grep -c -- '--- SKIP' || true)
	if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then
		fail=1 # a step other than the tests failed
	fi
	echo
	echo "tests: $pass passed, $fail failed, $skip skipped"
	exit "$rc"
}
gotest() { # name, command running go test -v...
	local name=$1 rc=0
	shift
	"$@" >"$LOGDIR/$name.log" 2>&1 || rc=$?
	grep -E '^(ok|FAIL|panic:|---.*FAIL)' "$LOGDIR/$name.log" || true
	if [ "$rc" != 0 ]; then
		echo "--- full output of $name:"
		grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME)|--- (PASS|SKIP))' "$LOGDIR/$name.log"
		return "$rc"
	fi
	if grep -q -- '--- SKIP' "$LOGDIR/$name.log"; then
		# The SKIP line and its indented message (helper-process entry
		# points skip without one when not started as helpers).
		echo "skipped:"
		awk '/--- SKIP/ {print "  " $0; s=1; next} s && /^    / {print "  " $0; next} {s=0}' "$LOGDIR/$name.log"
	fi
}

step "make check-generated: the committed eBPF objects are what clang 14 makes of the source"
make -s check-generated

step "make test-root: go test -race, every package one at a time"
gotest unit make -s test-root GOTESTFLAGS=-v

step "make fuzz: a short run of each fuzz target"
make -s fuzz

if [ -f systest/run.sh ] || grep -q '^systest:' Makefile 2>/dev/null; then
	step "system test under a real systemd"
	make deb >/dev/null
	PORTWATCH_SYSTEST_DEB=$(ls "$PWD"/build/portwatchd_*.deb | head -1)
	export PORTWATCH_SYSTEST_DEB
	gotest systest go test -v -tags systest -count=1 -timeout 8m ./systest/
	step "lintian on the Debian package"
	make lint-deb
fi

step "all checks passed"
