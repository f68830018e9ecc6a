#!/usr/bin/env bash
# Installs, idempotently and only from Debian 12 packages, everything kiln needs to build,
# test, benchmark and run its demo. Safe to run repeatedly: apt-get is only called when a
# package is missing. Usage: deploy/install-deps.sh [--bench]
set -euo pipefail

pkgs=(
  # build
  build-essential cmake ninja-build pkg-config clang-format
  # libraries on the design card
  libboost-dev libboost-system-dev libarchive-dev libzstd-dev libssl-dev
  libsqlite3-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libgtest-dev libgmock-dev libcli11-dev
  # real clients used by the integration tests
  curl jq sqlite3 iproute2 procps openssl e2fsprogs fdisk gzip zstd xz-utils
  # static libraries kiln-agent links (libarchive raw+filters, OpenSSL, zstd)
  liblzma-dev libbz2-dev zlib1g-dev
  # the libFuzzer targets (deploy/fuzz.sh)
  clang libclang-rt-14-dev
)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(wrk nginx-light zstd bc e2fsprogs bmap-tools)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -f /var/lib/apt/periodic/kiln-updated ]] || ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update
    $SUDO mkdir -p /var/lib/apt/periodic && $SUDO touch /var/lib/apt/periodic/kiln-updated
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  echo "install-deps: all packages present"
fi
