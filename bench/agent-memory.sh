#!/usr/bin/env bash
# bench/agent-memory.sh — the agent's memory on a very large, mostly empty image: a $SIZE_GIB GiB
# sparse file (default 100) with $DATA_MIB MiB of data (default 300) in three places, built with
# `kiln image build` (holes become ZERO chunks), deployed by kiln-agent onto a loop device over
# a sparse file of $SIZE_GIB + 1 GiB on a real filesystem ($DISK_DIR, default /var/tmp; never
# tmpfs), once per --memory value in $MEMORY (MiB, default "32 64 256"), each onto a fresh
# target. Printed: the manifest's size and chunk counts, and per run the agent's peak RSS
# (/usr/bin/time: maximum resident set) against --memory, its worker count and time, and what the
# target's backing file allocated (ZERO chunks must not allocate). Every run's data regions are
# compared byte for byte with the source, and a ZERO region that held other bytes before must
# read as zeroes, or the benchmark stops. Figures, never judged (an RSS over --memory is marked).
#
# Needs root (losetup) and ~$DATA_MIB MiB x 3 of free space in $DISK_DIR (the source, the image
# and the target hold the data; everything else is sparse). The image build skips holes but
# hashes them as zeroes into the whole-image SHA-256 (about a minute per 100 GiB), and kilnd
# does the same when it verifies the pushed image.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KILN=$KILN_BUILD/kiln
AGENT=$KILN_BUILD/kiln-agent
SIZE_GIB=${SIZE_GIB:-100}
DATA_MIB=${DATA_MIB:-300}
MEMORY=${MEMORY:-"32 64 256"}
DISK_DIR=${DISK_DIR:-/var/tmp}
require_tools losetup curl jq base64 cmp
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (Debian package: time)"
[[ $(id -u) == 0 ]] || die "run as root (losetup)"
[[ -x "$AGENT" && -x "$KILN" && -x "$KILND" ]] || die "kilnd, kiln and kiln-agent must be built in $KILN_BUILD"
[[ "$SIZE_GIB" =~ ^[1-9][0-9]*$ && $SIZE_GIB -ge 2 && $SIZE_GIB -le 1024 ]] || die "SIZE_GIB: 2..1024"
[[ "$DATA_MIB" =~ ^[1-9][0-9]*$ ]] && ((DATA_MIB >= 3 && DATA_MIB <= SIZE_GIB * 256)) || die "DATA_MIB: 3..SIZE_GIB*256"
for m in $MEMORY; do [[ "$m" =~ ^[1-9][0-9]*$ ]] || die "MEMORY: MiB values"; done
[[ "$(stat -f -c %T "$DISK_DIR")" != tmpfs ]] || die "DISK_DIR must be a real filesystem, not tmpfs"

print_machine
SCRATCH=$(mktemp -d "$DISK_DIR/kiln-bench-agent-memory.XXXXXX")
CLEANUP_CMDS+=("rm -rf $SCRATCH")

# Three data regions of DATA_MIB/3 each: at the start, in the middle (off a chunk boundary) and
# just before the end.
part=$((DATA_MIB / 3))
REGIONS=("0" "$(((SIZE_GIB << 29) + (1 << 20)))" "$(((SIZE_GIB << 30) - ((part + 1) << 20)))")
log "making a ${SIZE_GIB} GiB sparse source with 3 x ${part} MiB of data"
truncate -s "${SIZE_GIB}G" "$SCRATCH/source.raw"
for at in "${REGIONS[@]}"; do
  head -c $((part * 3 / 4 << 20)) /dev/urandom | base64 -w 0 | head -c $((part << 20)) |
    dd of="$SCRATCH/source.raw" bs=1M seek=$((at >> 20)) conv=notrunc status=none
done
"$KILN" key generate --out "$WORK/signer" >/dev/null
log "kiln image build (holes are skipped, hashed as zeroes)"
b0=$(date +%s%N)
"$KILN" image build "$SCRATCH/source.raw" -o "$SCRATCH/big.kiln" --name big --version 1 --sign "$WORK/signer.pem" >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; die "kiln image build"; }
build_s=$(echo "scale=1; ($(date +%s%N) - $b0) / 1000000000" | bc)

