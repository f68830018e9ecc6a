#!/usr/bin/env bash
# Validates cloud-config user-data with `cloud-init schema --config-file`, using the cloud-init
# of the lab's cloud image (Debian 12's 22.4, the version that will read it), not one installed
# on this host: the image's root filesystem tarball (deploy/lab/build-cloud-image.sh, which
# must have run once) is unpacked once next to it in $KILN_LAB_CACHE and the check runs in a
# chroot of it (root needed). Exit 0: every FILE is valid; 1: one is not (cloud-init's
# message on stderr); 2: usage, or no rootfs yet.
#
#   deploy/lab/cloud-init-schema.sh USER-DATA...
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${KILN_LAB_CACHE:=$ROOT/var/lab-cache}"
(($#)) || { echo "usage: $0 USER-DATA..." >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "cloud-init-schema: needs root (chroot)" >&2; exit 2; }
tarball=$(cat "$KILN_LAB_CACHE/cloud-rootfs.current" 2>/dev/null)
[[ -s $tarball ]] || { echo "cloud-init-schema: no cloud rootfs yet (run deploy/lab/build-cloud-image.sh)" >&2; exit 2; }
dir=${tarball%.tar}.d
if [[ ! -e $dir/.unpacked ]]; then
  rm -rf "$dir" && mkdir -p "$dir" &&
    tar -x -C "$dir" --numeric-owner -f "$tarball" && touch "$dir/.unpacked" ||
    { echo "cloud-init-schema: cannot unpack $tarball" >&2; exit 2; }
fi
rc=0
for f in "$@"; do
  tmp=$(mktemp "$dir/tmp/user-data.XXXXXX")
  cp "$f" "$tmp"
  if out=$(chroot "$dir" cloud-init schema --config-file "/tmp/${tmp##*/}" 2>&1); then
    echo "$f: $out"
  else
    echo "$f: $out" >&2
    rc=1
  fi
  rm -f "$tmp"
done
exit $rc
