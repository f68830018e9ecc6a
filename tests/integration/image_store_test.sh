#!/usr/bin/env bash
# The image store behind a running kilnd: .kiln uploads streamed with curl and `kiln image
# push`, verified (signature, every chunk) before a version appears; refusals leave nothing
# behind; chunks deduplicated across versions and served by hash to curl (ETag, immutable
# caching, Range, 304); manifests served with their signature (checked with openssl); delete
# refused while assigned, and garbage collection of unreferenced chunks; a delete during a
# long import never stalls kilnd's one I/O thread.
source "$(dirname "$0")/lib.sh"

cd "$WORK"
"$KILN" key generate --out signer >/dev/null
"$KILN" key generate --out other >/dev/null

# Version 1: 40 chunks of 1 MiB, compressible and all different, then 8 MiB of zeroes.
head -c $((30 << 20)) /dev/urandom | base64 -w 0 >v1.raw   # 40 MiB of text
truncate -s 48M v1.raw
# Version 2 differs in 2 of the 40 data chunks (5%).
cp v1.raw v2.raw
head -c $((3 << 18)) /dev/urandom | base64 -w 0 | dd of=v2.raw bs=1M seek=3 conv=notrunc status=none
head -c $((3 << 18)) /dev/urandom | base64 -w 0 | dd of=v2.raw bs=1M seek=30 conv=notrunc status=none
build() { "$KILN" image build "$1" -o "$2" --name "$3" --version "$4" --chunk-size 1M "${@:5}" >/dev/null 2>&1; }
build v1.raw v1.kiln os 1 --sign signer.pem
build v2.raw v2.kiln os 2 --sign signer.pem
build v1.raw unsigned.kiln os 3
build v1.raw wrongkey.kiln os 3 --sign other.pem
build v2.raw v1-other.kiln os 1 --sign signer.pem   # same name:version, other content
head -c $((36 << 20)) /dev/urandom | base64 -w 0 >big.raw
build big.raw big.kiln os 9 --sign signer.pem

cat >kilnd.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"], "max_upload_bytes": $(( $(stat -c %s v1.kiln) + 4096 )) } }
JSON
start_kilnd --config kilnd.json
TOKEN=$(make_token ops admin)
READ=$(make_token viewer read)
STORE=$WORK/var/images
export KILN_URL=$URL KILN_TOKEN=$TOKEN

