#!/usr/bin/env bash
# Builds the Debian packages kiln-server, kiln and kiln-agent from the build tree that
# deploy/build.sh makes (incremental: nothing is compiled twice), with CPack's DEB generator
# (cmake/packaging.cmake): binaries stripped, Depends from dpkg-shlibdeps.
#
#   deploy/package.sh [--out DIR]       (default build/deb; prints the .deb paths)
#
# Then: apt install ./build/deb/kiln*.deb   (see kilnd(8), PACKAGE)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=""
while (($#)); do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "package: unknown option $1" >&2; exit 2 ;;
  esac
done
for t in dpkg-shlibdeps dpkg-deb gzip; do
  command -v "$t" >/dev/null || { echo "package: $t missing (deploy/install-deps.sh)" >&2; exit 1; }
done
BUILD=${KILN_BUILD:-build}
if [[ -z ${KILN_BUILD:-} ]]; then
  deploy/build.sh
else
  cmake --build "$BUILD" -j "${KILN_JOBS:-2}" --target kilnd kiln kiln-agent kiln_package_docs
fi
DEB=$(realpath -m "${OUT:-$BUILD/deb}")
mkdir -p "$DEB"
rm -f "$DEB"/*.deb
# cpack runs the install rules of each component into a staging tree and packs it.
(cd "$BUILD" && cpack -G DEB -B "$DEB" >"$DEB/cpack.log" 2>&1) ||
  { cat "$DEB/cpack.log" >&2; echo "package: cpack failed" >&2; exit 1; }
rm -rf "$DEB/_CPack_Packages"
ls -1 "$DEB"/*.deb
