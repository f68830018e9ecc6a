#!/usr/bin/env bash
# bench/api.sh — kilnd's REST API and static file serving, with nginx as the reference for files.
#
# What it measures (all over loopback, client and servers on the same host):
#   load  POST /api/v1/machines x 10,000 through one `curl --parallel` (16 keep-alive connections):
#         machine creations per second (informational; it is the setup step).
#   (a)   GET /api/v1/machines?limit=100 with a bearer token: req/s (wrk -t2 -c64).
#   (b)   GET /api/v1/machines (default page: 1,000 machines per response): req/s.
#   (c)   GET of a 4 KiB file under /files/: kilnd vs nginx, req/s.
#   (d)   one 1 GiB file streamed once with curl to /dev/null: kilnd vs nginx, GB/s (10^9 B/s).
# Both servers use the same number of threads/workers ($WORKERS, default 2) and serve the same
# files from the same directory, warm in the page cache. Figures are printed, never judged: the
# script fails only when a tool is missing or the setup does not work.
#
# Environment: DURATION (seconds per wrk run, default 10), WORKERS (kilnd --threads and nginx
# worker_processes, default 2), MACHINES (default 10000), KILN_BUILD (default ./build).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WORKERS=${WORKERS:-2}
MACHINES=${MACHINES:-10000}
LOAD_PARALLEL=16
BIG_BYTES=$((1024 * 1024 * 1024))
SMALL_BYTES=4096

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds)"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer"
[[ "$MACHINES" =~ ^[1-9][0-9]*$ && "$MACHINES" -le 1000000 ]] || die "MACHINES must be 1..1000000"
require_tools wrk nginx curl jq ss pgrep awk head cmp
[[ -x "$KILND" ]] || die "kilnd not found at $KILND (build it, or set KILN_BUILD)"
if [[ $EUID -ne 0 ]]; then
  log "note: not root; nginx's master runs as $(id -un) instead of root (as deployed)"
fi

print_machine
echo "  duration: ${DURATION}s per wrk run, wrk -t2 -c64; servers: $WORKERS threads/workers each"
echo

# --- setup -----------------------------------------------------------------------------------
DATA=$WORK/var
FILES=$DATA/files
mkdir -p "$FILES"
# nginx's workers run as an unprivileged user when started as root: let them reach the files.
chmod 711 "$WORK" "$DATA"
chmod 755 "$FILES"

