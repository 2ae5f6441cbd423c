#!/usr/bin/env bash
# Builds the shmsync tool and runs its demo: a root and N worker processes
# under a mixed load, then a report. Arguments go to `shmsync demo`
# (--workers N, --seconds S, --socket PATH, --capacity SIZE; --help).
# Installs missing packages first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
# Only the tool's target (the program build/tools/shmsync): a test that does
# not build yet must not stop it.
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target shmsync_tool
exec build/tools/shmsync demo "$@"
