#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan into ./build-fuzz and runs each for a
# bounded time (default 60 s) from its seed corpus in tests/fuzz/corpus/. Exits non-zero on a
# crash, a sanitizer report or a broken invariant; the reproducer is left in build-fuzz/.
# Usage: deploy/fuzz.sh [seconds-per-target]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKILN_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "${KILN_JOBS:-2}" --target api_request_fuzz image_manifest_fuzz tftp_packet_fuzz dhcp_packet_fuzz
for target in api_request_fuzz image_manifest_fuzz tftp_packet_fuzz dhcp_packet_fuzz; do
  corpus=tests/fuzz/corpus/${target%_fuzz}
  work=build-fuzz/corpus-$target
  mkdir -p "$work"
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s (seeds: $corpus)"
  (cd build-fuzz && ASAN_OPTIONS=detect_leaks=0 ./tests/fuzz/"$target" -max_total_time="$SECONDS_PER_TARGET" \
    -max_len=65536 -timeout=10 -print_final_stats=1 "corpus-$target" "../$corpus" 2>&1 | tail -n 25)
done
