#!/usr/bin/env bash
# Builds the fuzz targets with clang in build-fuzz/ and runs fuzz_wire for
# ${1:-60} seconds over a copy of the seed corpus (fuzz/corpus plus seeds
# regenerated from the current encoder), then fuzz_repl (the replication
# stream's payloads) for half that, from an empty corpus. Exits non-zero on a crash, a
# sanitizer report or a broken invariant; the crashing input is left in
# build-fuzz/artifacts/ (replay: build-fuzz/fuzz/fuzz_wire FILE).
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
dir=build-fuzz
jobs=$(nproc 2>/dev/null || echo 2)

if ! command -v clang >/dev/null; then
	echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
fi

# Only the fuzz targets are built: tests, benchmarks and examples are off.
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release \
	-DSHMSYNC_BUILD_TESTS=OFF -DSHMSYNC_BUILD_BENCH=OFF -DSHMSYNC_BUILD_EXAMPLES=OFF >/dev/null
# grep reads the whole list: with -q it would close the pipe early and
# pipefail would report the writer's SIGPIPE as a missing target.
if ! cmake --build "$dir" --target help | grep fuzz_wire >/dev/null; then
	echo "fuzz.sh: no fuzz_wire target: is add_subdirectory(fuzz) in CMakeLists.txt?" >&2
	exit 1
fi
cmake --build "$dir" -j "$jobs" --target fuzz_wire fuzz_make_corpus fuzz_repl

# libFuzzer adds what it finds to the first corpus directory: work on a copy
# so the committed seeds stay as they are.
run="$dir/corpus-run"
rm -rf "$run" "$dir/artifacts"
mkdir -p "$run" "$dir/artifacts"
cp fuzz/corpus/* "$run"/
"$dir/fuzz/make_corpus" "$run"

echo "== fuzz_wire for ${seconds}s over $(ls "$run" | wc -l) seeds"
# A nonzero exit from libFuzzer means a crash, a leak, a timeout or an abort
# from the target's invariants; set -e turns it into this script's failure.
"$dir/fuzz/fuzz_wire" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$dir/artifacts/" "$run"

repl_run="$dir/corpus-repl"
rm -rf "$repl_run"
mkdir -p "$repl_run"
echo "== fuzz_repl for $((seconds / 2))s"
"$dir/fuzz/fuzz_repl" -max_total_time="$((seconds / 2))" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-artifact_prefix="$dir/artifacts/" "$repl_run"
