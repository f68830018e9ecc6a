#!/usr/bin/env bash
# kiln-agent against a running kilnd, writing to a real block device (a loop device): full
# deploy, delta redeploy and rollback, faults on the wire (bit flips, 500s, truncated bodies,
# wrong Content-Length, stalls; via tests/tools/chaos_proxy), a corrupt chunk in the server's
# store, kilnd killed and restarted mid-deploy, the agent killed and restarted mid-deploy, and
# refusals (an untrusted or malformed signature, a disk too small, a bad ticket) reported to kilnd.
source "$(dirname "$0")/lib.sh"
AGENT=$KILN_BUILD/kiln-agent
PROXY=$KILN_BUILD/chaos_proxy

cd "$WORK"
"$KILN" key generate --out signer >/dev/null

# A 64 MiB GPT disk: 40 MiB of distinct compressible data, then free space.
truncate -s 64M v1.raw
printf 'label: gpt\n,32M,L\n,,L\n' | sfdisk -q v1.raw
head -c $((30 << 20)) /dev/urandom | base64 -w 0 >data
dd if=data of=v1.raw bs=1M seek=1 conv=notrunc status=none
# Version 2 differs in 3 of the 64 chunks.
cp v1.raw v2.raw
for at in 5 20 33; do
  head -c $((3 << 18)) /dev/urandom | base64 -w 0 | dd of=v2.raw bs=1M seek=$at conv=notrunc status=none
done
# Version 3: version 1 with 10 of its chunks also placed 40 MiB further on (moved data).
cp v1.raw v3.raw
dd if=v1.raw of=v3.raw bs=1M skip=5 seek=45 count=10 conv=notrunc status=none
for v in 1 2 3; do
  "$KILN" image build v$v.raw -o v$v.kiln --name os --version $v --chunk-size 1M --sign signer.pem >/dev/null 2>&1
done

KILND_LISTEN=127.0.0.1:$(free_port)
start_kilnd
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
for v in 1 2 3; do "$KILN" image push v$v.kiln >/dev/null 2>&1 || fail "push v$v"; done
"$KILN" machine create --mac 52:54:00:00:00:01 >/dev/null

truncate -s 64M disk.img   # the image's size: the device must equal the image byte for byte
LOOP=$(losetup -f --show disk.img)
CLEANUP_CMDS+=("losetup -d $LOOP")

# assign VERSION — (re)assigns the machine and reissues the boot ticket: sets DEP and AT.
assign() {
  api PUT /api/v1/machines/1/assignment "{\"image\":\"os\",\"version\":\"$1\",\"force\":true}"
  DEP=$(jqb .id)
  api POST "/api/v1/deployments/$DEP/agent-ticket"
  AT=$(jqb .ticket)
}
# agent SERVER_URL [args] — runs the agent against the loop device; sets RC; log in agent.log.
agent() {
  local server=$1; shift
  RC=0
  "$AGENT" --server "$server" --ticket "$AT" --disk "$LOOP" --trust-key signer.pub.pem --after none \
    --timeout-ms 1500 --backoff-ms 50 "$@" >agent.log 2>&1 || RC=$?
}
fetched_mib() { grep -o 'fetched [0-9.]* MiB' agent.log | tail -1 | awk '{print $2}'; }
disk_is() { cmp -s <(head -c 64M "$LOOP") "$1"; }
wipe() { dd if=/dev/zero of="$LOOP" bs=4M count=16 oflag=direct status=none; }
deployment_status() { api GET "/api/v1/deployments/$DEP"; STATUS_NOW=$(jqb .status); }

# --- full deploy --------------------------------------------------------------------------
assign 1
agent "$URL"
expect_eq "$RC" 0 "agent exits 0: $(tail -3 agent.log)"
disk_is v1.raw && ok || fail "the device holds version 1 byte for byte"
deployment_status
expect_eq "$STATUS_NOW" succeeded "deployment reported succeeded"
expect_eq "$(jqb .bytes_done)" $((64 << 20)) "progress reached the image size"
api GET /api/v1/machines/1
expect_eq "$(jqb .current_version.version)" 1 "machine's current version"
sfdisk -d "$LOOP" 2>/dev/null | grep -q "label: gpt" && ok || fail "the partition table is in place"
full=$(fetched_mib)
log "full deploy fetched $full MiB"

