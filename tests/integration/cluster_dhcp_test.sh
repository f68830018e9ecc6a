#!/usr/bin/env bash
# cluster_dhcp_test.sh — two kilnd instances serving one subnet and one pool from one PostgreSQL
# (started by this test), each behind its own relay, under perfdhcp load at the same time: no
# address is ever acknowledged to two clients. Every DHCPACK is captured on the wire by an
# independent sniffer (tests/tools/dhcp_ack_sniff.py), not taken from kilnd's word; the leases
# in PostgreSQL must name the client each address was acknowledged to.
#
# Topology (namespaces this test creates and deletes): $S1 (kilnd 1, 10.77.0.1) <-veth-> $C1
# (perfdhcp as relay 10.77.0.2), and $S2 (kilnd 2, 10.77.0.3) <-veth-> $C2 (relay 10.77.0.4).
# Both kilnd lend 10.77.1.0-10.77.1.255 of 10.77.0.0/16 and both start allocating at its first
# address: without a shared, transactional allocation they would hand out the same addresses.
# The instances reach PostgreSQL over its unix socket (the filesystem is shared).
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77
fi
for c in perfdhcp python3 psql; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; finish; }
done
SNIFF=$KILN_ROOT/tests/tools/dhcp_ack_sniff.py
cd "$WORK"

pg_start || { fail "PostgreSQL did not start"; finish; }
# Over the unix socket: the namespaces have loopbacks of their own.
DB_URL="host=$PG_DIR port=$PG_PORT user=kiln dbname=kiln"

S1=kcd-s1-$$ C1=kcd-c1-$$ S2=kcd-s2-$$ C2=kcd-c2-$$
netns_add $S1 $C1 $S2 $C2
for i in 1 2; do
  s=S$i c=C$i
  ip link add kcd-s$i netns "${!s}" type veth peer name kcd-c$i netns "${!c}"
  ip -n "${!s}" addr add 10.77.0.$((2 * i - 1))/16 dev kcd-s$i
  ip -n "${!c}" addr add 10.77.0.$((2 * i))/16 dev kcd-c$i
  ip -n "${!s}" link set kcd-s$i up
  ip -n "${!c}" link set kcd-c$i up
  cat >kilnd.$i.json <<JSON
{ "db_url": "$DB_URL",
  "secrets": { "key_file": "$WORK/secrets.key" },
  "dhcp": { "mode": "authoritative", "interfaces": ["kcd-s$i"], "relays": ["10.77.0.$((2 * i))"],
    "new_lease_rate": 0, "new_lease_rate_per_mac": 0,
    "subnets": [ { "subnet": "10.77.0.0/16", "pool": "10.77.1.0-10.77.1.255",
                   "router": "10.77.0.1", "lease_time_s": 3600 } ] } }
JSON
done
declare -A URLS
for i in 1 2; do
  s=S$i
  kilnd_in_netns "${!s}"
  DATA_DIR=$WORK/var$i start_kilnd --config kilnd.$i.json || { fail "kilnd $i did not start"; finish; }
  URLS[$i]=$URL
done
metric() {  # metric I NAME
  local s=S$1
  ip netns exec "${!s}" curl -s "${URLS[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

# Sniffers first (each on its relay's side of the wire), then both perfdhcp at once: 120
# clients each (240 of the pool's 256 addresses), different MAC ranges.
for i in 1 2; do
  c=C$i
  ip netns exec "${!c}" python3 "$SNIFF" kcd-c$i acks.$i 120 2>sniff.$i.log &
  KILND_PIDS+=($!)
done
for _ in $(seq 1 100); do [[ -e acks.1.ready && -e acks.2.ready ]] && break; sleep 0.05; done
pids=()
for i in 1 2; do
  c=C$i
  ip netns exec "${!c}" timeout 90 perfdhcp -4 -W 1000000 -l kcd-c$i -r 60 -n 240 -R 120 \
    -b "mac=02:0$i:00:00:00:00" 10.77.0.$((2 * i - 1)) >perfdhcp.$i.out 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
sleep 0.5
for p in "${KILND_PIDS[@]: -2}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
r1=$(metric 1 kiln_dhcp_lease_refused_total) r2=$(metric 2 kiln_dhcp_lease_refused_total)
[[ -n $r1 && -n $r2 ]] && ok || fail "both instances export kiln_dhcp_lease_refused_total"

n1=$(wc -l <acks.1) n2=$(wc -l <acks.2)
log "ACKs on the wire: $n1 from kilnd 1, $n2 from kilnd 2"
[[ $n1 -gt 50 && $n2 -gt 50 ]] && ok || fail "both instances acknowledged leases ($n1, $n2): $(tail -5 perfdhcp.1.out)"
# An address acknowledged to two different clients, by either server: the failure this is about.
dups=$(cat acks.1 acks.2 | awk '{print $1, $2}' | sort -u | awk '{n[$1]++} END {for (a in n) if (n[a] > 1) print a}')
expect_eq "$dups" "" "no address acknowledged to two clients"
[[ -z $dups ]] || for a in $dups; do grep -h "^$a " acks.1 acks.2 | sort -u | head -4 >&2; done
# What PostgreSQL holds: each acknowledged address, bound to the client it was acknowledged to.
pg_sql "SELECT ip, mac FROM dhcp_leases WHERE state = 'bound'" | tr '|' ' ' | sort >db.leases
cat acks.1 acks.2 | awk '{print $1, $2}' | sort -u >wire.leases
missing=$(comm -23 wire.leases db.leases | head -5)
expect_eq "$missing" "" "every acknowledged (address, client) is a bound lease in PostgreSQL"
# The two instances did contend (else this test proved nothing): some leases were refused by
# the database because the other instance held the address, and never acknowledged.
r=$((${r1:-0} + ${r2:-0}))
log "leases refused by the database (the other instance held the address): $r"
[[ $r -gt 0 ]] && ok || fail "the instances never contended for an address"
finish