log "creating test files (4 KiB and 1 GiB of random bytes)"
head -c "$SMALL_BYTES" /dev/urandom >"$FILES/small-4k.bin"
head -c "$BIG_BYTES" /dev/urandom >"$FILES/big-1g.bin"
chmod 644 "$FILES"/*.bin
# Warm the page cache so (c) and (d) measure serving, not the disk.
cat "$FILES/small-4k.bin" "$FILES/big-1g.bin" >/dev/null

TOKEN=$("$KILND" --data-dir "$DATA" token create --name bench 2>"$WORK/token.err") ||
  { cat "$WORK/token.err" >&2; die "kilnd token create failed"; }
TOKEN=$(tail -n1 <<<"$TOKEN")
[[ -n "$TOKEN" ]] || die "kilnd token create printed no token"
record "$(quote "$KILND" --data-dir "$DATA" token create --name bench)"

# wrk's 64 connections all come from 127.0.0.1: lift the per-address cap (a defence against
# one host holding every slot) so this measures the server's ceiling, as nginx's is.
printf '{ "http": { "max_connections_per_address": 0 } }\n' >"$WORK/kilnd-bench.json"
start_kilnd "$DATA" --threads "$WORKERS" --config "$WORK/kilnd-bench.json"
start_nginx "$FILES" "$WORKERS"
log "kilnd at $KILND_URL (pid $KILND_PID), nginx at $NGINX_URL (pid $NGINX_PID)"

# Both servers must serve identical bytes before we compare them.
for f in small-4k.bin; do
  cmp -s <(curl -sf "$KILND_URL/files/$f") "$FILES/$f" || die "kilnd does not serve /files/$f correctly"
  cmp -s <(curl -sf "$NGINX_URL/files/$f") "$FILES/$f" || die "nginx does not serve /files/$f correctly"
done

# --- load: 10,000 machines through the API ---------------------------------------------------
# One curl process, $LOAD_PARALLEL keep-alive connections; each transfer prints its status code.
log "creating $MACHINES machines through POST /api/v1/machines"
LOAD_CFG=$WORK/load.curl
{
  for ((i = 1; i <= MACHINES; i++)); do
    printf -v mac '52:54:00:%02x:%02x:%02x' $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255))
    printf 'url = "%s/api/v1/machines"\n' "$KILND_URL"
    printf 'header = "Authorization: Bearer %s"\n' "$TOKEN"
    printf 'header = "Content-Type: application/json"\n'
    printf 'data = "{\\"mac\\":\\"%s\\",\\"labels\\":{\\"rack\\":\\"r%d\\"}}"\n' "$mac" $((i % 40 + 1))
    printf 'output = "/dev/null"\n'
    printf 'write-out = "%%{http_code}\\n"\n'
    if ((i < MACHINES)); then printf 'next\n'; fi
  done
} >"$LOAD_CFG"
record "curl -sS --parallel --parallel-max $LOAD_PARALLEL -K $LOAD_CFG   # $MACHINES blocks: url, 2 headers, data {\"mac\":...,\"labels\":{\"rack\":...}}, output /dev/null, write-out %{http_code}"
load_start=$(date +%s.%N)
run curl -sS --parallel --parallel-max "$LOAD_PARALLEL" -K "$LOAD_CFG" >"$WORK/load.codes" 2>"$WORK/load.err" || true
load_end=$(date +%s.%N)
created=$(grep -c '^201$' "$WORK/load.codes" || true)
if [[ "$created" != "$MACHINES" ]]; then
  echo "status codes of the $MACHINES POSTs:" >&2
  sort "$WORK/load.codes" | uniq -c >&2
  head -n 5 "$WORK/load.err" >&2
  die "created $created of $MACHINES machines"
fi
LOAD_RATE=$(awk -v n="$MACHINES" -v a="$load_start" -v b="$load_end" 'BEGIN {printf "%.0f", n / (b - a)}')
LOAD_SECS=$(awk -v a="$load_start" -v b="$load_end" 'BEGIN {printf "%.1f", b - a}')
echo "== load: $MACHINES machines created in ${LOAD_SECS}s = $LOAD_RATE machines/s"

# Verify through the API: walk every page (limit=1000, following next_after) and count machines
# and distinct MACs.
count=0
after=""
for ((page = 0; page < 1000; page++)); do
  body=$(curl -sSf -H "Authorization: Bearer $TOKEN" \
    "$KILND_URL/api/v1/machines?limit=1000${after:+&after=$after}") || die "listing machines failed"
  jq -r '.items[].macs[]' <<<"$body" >>"$WORK/macs"
  count=$((count + $(jq '.items | length' <<<"$body")))
  after=$(jq -r '.next_after // empty' <<<"$body")
  [[ -n "$after" ]] || break
done
distinct=$(sort -u "$WORK/macs" | wc -l)
[[ "$count" == "$MACHINES" ]] || die "the API lists $count machines, expected $MACHINES"
[[ "$distinct" == "$MACHINES" ]] || die "the API lists $distinct distinct MACs, expected $MACHINES"
echo "== verified: GET /api/v1/machines lists $count machines with $distinct distinct MACs ($((page + 1)) pages)"
echo

# --- (a), (b): API reads -----------------------------------------------------------------------
AUTH=(-H "Authorization: Bearer $TOKEN")
# Sanity: the page sizes are what the test names say.
n100=$(curl -sSf "${AUTH[@]}" "$KILND_URL/api/v1/machines?limit=100" | jq '.items | length')
ndef=$(curl -sSf "${AUTH[@]}" "$KILND_URL/api/v1/machines" -o "$WORK/page-default.json" -w '%{size_download}')
ndef_items=$(jq '.items | length' "$WORK/page-default.json")
[[ "$n100" == 100 ]] || die "limit=100 returned $n100 items"
echo "== response sizes: limit=100 -> 100 items; default page -> $ndef_items items, $ndef bytes"
echo

# (a) a small page: routing, auth (token hash lookup), one SQLite query, JSON for 100 machines.
run_wrk api-limit100 "$KILND_URL/api/v1/machines?limit=100" "${AUTH[@]}"
A_RPS=$WRK_RPS A_P99=$WRK_P99 A_FLAGS=$WRK_FLAGS
# (b) the default page (1,000 machines): dominated by the query and JSON serialisation.
run_wrk api-default "$KILND_URL/api/v1/machines" "${AUTH[@]}"
B_RPS=$WRK_RPS B_P99=$WRK_P99 B_FLAGS=$WRK_FLAGS

# --- (c): small static file, kilnd vs nginx ------------------------------------------------------
# Per-request overhead of the file path (open, fstat, headers, sendfile of 4 KiB).
run_wrk files-4k-kilnd "$KILND_URL/files/small-4k.bin"
CK_RPS=$WRK_RPS CK_P99=$WRK_P99 CK_FLAGS=$WRK_FLAGS
run_wrk files-4k-nginx "$NGINX_URL/files/small-4k.bin"
CN_RPS=$WRK_RPS CN_P99=$WRK_P99 CN_FLAGS=$WRK_FLAGS
echo

# --- (d): one 1 GiB file, kilnd vs nginx ---------------------------------------------------------
# Single-stream throughput of sendfile over loopback; curl is the same client for both, so when
# both sides are as fast as curl can read, the ratio tends to 1.
cat "$FILES/big-1g.bin" >/dev/null   # re-warm, in case the load step evicted pages
stream_once stream-1g-kilnd "$KILND_URL/files/big-1g.bin" "$BIG_BYTES"
DK=$GBPS
stream_once stream-1g-nginx "$NGINX_URL/files/big-1g.bin" "$BIG_BYTES"
DN=$GBPS
echo

# --- report --------------------------------------------------------------------------------------
row() { printf '%-40s %-9s %12s %12s %8s  %s\n' "$@"; }
echo "== summary (DURATION=${DURATION}s, wrk -t2 -c64, $WORKERS server threads; higher is better)"
row "test" "unit" "kilnd" "nginx" "k/n" "notes"
row "load: POST machines (curl x$LOAD_PARALLEL)" "create/s" "$LOAD_RATE" - - "$MACHINES machines in ${LOAD_SECS}s"
row "(a) GET /api/v1/machines?limit=100" "req/s" "$A_RPS" - - "p99 $A_P99 ${A_FLAGS}"
row "(b) GET /api/v1/machines ($ndef_items/page)" "req/s" "$B_RPS" - - "p99 $B_P99, $ndef B/resp ${B_FLAGS}"
row "(c) GET /files/ 4 KiB" "req/s" "$CK_RPS" "$CN_RPS" "$(ratio "$CK_RPS" "$CN_RPS")" \
  "p99 kilnd $CK_P99 / nginx $CN_P99 ${CK_FLAGS:+kilnd: $CK_FLAGS}${CN_FLAGS:+nginx: $CN_FLAGS}"
row "(d) 1 GiB file, one curl stream" "GB/s" "$DK" "$DN" "$(ratio "$DK" "$DN")" "single transfer each, page cache warm"
if [[ -n "$A_FLAGS$B_FLAGS$CK_FLAGS$CN_FLAGS" ]]; then
  echo "!! some runs had non-2xx/3xx responses or socket errors (see notes): those figures are suspect"
fi
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
