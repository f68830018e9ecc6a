#!/usr/bin/env bash
# Rack-local caches: Debian's nginx running the shipped deploy/rack-cache/nginx-kiln-cache.conf
# (only its EDIT lines rendered with this test's ports and paths) in front of a real kilnd whose
# images.mirrors hands the cache to agents on 127.0.0.0/8.
#   - a chunk kilnd does not have yet (404) is not cached: pushed later, it is served;
#   - an agent deploys through the cache (the plan's mirror), every chunk a MISS filling the
#     cache; a second deploy is served from it (HIT);
#   - the cache is killed (SIGKILL, master and workers) in the middle of a slow deploy: the agent
#     falls back to kilnd, does not pay the dead cache again for every chunk, and the disk is
#     the image byte for byte.
source "$(dirname "$0")/lib.sh"
AGENT=${KILN_AGENT:-$KILN_BUILD/kiln-agent} # KILN_AGENT: another build of the agent
SHIPPED=$KILN_ROOT/deploy/rack-cache/nginx-kiln-cache.conf
command -v nginx >/dev/null || { log "nginx is not installed (deploy/install-deps.sh)"; exit 1; }
cd "$WORK"
"$KILN" key generate --out signer >/dev/null
# a.raw: 8 chunks of 1 MiB (6 of them data); b.raw: 48 chunks of data. Compressible data
# (base64), so chunks are zstd frames as most real chunks are.
truncate -s 8M a.raw
head -c $((9 << 19)) /dev/urandom | base64 -w 0 | head -c $((6 << 20)) | dd of=a.raw conv=notrunc status=none
head -c $((36 << 20)) /dev/urandom | base64 -w 0 | head -c $((48 << 20)) >b.raw
for v in a b; do
  "$KILN" image build $v.raw -o $v.kiln --name os-$v --version 1 --chunk-size 1M --sign signer.pem \
    >/dev/null 2>&1 || fail "build $v"
done

NPORT=$(free_port)
CACHE_URL=http://127.0.0.1:$NPORT
cat >kilnd.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"],
              "mirrors": [{"subnet": "127.0.0.0/8", "urls": ["$CACHE_URL"]}] } }
