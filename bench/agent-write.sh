#!/usr/bin/env bash
# bench/agent-write.sh — deploying one realistic image onto a block device, kiln-agent against
# the usual pipelines, in one run: a 2 GiB ext4 filesystem with ~1.2 GB of real files from /usr
# and free space, served over loopback, written to a loop device (backed by a file in
# $DISK_DIR, default /dev/shm) with O_DIRECT.
#
#   limits:   dd if=/dev/zero of=DEV bs=4M oflag=direct;  zstd -d of the image to /dev/null
#   peers:    curl URL | zstd -d | dd of=DEV bs=4M oflag=direct                (verifies nothing)
#             curl URL | zstd -d | tee >(openssl dgst -sha256) | dd ...        (verified at the end)
#             bmaptool copy --bmap disk.bmap URL.zst DEV                       (verifies per range)
#   kiln:     kiln-agent (fetch by hash, decode, SHA-256 per chunk before writing), default and
#             --no-delta, onto a wiped device and onto one holding unrelated data (pseudo-random
#             bytes); a delta redeploy of a version differing in 5% of its chunks, onto the
#             version as kiln wrote it and onto one whose booted OS changed a few blocks since
#
# Every pipeline writes the whole image; every result is checked (the device's SHA-256 over the
# image's length) so a fast wrong answer cannot win. Figures, not a test.
source "$(dirname "$0")/lib.sh"

KILN=$KILN_BUILD/kiln
AGENT=$KILN_BUILD/kiln-agent
SIZE_MIB=${SIZE_MIB:-2048}
DISK_DIR=${DISK_DIR:-/dev/shm}
require_tools zstd mkfs.ext4 curl openssl bmaptool losetup bc jq
[[ -x "$AGENT" ]] || die "build kiln-agent first (deploy/build.sh)"

log "making a ${SIZE_MIB} MiB ext4 image with real files (cp from /usr)"
mkdir -p "$WORK/tree"
cp -a /usr/lib/x86_64-linux-gnu "$WORK/tree/lib" 2>/dev/null || true
cp -a /usr/share "$WORK/tree/share" 2>/dev/null || true
du_kib=$(du -sk "$WORK/tree" | cut -f1)
if ((du_kib > SIZE_MIB * 1024 * 6 / 10)); then rm -rf "$WORK/tree/share"; fi
truncate -s "${SIZE_MIB}M" "$WORK/disk.raw"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/disk.raw"
rm -rf "$WORK/tree"
bytes=$((SIZE_MIB << 20))
want=$(sha256sum <"$WORK/disk.raw" | cut -d' ' -f1)

# Version 2: 5% of the 4 MiB chunks rewritten (spread over the image).
cp --sparse=always "$WORK/disk.raw" "$WORK/disk2.raw"
nchunks=$((SIZE_MIB / 4))
for ((i = 0; i < nchunks; i += 20)); do
  head -c $((4 << 20)) /dev/urandom | dd of="$WORK/disk2.raw" bs=4M seek=$((i + 7 < nchunks ? i + 7 : i)) conv=notrunc status=none
done
want2=$(sha256sum <"$WORK/disk2.raw" | cut -d' ' -f1)

log "building the kiln images, the .zst and the bmap"
"$KILN" key generate --out "$WORK/signer" >/dev/null
"$KILN" image build "$WORK/disk.raw" -o "$WORK/v1.kiln" --name bench --version 1 --sign "$WORK/signer.pem" >/dev/null 2>&1
"$KILN" image build "$WORK/disk2.raw" -o "$WORK/v2.kiln" --name bench --version 2 --sign "$WORK/signer.pem" >/dev/null 2>&1
mkdir -p "$WORK/var/files"
zstd -q -T0 -3 "$WORK/disk.raw" -o "$WORK/var/files/disk.raw.zst"
bmaptool -q create "$WORK/disk.raw" -o "$WORK/disk.bmap"

start_kilnd "$WORK/var"
TOKEN=$("$KILND" --data-dir "$WORK/var" token create --name bench --scope admin 2>/dev/null)
export KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN
"$KILN" image push "$WORK/v1.kiln" >/dev/null 2>&1 || die "push v1"
"$KILN" image push "$WORK/v2.kiln" >/dev/null 2>&1 || die "push v2"
"$KILN" machine create --mac 52:54:00:be:00:01 >/dev/null
URL_ZST=$KILND_URL/files/disk.raw.zst