# --- a success report must prove what kilnd served (.kiln images) --------------------------
api PUT /api/v1/machines/1/assignment '{"image":"os","version":"2","force":true}'
DEP=$(jqb .id)
agent_session "$DEP"
S=$SESSION
# proof MANIFEST_SHA IMAGE WRITTEN SKIPPED ZEROED UNMAPPED
proof() { printf '{"status":"succeeded","proof":{"manifest_sha256":"%s","image_bytes":%s,"written_bytes":%s,"skipped_bytes":%s,"zeroed_bytes":%s,"unmapped_bytes":%s}}' "$@"; }
curl -s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/images/os/versions/2/manifest" >v2.manifest
MSHA=$(sha256sum <v2.manifest | cut -d' ' -f1)
# 1 MiB chunks, 64 of them (none short): ZERO and UNMAPPED bytes as the manifest has them.
ZB=$(( $(jq '[.chunks[] | select(.[0] == "Z")] | length' v2.manifest) << 20 ))
UB=$(( $(jq '[.chunks[] | select(.[0] == "U")] | length' v2.manifest) << 20 ))
REST=$(((64 << 20) - ZB - UB))
TOKEN=$S api POST /api/v1/agent/result "$(proof "$MSHA" $((64 << 20)) $REST 0 $ZB $UB)"
expect_status 422 "a proof before the manifest was served to the session"
[[ $(jqb .error.message) == *"never served"* ]] && ok || fail "explained: $BODY"
TOKEN=$S api GET /api/v1/agent/manifest
expect_status 200 "the session fetches the manifest"
TOKEN=$S api POST /api/v1/agent/result "$(proof "$(printf 'f%.0s' {1..64})" $((64 << 20)) $REST 0 $ZB $UB)"
expect_status 422 "a proof naming another manifest"
TOKEN=$S api POST /api/v1/agent/result "$(proof "$MSHA" $((64 << 20)) $((REST - 4096)) 0 $((ZB + 4096)) $UB)"
expect_status 422 "a proof whose zeroed bytes are not the manifest's"
TOKEN=$S api POST /api/v1/agent/result "$(proof "$MSHA" $((32 << 20)) $REST 0 $ZB $UB)"
expect_status 422 "a proof of another image size"
TOKEN=$S api POST /api/v1/agent/result "$(proof "$MSHA" $((64 << 20)) 9223372036854775807 9223372036854775807 $ZB $UB)"
expect_status 422 "overflowing byte counts"
deployment_status
expect_eq "$STATUS_NOW" pending "refused proofs change nothing"
api GET "/api/v1/events?since=0&limit=1000"
expect_eq "$(jq '[.events[] | select(.type == "deployment.result_refused")] | length' <<<"$BODY")" 5 \
  "each refused proof is an event"
# (The real agent's runs above and below are the accepted proofs.)

# --- a larger disk: the backup GPT moves to its real end, the data is the image's --------
truncate -s 96M big.img
BIG=$(losetup -f --show big.img)
CLEANUP_CMDS+=("losetup -d $BIG")
assign 1
RC=0
"$AGENT" --server "$URL" --ticket "$AT" --disk "$BIG" --trust-key signer.pub.pem --after none >agent.log 2>&1 || RC=$?
expect_eq "$RC" 0 "deploy onto a larger disk"
sfdisk -V "$BIG" >verify.out 2>&1 && ok || fail "sfdisk verifies the relocated GPT: $(cat verify.out)"
sfdisk -l "$BIG" 2>&1 | grep -q "not on the end" && fail "backup GPT not at the disk's end" || ok
expect_eq "$(sfdisk -d "$BIG" | grep -c '^/dev')" 2 "both partitions present"
expect_eq "$(sfdisk -d "$BIG" | awk '/^last-lba/ {print $2}')" $(( (96 << 11) - 34 )) "the disk's space is usable"
cmp -s <(dd if="$BIG" bs=1M skip=1 count=62 status=none) <(dd if=v1.raw bs=1M skip=1 count=62 status=none) \
  && ok || fail "the image's data is on the larger disk"

