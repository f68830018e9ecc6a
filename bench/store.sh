#!/usr/bin/env bash
# bench/store.sh — kilnd on SQLite against kilnd on PostgreSQL, same run, same machine.
#
# For each backend in $BACKENDS (default "sqlite postgresql"), on a fresh kilnd and a fresh
# database (PostgreSQL: a private server this script starts with initdb/pg_ctl in its scratch
# directory, unix socket only, stopped by its PID at exit; never the system service):
#   writes   POST /api/v1/machines x $MACHINES through one `curl --parallel` (16 keep-alive
#            connections): API writes per second (each one transaction with its event).
#   bulk     one POST /api/v1/assignments of os:1 to all $MACHINES machines (one transaction):
#            seconds, and machines per second.
#   rollout  $FLEET new simulated machines (tests/tools/fleet_sim: Redfish BMCs and the agent
#            protocol on loopback) rolled out to os:2: canary 1%, batches of 10%, gate booted. Wall
#            seconds from creation to succeeded, kilnd CPU seconds, store commits per second.
# Then the PostgreSQL/SQLite ratio of each figure. Figures are printed, never judged.
#
# Environment: BACKENDS, MACHINES (default 10000), FLEET (default 1000), DEPLOY_MS (default
# 500), FSYNC (default on: both durable at every commit, as each ships — SQLite
# synchronous=FULL, kilnd's default, and PostgreSQL fsync=on; off: SQLite synchronous=NORMAL and
# PostgreSQL fsync=off, neither syncs a commit), KILN_BUILD.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BACKENDS=${BACKENDS:-"sqlite postgresql"}
MACHINES=${MACHINES:-10000}
FLEET=${FLEET:-1000}
DEPLOY_MS=${DEPLOY_MS:-500}
FSYNC=${FSYNC:-on}
LOAD_PARALLEL=16
SIM=$KILN_BUILD/fleet_sim
KILN=$KILN_BUILD/kiln
require_tools curl jq awk
[[ -x "$KILND" && -x "$SIM" && -x "$KILN" ]] || die "kilnd, kiln and fleet_sim must be built in $KILN_BUILD"
[[ "$MACHINES" =~ ^[1-9][0-9]*$ && $MACHINES -le 100000 ]] || die "MACHINES: 1..100000"
[[ "$FLEET" =~ ^[1-9][0-9]*$ && $FLEET -le 5000 ]] || die "FLEET: 1..5000"

print_machine
echo "  backends: $BACKENDS (PostgreSQL fsync=$FSYNC; SQLite synchronous=$([[ $FSYNC == on ]] && echo full || echo normal))"
echo

# --- PostgreSQL, private to this run ---------------------------------------------------------
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
PG_DIR=""
PG_PID=""
start_postgres() {
  [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL server binaries not found (deploy/install-deps.sh installs postgresql)"
  # Its own directory: $WORK is root's alone, and initdb refuses to run as root.
  PG_DIR=$(mktemp -d /tmp/kiln-bench-pg.XXXXXX)
  CLEANUP_CMDS+=("rm -rf $PG_DIR")
  local as=()
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres "$PG_DIR"
    as=(env -C / runuser -u postgres --)
  fi
  "${as[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U kiln -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -3 "$WORK/initdb.log")"
  "${as[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
    -o "-k $PG_DIR -c listen_addresses='' -c fsync=$FSYNC -c max_connections=200" start >/dev/null ||
    die "PostgreSQL did not start: $(tail -5 "$PG_DIR/log")"
  PG_PID=$(head -n1 "$PG_DIR/data/postmaster.pid")
  STARTED_PIDS+=("$PG_PID")
  record "$PG_BIN/initdb -D DIR -A trust -U kiln --no-sync; pg_ctl -o \"-k DIR -c listen_addresses='' -c fsync=$FSYNC\" start"
}
new_database() {  # new_database NAME — prints its conninfo
  "$PG_BIN/psql" -q -h "$PG_DIR" -U kiln -d postgres -c "CREATE DATABASE $1" >/dev/null ||
    die "CREATE DATABASE $1 failed"
  echo "host=$PG_DIR user=kiln dbname=$1"
}

small_images

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN {printf "%.2f", a - b}'; }
api() {  # api METHOD PATH [BODY] — prints the body; fails on a non-2xx
  curl -sSf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$KILND_URL$2"
}

declare -A F  # F[backend.figure]
for B in $BACKENDS; do
  log "backend $B"
  DATA=$WORK/var.$B
  mkdir -p "$DATA"
  CONF=$WORK/kilnd.$B.json
  DB_JSON=""
  case $B in
    sqlite)
      DB_JSON="\"store\": { \"synchronous\": \"$([[ $FSYNC == on ]] && echo full || echo normal)\" },"
      ;;
    postgresql)
      [[ -n "$PG_PID" ]] || start_postgres
      DB_JSON="\"db_url\": \"$(new_database "kiln_bench_$RANDOM")\","
      ;;
    *) die "unknown backend $B (sqlite, postgresql)" ;;
  esac
  cat >"$CONF" <<JSON
{ $DB_JSON
  "http": { "max_connections_per_address": 0 },
  "power": { "max_concurrent": 64, "timeout_ms": 5000, "retries": 1 },
  "boot": { "after": "reboot", "deadlines": { "written_s": 120, "booted_s": 60, "retries": 1 } },
  "rollouts": { "tick_ms": 200 } }
