#!/usr/bin/env bash
# Several kilnd instances, each with its own images directory: a chunk uploaded to one is served
# by the others, which fetch it from their cluster.peers, verify it and keep it.
#   - A (private chunks: images.chunks_require_token) holds the image; B, with A as its peer, has
#     never seen it: GET B/v1/chunks/<sha> answers the chunk, byte for byte, and B keeps it
#     (its file is on B's disk; a second GET does not go to A again); B authenticated to A with
#     the cluster token (A refuses the same request without it);
#   - a bad peer (a plain HTTP server answering wrong bytes) is listed first for C: its answer is
#     rejected (logged, counted bad_hash, nothing stored) and C serves the chunk from A;
#   - a peer's own fetch (Kiln-Cluster-Fetch) is answered with what the instance has: 404, no
#     chain of fetches between peers;
#   - concurrent misses for one chunk fetch it once;
#   - an unknown chunk is a 404 after every peer said so;
#   - an https:// peer (A's TLS listener): D, with A's https URL first and its plain one second,
#     fetches over TLS with A's certificate checked against cluster.ca_file (no failover to the
#     plain URL); E, trusting another CA, refuses A (the handshake fails before any request, so
#     the token is never sent) and marks it down (the backoff that follows is unit-tested with a
#     fake clock); D's boot script over https hands the agent https fallbacks only (not A's
#     plain URL), E's over http the https peer too.
# Manifests are served to peers under /v1/manifests/ (the cluster token only); fetching one needs
# the shared catalogue (its image hash): unit tests here, the PostgreSQL cluster test end to end.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$KILN" key generate --out signer >/dev/null
head -c $((3 << 20)) /dev/urandom | base64 -w 0 | head -c $((4 << 20)) >a.raw
"$KILN" image build a.raw -o a.kiln --name os-a --version 1 --chunk-size 1M --sign signer.pem \
  >/dev/null 2>&1 || fail "build"
head -c 48 /dev/urandom | base64 -w 0 >cluster.token
new_ca site-ca
new_ca other-ca
new_cert a-tls site-ca "IP:127.0.0.1"
new_cert d-tls site-ca "IP:127.0.0.1"
metric() { # URL FAMILY-AND-LABELS — the sample's value (0 when absent)
  curl -s "$1/metrics" | awk -v k="$2" '$1 == k { print $2; found=1 } END { if (!found) print 0 }'
}

# A: holds the image, private chunks, accepts the cluster token.
cat >a.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"], "chunks_require_token": true },
  "cluster": { "token_file": "$WORK/cluster.token" } }
JSON
DATA_DIR=$WORK/a start_kilnd --config a.json --tls-listen 127.0.0.1:0 --tls-cert a-tls.pem \
  --tls-key a-tls.key
