#!/usr/bin/env bash
# Installs the packages the build, the tests and the benchmarks need, on
# Debian 12 (and close relatives), when they are missing. Safe to run again:
# with everything present it changes nothing and needs no network.
set -euo pipefail

packages=(
	build-essential # compiler, make
	cmake
	pkg-config
	libxxhash-dev  # keyed hashing of keys
	liburing-dev   # io_uring signalling
	libnuma-dev    # memory placement
	clang             # fuzzing
	libclang-rt-14-dev # libFuzzer and the sanitizers for clang
	clang-format   # formatting
	libjansson-dev # JSON output of the benchmarks
	spin           # model checking of the protocols (spec/)
	gnuplot-nox    # plots of the benchmarks (bench/plot_stall.sh, bench/peers/run.sh -> docs/*.png)
	python3        # the CLI and example-server tests' small clients; bench/peers/report.py
	liblmdb-dev    # bench/peers: LMDB, a peer shmsync is measured against
	libhiredis-dev # bench/peers and the example server's Redis variant: the Redis client library
	libsqlite3-dev # bench/peers: SQLite, a peer shmsync is measured against
	redis-server   # bench/peers and bench/server_bench.sh: the Redis server (started privately by pid)
	libnats-dev    # replication (repl/): the NATS C client, for JetStream
	nats-server    # replication's tests and bench (scripts/nats-cluster.sh, started privately by pid)
	curl           # scripts/nats-cluster.sh: asks each node whether JetStream is ready
)

if ! command -v dpkg >/dev/null 2>&1; then
	echo "deps.sh: no dpkg here; install these yourself: ${packages[*]}" >&2
	exit 0
fi

installed() {
	# "dpkg -s" also succeeds for removed packages whose config files remain.
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

missing=()
for p in "${packages[@]}"; do
	installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "deps.sh: missing packages: ${missing[*]}" >&2
		echo "deps.sh: run as root (or install sudo) so they can be installed with apt-get" >&2
		exit 1
	fi
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
