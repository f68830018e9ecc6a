# tests/integration/lib.sh — shared helpers for integration tests that drive a real kilnd.
#
# Source it from a test script; it sets `set -euo pipefail`, makes a scratch directory that is
# removed on exit, and stops (by PID) every kilnd it started. Binaries come from $KILN_BUILD
# (default: ./build relative to the repository root).
set -euo pipefail

KILN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KILN_BUILD=${KILN_BUILD:-$KILN_ROOT/build}
KILND=$KILN_BUILD/kilnd
KILN=$KILN_BUILD/kiln
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/kiln-${TEST_NAME}.XXXXXX")
KILND_PIDS=()
FAILURES=0
CHECKS=0

# Commands run at exit, after the processes are stopped (e.g. "losetup -d /dev/loop3").
CLEANUP_CMDS=()

cleanup() {
  local rc=$?
  for pid in "${KILND_PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${KILND_PIDS[@]:-}"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
  done
  for c in "${CLEANUP_CMDS[@]:-}"; do
    [[ -n "$c" ]] && eval "$c" 2>/dev/null || true
  done
  if [[ $rc -ne 0 || $FAILURES -ne 0 ]]; then
    echo "--- $TEST_NAME: kilnd logs ---" >&2
    tail -n 40 "$WORK"/kilnd*.log 2>/dev/null >&2 || true
  fi
  [[ -n "${KEEP_WORK:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[$TEST_NAME] $*" >&2; }
fail() {
  echo "[$TEST_NAME] FAIL: $*" >&2
  FAILURES=$((FAILURES + 1))
}
ok() { CHECKS=$((CHECKS + 1)); }

# netns_add NAME... — private network namespaces of this test, loopback up, deleted at exit.
netns_add() {
  local ns
  for ns in "$@"; do
    CLEANUP_CMDS+=("ip netns del $ns")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
}

# kilnd_in_netns NS — start_kilnd runs kilnd inside namespace NS from now on.
kilnd_in_netns() {
  printf '#!/bin/sh\nexec ip netns exec %s "%s" "$@"\n' "$1" "$KILN_BUILD/kilnd" >"$WORK/kilnd-ns"
  chmod +x "$WORK/kilnd-ns"
  KILND=$WORK/kilnd-ns
}

# free_port [EXCEPT...] — prints a loopback TCP port nobody listens on, for a server that must
# know its port before it starts (a restart on the same port, peers naming each other). It lies
# below the kernel's ephemeral range (32768+): a port from there can be taken by any client
# socket between this check and the server's bind (kilnd once failed with EADDRINUSE that way).
free_port() {
  local p
  command -v ss >/dev/null || { echo "free_port: no ss (iproute2)" >&2; return 1; }
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ " $* " == *" $p "* ]] && continue
    [[ -z $(ss -Htan "sport = :$p") ]] && { echo "$p"; return 0; }
  done
  echo "no free TCP port" >&2
  return 1
}

# new_ca NAME — NAME.pem (a self-signed CA) and NAME.key, in the current directory.
new_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$1" -keyout "$1.key" -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
}
# new_cert NAME CA SAN — NAME.pem/NAME.key for SAN (e.g. "IP:127.0.0.1,DNS:kiln.test"), signed
# by CA (new_ca), for a TLS server.
new_cert() {
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}

