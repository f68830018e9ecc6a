#!/usr/bin/env bash
# The README's second command: installs what is missing, builds, and runs every test with ctest
# (unit tests and integration tests against a real kilnd). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
cd build
ctest --output-on-failure --timeout 600 "$@"