TOKEN=$("$KILND" --data-dir "$WORK/var" token create --name bench --scope admin 2>/dev/null | tail -n1)
start_kilnd "$WORK/var"
export KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN
"$KILN" image push "$SCRATCH/big.kiln" >/dev/null 2>&1 || die "image push"
rm -f "$SCRATCH/big.kiln"
"$KILN" machine create --mac 52:54:00:be:01:01 >/dev/null
curl -sf -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/images/big/versions/1/manifest" >"$WORK/manifest.json" || die "manifest"
manifest_bytes=$(stat -c %s "$WORK/manifest.json")
chunk=$(jq .chunk_size "$WORK/manifest.json")
count() { jq "[.chunks[] | select(.[0] == \"$1\")] | length" "$WORK/manifest.json"; }
nD=$(count D) nR=$(count R) nZ=$(count Z) nU=$(count U)

ticket() {
  local dep
  dep=$(curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"image":"big","version":"1","force":true}' "$KILND_URL/api/v1/machines/1/assignment" | jq -r .id)
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/deployments/$dep/agent-ticket" | jq -r .ticket
}

echo
echo "== a ${SIZE_GIB} GiB image, $((part * 3)) MiB of data; target: loop device over a sparse file in $DISK_DIR"
echo "  build:    kiln image build ${build_s}s"
echo "  manifest: $manifest_bytes bytes; chunk size $chunk; $nD DATA, $nR RAW, $nZ ZERO, $nU UNMAPPED chunks"
printf '  %-10s %12s %8s %9s %10s %14s   %s\n' "--memory" "peak RSS" "of budget" workers "time (s)" "allocated" "verified"
for mem in $MEMORY; do
  rm -f "$SCRATCH/target.img"
  truncate -s "$((SIZE_GIB + 1))G" "$SCRATCH/target.img"
  # Old bytes where the image is ZERO: they must read as zeroes afterwards.
  old_at=$(((SIZE_GIB << 30) / 4))
  head -c $((1 << 20)) /dev/urandom | dd of="$SCRATCH/target.img" bs=1M seek=$((old_at >> 20)) conv=notrunc status=none
  dev=$(losetup -f --show "$SCRATCH/target.img")
  at=$(ticket)
  cmd=("$AGENT" --server "$KILND_URL" --ticket "$at" --disk "$dev" --trust-key "$WORK/signer.pub.pem" --after none --memory "$mem")
  rc=0
  /usr/bin/time -f '%M %e' -o "$WORK/time.out" "${cmd[@]}" >"$WORK/agent.log" 2>&1 || rc=$?
  if [[ $rc != 0 ]]; then
    losetup -d "$dev"
    tail -5 "$WORK/agent.log" >&2
    die "the agent failed with --memory $mem"
  fi
  read -r rss_kib secs <"$WORK/time.out"
  workers=$(grep -o '[0-9]* workers' "$WORK/agent.log" | tail -1 | awk '{print $1}')
  ok=yes
  for r in "${REGIONS[@]}"; do
    cmp -s <(dd if="$dev" bs=1M skip=$((r >> 20)) count="$part" status=none) \
      <(dd if="$SCRATCH/source.raw" bs=1M skip=$((r >> 20)) count="$part" status=none) || ok="NO: data at $r"
  done
  cmp -s <(dd if="$dev" bs=1M skip=$((old_at >> 20)) count=1 status=none) <(head -c $((1 << 20)) /dev/zero) ||
    ok="NO: old bytes at $old_at"
  losetup -d "$dev"
  sync
  alloc_mib=$(($(stat -c %b "$SCRATCH/target.img") * $(stat -c %B "$SCRATCH/target.img") >> 20))
  [[ "$ok" == yes ]] || die "--memory $mem: the target is wrong ($ok)"
  mark=""
  ((rss_kib > mem * 1024)) && mark="  !! over --memory"
  printf '  %-10s %9s MiB %8s %9s %10s %10s MiB   %s%s\n' "$mem MiB" "$((rss_kib >> 10))" \
    "$(awk -v r="$rss_kib" -v m="$mem" 'BEGIN {printf "%.0f%%", r / 1024 / m * 100}')" "$workers" "$secs" \
    "$alloc_mib" "$ok" "$mark"
  echo "             $(grep 'done:' "$WORK/agent.log" | sed 's/^kiln-agent: //')"
done
echo
echo "== commands"
echo "  kiln image build source.raw -o big.kiln --name big --version 1 --sign signer.pem"
echo "  $(quote "$AGENT") --server $KILND_URL --ticket \$TICKET --disk /dev/loopN --trust-key signer.pub.pem --after none --memory MiB"
