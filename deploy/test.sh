#!/usr/bin/env bash
# The README's second command: installs what is missing, builds, runs every test with ctest
# (unit tests and integration tests against a real kilnd), then runs the libFuzzer targets for
# a bounded time (KILN_FUZZ_SECONDS per target, default 30; 0 skips). Exits non-zero on any
# failure. Extra arguments go to ctest (e.g. -R api).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
# install-deps.sh installed PostgreSQL: the store's PostgreSQL tests must run, not skip.
export KILN_REQUIRE_PG=${KILN_REQUIRE_PG:-1}
# Two at a time: the QEMU end-to-end tests are RUN_SERIAL (they run alone).
(cd build && ctest --output-on-failure --timeout 600 -j "${KILN_TEST_JOBS:-2}" "$@")
if [[ "${KILN_FUZZ_SECONDS:-30}" -gt 0 ]]; then
  deploy/fuzz.sh "${KILN_FUZZ_SECONDS:-30}"
fi