truncate -s "$((SIZE_MIB + 64))M" "$DISK_DIR/kiln-bench-disk.$$"
CLEANUP_CMDS+=("rm -f $DISK_DIR/kiln-bench-disk.$$")
DEV=$(losetup -f --show "$DISK_DIR/kiln-bench-disk.$$")
CLEANUP_CMDS=("losetup -d $DEV" "${CLEANUP_CMDS[@]}")
wipe() { blkdiscard "$DEV" 2>/dev/null || dd if=/dev/zero of="$DEV" bs=4M oflag=direct status=none; }
# Unrelated data: the whole device filled with pseudo-random bytes (AES-CTR keystream, cached in
# RAM once so each fill costs a copy).
FOREIGN=$DISK_DIR/kiln-bench-foreign.$$
CLEANUP_CMDS+=("rm -f $FOREIGN")
head -c "$(blockdev --getsize64 "$DEV")" /dev/zero |
  openssl enc -aes-128-ctr -nosalt -pass pass:kiln-bench -pbkdf2 2>/dev/null >"$FOREIGN"
foreign() { dd if="$FOREIGN" of="$DEV" bs=4M oflag=direct status=none; }
# What a booted OS does to its disk: a few 4 KiB blocks rewritten in 8 chunks spread over the
# image (some of them chunks the next version leaves unchanged).
touch_blocks() {
  local i
  for ((i = 1; i <= 8; i++)); do
    head -c 4096 /dev/urandom | dd of="$DEV" bs=4096 seek=$((i * nchunks / 9 * 1024 + 3)) oflag=direct conv=notrunc status=none
  done
}
check() { # check SHA LABEL — the device holds the image
  local got
  got=$(head -c "$bytes" "$DEV" | sha256sum | cut -d' ' -f1)
  [[ "$got" == "$1" ]] || die "$2 left the wrong bytes on the device"
}
token_for() { # token_for VERSION — assigns and reissues the boot ticket
  local dep
  dep=$(curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"image\":\"bench\",\"version\":\"$1\",\"force\":true}" "$KILND_URL/api/v1/machines/1/assignment" | jq -r .id)
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/deployments/$dep/agent-ticket" | jq -r .ticket
}
secs() { # secs CMD... — wall seconds of a shell command line
  local t0 t1
  t0=$(date +%s%N)
  bash -c "$1" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; die "failed: $1"; }
  t1=$(date +%s%N)
  echo "scale=3; ($t1 - $t0) / 1000000000" | bc
}
agent_cmd() { echo "$AGENT --server $KILND_URL --ticket $1 --disk $DEV --trust-key $WORK/signer.pub.pem --after none ${2:-}"; }

cat "$WORK/disk.raw" "$WORK/var/files/disk.raw.zst" >/dev/null
declare -A T
log "raw limits"
wipe; T[dd]=$(secs "dd if=/dev/zero of=$DEV bs=4M count=$((SIZE_MIB / 4)) oflag=direct status=none")
T[zstdd]=$(secs "zstd -dc $WORK/var/files/disk.raw.zst >/dev/null")
log "curl | zstd -d | dd"
wipe; T[pipe]=$(secs "curl -sf $URL_ZST | zstd -dc | dd of=$DEV bs=4M iflag=fullblock oflag=direct status=none"); check "$want" pipe
log "curl | zstd -d | tee >(openssl sha256) | dd"
wipe; T[vpipe]=$(secs "set -o pipefail; curl -sf $URL_ZST | zstd -dc | tee >(openssl dgst -sha256 >$WORK/pipe.sha) | dd of=$DEV bs=4M iflag=fullblock oflag=direct status=none"); check "$want" vpipe
log "bmaptool copy"
wipe; T[bmap]=$(secs "bmaptool -q copy --bmap $WORK/disk.bmap $URL_ZST $DEV"); check "$want" bmaptool
done_line() { grep 'done:' "$WORK/err" | sed 's/^kiln-agent: //'; }
log "kiln-agent --no-delta (full, wiped device)"
wipe; AT=$(token_for 1); T[agent_nd]=$(secs "$(agent_cmd "$AT" --no-delta)"); check "$want" "kiln-agent --no-delta"
log "kiln-agent (full, wiped device)"
wipe; AT=$(token_for 1); T[agent]=$(secs "$(agent_cmd "$AT")"); check "$want" kiln-agent
agent_line=$(done_line)
log "kiln-agent --no-delta (full, device holding unrelated data)"
foreign; AT=$(token_for 1); T[agent_nd_f]=$(secs "$(agent_cmd "$AT" --no-delta)"); check "$want" "kiln-agent --no-delta (unrelated data)"
log "kiln-agent (full, device holding unrelated data)"
foreign; AT=$(token_for 1); T[agent_f]=$(secs "$(agent_cmd "$AT")"); check "$want" "kiln-agent (unrelated data)"
agent_f_line=$(done_line)
log "kiln-agent delta: version 2 onto version 1"
AT=$(token_for 2); T[delta]=$(secs "$(agent_cmd "$AT")"); check "$want2" "kiln-agent delta"
delta_line=$(done_line)
log "kiln-agent delta: version 2 onto version 1 after its OS changed blocks in 8 chunks"
wipe; AT=$(token_for 1); secs "$(agent_cmd "$AT")" >/dev/null; check "$want" kiln-agent
touch_blocks
AT=$(token_for 2); T[delta_b]=$(secs "$(agent_cmd "$AT")"); check "$want2" "kiln-agent delta (changed blocks)"
delta_b_line=$(done_line)

