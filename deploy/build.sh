#!/usr/bin/env bash
# Configures and builds kiln into ./build (Release with debug info). Idempotent; incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# Beast is heavy: more than 2 parallel compiles exhaust memory on small machines.
cmake --build build -j "${KILN_JOBS:-2}"
