#!/usr/bin/env bash
# bench/fleet.sh — kilnd driving a simulated fleet (tests/tools/fleet_sim: N machines, each with
# its own Redfish BMC on loopback, deploying through the agent protocol with the agent's own
# client code; each deploy takes a fixed simulated time, $DEPLOY_MS).
#
# For each fleet size in $SIZES (default "100 1000"), on a fresh kilnd:
#   bulk     the reference: one POST /api/v1/assignments (reboot) of os:1 to every machine at
#            once (no pacing, no gate), until every deployment is booted.
#   rollout  os:2 through a rollout: canary 1%, batches of 5%, gate booted, spread over racks,
#            until it succeeds.
# For each: wall time (and the rollout's against its lower bound: batches x one machine's deploy
# and boots), kilnd CPU seconds per deployed machine (utime + stime from /proc), API latency
# p50/p99 of GET /api/v1/rollouts/{id} and GET /api/v1/machines?limit=100 probed 20 times a second
# over keep-alive while it runs, and SQLite write commits per second (kiln_store_commits_total).
# Figures are printed, never judged.
#
# Environment: SIZES, DEPLOY_MS (default 2000), BOOT_DELAY_MS (default 100), KILN_BUILD.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZES=${SIZES:-"100 1000"}
DEPLOY_MS=${DEPLOY_MS:-2000}
BOOT_DELAY_MS=${BOOT_DELAY_MS:-100}
SIM=$KILN_BUILD/fleet_sim
KILN=$KILN_BUILD/kiln
require_tools curl jq python3 awk
[[ -x "$KILND" && -x "$SIM" && -x "$KILN" ]] || die "kilnd, kiln and fleet_sim must be built in $KILN_BUILD"
for n in $SIZES; do [[ "$n" =~ ^[1-9][0-9]*$ && $n -le 5000 ]] || die "SIZES: 1..5000 each"; done

print_machine
echo "  fleet:    fleet_sim, deploy ${DEPLOY_MS} ms per machine, boot delay ${BOOT_DELAY_MS} ms"
echo

# The latency probe: GETs on one keep-alive connection, 20 a second, until the stop file
# appears (or 20 minutes); prints p50 and p99 in ms.
cat >"$WORK/probe.py" <<'PY'
import http.client, os, sys, time
host, port, token, stop, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
conn = http.client.HTTPConnection(host, port, timeout=30)
lat, t_end, i = [], time.time() + 1200, 0
while not os.path.exists(stop) and time.time() < t_end:
    path = paths[i % len(paths)]; i += 1
    t0 = time.perf_counter()
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        conn.getresponse().read()
    except Exception:
        conn.close(); conn = http.client.HTTPConnection(host, port, timeout=30)
        continue
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(max(0, 0.05 - (time.perf_counter() - t0)))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"{q(0.5):.1f} {q(0.99):.1f} {len(lat)}")
PY

booted() { curl -s "$KILND_URL/metrics" | awk '$1 == "kiln_deployments{status=\"booted\"}" {print $2}'; }