# upload FILE NAME VERSION [TOKEN] — POSTs a file with curl; sets STATUS and BODY.
upload() {
  STATUS=$(curl -s --max-time 120 -o "$WORK/body" -w '%{http_code}' -X POST -H "Authorization: Bearer ${4:-$TOKEN}" \
    -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$URL/api/v1/images/$2/versions/$3") || true
  BODY=$(cat "$WORK/body" 2>/dev/null || true)
}
chunk_files() { find "$STORE/chunks" -type f | wc -l; }
tmp_empty() { [[ -z "$(ls -A "$STORE/tmp")" ]]; }

# --- refusals before anything is stored ----------------------------------------------------
upload v1.kiln os 1 nope
expect_status 401 "upload without a valid token"
upload v1.kiln os 1 "$READ"
expect_status 403 "upload with a read token"
upload unsigned.kiln os 3
expect_status 403 "unsigned image refused where a trusted key is configured"
upload wrongkey.kiln os 3
expect_status 403 "image signed by an untrusted key refused"
upload v1.kiln os 2
expect_status 422 "manifest name/version must match the URL"
expect_eq "$(jqb .error.message)" "the image is os:1, uploaded as os:2" "mismatch explained"
upload big.kiln os 9
expect_status 413 "upload above images.max_upload_bytes"
# One flipped byte inside the 6th payload: refused naming the chunk, nothing stored.
cp v1.kiln bad.kiln
printf '\x00' | dd of=bad.kiln bs=1 seek=$((5 * 300000)) conv=notrunc status=none
upload bad.kiln os 1
expect_status 422 "corrupt upload refused"
[[ "$(jqb .error.message)" == *"chunk "*"SHA-256 mismatch"* || "$(jqb .error.message)" == *"chunk "*"corrupt"* ]] \
  && ok || fail "corruption names the chunk: $BODY"
# A truncated upload: the client announces the whole length, sends half and hangs up.
port=${URL##*:}
len=$(stat -c %s v1.kiln)
{
  printf 'POST /api/v1/images/os/versions/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n' "$TOKEN"
  printf 'Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n' "$len"
  head -c $((len / 2)) v1.kiln
} >partial.req
( exec 3<>/dev/tcp/127.0.0.1/"$port"; cat partial.req >&3; exec 3>&- ) || true
for _ in $(seq 50); do grep -q 'event=http.upload_aborted' "$WORK"/kilnd.0.log && break; sleep 0.1; done
grep -q 'event=http.upload_aborted' "$WORK"/kilnd.0.log && ok || fail "kilnd saw the upload end early"
api GET /api/v1/images/os/versions/1
expect_status 404 "no version after refused and interrupted uploads"
expect_eq "$(chunk_files)" 0 "no chunk stored by any refused upload"
tmp_empty && ok || fail "no upload file left behind: $(ls "$STORE/tmp")"
kill -0 "$KILND_PID" && ok || fail "kilnd survived the interrupted upload"

# --- a good upload ------------------------------------------------------------------------
"$KILN" image push v1.kiln >push.out 2>push.err && ok || fail "kiln image push: $(cat push.err)"
grep -q "pushed image os:1 (48.0 MiB, 40 chunks, 40 new" push.out && ok || fail "push summary: $(cat push.out)"
api GET /api/v1/images/os/versions/1
expect_status 200 "pushed version visible"
expect_eq "$(jqb .format)" kiln "format"
expect_eq "$(jqb .sha256)" "$(sha256sum <v1.raw | cut -d' ' -f1)" "version sha256 = sha256sum of the raw image"
expect_eq "$(jqb .size_bytes)" $((48 << 20)) "version size"
upload v1.kiln os 1
expect_status 200 "the same upload again is idempotent"
expect_eq "$(jqb .import.new_chunks)" 0 "nothing new stored the second time"
upload v1-other.kiln os 1
expect_status 409 "other content under an existing version (versions are immutable)"
tmp_empty && ok || fail "no upload file left after success"

# --- dedup ----------------------------------------------------------------------------------
v1_bytes=$(find "$STORE/chunks" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
upload v2.kiln os 2
expect_status 201 "version 2 uploaded"
expect_eq "$(jqb .import.chunks)" 40 "version 2 has 40 payload chunks"
expect_eq "$(jqb .import.new_chunks)" 2 "only the 2 changed chunks are new"
both_bytes=$(find "$STORE/chunks" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
pct=$((100 * both_bytes / v1_bytes))
log "two versions sharing 95% of chunks use ${pct}% of one version's chunk bytes"
[[ $pct -le 106 ]] && ok || fail "dedup: two versions use ${pct}% of one version's space"

# --- serving chunks -------------------------------------------------------------------------
curl -s -H "Authorization: Bearer $READ" -D manifest.hdr -o manifest.json "$URL/api/v1/images/os/versions/1/manifest"
"$KILN" --json image inspect v1.kiln >inspect.json 2>/dev/null
expect_eq "$(jq -cS . manifest.json)" "$(jq -cS . inspect.json)" "served manifest = the image's manifest"
etag=$(grep -i '^etag:' manifest.hdr | tr -d '\r"' | awk '{print $2}')
expect_eq "$etag" "$(sha256sum <manifest.json | cut -d' ' -f1)" "manifest ETag is its SHA-256"
sig=$(grep -i '^kiln-signature:' manifest.hdr | tr -d '\r' | awk '{print $2}')
printf "$(sed 's/../\\x&/g' <<<"$sig")" >manifest.sig
openssl pkeyutl -verify -pubin -inkey signer.pub.pem -rawin -in manifest.json -sigfile manifest.sig >/dev/null 2>&1 \
  && ok || fail "openssl verifies the served signature over the served manifest bytes"
sha=$(jq -r '[.chunks[] | select(.[0]=="D")][0][1]' manifest.json)
curl -s -D chunk.hdr -o chunk.zst "$URL/v1/chunks/$sha"
grep -qi '^content-type: application/zstd' chunk.hdr && ok || fail "chunk content type: $(cat chunk.hdr)"
grep -qi '^cache-control: public, max-age=31536000, immutable' chunk.hdr && ok || fail "chunk is immutable"
grep -qi "^etag: \"$sha\"" chunk.hdr && ok || fail "chunk ETag is its hash"
expect_eq "$(zstd -dc chunk.zst | sha256sum | cut -d' ' -f1)" "$sha" "zstd -d of the chunk hashes to its name"
expect_eq "$(curl -s -o part -w '%{http_code}' -r 0-99 "$URL/v1/chunks/$sha")" 206 "Range request"
expect_eq "$(cmp part <(head -c 100 chunk.zst) && echo same)" same "Range returns those bytes"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: \"$sha\"" "$URL/v1/chunks/$sha")" 304 "revalidation"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -I "$URL/v1/chunks/$sha")" 200 "HEAD"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chunks/$(printf '0%.0s' {1..64})")" 404 "unknown chunk"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chunks/..%2Fmanifests")" 404 "not a hash"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$URL/v1/chunks/$sha")" 405 "chunks are read-only"

# --- delete and garbage collection ---------------------------------------------------------
only_v1=$(jq -r '.chunks[3][1]' manifest.json)
curl -s -H "Authorization: Bearer $READ" -o manifest2.json "$URL/api/v1/images/os/versions/2/manifest"
api POST /api/v1/machines '{"mac":"52:54:00:00:00:01"}'
api PUT /api/v1/machines/52:54:00:00:00:01/assignment '{"image":"os","version":"1"}'
expect_status 201 "assign version 1"
api DELETE /api/v1/images/os/versions/1
expect_status 409 "version 1 cannot be deleted while assigned"
api PUT /api/v1/machines/52:54:00:00:00:01/assignment '{"image":"os","version":"2","force":true}'
api DELETE /api/v1/images/os/versions/1
expect_status 204 "version 1 deleted once unassigned"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chunks/$only_v1")" 404 "a chunk only version 1 used is collected"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chunks/$sha")" 200 "a chunk version 2 shares stays"
expect_eq "$(chunk_files)" 40 "exactly version 2's chunks remain"

# --- restart: everything still there --------------------------------------------------------
stop_kilnd TERM
start_kilnd --config kilnd.json
api GET /api/v1/images/os/versions/2/manifest
expect_status 200 "manifest served after a restart"
for s in $(jq -r '.chunks[] | select(.[0]=="D" or .[0]=="R") | .[1]' manifest2.json | sort -u); do
  curl -s "$URL/v1/chunks/$s" | zstd -dc | sha256sum | grep -q "^$s " || fail "chunk $s after restart"
done
ok

# --- a delete never stalls an I/O thread, even while an import holds the chunk store --------
# One I/O thread. While a large upload is importing (its chunks being stored, under the chunk
# store's lock), version 1 is deleted: /healthz must still answer before that import ends. The
# delete answers after the import (its collection runs once the import is done); nothing is lost.
# Ordering, not timing: each step waits for a state the server shows (a chunk stored, the
# version gone from the database); on a blocked I/O thread /healthz cannot answer before the
# manifest, which goes last, is stored. The run tells nothing if the import ended before
# /healthz was even sent (storage too fast, e.g. tmpfs: logged, not failed); the margin, in
# chunks still to store when /healthz answered, is logged.
stop_kilnd TERM
head -c $((1 << 20)) /dev/urandom | base64 -w 0 >small.raw   # 1.3 MiB of text: 6 chunks
head -c $((24 << 20)) /dev/urandom | base64 -w 0 >large.raw  # 32 MiB of text: 128 chunks
for v in small:1 large:2; do
  "$KILN" image build "${v%:*}.raw" -o "${v%:*}.kiln" --name os --version "${v#*:}" --chunk-size 256K \
    --sign signer.pem >/dev/null 2>&1
done
"$KILN" --json image inspect large.kiln >large.json 2>/dev/null
[[ "$(jq -r '[.chunks[][0]] | unique | join(",")' large.json)" == D ]] && ok \
  || fail "the large image is all data chunks (the check below decompresses them in a row)"
cat >one-thread.json <<JSON
{ "threads": 1, "images": { "trusted_keys": ["$WORK/signer.pub.pem"] } }
JSON
DATA_DIR=$WORK/one-thread
start_kilnd --config one-thread.json
grep -q 'event=daemon.listening .* threads=1 ' "$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log" \
  && ok || fail "kilnd runs one I/O thread"
TOKEN=$(make_token ops admin)
STORE=$DATA_DIR/images
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push small.kiln >/dev/null 2>push.err && ok || fail "push version 1: $(cat push.err)"
"$KILN" --json image inspect small.kiln | jq -r '.chunks[][1]' >small.shas
large_stored() { find "$STORE/chunks" -type f | grep -c -v -F -f small.shas || true; }

# The large upload, in the background; large.code appears when curl has returned.
( curl -s --max-time 120 -o large.body -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
    --data-binary @large.kiln \
    "$URL/api/v1/images/os/versions/2" >large.code.tmp || true
  mv large.code.tmp large.code ) &
upload_pid=$!
# The import is under way once its first chunk is stored: the chunk store's lock is held
# from the first chunk to the manifest (which goes last).
large_manifest=$STORE/manifests/os/2.json
for _ in $(seq 600); do
  [[ $(large_stored) -gt 0 || -e large.code ]] && break
  sleep 0.02
done
[[ $(large_stored) -gt 0 ]] && ok \
  || fail "the large import stored chunks (upload answered: $(cat large.code 2>/dev/null))"

# DELETE version 1 in the background; wait until its handler has run (the version left the
# catalogue: before the fix, the same handler then waited on the chunk store's lock).
( curl -s --max-time 120 -o delete.body -w '%{http_code}' -X DELETE \
    -H "Authorization: Bearer $TOKEN" "$URL/api/v1/images/os/versions/1" >delete.code.tmp || true
  mv delete.code.tmp delete.code ) &
delete_pid=$!
deleted() {
  [[ "$(sqlite3 -cmd '.timeout 2000' "$DATA_DIR/kiln.db" "SELECT count(*) FROM image_versions
        WHERE name='os' AND version='1' AND deleted_at IS NOT NULL")" == 1 ]]
}
for _ in $(seq 600); do
  deleted || [[ -e delete.code ]] && break
  sleep 0.02
done
deleted && ok || fail "the DELETE reached its handler (answered: $(cat delete.code 2>/dev/null))"

# The one I/O thread is free: /healthz answers while the large import is still storing.
# (If the import has already ended, /healthz cannot tell: the run is inconclusive.)
[[ -e $large_manifest ]] && stored_before_health=yes || stored_before_health=no
health=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$URL/healthz" || true)
stored_at_health=$(large_stored)
[[ -e $large_manifest ]] && manifest_at_health=yes || manifest_at_health=no
[[ -e large.code ]] && upload_at_health=yes || upload_at_health=no
expect_eq "$health" 200 "/healthz during the import and the delete"
if [[ $stored_before_health == yes ]]; then
  log "inconclusive: the large import ended before /healthz was sent (storage too fast)"
else
  expect_eq "manifest stored: $manifest_at_health, upload answered: $upload_at_health" \
    "manifest stored: no, upload answered: no" \
    "/healthz answered before the large import ended (one I/O thread must not wait for it)"
  log "/healthz answered with $stored_at_health of 128 large chunks stored"
fi

wait "$delete_pid" "$upload_pid" || true
expect_eq "$(cat delete.code 2>/dev/null)" 204 "version 1 deleted: $(cat delete.body 2>/dev/null)"
expect_eq "$(cat large.code 2>/dev/null)" 201 "version 2 created: $(cat large.body 2>/dev/null)"
api GET /api/v1/images/os/versions/1
expect_status 404 "version 1 is gone"
api GET /api/v1/images/os/versions/1/manifest
expect_status 404 "version 1's manifest is gone"
api GET /api/v1/images/os/versions/2
expect_status 200 "version 2 is there"
expect_eq "$(jqb .sha256)" "$(sha256sum <large.raw | cut -d' ' -f1)" "version 2's sha256"
# The collection (after the import) kept every chunk of version 2 and only those.
expect_eq "$(chunk_files)" 128 "exactly version 2's chunks remain"
urls=()
for s in $(jq -r '.chunks[][1]' large.json); do urls+=("$URL/v1/chunks/$s"); done
expect_eq "$(curl -s "${urls[@]}" | zstd -dc | sha256sum | cut -d' ' -f1)" \
  "$(sha256sum <large.raw | cut -d' ' -f1)" "version 2's chunks, served in order, are the image"

# --- import limits: declared size, chunk count, concurrent uploads, free space, cancel --------
# An import costs what the image *declares*: a few hundred KB of manifest can declare terabytes
# of zero chunks. zero_kiln NAME VERSION SIZE CHUNK OUT writes a well-formed unsigned .kiln of
# ZERO chunks only (no payloads). Its whole-image SHA-256 is right for small images; for huge
# ones it is a placeholder (computing it would cost what the server is spared), so such an
# import, if it ran to the end, would fail with a mismatch, not succeed.
stop_kilnd TERM
unset DATA_DIR
zero_kiln() {
  python3 - "$@" <<'PY'
import hashlib, json, struct, sys
name, version, size, chunk, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = (size + chunk - 1) // chunk
if size <= 64 << 20:
    sha = hashlib.sha256(bytes(size)).hexdigest()
else:
    sha = "ab" * 32
m = {"chunk_size": chunk, "chunks": [["Z"]] * n, "created_at": "2026-01-01T00:00:00.000Z",
     "format": 1, "labels": {}, "name": name, "partition_tables": [], "sector_size": 512,
     "sha256": sha, "size": size, "version": version}
manifest = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
header = b"KILNIMG\0" + struct.pack("<HH", 1, 0) + bytes(52)
d8 = lambda b: hashlib.sha256(b).digest()[:8]
t = b"KILNEND\0" + struct.pack("<QQQQ", 64, len(manifest), 64 + len(manifest), 0)
t += d8(header + manifest) + bytes(8)
t += d8(t)
open(out, "wb").write(header + manifest + t)
PY
}
zero_kiln os 1 $((2 << 20)) $((256 << 10)) small-zero.kiln          # 2 MiB, 8 chunks: accepted
zero_kiln os 2 $((2 << 40)) $((64 << 20)) huge.kiln                 # 2 TiB, 32,768 chunks
zero_kiln os 3 $((25 << 20)) $((256 << 10)) many.kiln               # 25 MiB, 100 chunks
zero_kiln os 4 $((4 << 40)) $((64 << 20)) stall.kiln                # 4 TiB: hours to hash
zero_kiln os 5 $((4 << 40)) $((64 << 20)) stall5.kiln
log "huge.kiln is $(stat -c %s huge.kiln) bytes declaring 2 TiB; stall.kiln $(stat -c %s stall.kiln) bytes declaring 4 TiB"

# Default max_image_bytes (1 TiB); max_chunks 64.
DATA_DIR=$WORK/limits
cat >limits.json <<JSON
{ "images": { "max_chunks": 64 } }
JSON
start_kilnd --config limits.json
LOGF=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
TOKEN=$(make_token ops admin)
STORE=$DATA_DIR/images
upload huge.kiln os 2
expect_status 413 "a small upload declaring 2 TiB is refused"
expect_eq "$(jqb .error.message)" "the image declares $((2 << 40)) bytes; this server accepts images of at most $((1 << 40)) bytes (images.max_image_bytes)" \
  "the declared-size refusal names the limit"
upload many.kiln os 3
expect_status 413 "an image of 100 chunks is refused past images.max_chunks 64"
expect_eq "$(jqb .error.message)" "the image has 100 chunks; this server accepts at most 64 (images.max_chunks); build it with a larger --chunk-size" \
  "the chunk-count refusal names the limit"
grep -q 'event=images.import_started' "$LOGF" && fail "a refused image was verified" || ok
upload small-zero.kiln os 1
expect_status 201 "an image within the limits is accepted"
api GET /api/v1/images/os/versions/2
expect_status 404 "the huge version was not registered"
expect_eq "$(ls "$STORE/manifests/os")" "1.json" "only the accepted version's manifest is stored"
tmp_empty && ok || fail "refused uploads left files in the store's tmp/"
stop_kilnd TERM

# max_concurrent_uploads 1, no size limit: a 4 TiB import holds the one slot until it is
# cancelled by deleting its version.
DATA_DIR=$WORK/limits2
cat >limits2.json <<JSON
{ "shutdown_grace_ms": 500, "images": { "max_image_bytes": 0, "max_chunks": 0, "max_concurrent_uploads": 1 } }
JSON
start_kilnd --config limits2.json
LOGF=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
TOKEN=$(make_token ops admin)
STORE=$DATA_DIR/images
# bg_upload FILE VERSION TAG — uploads in the background; TAG.code appears when curl returned.
bg_upload() {
  ( curl -s --max-time 120 -o "$3.body" -w '%{http_code}' -X POST \
      -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/octet-stream' \
      --data-binary @"$1" "$URL/api/v1/images/os/versions/$2" >"$3.code.tmp" || true
    mv "$3.code.tmp" "$3.code" ) &
}
# wait_for PATTERN FILE — bounded wait for a log line (or a file to appear).
wait_log() { for _ in $(seq 300); do grep -q "$1" "$LOGF" && return 0; sleep 0.05; done; return 1; }
wait_file() { for _ in $(seq 600); do [[ -e $1 ]] && return 0; sleep 0.05; done; return 1; }
bg_upload stall.kiln 4 stall
wait_log 'event=images.import_started image=os:4' && ok || fail "the 4 TiB import did not start"
upload small-zero.kiln os 1
expect_status 503 "a second upload while one is importing (max_concurrent_uploads 1)"
expect_eq "$(jqb .error.message)" "the limit of 1 concurrent uploads (images.max_concurrent_uploads) is reached; retry later" \
  "the concurrent-upload refusal explains itself"
curl -s -D busy.h -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/octet-stream' --data-binary @small-zero.kiln "$URL/api/v1/images/os/versions/1"
grep -qi '^retry-after: ' busy.h && ok || fail "503 for a full upload slot has Retry-After"
[[ -e stall.code ]] && fail "the 4 TiB import ended by itself ($(cat stall.code))" || ok
api DELETE /api/v1/images/os/versions/4
expect_status 204 "deleting a version whose import is running"
wait_file stall.code
expect_eq "$(cat stall.code 2>/dev/null)" 409 "the running import was cancelled"
expect_eq "$(jq -r .error.message stall.body 2>/dev/null)" "the import of os:4 was cancelled: the version was deleted" \
  "the cancelled upload says why"
grep -q 'event=images.import_cancelled image=os:4 reason=deleted' "$LOGF" && ok || fail "cancel logged"
api GET /api/v1/images/os/versions/4
expect_status 404 "the cancelled version does not exist"
[[ ! -e $STORE/manifests/os/4.json ]] && ok || fail "the cancelled version's manifest was stored"
# Its slot is free once its answer is written.
for _ in $(seq 50); do upload small-zero.kiln os 1; [[ $STATUS == 201 ]] && break; sleep 0.1; done
expect_status 201 "an upload after the cancelled one takes the free slot"

# Shutdown does not wait for a running import: it is cancelled.
bg_upload stall5.kiln 5 stall5
wait_log 'event=images.import_started image=os:5' && ok || fail "the second 4 TiB import did not start"
kill -TERM "$KILND_PID"
exited=no
for _ in $(seq 600); do kill -0 "$KILND_PID" 2>/dev/null || { exited=yes; break; }; sleep 0.05; done
expect_eq "$exited" yes "kilnd exits at SIGTERM while a 4 TiB import runs"
if [[ $exited == yes ]]; then
  rc=0; wait "$KILND_PID" || rc=$?
  expect_eq "$rc" 0 "kilnd's exit status"
else
  kill -KILL "$KILND_PID"; wait "$KILND_PID" || true
fi
grep -q 'event=images.import_stopped image=os:5' "$LOGF" && ok || fail "the stopped import is logged"
wait_file stall5.code
expect_eq "$(cat stall5.code 2>/dev/null)" 503 "the upload whose import was stopped by shutdown"
expect_eq "$(jq -r .error.message stall5.body 2>/dev/null)" \
  "the import of os:5 was cancelled: the server is shutting down" "and it says why"

# A free-space reserve larger than the filesystem: 507 before the body is read, nothing written.
DATA_DIR=$WORK/limits3
cat >limits3.json <<JSON
{ "images": { "min_free_bytes": $((1 << 62)) } }
JSON
start_kilnd --config limits3.json
LOGF=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
TOKEN=$(make_token ops admin)
STORE=$DATA_DIR/images
upload small-zero.kiln os 1
expect_status 507 "an upload that would eat into images.min_free_bytes"
[[ "$(jqb .error.message)" == "not enough free space for this upload: "*"images.min_free_bytes keeps $((1 << 62)) free for the database" ]] \
  && ok || fail "the 507 explains itself: $BODY"
expect_eq "$(jqb .error.code)" insufficient_storage "507 error code"
grep -q 'event=images.upload_refused reason=min_free_bytes' "$LOGF" && ok || fail "507 logged"
tmp_empty && ok || fail "a 507 upload left a file in tmp/"
expect_eq "$(find "$STORE/chunks" "$STORE/manifests" -type f | wc -l)" 0 "nothing stored"
api GET /api/v1/images/os/versions/1
expect_status 404 "no version registered"
stop_kilnd TERM
finish
