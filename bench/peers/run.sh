#!/usr/bin/env bash
# shmsync against LMDB, Redis and SQLite, and the hardware floor (issue 12).
#
#   bash bench/peers/run.sh            # the full suite: installs, builds, 3 repeats, tables, plots
#   bash bench/peers/run.sh --smoke    # seconds: 10K keys, 1 repeat (the ctest peers_smoke)
#
# The full run installs what it needs from Debian's packages (scripts/deps.sh:
# liblmdb-dev, libhiredis-dev, libsqlite3-dev, redis-server, gnuplot-nox ...),
# configures and builds the two programs it runs (shmsync_peers and the
# shmsync tool, for `shmsync serve`) in --build-dir, then runs every system
# once per repeat, the repeats one after the other (interleaved: a slow
# minute of the machine hits every system once, not one system's three
# repeats). Each run writes one JSON document to the results directory;
# report.py takes medians over the repeats and prints the tables (also
# written to report.md there); gnuplot draws the plots (docs/ in a full run,
# the results directory in a smoke run).
#
# Processes and their CPUs: shmsync_peers forks every process of a workload
# and pins each to one CPU with sched_setaffinity right after the fork (the
# same as taskset); the servers (shmsync serve, redis-server) are started by
# it, pinned before their exec, and stopped by pid. The JSON states each
# placement. Redis runs twice: server on the other CPU than its clients
# (variant default) and on the same one (variant same-cpu); the report takes
# the better of the two per figure and says which.
#
# Exit status: 0, 1 on failure, 2 on a usage error, 77 (smoke only) when a
# peer is not available here (not built, or redis-server missing).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/peers

usage() {
	cat <<EOF
usage: bash bench/peers/run.sh [--smoke] [--repeats N] [--out DIR] [--build-dir DIR]
                               [--plots DIR] [--no-install] [--no-build]
  --smoke        seconds: 10K keys, few round trips, 1 repeat; no install, no build
                 (the programs must be built), plots into the results directory
  --repeats N    repeats per system (default 3; --smoke 1), 1..20
  --out DIR      results directory (default bench/peers/results/<UTC date>)
  --build-dir D  the CMake build tree (default build/)
  --plots DIR    where the PNGs go (default docs/; --smoke: the results directory)
  --no-install   do not run scripts/deps.sh (apt-get) first
  --no-build     do not configure and build
EOF
}

smoke=0 repeats="" out="" build=$ROOT/build plots="" install=1 do_build=1
while [ $# -gt 0 ]; do
	case "$1" in
	--smoke) smoke=1 ;;
	--repeats | --out | --build-dir | --plots)
		[ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; usage >&2; exit 2; }
		case "$1" in
		--repeats) repeats=$2 ;;
		--out) out=$2 ;;
		--build-dir) build=$2 ;;
		--plots) plots=$2 ;;
		esac
		shift
		;;
	--no-install) install=0 ;;
	--no-build) do_build=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [ -n "$repeats" ] && ! [[ $repeats =~ ^[0-9]+$ && $repeats -ge 1 && $repeats -le 20 ]]; then
	echo "run.sh: --repeats: '$repeats' is not a number from 1 to 20" >&2
	exit 2
fi
if [ $smoke -eq 1 ]; then
	repeats=${repeats:-1}
	install=0
	do_build=0
else
	repeats=${repeats:-3}
fi

start=$(date +%s)
if [ $install -eq 1 ]; then
	bash "$ROOT/scripts/deps.sh"
fi
if [ $do_build -eq 1 ]; then
	if [ ! -f "$build/CMakeCache.txt" ]; then
		cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Release
	else
		cmake "$build" >/dev/null
	fi
	cmake --build "$build" --target shmsync_peers shmsync_tool -j "$(nproc)"
fi

peers=$build/bench/peers/shmsync_peers
tool=$build/tools/shmsync
missing() { # says what is missing; a skip in a smoke run, a failure otherwise
	echo "run.sh: $1" >&2
	[ $smoke -eq 1 ] && exit 77
	exit 1
}
[ -x "$peers" ] || missing "$peers was not built (liblmdb-dev, libhiredis-dev, libsqlite3-dev and libjansson-dev are needed; bash scripts/deps.sh installs them)"
[ -x "$tool" ] || missing "$tool (the shmsync tool) was not built (it needs libjansson-dev)"
redis=$(command -v redis-server || true)
[ -n "$redis" ] || missing "redis-server not found (apt-get install redis-server, or bash scripts/deps.sh)"
if [ $(nproc) -lt 2 ]; then
	missing "the suite pins processes to two CPUs; this machine has $(nproc)"
fi

if [ -z "$out" ]; then
	out=$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)$([ $smoke -eq 1 ] && echo -smoke || true)
fi
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.dat
if [ -z "$plots" ]; then
	plots=$([ $smoke -eq 1 ] && echo "$out" || echo "$ROOT/docs")
fi

run_pid=""
trap '[ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null; exit 130' INT TERM

common=(--shmsync-tool "$tool" --redis-server "$redis")
[ $smoke -eq 1 ] && common+=(--smoke)

# run NAME FILE ARGS...: one system, one repeat, in the background so a
# signal here can stop it (it stops its own servers).
run() {
	local name=$1 file=$2
	shift 2
	echo "run.sh: $name -> $file" >&2
	"$peers" "${common[@]}" --out "$out/$file" "$@" &
	run_pid=$!
	if ! wait "$run_pid"; then
		run_pid=""
		echo "run.sh: $name failed" >&2
		exit 1
	fi
	run_pid=""
}

for r in $(seq "$repeats"); do
	echo "run.sh: repeat $r of $repeats" >&2
	run shmsync "shmsync-r$r.json" --system shmsync --repeat "$r"
	# The floor's chase runs over as much memory as shmsync's 1M keys took
	# (less the fixed change log), measured just now.
	# On huge pages too when shmsync's segment had them.
	read -r chase huge < <(python3 -c 'import json,sys
m = json.load(open(sys.argv[1]))["memory"]
print(max(4096, m["full"]["bytes"] - m["empty"]["bytes"]), "--chase-huge" if m["full"].get("huge_bytes") else "")' \
		"$out/shmsync-r$r.json")
	run floor "floor-r$r.json" --system floor --repeat "$r" --chase-bytes "$chase" $huge
	# The peers in a rotating order, so none always runs first or last.
	peers_order=(lmdb redis redis-same sqlite)
	for i in 0 1 2 3; do
		p=${peers_order[$(((i + r - 1) % 4))]}
		case $p in
		redis-same)
			# Only the placement-dependent workloads.
			run "redis (server on the clients' CPU)" "redis-same-cpu-r$r.json" --system redis \
				--variant same-cpu --cpus 0,0 --only prop --only write --only read --repeat "$r"
			;;
		*) run "$p" "$p-r$r.json" --system "$p" --repeat "$r" ;;
		esac
	done
done

python3 "$HERE/report.py" "$out" | tee "$out/report.md"

if command -v gnuplot >/dev/null 2>&1; then
	mkdir -p "$plots"
	gnuplot -e "resdir='$out'; outdir='$plots'" "$HERE/plots.gp"
	echo "run.sh: plots: $plots/peers_prop_cdf.png, peers_throughput.png, peers_memory.png" >&2
elif [ $smoke -eq 1 ]; then
	echo "run.sh: gnuplot not found: no plots (apt-get install gnuplot-nox)" >&2
else
	echo "run.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2
	exit 1
fi
echo "run.sh: done in $(($(date +%s) - start)) s; results in $out" >&2
