#!/bin/sh
# Detection latency of `portwatchd run` (interval 1s, 20 trials): from a
# child's listen() returning to the journald entry being readable and to a
# loopback webhook receiving the alert. Prints p50/p99 in milliseconds.
# Needs root (a private systemd-journald in its own mount namespace).
# Bounded: 20 trials of at most 30 s each; loopback only.
# EBPF=on measures the daemon with its kernel programs (default off: polling).
# TRANSIENT=1 runs BenchmarkTransient instead: TRIALS (default 100) listeners
# of each kind living 10 ms or 1 ms, and the rate reported as transient.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
	echo "bench/latency: must run as root" >&2
	exit 2
fi
export PORTWATCH_BENCH_EBPF="${EBPF:-off}"
if [ -n "${TRANSIENT:-}" ]; then
	exec go test -run '^$' -bench Transient -benchtime "${TRIALS:-100}x" -count 1 -timeout 20m -v .
fi
exec go test -run '^$' -bench DetectionLatency -benchtime "${TRIALS:-20}x" -count 1 -timeout 20m -v .
