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
  # the PostgreSQL store backend (libpq); the server binaries (initdb, pg_ctl) are for the tests,
  # which start their own PostgreSQL in a temporary directory (never the system service)
  libpq-dev postgresql
  # real clients used by the integration tests
  curl jq sqlite3 iproute2 procps openssl e2fsprogs fdisk gdisk gzip zstd xz-utils xxd python3-yaml
  tftp-hpa atftp busybox-static isc-dhcp-client kea-admin dnsmasq-base ndisc6
  # the rack cache (deploy/rack-cache/), run on loopback by tests/integration/rack_cache_test.sh
  nginx-light
  # the Debian packages (deploy/package.sh: CPack, dpkg-shlibdeps from dpkg-dev below) and
  # their tests (package_test.sh: lintian, systemd-analyze, mmdebstrap below, the unit booted
  # with systemd-nspawn; package_docs_test.sh: the man pages through groff and col)
  lintian systemd-container groff-base bsdextrautils python3 util-linux
  # peak RSS of the agent (/usr/bin/time) in agent_sparse_test and the fleet/memory benchmarks
  time
  # qcow2 images for `kiln image build` made by QEMU's own tool (qemu-img, qemu-io)
  qemu-utils
  # BMCs: kilnd drives IPMI with ipmitool; the lab's BMC emulators (tests/tools) are checked
  # with independent clients (sushy, redfishtool, ipmitool) and built on pyghmi
  ipmitool python3-sushy python3-pyghmi redfishtool
  # promtool (check/test deploy/prometheus/kiln-rules.yml, check /metrics): only the tool is
  # used; the Prometheus server the package brings is never started (see daemons below)
  prometheus
  # boot files served by default (boot.roots: /usr/lib/ipxe)
  ipxe
  # the QEMU lab (demo, tests/e2e): firmware + iPXE ROMs, the agent initramfs and the test image
  qemu-system-x86 ipxe-qemu ovmf kexec-tools cpio dosfstools mtools
  syslinux syslinux-common dpkg-dev
  # the lab's Debian 12 cloud-init image (deploy/lab/build-cloud-image.sh) and its checks
  # (tests/e2e/cloud_image_check.sh: NoCloud seeds by cloud-localds, qcow2 by qemu-img)
  mmdebstrap cloud-image-utils genisoimage qemu-utils gdisk openssh-client kmod
  # iPXE with HTTPS from Debian's ipxe source package (deploy/build-ipxe.sh): apt-get source
  # needs dpkg-dev (above); the build needs build-essential, liblzma-dev (above) and these
  binutils xxd
  # static libraries kiln-agent links (libarchive raw+filters, OpenSSL, zstd)
  liblzma-dev libbz2-dev zlib1g-dev
  # the libFuzzer targets (deploy/fuzz.sh)
  clang libclang-rt-14-dev
  # the web dashboard's browser test (tests/integration/ui_browser_test.sh): headless chromium
  chromium
)
if [[ "${1:-}" == "--bench" ]]; then
  # peers run side by side with kilnd (never as system services: see below)
  pkgs+=(wrk nginx-light zstd bc e2fsprogs bmap-tools tftpd-hpa kea-dhcp4-server)
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
  # Peer servers (nginx, tftpd-hpa), Prometheus (for promtool) and PostgreSQL (the tests and
  # bench/store.sh run private servers) are started by bench/ and the tests on loopback only:
  # installing them must not start a web or TFTP server on this machine's real interfaces.
  # policy-rc.d 101 stops services from starting during the install; they are disabled after.
  daemons=()
  for p in "${missing[@]}"; do
    case $p in
      nginx-light) daemons+=(nginx) ;;
      tftpd-hpa) daemons+=(tftpd-hpa) ;;
      kea-dhcp4-server) daemons+=(kea-dhcp4-server) ;;
      prometheus) daemons+=(prometheus) ;;
      postgresql) daemons+=(postgresql) ;;  # tests start their own server (initdb, pg_ctl)
    esac
  done
  made_policy=""
  if ((${#daemons[@]})) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if [[ ! -f /var/lib/apt/periodic/kiln-updated ]] || ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update
    $SUDO mkdir -p /var/lib/apt/periodic && $SUDO touch /var/lib/apt/periodic/kiln-updated
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  [[ -n "$made_policy" ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  if ((${#daemons[@]})) && command -v systemctl >/dev/null; then
    $SUDO systemctl disable --now "${daemons[@]}" >/dev/null 2>&1 || true
  fi
else
  echo "install-deps: all packages present"
fi

# The dashboard's browser test drives chromium with puppeteer-core (tests/ui/package-lock.json;
# PUPPETEER_SKIP_DOWNLOAD: it uses /usr/bin/chromium, never a downloaded browser). It uses the
# machine's node/npm when present; without them it installs Debian's (never over another node).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if ! command -v node >/dev/null; then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends nodejs npm
  else
    echo "install-deps: node without npm; tests/ui needs npm (the browser test will skip)"
  fi
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if command -v npm >/dev/null && [[ ! -d "$root/tests/ui/node_modules/puppeteer-core" ]]; then
  (cd "$root/tests/ui" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
