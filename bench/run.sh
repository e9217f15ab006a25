#!/bin/sh
# Benchmark portwatchd against ss (called by `make bench`; see bench/README.md).
#
# Builds portwatchd and the bench tools, then for each scene starts
# bench/scene (its own network, PID and mount namespaces; it stops by itself
# within 5 minutes) and runs bench/measure inside it. Prints the figures of
# each scene, then a Markdown table of all of them.
#
# Environment: SCENES ("small large large-gaps large-stray large-wide"), REPS (11), TICKS (1000), NICE (-20),
# BENCH_OUT (a fresh /tmp directory), PROFILE (non-empty: CPU and heap
# profiles of the watcher in $BENCH_OUT), IDLE (non-empty: instead of the
# scenes, the daemon's own idle cost in a large scene, bench/idle, with
# IDLE_WALL seconds of sampling per mode, default 60).
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "bench: must run as root (the scenes use network, PID and mount namespaces)" >&2
	exit 2
fi
SCENES=${SCENES:-small large large-gaps large-stray large-wide}
REPS=${REPS:-11}
NICE=${NICE:--20}
TICKS=${TICKS:-1000}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/portwatchd-bench.XXXXXX)}
mkdir -p "$OUT"
SS=$(command -v ss) || { echo "bench: ss not found (apt-get install iproute2)" >&2; exit 2; }
if [ -n "${IDLE:-}" ]; then
	# Every mode runs in one scene, which stops itself after 5 minutes: each
	# needs its wall and about 30 s more (start, settling, stop) within the
	# 270 s bench/idle is given.
	modes=${IDLE_MODES:-on:10s,off:1s}
	n=$(printf '%s\n' "$modes" | tr ',' '\n' | grep -c .)
	if [ $((n * (${IDLE_WALL:-60} + 30))) -gt 270 ]; then
		echo "bench: IDLE_WALL=${IDLE_WALL:-60} is too long for $n modes in one 5-minute scene: at most $((270 / n - 30)) s each (or fewer IDLE_MODES)" >&2
		exit 2
	fi
fi

# Two benchmarks at once on a 2-core machine would distort each other's
# figures: wait (up to 10 minutes) for any other run to finish.
if command -v flock >/dev/null; then
	exec 9>/tmp/portwatchd-bench.lock
	flock -w 600 9 || echo "bench: another benchmark is still running; figures may be disturbed" >&2
fi

echo "bench: building into $OUT"
go build -o "$OUT/portwatchd" ./cmd/portwatchd
for p in scene measure tick launch idle; do
	go build -o "$OUT/$p" "./bench/$p"
done

if [ -n "${IDLE:-}" ]; then
	# The daemon with eBPF (reconcile_interval 10s), then polling every
	# second, each sampled for IDLE_WALL seconds after 15 s of settling.
	status=0
	timeout -k 10 330 "$OUT/scene" -size large -timeout 5m -- \
		"$OUT/idle" -portwatchd "$OUT/portwatchd" -wall "${IDLE_WALL:-60}s" -modes "$modes" \
		-json "$OUT/idle.json" -timeout 4m30s </dev/null || status=$?
	echo "bench: figures in $OUT/idle.json"
	exit $status
fi

jsons=""
status=0
for s in $SCENES; do
	tickargs="-n $TICKS -warm 5"
	if [ -n "${PROFILE:-}" ]; then
		tickargs="$tickargs -cpuprofile $OUT/$s.tick.pprof -coldprofile $OUT/$s.cold.pprof -memprofile $OUT/$s.heap.pprof"
	fi
	rm -f "$OUT/$s.json"
	# The scene stops itself after 5 minutes; timeout is a second fence.
	timeout -k 10 330 "$OUT/scene" -size "$s" -timeout 5m -- \
		"$OUT/measure" -scene "$s" -n "$REPS" -nice "$NICE" -portwatchd "$OUT/portwatchd" -ss "$SS" \
		-tick "$OUT/tick" -tick-args "$tickargs" -json "$OUT/$s.json" -timeout 4m </dev/null || status=$?
	[ -f "$OUT/$s.json" ] && jsons="$jsons $OUT/$s.json"
done

# No process of any scene may outlive it. The holders die with PID 1 of their
# scene (the kernel kills a PID namespace with its init), so it is enough to
# check that no scene or PID 1 of this run is left: their arguments hold $OUT.
# (Other benchmark runs on the machine have other directories.) /proc rather
# than ps, which a minimal system may lack; the brackets keep grep from
# matching its own command line.
sleep 1
left=$(grep -a -l -E "$OUT/([s]cene|[m]easure)" /proc/[0-9]*/cmdline 2>/dev/null | while read -r f; do
	printf '%s %s\n' "${f%/cmdline}" "$(tr '\0' ' ' <"$f" 2>/dev/null)"
done)
if [ -n "$left" ]; then
	echo "bench: scene processes still running:" >&2
	echo "$left" >&2
	status=1
fi

if [ -n "$jsons" ]; then
	echo
	# shellcheck disable=SC2086
	"$OUT/measure" -report $jsons
fi
echo
echo "bench: figures and profiles in $OUT"
exit $status