JSON
  TOKEN=$("$KILND" --data-dir "$DATA" --config "$CONF" token create --name bench --scope admin 2>"$WORK/token.err") ||
    die "token create on $B: $(tail -3 "$WORK/token.err")"
  start_kilnd "$DATA" --config "$CONF"

  # writes: $MACHINES machine creations.
  CFG=$WORK/load.$B.curl
  {
    for ((i = 1; i <= MACHINES; i++)); do
      printf -v mac '52:54:01:%02x:%02x:%02x' $(((i >> 16) & 255)) $(((i >> 8) & 255)) $((i & 255))
      printf 'url = "%s/api/v1/machines"\nheader = "Authorization: Bearer %s"\n' "$KILND_URL" "$TOKEN"
      printf 'header = "Content-Type: application/json"\n'
      printf 'data = "{\\"mac\\":\\"%s\\",\\"labels\\":{\\"bulk\\":\\"1\\",\\"rack\\":\\"r%d\\"}}"\n' "$mac" $((i % 40 + 1))
      printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n'
      if ((i < MACHINES)); then printf 'next\n'; fi
    done
  } >"$CFG"
  t0=$(now)
  run curl -sS --parallel --parallel-max "$LOAD_PARALLEL" -K "$CFG" >"$WORK/codes.$B" 2>"$WORK/load.err" || true
  secs=$(since "$t0")
  created=$(grep -c '^201$' "$WORK/codes.$B" || true)
  [[ "$created" == "$MACHINES" ]] || {
    sort "$WORK/codes.$B" | uniq -c >&2
    die "$B: created $created of $MACHINES machines"
  }
  F[$B.writes]=$(awk -v n="$MACHINES" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')
  log "$B: $MACHINES machines in ${secs}s"

  # bulk: one assignment of os:1 to all of them.
  for v in 1 2; do KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN "$KILN" image push "$WORK/v$v.kiln" >/dev/null 2>&1 || die "push"; done
  t0=$(now)
  out=$(api POST /api/v1/assignments '{"selector":"bulk=1","image":"os","version":"1"}') || die "$B: bulk assignment failed"
  F[$B.bulk]=$(since "$t0")
  [[ $(jq .created <<<"$out") == "$MACHINES" ]] || die "$B: the bulk assignment created $(jq .created <<<"$out") deployments"
  F[$B.bulk_rate]=$(awk -v n="$MACHINES" -v s="${F[$B.bulk]}" 'BEGIN {printf "%.0f", n / s}')
  log "$B: bulk assignment of $MACHINES in ${F[$B.bulk]}s"

  # rollout: $FLEET simulated machines from os:1 to os:2.
  "$SIM" --machines "$FLEET" --racks 10 --kilnd "$KILND_URL" --register --token "$TOKEN" \
    --deploy-time "$DEPLOY_MS" --boot-delay 100 --workers 64 --verbose-machines 0 \
    --ready-file "$WORK/sim.$B.ready" --max-seconds 1800 >"$WORK/sim.$B.out" 2>"$WORK/sim.$B.log" &
  SIM_PID=$!
  STARTED_PIDS+=("$SIM_PID")
  for _ in $(seq 1 1200); do [[ -s "$WORK/sim.$B.ready" ]] && break; sleep 0.1; done
  [[ -s "$WORK/sim.$B.ready" ]] || die "fleet_sim did not become ready"
  CANARY=$(((FLEET + 99) / 100))
  c0=$(cpu_s)
  k0=$(commits)
  t0=$(now)
  RID=$(api POST /api/v1/rollouts "{\"selector\":\"sim=1\",\"image\":\"os\",\"version\":\"2\",\"batch\":\"10%\",\"canary\":$CANARY,\"spread_by\":\"rack\"}" | jq -r .id) ||
    die "$B: the rollout was not created"
  KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN run "$KILN" rollout show "$RID" --watch >"$WORK/watch.$B" 2>&1 ||
    die "$B: rollout $RID did not succeed: $(tail -3 "$WORK/watch.$B")"
  F[$B.rollout]=$(since "$t0")
  F[$B.rollout_cpu]=$(awk -v a="$(cpu_s)" -v b="$c0" 'BEGIN {printf "%.1f", a - b}')
  F[$B.rollout_commits]=$(awk -v a="$(commits)" -v b="$k0" -v w="${F[$B.rollout]}" 'BEGIN {printf "%.0f", (a - b) / w}')
  log "$B: rollout of $FLEET in ${F[$B.rollout]}s"
  curl -s -X POST "$(head -n1 "$WORK/sim.$B.ready")/quit" >/dev/null || true
  stop_pid "$SIM_PID"
  stop_pid "$KILND_PID"
done

echo "== store: $MACHINES machines written then bulk-assigned, a $FLEET-machine rollout (deploy ${DEPLOY_MS} ms)"
printf '%-11s %10s %9s %13s %10s %13s %11s\n' backend writes/s bulk_s bulk_mach/s rollout_s rollout_cpu_s commits/s
for B in $BACKENDS; do
  printf '%-11s %10s %9s %13s %10s %13s %11s\n' "$B" "${F[$B.writes]}" "${F[$B.bulk]}" "${F[$B.bulk_rate]}" \
    "${F[$B.rollout]}" "${F[$B.rollout_cpu]}" "${F[$B.rollout_commits]}"
done
if [[ " $BACKENDS " == *" sqlite "* && " $BACKENDS " == *" postgresql "* ]]; then
  echo
  echo "== ratio postgresql/sqlite: writes/s $(ratio "${F[postgresql.writes]}" "${F[sqlite.writes]}")," \
    "bulk time $(ratio "${F[postgresql.bulk]}" "${F[sqlite.bulk]}")," \
    "rollout time $(ratio "${F[postgresql.rollout]}" "${F[sqlite.rollout]}")," \
    "rollout CPU $(ratio "${F[postgresql.rollout_cpu]}" "${F[sqlite.rollout_cpu]}")"
fi
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
