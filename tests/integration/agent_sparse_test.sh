#!/usr/bin/env bash
# kiln-agent deploying a large sparse image (8 GiB, three small data regions, the rest ZERO
# chunks) onto a loop device over a sparse file, the way a thin LUN or a VM's sparse disk is
# imaged: the data regions must be byte-exact, the ZERO regions must read as zeroes (the target
# held other bytes there before), the backing file must stay sparse (ZERO chunks deallocate
# instead of allocating: BLKZEROOUT on a loop device allocated the whole range, 8 GiB here), and
# the agent's peak RSS must stay within its --memory budget.
source "$(dirname "$0")/lib.sh"
AGENT=$KILN_BUILD/kiln-agent
[[ $(id -u) == 0 ]] || { log "needs root (losetup)"; exit 77; }
command -v losetup >/dev/null && [[ -x /usr/bin/time ]] || { log "needs losetup and /usr/bin/time"; exit 77; }

cd "$WORK"
"$KILN" key generate --out signer >/dev/null
GIB=8  # the image build reads every hole: ~3 s per GiB on a loaded 2-core machine
MEMORY_MIB=64
# The data regions: offset (bytes) and length, away from chunk boundaries on purpose.
REGIONS=("0 $((3 << 20))" "$(((3 << 30) + 123 * 4096)) $((5 << 20))" "$(((GIB << 30) - (2 << 20) - 8192)) $((2 << 20))")
truncate -s ${GIB}G sparse.raw
for r in "${REGIONS[@]}"; do
  read -r at len <<<"$r"
  head -c "$len" /dev/urandom >region
  dd if=region of=sparse.raw bs=4096 seek=$((at / 4096)) conv=notrunc status=none
done
"$KILN" image build sparse.raw -o sparse.kiln --name big --version 1 --sign signer.pem >build.log 2>&1 ||
  { cat build.log >&2; fail "image build"; finish; }

start_kilnd
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push sparse.kiln >/dev/null 2>&1 || fail "push"
"$KILN" machine create --mac 52:54:00:00:00:21 >/dev/null
curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/images/big/versions/1/manifest" >manifest.json
CHUNK=$(jq .chunk_size manifest.json)
PAYLOAD_CHUNKS=$(jq '[.chunks[] | select(.[0] == "D" or .[0] == "R")] | length' manifest.json)
ZERO_CHUNKS=$(jq '[.chunks[] | select(.[0] == "Z")] | length' manifest.json)
log "manifest: $(stat -c %s manifest.json) bytes, $PAYLOAD_CHUNKS payload and $ZERO_CHUNKS ZERO chunks of $CHUNK bytes"
((ZERO_CHUNKS * CHUNK > (GIB - 1) << 30)) && ok || fail "the image is mostly ZERO chunks"

# The target: a sparse file on a real filesystem holding old bytes where the image is zero.
truncate -s ${GIB}G target.img
for at in $((2 << 30)) $((5 << 30)); do
  head -c $((1 << 20)) /dev/urandom | dd of=target.img bs=1M seek=$((at >> 20)) conv=notrunc status=none
done
LOOP=$(losetup -f --show target.img)
CLEANUP_CMDS+=("losetup -d $LOOP")

api PUT /api/v1/machines/1/assignment '{"image":"big","version":"1","force":true}'
DEP=$(jqb .id)
api POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
RC=0
/usr/bin/time -f 'maxrss_kib=%M' -o rss.txt "$AGENT" --server "$URL" --ticket "$AT" --disk "$LOOP" \
  --trust-key signer.pub.pem --after none --memory $MEMORY_MIB >agent.log 2>&1 || RC=$?
expect_eq "$RC" 0 "the agent deploys the sparse image: $(tail -3 agent.log)"
log "$(grep 'done:' agent.log | sed 's/^kiln-agent: //')"

# Byte-exact data regions, zero elsewhere (sampled where the target held old bytes, and around
# each region).
for r in "${REGIONS[@]}"; do
  read -r at len <<<"$r"
  cmp -s <(dd if="$LOOP" bs=4096 skip=$((at / 4096)) count=$((len / 4096)) status=none) \
    <(dd if=sparse.raw bs=4096 skip=$((at / 4096)) count=$((len / 4096)) status=none) &&
    ok || fail "the data region at $at is byte-exact"
done
zero_at() { # zero_at OFFSET LEN — the device reads zeroes there
  cmp -s <(dd if="$LOOP" bs=4096 skip=$(($1 / 4096)) count=$(($2 / 4096)) status=none) \
    <(head -c "$2" /dev/zero) && ok || fail "zeroes at offset $1 (+$2)"
}
zero_at $((2 << 30)) $((1 << 20))
zero_at $((5 << 30)) $((1 << 20))
zero_at $((3 << 20)) $((1 << 20))
zero_at $(((3 << 30) + 123 * 4096 + (5 << 20))) $((1 << 20))
zero_at $(((GIB << 30) - (8 << 20))) $((4 << 20))
# Still sparse: at most the payload chunks (written whole) plus a little metadata.
sync
alloc=$(($(stat -c %b target.img) * $(stat -c %B target.img)))
bound=$((PAYLOAD_CHUNKS * CHUNK + (16 << 20)))
log "target allocated $((alloc >> 20)) MiB of ${GIB} GiB (bound $((bound >> 20)) MiB)"
((alloc <= bound)) && ok || fail "ZERO chunks left the target sparse: $((alloc >> 20)) MiB allocated"

# Within the memory budget.
rss_kib=$(sed -n 's/^maxrss_kib=//p' rss.txt)
log "agent peak RSS ${rss_kib} KiB with --memory $MEMORY_MIB"
((rss_kib > 0 && rss_kib <= MEMORY_MIB * 1024)) && ok || fail "peak RSS $rss_kib KiB over --memory $MEMORY_MIB MiB"

finish