# start_kilnd [extra kilnd args...] — starts kilnd on an ephemeral loopback port with its state
# in $WORK/var (or --data-dir given), waits until it listens. Sets KILND_PID and URL (and
# TFTP_PORT when started with --tftp-listen, HTTPS_URL with --tls-listen).
start_kilnd() {
  local n=${#KILND_PIDS[@]}
  local ready=$WORK/ready.$n
  rm -f "$ready"
  "$KILND" --data-dir "${DATA_DIR:-$WORK/var}" --listen "${KILND_LISTEN:-127.0.0.1:0}" --ready-file "$ready" \
    --log-level "${KILND_LOG_LEVEL:-info}" "$@" >"$WORK/kilnd.$n.log" 2>&1 &
  KILND_PID=$!
  KILND_PIDS+=("$KILND_PID")
  for _ in $(seq 1 200); do
    [[ -s "$ready" ]] && break
    if ! kill -0 "$KILND_PID" 2>/dev/null; then
      cat "$WORK/kilnd.$n.log" >&2
      echo "kilnd exited before listening" >&2
      return 1
    fi
    sleep 0.05
  done
  [[ -s "$ready" ]] || { echo "kilnd did not become ready" >&2; return 1; }
  URL=$(head -n1 "$ready")
  # Other listeners follow as name=host:port lines (kilnd --tftp-listen).
  TFTP_PORT=$(sed -n 's/^tftp=.*://p' "$ready")
  HTTPS_URL=$(sed -n 's/^https=//p' "$ready")  # kilnd --tls-listen
}

# stop_kilnd [signal] — stops the last started kilnd and waits for it; returns its exit code.
stop_kilnd() {
  local sig=${1:-TERM}
  kill -"$sig" "$KILND_PID" 2>/dev/null || true
  local rc=0
  wait "$KILND_PID" || rc=$?
  return $rc
}

# make_token NAME [SCOPE] — creates an API token offline in the test's database.
make_token() {
  "$KILND" --data-dir "${DATA_DIR:-$WORK/var}" token create --name "$1" --scope "${2:-admin}" 2>/dev/null
}

# api METHOD PATH [JSON] — calls the API with $TOKEN; prints the body; sets STATUS.
api() {
  local method=$1 path=$2 body=${3:-}
  local args=(-s -o "$WORK/body" -w '%{http_code}' -X "$method")
  [[ -n "${TOKEN:-}" ]] && args+=(-H "Authorization: Bearer $TOKEN")
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$URL$path")
  BODY=$(cat "$WORK/body")
}

# expect_status CODE DESCRIPTION — checks $STATUS from the last api call.
expect_status() {
  if [[ "$STATUS" == "$1" ]]; then ok; else fail "$2: expected HTTP $1, got $STATUS: $BODY"; fi
}

# expect_eq ACTUAL EXPECTED DESCRIPTION
expect_eq() {
  if [[ "$1" == "$2" ]]; then ok; else fail "$3: expected '$2', got '$1'"; fi
}

# jqb FILTER — applies a jq filter to $BODY.
jqb() { jq -r "$1" <<<"$BODY"; }

# agent_session DEPLOYMENT — plays the agent's start: reissues the deployment's boot ticket
# (admin, $TOKEN) and opens its agent session from this host; sets SESSION (and STATUS/BODY of
# the session call).
agent_session() {
  api POST "/api/v1/deployments/$1/agent-ticket"
  local ticket
  ticket=$(jqb .ticket)
  TOKEN=$ticket api POST /api/v1/agent/session
  SESSION=$(jqb '.token // empty')
}
# external_proof SHA256 SIZE — the proof a succeeded result for an external image carries.
external_proof() {
  printf '{"image_sha256":"%s","image_bytes":%s,"written_bytes":%s,"skipped_bytes":0,"zeroed_bytes":0,"unmapped_bytes":0}' \
    "$1" "$2" "$2"
}

# pg_start — starts a PostgreSQL of this test in its own temporary directory (initdb + pg_ctl,
# never a system service), listening on 127.0.0.1:<free port> and a unix socket there, with a
# database "kiln". Sets PG_URL (a libpq conninfo over TCP, for kilnd's db_url), PG_PORT, PG_DIR
# and PG_BIN. Stopped (pg_ctl -m immediate, by its own PID file) and removed at exit, or by
# pg_stop. Returns 1 when no PostgreSQL is installed (the caller skips or fails).
pg_start() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1)
  [[ -n "$initdb" ]] || { log "no PostgreSQL (/usr/lib/postgresql/*/bin/initdb)"; return 1; }
  PG_BIN=$(dirname "$initdb")
  PG_DIR=$(mktemp -d /tmp/kiln-pg.XXXXXX)
  PG_AS=()
  if [[ $(id -u) == 0 ]]; then  # initdb refuses root; and / is a directory postgres may enter
    chown postgres "$PG_DIR"
    PG_AS=(env -C / runuser -u postgres --)
  fi
  CLEANUP_CMDS+=("pg_stop")
  PG_PORT=$(free_port)
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U kiln -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off -c synchronous_commit=off" \
    start >/dev/null || { cat "$PG_DIR/log" >&2; return 1; }
  "$PG_BIN/psql" -X -q -h "$PG_DIR" -p "$PG_PORT" -U kiln -d postgres -c 'CREATE DATABASE kiln' >/dev/null
  PG_URL="host=127.0.0.1 port=$PG_PORT user=kiln dbname=kiln"
}

# pg_stop — stops the PostgreSQL of pg_start (immediate: the test's data is thrown away).
pg_stop() {
  [[ -n "${PG_DIR:-}" && -d "$PG_DIR" ]] || return 0
  if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
  PG_DIR=
}

# pg_sql SQL — runs SQL on the pg_start database; prints the rows unaligned, no header.
pg_sql() {
  "$PG_BIN/psql" -X -q -A -t -h "$PG_DIR" -p "$PG_PORT" -U kiln -d kiln -c "$1"
}

finish() {
  if [[ $FAILURES -ne 0 ]]; then
    echo "[$TEST_NAME] $FAILURES failure(s), $CHECKS check(s) passed" >&2
    exit 1
  fi
  echo "[$TEST_NAME] ok: $CHECKS checks" >&2
}
