#!/usr/bin/env bash
# Builds and runs the demo; arguments go to it (--seconds N, --seed N).
# Installs missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
# Only the demo's target: a test that does not build yet must not stop it.
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target demo
exec build/examples/demo "$@"
