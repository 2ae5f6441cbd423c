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
# A test that does not compile must not hide the results of all the others:
# the build keeps going, ctest runs what was built (and fails the rest), and
# the build failure still fails the run.
build_and_test() {
	local dir=$1 keep_going=() built=0 tested=0
	shift
	echo "== $dir: configure, build, test"
	cmake -S . -B "$dir" "$@" || return 1
	case "$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$dir/CMakeCache.txt")" in
	*Makefiles*) keep_going=(-k) ;;
	Ninja*) keep_going=(-k 0) ;;
	esac
	cmake --build "$dir" -j "$jobs" -- "${keep_going[@]}" || built=1
	ctest --test-dir "$dir" --output-on-failure -j2 "${ctest_args[@]}" || tested=1
	[ $built -eq 0 ] || echo "== $dir: BUILD FAILED (see the errors above)"
	[ $built -eq 0 ] && [ $tested -eq 0 ]
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
