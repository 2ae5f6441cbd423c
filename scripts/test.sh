#!/usr/bin/env bash
# Runs the whole test suite twice: a normal (Release) build in build/ and an
# ASan+UBSan (Debug) build in build-asan/. Installs missing packages first.
# Extra arguments go to ctest, e.g. `bash scripts/test.sh -R arena`.
# Exits non-zero if either run fails.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh || exit 1

jobs=$(nproc 2>/dev/null || echo 2)

# build_and_test DIR CMAKE-ARGS... : configure, build, run ctest in DIR.
build_and_test() {
	local dir=$1
	shift
	echo "== $dir: configure, build, test"
	cmake -S . -B "$dir" "$@" &&
		cmake --build "$dir" -j "$jobs" &&
		ctest --test-dir "$dir" --output-on-failure -j2 "${ctest_args[@]}"
}

ctest_args=("$@")

build_and_test build -DCMAKE_BUILD_TYPE=Release
release=$?

export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build_and_test build-asan -DSHMSYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
asan=$?

word() { [ "$1" -eq 0 ] && echo pass || echo FAIL; }
echo "test.sh: release $(word $release), asan+ubsan $(word $asan)"
[ $release -eq 0 ] && [ $asan -eq 0 ]
