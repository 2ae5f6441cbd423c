#!/usr/bin/env bash
# Plots bytes in use over ticks for bench_stall's four scenarios (no laggard;
# a stopped reader under the stall policies wait, kill and revoke) into
# docs/stall.png.
#
# Usage: bench/plot_stall.sh [BUILD_DIR] [DATA_DIR]
#   BUILD_DIR  where bench/bench_stall was built (default: build)
#   DATA_DIR   plot the stall_<scenario>.dat files already there instead of
#              running the benchmark (its JSON then is not written)
# Without DATA_DIR it runs BUILD_DIR/bench/bench_stall --json --out <tmp>,
# keeps the JSON beside the plot's data in <tmp> and prints where.
# Needs gnuplot (Debian: gnuplot-nox, installed by scripts/deps.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
data=${2:-}
out="$here/docs/stall.png"

if ! command -v gnuplot >/dev/null 2>&1; then
	echo "plot_stall.sh: gnuplot is missing (apt-get install gnuplot-nox, or bash scripts/deps.sh)" >&2
	exit 1
fi

if [ -z "$data" ]; then
	bin="$build/bench/bench_stall"
	[ -x "$bin" ] || bin="$here/$build/bench/bench_stall"
	if [ ! -x "$bin" ]; then
		echo "plot_stall.sh: no $build/bench/bench_stall: build first (cmake --build $build)" >&2
		exit 1
	fi
	data=$(mktemp -d /tmp/bench_stall.XXXXXX)
	"$bin" --json --out "$data" >"$data/bench_stall.json"
	echo "plot_stall.sh: data and JSON in $data"
fi

for s in none wait kill revoke; do
	if [ ! -s "$data/stall_$s.dat" ]; then
		echo "plot_stall.sh: $data/stall_$s.dat is missing" >&2
		exit 1
	fi
done

# The stop tick and the pin come from the data: R1 stops at a quarter of
# the run (see bench/bench_stall.c).
last=$(tail -n 1 "$data/stall_none.dat" | cut -d' ' -f1)
stop=$((last / 4))

gnuplot <<EOF
set terminal pngcairo size 1200,560 font "sans,10" noenhanced
set output "$out"
set multiplot layout 1,2 title "bench_stall: bytes in use under churn; reader R1 stopped at tick $stop holding a view (max_read_pin 200 ms)"
set xlabel "tick (one batch per tick: 8 overwrites, mkdir + 2 puts, rmdir, put + del)"
set ylabel "bytes in use (MiB, with the 8 MiB change log)"
set key top left
set grid
set arrow 1 from $stop, graph 0 to $stop, graph 1 nohead dashtype 2 linecolor rgb "gray40"
set label 1 "R1 stopped" at $stop, graph 0.6 offset 0.5,0 textcolor rgb "gray30"
stats "$data/stall_kill.dat" using (\$3/1048576.0) nooutput
lo = STATS_min * 0.98
hi = STATS_max * 1.06
set title "all four"
plot "$data/stall_none.dat"   using 1:(\$3/1048576.0) with lines linewidth 2 title "no laggard", \
     "$data/stall_wait.dat"   using 1:(\$3/1048576.0) with lines linewidth 2 title "wait", \
     "$data/stall_kill.dat"   using 1:(\$3/1048576.0) with lines linewidth 6 linecolor rgb "#9fd3ff" title "kill", \
     "$data/stall_revoke.dat" using 1:(\$3/1048576.0) with lines linewidth 2 dashtype 4 title "revoke"
set title "zoomed in: kill and revoke act 200 ms after the stop"
set yrange [lo:hi]
replot
unset multiplot
EOF
echo "plot_stall.sh: wrote $out"