JSON
start_kilnd --config kilnd.json
KPORT=${URL##*:}
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push a.kiln >/dev/null 2>&1 || fail "push a"
"$KILN" machine create --mac 52:54:00:00:00:41 >/dev/null

# The shipped file with its EDIT lines pointed at this test; each must have matched.
NG=$WORK/nginx
mkdir -p "$NG/tmp"
sed -e "s#/var/cache/nginx/kiln #$NG/cache #" \
  -e "s#server 10.0.0.1:8080;#server 127.0.0.1:$KPORT;#" \
  -e "s#listen 8080;#listen 127.0.0.1:$NPORT;#" \
  -e "s#/var/log/nginx/kiln-cache.access.log#$NG/access.log#" "$SHIPPED" >"$NG/kiln-cache.conf"
for want in "$NG/cache " "server 127.0.0.1:$KPORT;" "listen 127.0.0.1:$NPORT;" "$NG/access.log"; do
  grep -qF "$want" "$NG/kiln-cache.conf" && ok || fail "the shipped config has no EDIT line for '$want'"
done
NGINX_PID=""
# start_cache RATE — nginx (root master, root worker: the test's directories are private) with
# the rendered config; RATE is nginx's per-connection limit_rate (0: none). Sets NGINX_PID.
start_cache() {
  cat >"$NG/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log info;
events { worker_connections 256; }
http {
    default_type application/octet-stream;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    limit_rate $1;
    include $NG/kiln-cache.conf;
}
EOF
  nginx -e "$NG/error.log" -p "$NG/" -c "$NG/nginx.conf" -t >"$NG/configtest.log" 2>&1 ||
    { cat "$NG/configtest.log" >&2; fail "nginx refused the shipped config"; finish; }
  nginx -e "$NG/error.log" -p "$NG/" -c "$NG/nginx.conf" &
  NGINX_PID=$!
  CLEANUP_CMDS+=("kill_cache")
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$CACHE_URL/" && return 0
    sleep 0.05
  done
  fail "nginx did not start"
  finish
}
# kill_cache — SIGKILL to the master and its workers (a worker outlives a killed master).
kill_cache() {
  [[ -n "$NGINX_PID" ]] || return 0
  local workers
  workers=$(pgrep -P "$NGINX_PID" || true)
  kill -KILL "$NGINX_PID" $workers 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
}
cached_files() { find "$NG/cache" -type f 2>/dev/null | wc -l; }
chunks_of() { # IMAGE — the hashes of its data chunks
  api GET "/api/v1/images/$1/versions/1/manifest"
  jqb '.chunks[] | select(.[0] == "D" or .[0] == "R") | .[1]'
}

start_cache 0
log "a chunk kilnd does not hold yet is not cached"
B_CHUNK=$(sha256sum <(head -c 1M b.raw) | cut -c1-64)
code=$(curl -s -o /dev/null -w '%{http_code}' "$CACHE_URL/v1/chunks/$B_CHUNK")
expect_eq "$code" 404 "b's first chunk before b is pushed"
"$KILN" image push b.kiln >/dev/null 2>&1 || fail "push b"
chunks_of os-b >b.chunks
grep -qx "$B_CHUNK" b.chunks && ok || fail "b's first chunk is a data chunk"
hdr=$(curl -s -D - -o chunk.bin "$CACHE_URL/v1/chunks/$B_CHUNK")
[[ $hdr == *" 200 "* ]] && ok || fail "the cache serves the chunk once kilnd has it: $hdr"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$CACHE_URL/v1/chunks/$B_CHUNK")
expect_eq "$code" 403 "only GET and HEAD"
code=$(curl -s -o /dev/null -w '%{http_code}' "$CACHE_URL/api/v1/machines")
expect_eq "$code" 404 "the cache is no proxy for the API"

truncate -s 8M disk-a.img
truncate -s 48M disk-b.img
LOOP_A=$(losetup -f --show disk-a.img)
CLEANUP_CMDS+=("losetup -d $LOOP_A")
LOOP_B=$(losetup -f --show disk-b.img)
CLEANUP_CMDS+=("losetup -d $LOOP_B")
# deploy IMAGE LOOP [agent args] — assigns machine 1 and runs the agent; sets RC and DEP.
deploy_start() {
  api PUT /api/v1/machines/1/assignment "{\"image\":\"$1\",\"version\":\"1\",\"force\":true}"
  DEP=$(jqb .id)
  api POST "/api/v1/deployments/$DEP/agent-ticket"
  local ticket
  ticket=$(jqb .ticket)
  "$AGENT" --server "$URL" --ticket "$ticket" --disk "$2" --trust-key signer.pub.pem --after none \
    --timeout-ms 5000 --backoff-ms 50 "${@:3}" >agent.log 2>&1 &
  AGENT_PID=$!
}
deploy_wait() {
  RC=0
  wait "$AGENT_PID" || RC=$?
  AGENT_PID=""
}

log "deploy through the cache: every chunk a miss, kept"
chunks_of os-a >a.chunks
N_A=$(wc -l <a.chunks)
cp "$NG/access.log" "$NG/access.log.before"
deploy_start os-a "$LOOP_A"
deploy_wait
expect_eq "$RC" 0 "deploy a through the cache: $(tail -3 agent.log)"
cmp -s "$LOOP_A" a.raw && ok || fail "disk a is the image"
grep -q "chunk mirrors (then the server): $CACHE_URL\$" agent.log && ok ||
  fail "the plan's mirror: $(grep -i mirror agent.log)"
misses=$(diff "$NG/access.log.before" "$NG/access.log" |
  grep -c 'GET /v1/chunks/.* 200 .* cache=MISS upstream=200' || true)
expect_eq "$misses" "$N_A" "a's chunks came through the cache from kilnd"
(($(cached_files) >= N_A + 1)) && ok || fail "the cache holds a's chunks: $(cached_files) files"

log "again onto a wiped disk: served from the cache"
dd if=/dev/zero of="$LOOP_A" bs=1M count=8 oflag=direct status=none
cp "$NG/access.log" "$NG/access.log.before"
deploy_start os-a "$LOOP_A"
deploy_wait
expect_eq "$RC" 0 "redeploy a: $(tail -3 agent.log)"
cmp -s "$LOOP_A" a.raw && ok || fail "disk a is the image again"
hits=$(diff "$NG/access.log.before" "$NG/access.log" | grep -c 'cache=HIT' || true)
expect_eq "$hits" "$N_A" "a's chunks were cache hits"
kill_cache

log "the cache dies in the middle of a deploy"
start_cache 1m # about a chunk a second through the cache
N_B=$(wc -l <b.chunks)
before=$(cached_files)
deploy_start os-b "$LOOP_B" --workers 1
for _ in $(seq 1 600); do
  (($(cached_files) >= before + 6)) && break
  kill -0 "$AGENT_PID" 2>/dev/null || break
  sleep 0.1
done
at_kill=$(($(cached_files) - before + 1)) # b's first chunk was cached above
kill_cache
remaining=$((N_B - at_kill - 1)) # at most one chunk was in flight
log "killed the cache with $at_kill of $N_B chunks cached; $remaining left for kilnd"
((remaining >= 24)) && ok || fail "the cache was killed too late to show anything ($at_kill cached)"
deploy_wait
expect_eq "$RC" 0 "deploy b with the cache killed: $(tail -3 agent.log)"
cmp -s "$LOOP_B" b.raw && ok || fail "disk b is the image byte for byte"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "kilnd recorded the success"
grep -q "chunk source $CACHE_URL failed (.*): skipped for [0-9]* ms, chunks go to $URL" agent.log && ok ||
  fail "the agent says it fell back: $(grep -i 'chunk source\|retrying' agent.log | head -5)"
# Each chunk after the kill must not first pay the dead cache: a handful of retries (the
# failure, a probe per cool-down), not one per remaining chunk.
retries=$(grep -c '^kiln-agent: retrying chunk' agent.log || true)
log "retries after the kill: $retries"
((retries * 4 <= remaining)) && ok ||
  fail "$retries retries for $remaining chunks: every chunk tried the dead cache first"

log "a mirror that answers wrong bytes is failed over like a dead one"
# The agent's own --mirror (tried before the plan's dead cache, then kilnd): a proxy to kilnd
# that flips a bit in every chunk it serves.
"$KILN_BUILD/chaos_proxy" --listen 0 --upstream "$KPORT" --port-file proxy.port --lifetime-s 120 \
  --flip 100000 2>proxy.log &
KILND_PIDS+=("$!")
for _ in $(seq 1 100); do [[ -s proxy.port ]] && break; sleep 0.05; done
BAD=http://127.0.0.1:$(cat proxy.port)
dd if=/dev/zero of="$LOOP_B" bs=1M count=48 oflag=direct status=none
deploy_start os-b "$LOOP_B" --workers 1 --mirror "$BAD"
deploy_wait
expect_eq "$RC" 0 "deploy b past a corrupting mirror: $(tail -3 agent.log)"
cmp -s "$LOOP_B" b.raw && ok || fail "disk b is the image byte for byte"
grep -q "chunk mirrors (then the server): $BAD $CACHE_URL\$" agent.log && ok ||
  fail "own mirror first, then the plan's: $(grep -i 'chunk mirrors' agent.log)"
grep -q "chunk source $BAD failed (from $BAD: .*): skipped for" agent.log && ok ||
  fail "the wrong bytes count against the mirror: $(grep -i 'chunk source\|retrying' agent.log | head -5)"
flipped=$(grep -c . proxy.log || true)
retries=$(grep -c '^kiln-agent: retrying chunk' agent.log || true)
log "the corrupting mirror served $flipped damaged chunks; $retries retries for $N_B chunks"
((retries * 4 <= N_B)) && ok || fail "$retries retries for $N_B chunks: every chunk tried the bad mirror first"
finish
