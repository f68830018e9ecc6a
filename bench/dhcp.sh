#!/usr/bin/env bash
# bench/dhcp.sh — kilnd's DHCPv4 server against ISC Kea (memfile backend, leases persisted),
# one after the other on the same namespaces, veth pair and perfdhcp command. For each server it
# steps the offered DORA rate up and reports the highest rate at which perfdhcp saw fewer than
# 1% drops, both DISCOVER-OFFER and REQUEST-ACK, with the rate perfdhcp actually achieved.
#
# Durability, as configured here:
#   kilnd: every lease change is committed to SQLite (WAL, synchronous=FULL: fsync per commit)
#          before its ACK is sent; changes waiting while a commit runs share the next commit.
#   Kea:   memfile with "persist": true appends each lease to its CSV file before answering,
#          without fsync (the Kea documentation's default memfile behaviour).
#
# Needs root (network namespaces; nothing touches a real interface). Usage:
#   sudo bench/dhcp.sh      (env: STEP_S=5 RATES="1000 2000 ..." CLIENTS=50000)
source "$(dirname "$0")/lib.sh"

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
require_tools perfdhcp kea-dhcp4 ip
STEP_S=${STEP_S:-5}
RATES=${RATES:-"1000 2000 3000 4000 6000 8000 10000 12000 16000 20000 25000"}
CLIENTS=${CLIENTS:-50000}

SRV=kbd-srv-$$ CLI=kbd-cli-$$
CLEANUP_CMDS+=("ip netns del $SRV" "ip netns del $CLI")
ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link set lo up
ip -n "$CLI" link set lo up
ip link add kbd-s netns "$SRV" type veth peer name kbd-c netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/16 dev kbd-s
ip -n "$CLI" addr add 10.77.0.2/16 dev kbd-c
ip -n "$SRV" link set kbd-s up
ip -n "$CLI" link set kbd-c up

POOL_FIRST=10.77.1.0 POOL_LAST=10.77.254.254

# run_server NAME CMD... — starts a server inside $SRV; sets SERVER_PID.
run_server() {
  local name=$1
  shift
  record "ip netns exec \$SRV $(quote "$@")"
  ip netns exec "$SRV" "$@" >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  STARTED_PIDS+=("$SERVER_PID")
  sleep 1.5
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name did not start"; }
}

# sweep NAME — perfdhcp at each rate; prints a line per step and sets BEST (offered rate),
# BEST_ACHIEVED (exchanges/s measured by perfdhcp).
sweep() {
  local name=$1 rate out d1 d2 achieved
  BEST=0
  BEST_ACHIEVED=0
  for rate in $RATES; do
    out=$(ip netns exec "$CLI" timeout $((STEP_S + 20)) perfdhcp -4 -l kbd-c -r "$rate" \
      -p "$STEP_S" -R "$CLIENTS" -W 1000000 10.77.0.1 2>&1 || true)
    d1=$(grep -A4 'Statistics for: DISCOVER-OFFER' <<<"$out" | awk '/^drops ratio:/ {print $3}')
    d2=$(grep -A4 'Statistics for: REQUEST-ACK' <<<"$out" | awk '/^drops ratio:/ {print $3}')
    achieved=$(awk '/^Rate:/ {print $2; exit}' <<<"$out")
    printf '  %-8s offered %6s/s  achieved %9s/s  drops: offers %6s%%  acks %6s%%\n' \
      "$name" "$rate" "${achieved:-?}" "${d1:-?}" "${d2:-?}"
    if [[ -z "$d1" || -z "$d2" ]] || awk -v a="$d1" -v b="$d2" 'BEGIN {exit !(a >= 1 || b >= 1)}'; then
      break
    fi
    BEST=$rate
    BEST_ACHIEVED=${achieved%.*}
  done
}

print_machine
echo "  kea:      $(kea-dhcp4 -v 2>&1 | head -n1)"
echo "  perfdhcp: $(perfdhcp -v 2>&1 | head -n1)"
echo "== $CLIENTS simulated clients (perfdhcp -R), $STEP_S s per rate step, over a veth pair"