# --- delta: the same version again, then version 2, then a rollback -----------------------
assign 1
agent "$URL"
expect_eq "$RC" 0 "redeploy of the same version"
again=$(fetched_mib)
log "redeploy fetched $again MiB (the partition-table chunks only)"
[[ $(echo "$again < 3" | bc) == 1 ]] && ok || fail "redeploy fetched $again MiB"
assign 2
agent "$URL"
expect_eq "$RC" 0 "upgrade to version 2"
disk_is v2.raw && ok || fail "the device holds version 2"
up=$(fetched_mib)
log "upgrade fetched $up MiB of $full"
[[ $(echo "$up < $full * 0.15" | bc) == 1 ]] && ok || fail "upgrade fetched $up MiB, full is $full"
api POST /api/v1/machines/1/rollback
expect_status 201 "rollback"
DEP=$(jqb .id); api POST "/api/v1/deployments/$DEP/agent-ticket"; AT=$(jqb .ticket)
agent "$URL"
expect_eq "$RC" 0 "rollback deploy"
disk_is v1.raw && ok || fail "rolled back to version 1"
[[ $(echo "$(fetched_mib) < $full * 0.15" | bc) == 1 ]] && ok || fail "rollback fetched $(fetched_mib) MiB"

# Version 3 onto version 1: the moved chunks are copied on the disk, not fetched.
assign 3
agent "$URL"
expect_eq "$RC" 0 "deploy of version 3 over version 1"
disk_is v3.raw && ok || fail "the device holds version 3"
copied=$(grep -o 'copied [0-9.]* MiB' agent.log | awk '{print $2}')
log "moved data: copied $copied MiB locally, fetched $(fetched_mib) MiB"
expect_eq "$copied" 10.0 "the 10 moved chunks were copied from where version 1 had them"
[[ $(echo "$(fetched_mib) < 1" | bc) == 1 ]] && ok || fail "moved chunks were fetched: $(tail -1 agent.log)"

# --- the delta compares with what the disk holds, not with what kiln wrote --------------
# A booted OS changed two chunks since: one in its probe block (the 4 KiB the manifest's probe
# covers: found with one small read), one elsewhere (the probe still matches; only the chunk's
# SHA-256 finds it). Both are fetched again; the disk ends byte-exact.
expect_eq "$(jq -r '[.chunks[3][0], .chunks[3][3], .chunks[20][3]] | join(",")' <("$KILN" --json image inspect v3.kiln 2>/dev/null))" \
  "D,0,0" "data chunks carry their probe (first non-zero block at offset 0)"
head -c 4096 /dev/urandom | dd of="$LOOP" bs=4096 seek=$(( (3 << 8) + 255 )) oflag=direct conv=notrunc status=none
head -c 4096 /dev/urandom | dd of="$LOOP" bs=4096 seek=$(( 20 << 8 )) oflag=direct conv=notrunc status=none
assign 3
agent "$URL"
expect_eq "$RC" 0 "redeploy over a disk its OS changed"
disk_is v3.raw && ok || fail "both changed chunks were repaired"
changed=$(fetched_mib)
[[ $(echo "$changed > 1 && $changed < 6" | bc) == 1 ]] && ok \
  || fail "fetched the two changed chunks and the partition-table chunks only: $changed MiB"
# Unrelated data on the disk: every chunk differs, and the probes say so without reading the
# chunks back (a ZERO chunk's first block, a DATA chunk's probe block).
head -c 64M /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:kiln-test -pbkdf2 2>/dev/null |
  dd of="$LOOP" bs=4M iflag=fullblock oflag=direct status=none
assign 1
agent "$URL"
expect_eq "$RC" 0 "deploy onto a disk holding unrelated data"
disk_is v1.raw && ok || fail "the disk holds version 1 after unrelated data"
readback=$(grep -o 'read back [0-9.]* MiB' agent.log | awk '{print $3}')
expect_eq "$readback" 0.0 "nothing was read back beyond the probes"
# A wiped disk: nothing is read back either (the probes rule the DATA chunks out, and a loop
# device deallocates ZERO chunks, which needs no check first).
wipe
assign 1
agent "$URL"
expect_eq "$RC" 0 "deploy onto a wiped disk"
disk_is v1.raw && ok || fail "the disk holds version 1 after a wipe"
expect_eq "$(grep -o 'read back [0-9.]* MiB' agent.log | awk '{print $3}')" 0.0 "nothing read back on a wiped disk"

