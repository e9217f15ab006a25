#!/usr/bin/env bash
# Runs the whole portwatchd test suite on a fresh Debian 12 machine, as root.
# It installs what the tests need (Debian packages from scripts/apt-packages.txt,
# Go modules and pinned Go tools from the module proxy), then runs, in order:
# gofmt, go vet, staticcheck, go test -race, a short run of every fuzz target,
# and the system test under a real systemd in a throwaway sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2   # honnef.co/go/tools, pinned
FUZZTIME=${FUZZTIME:-10s}

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
GOBIN="$PWD/.bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"

step "gofmt -l"
out=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$out" ]; then
	echo "gofmt wants to change:"; echo "$out"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck $STATICCHECK_VERSION"
.bin/staticcheck ./...

step "go test -race"
go test -race -count=1 -timeout 30m ./...

step "fuzz each target for $FUZZTIME"
for pkg in $(go list ./...); do
	for fz in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "--- $pkg $fz"
		go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 2s "$pkg"
	done
done

if [ -f systest/run.sh ] || grep -q '^systest:' Makefile 2>/dev/null; then
	step "system test under a real systemd"
	make systest
	step "lintian on the Debian package"
	make lint-deb
fi

step "all checks passed"