# --- kilnd ------------------------------------------------------------------------------------
cat >"$WORK/kilnd.json" <<JSON
{ "log_level": "warn",
  "dhcp": { "mode": "authoritative", "interfaces": ["kbd-s"],
    // perfdhcp plays a relay (giaddr 10.77.0.2); the new-lease rate limits would cap the sweep.
    "relays": ["10.77.0.2"], "new_lease_rate": 0, "new_lease_rate_per_mac": 0,
    "subnets": [ { "subnet": "10.77.0.0/16", "pool": "$POOL_FIRST-$POOL_LAST",
                   "router": "10.77.0.1", "lease_time_s": 3600 } ] } }
JSON
run_server kilnd "$KILND" --config "$WORK/kilnd.json" --data-dir "$WORK/kilnd-var" --listen 127.0.0.1:0
echo "== kilnd (SQLite synchronous=FULL, group commit)"
sweep kilnd
K_BEST=$BEST K_ACH=$BEST_ACHIEVED
commits=$(sqlite3 "$WORK/kilnd-var/kiln.db" "SELECT count(*) FROM dhcp_leases" 2>/dev/null || echo '?')
echo "  leases in SQLite: $commits"
stop_pid "$SERVER_PID"

# --- Kea, single-threaded and with 2 threads --------------------------------------------------
kea_config() { # kea_config FILE MT(true|false)
  cat >"$1" <<JSON
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "kbd-s" ] },
    "lease-database": { "type": "memfile", "persist": true, "lfc-interval": 0,
                        "name": "$WORK/kea-leases-$2.csv" },
    "multi-threading": { "enable-multi-threading": $2, "thread-pool-size": 2,
                         "packet-queue-size": 64 },
    "valid-lifetime": 3600,
    "subnet4": [ { "id": 1, "subnet": "10.77.0.0/16", "pools": [ { "pool": "$POOL_FIRST - $POOL_LAST" } ],
                   "option-data": [ { "name": "routers", "data": "10.77.0.1" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "$WORK/kea-$2.log" } ] } ] } }
JSON
}
declare -A KEA_BEST KEA_ACH
for mt in false true; do
  kea_config "$WORK/kea-$mt.json" "$mt"
  mkdir -p "$WORK/kea-run-$mt"
  run_server "kea-$mt" env KEA_PIDFILE_DIR="$WORK/kea-run-$mt" KEA_LOCKFILE_DIR="$WORK/kea-run-$mt" \
    kea-dhcp4 -c "$WORK/kea-$mt.json"
  label=kea-1t
  [[ $mt == true ]] && label=kea-2t
  echo "== Kea memfile, multi-threading $mt"
  sweep "$label"
  KEA_BEST[$mt]=$BEST
  KEA_ACH[$mt]=$BEST_ACHIEVED
  stop_pid "$SERVER_PID"
done

echo
echo "== highest offered rate with < 1% drops (achieved DORA/s in brackets)"
printf '  kilnd:              %6s/s (%s)\n' "$K_BEST" "$K_ACH"
printf '  Kea 1 thread:       %6s/s (%s)   kilnd/Kea = %s\n' "${KEA_BEST[false]}" "${KEA_ACH[false]}" \
  "$(awk -v a="$K_ACH" -v b="${KEA_ACH[false]}" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}')"
printf '  Kea 2 threads:      %6s/s (%s)   kilnd/Kea = %s\n' "${KEA_BEST[true]}" "${KEA_ACH[true]}" \
  "$(awk -v a="$K_ACH" -v b="${KEA_ACH[true]}" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}')"
echo
echo "== commands"
for c in "${COMMANDS[@]}"; do echo "  $c"; done
echo "  perfdhcp: ip netns exec \$CLI perfdhcp -4 -l kbd-c -r RATE -p $STEP_S -R $CLIENTS -W 1000000 10.77.0.1"