# A memory budget that cannot hold the agent, its manifest and one write worker is refused
# before anything is written (the agent does not quietly run over --memory).
wipe
assign 1
agent "$URL" --memory 8
expect_eq "$RC" 1 "--memory too small for one worker"
grep -q 'a memory budget of 8 MiB cannot hold the agent' agent.log && ok || fail "the refusal names the budget: $(tail -2 agent.log)"
cmp -s <(head -c 64M "$LOOP") <(head -c 64M /dev/zero) && ok || fail "nothing was written under a refused budget"

# --- faults on the wire: every damaged response is retried, nothing bad is written --------
port=${URL##*:}
start_proxy() {
  rm -f proxy.port
  "$PROXY" --listen 0 --upstream "$port" --port-file proxy.port --lifetime-s 120 "$@" 2>proxy.log &
  PROXY_PID=$!
  KILND_PIDS+=("$PROXY_PID")
  for _ in $(seq 100); do [[ -s proxy.port ]] && break; sleep 0.02; done
  PURL=http://127.0.0.1:$(cat proxy.port)
}
stop_proxy() { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true; }
wipe
assign 2
start_proxy --flip 2 --status500 2 --truncate 2 --bad-length 2 --stall 1 --stall-ms 3000
agent "$PURL"
stop_proxy
expect_eq "$RC" 0 "deploy through a faulty network succeeds: $(tail -3 agent.log)"
disk_is v2.raw && ok || fail "the device holds version 2 after the faults"
expect_eq "$(grep -c '^chaos_proxy:' proxy.log)" 9 "the proxy damaged 9 responses"
retries=$(grep -c 'retrying chunk' agent.log)
cp agent.log faults-agent.log; cp proxy.log faults-proxy.log
[[ $retries -ge 9 ]] && ok || fail "each damaged chunk was retried ($retries retries)"
grep -q 'retrying chunk .*SHA-256 mismatch' agent.log && ok || fail "bit flip named as a hash mismatch"
grep -q 'retrying chunk .*HTTP 500' agent.log && ok || fail "500 named"
grep -Eq 'retrying chunk .*(end of stream|partial message|timeout|timed out)' agent.log && ok || fail "truncation/stall named: $(grep retrying agent.log | head -5)"

# --- a chunk corrupt in the server's store: the deploy fails naming it, writes none of it --
wipe
assign 1
sha=$(jq -r '.chunks[10][1]' <("$KILN" --json image inspect v1.kiln 2>/dev/null))
file=$(ls "$WORK"/var/images/chunks/"${sha:0:2}"/"$sha".*)
cp "$file" chunk.orig
printf '\xff\xff\xff\xff' | dd of="$file" bs=1 seek=100 conv=notrunc status=none
agent "$URL" --retries 2
expect_eq "$RC" 1 "agent fails on a persistently bad chunk"
deployment_status
expect_eq "$STATUS_NOW" failed "deployment reported failed"
[[ "$(jqb .status_reason)" == *"chunk 10 (offset 10485760)"* ]] && ok || fail "failure names the chunk: $(jqb .status_reason)"
cmp -s <(dd if="$LOOP" bs=1M skip=10 count=1 status=none) <(head -c 1M /dev/zero) && ok \
  || fail "no byte of the bad chunk reached the disk"
sfdisk -d "$LOOP" >/dev/null 2>&1 && fail "a failed deploy must leave no partition table" || ok
cp chunk.orig "$file"

# --- kilnd killed mid-deploy and restarted: the agent's retries carry it through ----------
wipe
assign 1
start_proxy --delay-ms 80
"$AGENT" --server "$PURL" --ticket "$AT" --disk "$LOOP" --trust-key signer.pub.pem --after none \
  --timeout-ms 1500 --backoff-ms 100 >agent.log 2>&1 &
APID=$!
KILND_PIDS+=("$APID")
sleep 0.6
kill -KILL "$KILND_PID"; wait "$KILND_PID" 2>/dev/null || true
sleep 1
start_kilnd
RC=0; wait "$APID" || RC=$?
stop_proxy
expect_eq "$RC" 0 "agent finished across a kilnd restart: $(tail -3 agent.log)"
disk_is v1.raw && ok || fail "the device holds version 1 after the restart"
grep -q 'retrying chunk' agent.log && ok || fail "the outage was retried"
deployment_status
expect_eq "$STATUS_NOW" succeeded "result recorded by the restarted kilnd"

# --- the agent killed mid-deploy and started again: it resumes via the delta check --------
wipe
assign 2
start_proxy --delay-ms 80
"$AGENT" --server "$PURL" --ticket "$AT" --disk "$LOOP" --trust-key signer.pub.pem --after none \
  --workers 2 >agent.log 2>&1 &
APID=$!
KILND_PIDS+=("$APID")
sleep 1.2
kill -KILL "$APID"; wait "$APID" 2>/dev/null || true
stop_proxy
agent "$URL"
expect_eq "$RC" 0 "restarted agent finishes"
disk_is v2.raw && ok || fail "the device holds version 2 after the resume"
grep -q 'skipped [1-9]' agent.log && ok || fail "the restarted agent skipped what was already written: $(tail -1 agent.log)"
[[ $(echo "$(fetched_mib) < $full" | bc) == 1 ]] && ok || fail "resume fetched $(fetched_mib) MiB, full is $full"

# --- external raw images (compatibility path): streamed, hashed, committed only if right ---
mkdir -p "$WORK/var/files"
zstd -q -3 v1.raw -o var/files/v1.raw.zst
gzip -1 -c v2.raw >var/files/v2.raw.gz
xz -0 -T0 -c v1.raw >var/files/v1.raw.xz
cp v2.raw var/files/v2.raw
n=0
for f in v1.raw.zst v2.raw.gz v1.raw.xz v2.raw; do
  n=$((n + 1))
  src=${f%%.raw*}.raw
  fmt=raw${f#*.raw}
  "$KILN" image register ext $n --url "$URL/files/$f" --sha256 "$(sha256sum <"$src" | cut -d' ' -f1)" \
    --size $((64 << 20)) --format "$fmt" --sign signer.pem >/dev/null
  wipe
  api PUT /api/v1/machines/1/assignment "{\"image\":\"ext\",\"version\":\"$n\",\"force\":true}"
  DEP=$(jqb .id); api POST "/api/v1/deployments/$DEP/agent-ticket"; AT=$(jqb .ticket)
  agent "$URL"
  expect_eq "$RC" 0 "external $fmt image deployed: $(tail -2 agent.log)"
  disk_is "$src" && ok || fail "the device holds $src after streaming $f"
  deployment_status
  expect_eq "$STATUS_NOW" succeeded "external $fmt deployment succeeded"
done
# Registered with the wrong SHA-256: the stream is written, but the disk must not boot it.
"$KILN" image register ext bad --url "$URL/files/v1.raw.zst" --sha256 "$(printf '0%.0s' {1..64})" \
  --size $((64 << 20)) --format raw.zst --sign signer.pem >/dev/null
wipe
api PUT /api/v1/machines/1/assignment '{"image":"ext","version":"bad","force":true}'
DEP=$(jqb .id); api POST "/api/v1/deployments/$DEP/agent-ticket"; AT=$(jqb .ticket)
agent "$URL"
expect_eq "$RC" 1 "a hash mismatch fails the external deployment"
deployment_status
expect_eq "$STATUS_NOW" failed "reported failed"
[[ "$(jqb .status_reason)" == *"has SHA-256"*"left unbootable"* ]] && ok || fail "mismatch explained: $(jqb .status_reason)"
cmp -s <(head -c 1M "$LOOP") <(head -c 1M /dev/zero) && ok || fail "no partition table written after a mismatch"
# Registered with the wrong size: refused as soon as the stream runs past it.
"$KILN" image register ext short --url "$URL/files/v2.raw" --sha256 "$(sha256sum <v2.raw | cut -d' ' -f1)" \
  --size $((32 << 20)) --sign signer.pem >/dev/null
api PUT /api/v1/machines/1/assignment '{"image":"ext","version":"short","force":true}'
DEP=$(jqb .id); api POST "/api/v1/deployments/$DEP/agent-ticket"; AT=$(jqb .ticket)
agent "$URL"
expect_eq "$RC" 1 "a stream longer than registered fails"
grep -q "more than the registered" agent.log && ok || fail "size mismatch explained: $(tail -2 agent.log)"
# Signed-only at the agent: this kilnd has no trusted keys and registers anything, but an agent
# with a baked-in key writes an external image only with a signature by it over exactly its
# name, version, URL, hash, size and format.
V1SHA=$(sha256sum <v1.raw | cut -d' ' -f1)
"$KILN" image register ext unsigned --url "$URL/files/v1.raw.zst" --sha256 "$V1SHA" \
  --size $((64 << 20)) --format raw.zst >/dev/null
"$KILN" key generate --out outsider >/dev/null
"$KILN" image register ext stranger --url "$URL/files/v1.raw.zst" --sha256 "$V1SHA" \
  --size $((64 << 20)) --format raw.zst --sign outsider.pem >/dev/null
# A signature made for another URL, carried over to this registration.
sig=$("$KILN" --json image register ext moved --url "$URL/files/elsewhere.raw.zst" --sha256 "$V1SHA" \
  --size $((64 << 20)) --format raw.zst --sign signer.pem | jq -r .signature)
api POST /api/v1/images/ext/versions/moved2 "{\"source_url\":\"$URL/files/v1.raw.zst\",\"sha256\":\"$V1SHA\",\"size_bytes\":$((64 << 20)),\"format\":\"raw.zst\",\"signature\":\"$sig\"}"
expect_status 201 "kilnd without trusted keys stores a signature unchecked"
for v in unsigned stranger moved2; do
  wipe
  api PUT /api/v1/machines/1/assignment "{\"image\":\"ext\",\"version\":\"$v\",\"force\":true}"
  DEP=$(jqb .id); api POST "/api/v1/deployments/$DEP/agent-ticket"; AT=$(jqb .ticket)
  agent "$URL"
  expect_eq "$RC" 1 "the agent refuses the $v external image"
  deployment_status
  [[ "$STATUS_NOW:$(jqb .status_reason)" == failed:*"trusted key"* ]] && ok ||
    fail "$v: refusal reported: $STATUS_NOW $(jqb .status_reason)"
  cmp -s <(head -c 1M "$LOOP") <(head -c 1M /dev/zero) && ok || fail "$v: the disk was not touched"
done

# --- refusals before the disk is touched ---------------------------------------------------
assign 1
"$KILN" key generate --out stranger >/dev/null
rc=0; "$AGENT" --server "$URL" --ticket "$AT" --disk "$LOOP" --trust-key stranger.pub.pem --after none >agent.log 2>&1 || rc=$?
expect_eq "$rc" 1 "untrusted signature refused"
grep -q "signature" agent.log && ok || fail "signature failure explained: $(cat agent.log)"
deployment_status
expect_eq "$STATUS_NOW" failed "signature failure reported"
# A Kiln-Signature header that is not hex (rewritten on the wire): a failed deployment whose
# reason names the header, never a crash that leaves kilnd waiting.
assign 1
start_proxy --bad-signature 1
rc=0; "$AGENT" --server "$PURL" --ticket "$AT" --disk "$LOOP" --trust-key signer.pub.pem --after none >agent.log 2>&1 || rc=$?
stop_proxy
expect_eq "$(grep -c '^chaos_proxy: non-hex Kiln-Signature' proxy.log)" 1 "the proxy rewrote the signature header"
expect_eq "$rc" 1 "a non-hex Kiln-Signature fails the deployment: $(tail -2 agent.log)"
deployment_status
expect_eq "$STATUS_NOW" failed "the bad signature header is reported to kilnd"
[[ "$(jqb .status_reason)" == *"Kiln-Signature header is not hex"* ]] && ok \
  || fail "the reason names the header: $(jqb .status_reason)"
truncate -s 32M small.img
SMALL=$(losetup -f --show small.img)
CLEANUP_CMDS+=("losetup -d $SMALL")
assign 1
rc=0; "$AGENT" --server "$URL" --ticket "$AT" --disk "$SMALL" --trust-key signer.pub.pem --after none >agent.log 2>&1 || rc=$?
expect_eq "$rc" 1 "a disk too small is refused"
grep -q "the image needs" agent.log && ok || fail "preflight explained: $(cat agent.log)"
cmp -s "$SMALL" small.img && ok || fail "the small disk was not touched"
rc=0; "$AGENT" --server "$URL" --ticket nope --disk "$LOOP" --trust-key signer.pub.pem >agent.log 2>&1 || rc=$?
expect_eq "$rc" 1 "a bad ticket is refused"
finish