print_machine
mbps() { echo "scale=0; $bytes / $1 / 1000000" | bc; }
printf '\n== deploying a %s MiB ext4 image (%s) onto a loop device; seconds, MB/s of image delivered\n' \
  "$SIZE_MIB" "$(du -h --apparent-size "$WORK/v1.kiln" | cut -f1) as .kiln"
row() { printf '  %-58s %8s %7s\n' "$1" "$2" "$(mbps "$2")"; }
row "limit: dd if=/dev/zero oflag=direct" "${T[dd]}"
row "limit: zstd -d to /dev/null" "${T[zstdd]}"
row "curl | zstd -d | dd oflag=direct (verifies nothing)" "${T[pipe]}"
row "curl | zstd -d | tee >(openssl sha256) | dd (verified)" "${T[vpipe]}"
row "bmaptool copy --bmap (verified)" "${T[bmap]}"
row "kiln-agent --no-delta, wiped device" "${T[agent_nd]}"
row "kiln-agent (every chunk verified before writing), wiped" "${T[agent]}"
row "kiln-agent --no-delta, device holding unrelated data" "${T[agent_nd_f]}"
row "kiln-agent, device holding unrelated data" "${T[agent_f]}"
row "kiln-agent delta redeploy (5% of chunks differ)" "${T[delta]}"
row "kiln-agent delta redeploy, OS changed blocks in 8 chunks" "${T[delta_b]}"
echo
echo "  agent full, wiped:     $agent_line"
echo "  agent full, unrelated: $agent_f_line"
echo "  agent delta:           $delta_line"
echo "  agent delta, changed:  $delta_b_line"
printf '\n== ratios (time; lower is better for kiln)\n'
echo "  kiln-agent / --no-delta, wiped     = $(ratio "${T[agent]}" "${T[agent_nd]}")"
echo "  kiln-agent / --no-delta, unrelated = $(ratio "${T[agent_f]}" "${T[agent_nd_f]}")"
echo "  kiln-agent / curl|zstd|dd          = $(ratio "${T[agent]}" "${T[pipe]}")"
echo "  kiln-agent / verified pipeline     = $(ratio "${T[agent]}" "${T[vpipe]}")"
echo "  kiln-agent / bmaptool              = $(ratio "${T[agent]}" "${T[bmap]}")"
echo "  delta redeploy / full deploy       = $(ratio "${T[delta]}" "${T[agent]}")"
echo "  delta, changed blocks / full       = $(ratio "${T[delta_b]}" "${T[agent]}")"
echo
echo "== commands"
echo "  $(redact "$(agent_cmd '$AGENT_TOKEN')")"
echo "  curl -sf $URL_ZST | zstd -dc | dd of=$DEV bs=4M iflag=fullblock oflag=direct"
echo "  bmaptool copy --bmap disk.bmap $URL_ZST $DEV"
