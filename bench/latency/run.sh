#!/bin/sh
# Detection latency of `portwatchd run` (interval 1s, 20 trials): from a
# child's listen() returning to the journald entry being readable and to a
# loopback webhook receiving the alert. Prints p50/p99 in milliseconds.
# Needs root (a private systemd-journald in its own mount namespace).
# Bounded: 20 trials of at most 30 s each; loopback only.
# EBPF=on measures the daemon with its kernel programs (default off: polling).
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
	echo "bench/latency: must run as root" >&2
	exit 2
fi
export PORTWATCH_BENCH_EBPF="${EBPF:-off}"
exec go test -run '^$' -bench DetectionLatency -benchtime "${TRIALS:-20}x" -count 1 -timeout 20m -v .