A_URL=$URL
A_HTTPS=$HTTPS_URL
A_PID=$KILND_PID
TOKEN=$(DATA_DIR=$WORK/a make_token ops admin)
KILN_URL=$A_URL KILN_TOKEN=$TOKEN "$KILN" image push a.kiln >/dev/null 2>&1 || fail "push to A"
api GET /api/v1/images/os-a/versions/1/manifest
expect_status 200 "A's manifest"
mapfile -t CHUNKS < <(jqb '.chunks[] | select(.[0] == "D" or .[0] == "R") | .[1]')
[[ ${#CHUNKS[@]} -ge 3 ]] && ok || fail "the image has ${#CHUNKS[@]} data chunks"
C0=${CHUNKS[0]}
a_file() { find "$WORK/a/images/chunks" -name "$1.*" | head -n1; }

code=$(curl -s -o /dev/null -w '%{http_code}' "$A_URL/v1/chunks/$C0")
expect_eq "$code" 401 "A's chunks are private: no token, no chunk"
log "manifests are served to peers (the cluster token only)"
CT=(-H "Authorization: Bearer $(cat cluster.token)")
code=$(curl -s -o peer-manifest.json -w '%{http_code}' "${CT[@]}" "$A_URL/v1/manifests/os-a/1.json")
expect_eq "$code" 200 "a peer reads A's manifest"
cmp -s peer-manifest.json "$WORK/a/images/manifests/os-a/1.json" && ok || fail "the stored bytes"
code=$(curl -s -o peer-manifest.sig -w '%{http_code}' "${CT[@]}" "$A_URL/v1/manifests/os-a/1.sig")
expect_eq "$code" 200 "and its signature"
expect_eq "$(stat -c %s peer-manifest.sig)" 64 "an Ed25519 signature"
code=$(curl -s -o /dev/null -w '%{http_code}' "$A_URL/v1/manifests/os-a/1.json")
expect_eq "$code" 401 "no token, no manifest"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$A_URL/v1/manifests/os-a/1.json")
expect_eq "$code" 401 "an API token is not the cluster token"
code=$(curl -s -o /dev/null -w '%{http_code}' "${CT[@]}" "$A_URL/v1/manifests/os-a/..%2F..%2Fkiln.db")
[[ $code == 404 || $code == 400 ]] && ok || fail "a path out of the manifests: $code"

# B: A as its peer; its own (empty) images directory.
cat >b.json <<JSON
{ "cluster": { "peers": ["$A_URL"], "token_file": "$WORK/cluster.token", "fetch_timeout_ms": 3000 } }
JSON
DATA_DIR=$WORK/b start_kilnd --config b.json
B_URL=$URL
[[ -z $(find "$WORK/b/images/chunks" -type f) ]] && ok || fail "B starts without chunks"

log "a chunk B lacks is fetched from A, verified, kept and served"
code=$(curl -s -o b0.bin -w '%{http_code}' "$B_URL/v1/chunks/$C0")
expect_eq "$code" 200 "B serves A's chunk"
cmp -s b0.bin "$(a_file "$C0")" && ok || fail "B's answer is A's chunk byte for byte"
[[ -n $(find "$WORK/b/images/chunks" -name "$C0.*") ]] && ok || fail "B kept the chunk on its disk"
expect_eq "$(metric "$B_URL" 'kiln_cluster_fetches_total{kind="chunk",result="ok"}')" 1 "one fetch"
code=$(curl -s -o /dev/null -w '%{http_code}' "$B_URL/v1/chunks/$C0")
expect_eq "$code" 200 "again"
expect_eq "$(metric "$B_URL" 'kiln_cluster_fetches_total{kind="chunk",result="ok"}')" 1 \
  "the second GET is served from B's disk"
grep -q "$(cat cluster.token)" "$WORK"/kilnd.*.log && fail "the cluster token is in a log" || ok

log "a peer's own fetch is not forwarded (no loops)"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Kiln-Cluster-Fetch: 1' "$B_URL/v1/chunks/${CHUNKS[1]}")
expect_eq "$code" 404 "B answers a peer's fetch with what it has"
[[ -z $(find "$WORK/b/images/chunks" -name "${CHUNKS[1]}.*") ]] && ok || fail "and fetched nothing"

log "concurrent misses fetch once"
PAR=()
for i in 1 2 3 4 5 6; do
  curl -s -o "par.$i" -w '%{http_code}\n' "$B_URL/v1/chunks/${CHUNKS[2]}" >"par.$i.code" &
  PAR+=($!)
done
wait "${PAR[@]}"
for i in 1 2 3 4 5 6; do
  expect_eq "$(cat "par.$i.code")" 200 "concurrent GET $i"
  cmp -s "par.$i" "$(a_file "${CHUNKS[2]}")" && ok || fail "concurrent GET $i bytes"
done
expect_eq "$(metric "$B_URL" 'kiln_cluster_fetches_total{kind="chunk",result="ok"}')" 2 \
  "six concurrent misses, one fetch"

log "an unknown chunk is a 404 once every peer said so"
UNKNOWN=$(printf 'nothing' | sha256sum | cut -c1-64)
code=$(curl -s -o /dev/null -w '%{http_code}' "$B_URL/v1/chunks/$UNKNOWN")
expect_eq "$code" 404 "unknown chunk"

log "an https peer: its certificate is checked; the token goes over TLS only"
cat >d.json <<JSON
{ "cluster": { "peers": ["$A_HTTPS", "$A_URL"], "ca_file": "$WORK/site-ca.pem",
               "token_file": "$WORK/cluster.token", "fetch_timeout_ms": 3000 } }
JSON
DATA_DIR=$WORK/d start_kilnd --config d.json --tls-listen 127.0.0.1:0 --tls-cert d-tls.pem \
  --tls-key d-tls.key
D_URL=$URL
D_HTTPS=$HTTPS_URL
code=$(curl -s -o d0.bin -w '%{http_code}' "$D_URL/v1/chunks/$C0")
expect_eq "$code" 200 "D serves A's chunk"
cmp -s d0.bin "$(a_file "$C0")" && ok || fail "D's answer is A's chunk byte for byte"
expect_eq "$(metric "$D_URL" 'kiln_cluster_fetches_total{kind="chunk",result="ok"}')" 1 \
  "fetched from the first peer, A's https listener"
expect_eq "$(metric "$D_URL" 'kiln_cluster_fetches_total{kind="chunk",result="failed"}')" 0 \
  "the TLS fetch did not fail over to the plain URL"
MAC=52:54:00:c1:05:7e
curl -s --cacert site-ca.pem "$D_HTTPS/boot/${MAC//:/-}.ipxe" -o d-https.ipxe
grep -q "kiln.server=$D_HTTPS,$A_HTTPS " d-https.ipxe && ok ||
  fail "booted over https, the agent gets the https peer only: $(grep -o 'kiln.server=[^ ]*' d-https.ipxe)"
cat >e.json <<JSON
{ "cluster": { "peers": ["$A_HTTPS"], "ca_file": "$WORK/other-ca.pem",
               "token_file": "$WORK/cluster.token", "fetch_timeout_ms": 3000 } }
JSON
DATA_DIR=$WORK/e start_kilnd --config e.json
E_URL=$URL
E_LOG=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
code=$(curl -s -o /dev/null -w '%{http_code}' "$E_URL/v1/chunks/$C0")
expect_eq "$code" 404 "E does not trust A's certificate: no chunk"
[[ -z $(find "$WORK/e/images/chunks" -name "$C0.*") ]] && ok || fail "E stored nothing"
grep -q "event=cluster.source_down source=$A_HTTPS .*TLS handshake: the server's certificate is not trusted" \
  "$E_LOG" && ok || fail "E says why: $(grep -m1 cluster.source_down "$E_LOG")"
expect_eq "$(metric "$E_URL" "kiln_cluster_source_up{source=\"$A_HTTPS\"}")" 0 "A is down for E"
curl -s "$E_URL/boot/${MAC//:/-}.ipxe" -o e-http.ipxe
grep -q "kiln.server=$E_URL,$A_HTTPS " e-http.ipxe && ok ||
  fail "booted over http, the https peer too: $(grep -o 'kiln.server=[^ ]*' e-http.ipxe)"

log "a peer answering wrong bytes is rejected; the next peer serves"
mkdir -p bad/v1/chunks
for c in "${CHUNKS[@]}"; do head -c 4096 /dev/urandom >"bad/v1/chunks/$c"; done
BAD_PORT=$(free_port)
python3 -m http.server "$BAD_PORT" --bind 127.0.0.1 --directory bad >bad.log 2>&1 &
BAD_PID=$!
CLEANUP_CMDS+=("kill $BAD_PID")
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$BAD_PORT/" && break
  sleep 0.05
done
cat >c.json <<JSON
{ "cluster": { "peers": ["http://127.0.0.1:$BAD_PORT", "$A_URL"],
               "token_file": "$WORK/cluster.token", "fetch_timeout_ms": 3000 } }
JSON
DATA_DIR=$WORK/c start_kilnd --config c.json
C_URL=$URL
C_LOG=$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log
code=$(curl -s -o c1.bin -w '%{http_code}' "$C_URL/v1/chunks/${CHUNKS[1]}")
expect_eq "$code" 200 "C serves the chunk from its second peer"
cmp -s c1.bin "$(a_file "${CHUNKS[1]}")" && ok || fail "C's answer is the real chunk"
expect_eq "$(metric "$C_URL" 'kiln_cluster_fetches_total{kind="chunk",result="bad_hash"}')" 1 \
  "the bad peer's answer counted"
grep -q 'event=cluster.fetch_rejected kind=chunk' "$C_LOG" && ok || fail "the rejection is logged"
grep -q "Authorization" bad.log && fail "the bad peer logged a token header" || ok
log "the bad peer alone: nothing is stored"
kill -KILL "$A_PID"
code=$(curl -s -o /dev/null -w '%{http_code}' "$C_URL/v1/chunks/${CHUNKS[0]}")
expect_eq "$code" 404 "only wrong bytes (and a dead A): not found"
[[ -z $(find "$WORK/c/images/chunks" -name "${CHUNKS[0]}.*") ]] && ok || fail "nothing stored"
[[ -z $(find "$WORK/c/images/tmp" -type f) ]] && ok || fail "no temporary file left"
expect_eq "$(metric "$C_URL" 'kiln_cluster_fetches_total{kind="chunk",result="bad_hash"}')" 2 \
  "the second bad answer counted"
expect_eq "$(metric "$C_URL" 'kiln_cluster_fetches_total{kind="chunk",result="failed"}')" 1 \
  "the dead peer counted as failed"
finish