# measure LABEL N CMD... — runs CMD (which returns when the work is done) with the probe and
# the counters around it; sets M_WALL M_CPU M_COMMITS M_P50 M_P99.
measure() {
  local label=$1 n=$2
  shift 2
  local stop=$WORK/probe.stop.$label
  rm -f "$stop"
  local host=${KILND_URL#http://}
  python3 "$WORK/probe.py" "${host%:*}" "${host##*:}" "$TOKEN" "$stop" "${PROBE_PATHS[@]}" \
    >"$WORK/probe.$label" &
  local probe=$!
  STARTED_PIDS+=("$probe")
  local c0 k0 t0 t1
  c0=$(cpu_s)
  k0=$(commits)
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  M_CPU=$(awk -v a="$(cpu_s)" -v b="$c0" -v n="$n" 'BEGIN {printf "%.4f", (a - b) / n}')
  M_WALL=$(awk -v a="$t1" -v b="$t0" 'BEGIN {printf "%.1f", a - b}')
  M_COMMITS=$(awk -v a="$(commits)" -v b="$k0" -v w="$M_WALL" 'BEGIN {printf "%.0f", (a - b) / w}')
  touch "$stop"
  wait "$probe" || true
  read -r M_P50 M_P99 M_SAMPLES <"$WORK/probe.$label"
}

wait_booted() {  # wait_booted N — every machine's latest deployment booted (bounded: 15 min)
  for _ in $(seq 1 9000); do
    [[ $(booted) -ge $1 ]] && return 0
    sleep 0.1
  done
  die "the bulk assignment did not finish"
}

small_images

ROWS=()
RATIOS=()
for N in $SIZES; do
  log "fleet of $N"
  DATA=$WORK/var.$N
  mkdir -p "$DATA"
  cat >"$WORK/kilnd.$N.json" <<'JSON'
{ "http": { "max_connections_per_address": 4096 },
  "power": { "max_concurrent": 64, "timeout_ms": 5000, "retries": 1 },
  "boot": { "after": "reboot", "deadlines": { "written_s": 120, "booted_s": 60, "retries": 1 } },
  "rollouts": { "tick_ms": 200 } }
JSON
  start_kilnd "$DATA" --config "$WORK/kilnd.$N.json"
  TOKEN=$("$KILND" --data-dir "$DATA" token create --name bench --scope admin 2>/dev/null)
  for v in 1 2; do
    KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN "$KILN" image push "$WORK/v$v.kiln" >/dev/null || die "push"
  done
  "$SIM" --machines "$N" --racks 10 --kilnd "$KILND_URL" --register --token "$TOKEN" \
    --deploy-time "$DEPLOY_MS" --boot-delay "$BOOT_DELAY_MS" --workers 64 --verbose-machines 0 \
    --ready-file "$WORK/sim.$N.ready" --max-seconds 1800 >"$WORK/sim.$N.out" 2>"$WORK/sim.$N.log" &
  SIM_PID=$!
  STARTED_PIDS+=("$SIM_PID")
  record "$(quote "$SIM" --machines "$N" --racks 10 --kilnd "$KILND_URL" --register --token "$TOKEN" --deploy-time "$DEPLOY_MS" --boot-delay "$BOOT_DELAY_MS" --workers 64)"
  for _ in $(seq 1 1200); do [[ -s "$WORK/sim.$N.ready" ]] && break; sleep 0.1; done
  [[ -s "$WORK/sim.$N.ready" ]] || die "fleet_sim did not become ready"
  PROBE_PATHS=("/api/v1/machines?limit=100")

  bulk() {
    curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      -d '{"selector":"sim=1","image":"os","version":"1","reboot":true}' "$KILND_URL/api/v1/assignments"
    wait_booted "$N"
  }
  measure bulk "$N" bulk
  B=("$M_WALL" "$M_CPU" "$M_COMMITS" "$M_P50" "$M_P99")

  CANARY=$(((N + 99) / 100))
  RID=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"selector\":\"sim=1\",\"image\":\"os\",\"version\":\"2\",\"batch\":\"5%\",\"canary\":$CANARY,\"spread_by\":\"rack\"}" \
    "$KILND_URL/api/v1/rollouts" | jq -r .id)
  [[ $RID =~ ^[0-9]+$ ]] || die "the rollout was not created"
  record "POST /api/v1/rollouts {\"selector\":\"sim=1\",\"image\":\"os\",\"version\":\"2\",\"batch\":\"5%\",\"canary\":$CANARY,\"spread_by\":\"rack\"}"
  PROBE_PATHS=("/api/v1/rollouts/$RID" "/api/v1/machines?limit=100")
  roll() {
    KILN_URL=$KILND_URL KILN_TOKEN=$TOKEN run "$KILN" rollout show "$RID" --watch >"$WORK/watch.$N" 2>&1 ||
      die "rollout $RID did not succeed: $(tail -3 "$WORK/watch.$N")"
  }
  measure rollout "$N" roll
  R=("$M_WALL" "$M_CPU" "$M_COMMITS" "$M_P50" "$M_P99")
  BATCHES=$(curl -s -H "Authorization: Bearer $TOKEN" "$KILND_URL/api/v1/rollouts/$RID" | jq '.batches | length')
  # The lower bound: batch after batch, each as long as one machine's network boot, deploy
  # and disk boot.
  IDEAL=$(awk -v b="$BATCHES" -v d="$DEPLOY_MS" -v bd="$BOOT_DELAY_MS" 'BEGIN {printf "%.1f", b * (d + 3 * bd) / 1000}')
  ROWS+=("$(printf '%5d  %-8s %8s %8s  %10s  %8s %8s  %9s' "$N" bulk "${B[0]}" - "${B[1]}" "${B[3]}" "${B[4]}" "${B[2]}")")
  ROWS+=("$(printf '%5d  %-8s %8s %8s  %10s  %8s %8s  %9s' "$N" rollout "${R[0]}" "$IDEAL" "${R[1]}" "${R[3]}" "${R[4]}" "${R[2]}")")
  RATIOS+=("$N machines: rollout/lower bound $(ratio "${R[0]}" "$IDEAL"), rollout/bulk wall $(ratio "${R[0]}" "${B[0]}"), CPU per machine rollout/bulk $(ratio "${R[1]}" "${B[1]}") ($BATCHES batches)")
  curl -s -X POST "$(head -n1 "$WORK/sim.$N.ready")/quit" >/dev/null || true
  stop_pid "$SIM_PID"
  stop_pid "$KILND_PID"
done

echo "== fleet: wall s (lower bound), kilnd CPU s per deployed machine, API latency ms, SQLite commits/s"
printf '%5s  %-8s %8s %8s  %10s  %8s %8s  %9s\n' N mode wall_s bound_s cpu_s/mach p50_ms p99_ms commits/s
for r in "${ROWS[@]}"; do echo "$r"; done
echo
for r in "${RATIOS[@]}"; do echo "== ratio: $r"; done
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
