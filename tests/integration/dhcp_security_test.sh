#!/usr/bin/env bash
# DHCP against hostile clients (issue 14): spoofed packets from a private network namespace
# (dhcp_probe crafts them) at a real kilnd; the lease table is read from SQLite.
#   1. an INIT-REBOOT REQUEST from a client kilnd has no record of gets no answer and is not
#      persisted (RFC 2131 4.3.2); a client with a record keeps its address;
#   2. RELEASE and DECLINE count only from the client's own address;
#   3. giaddr counts only from the relays in dhcp.relays;
#   4. new leases are rate limited per MAC and globally, renewals never;
#   5. dhcp.known_only serves only machines kiln knows.
# Every refusal is counted in kiln_dhcp_dropped_total{reason=...} and logged (event=dhcp.refused).
#
# Topology: netns $SRV (kilnd on kds-vs, 10.77.0.1/24) and netns $CLI (kds-vc: the clients,
# the attacker at 10.77.0.2 and, later, a relay at 10.79.0.1).
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77
fi
for c in busybox sqlite3; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; finish; }
done

SRV=kds-srv-$$ CLI=kds-cli-$$
netns_add $SRV $CLI
ip link add kds-vs netns "$SRV" type veth peer name kds-vc netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev kds-vs
ip -n "$SRV" link set kds-vs up
ip -n "$CLI" link set kds-vc up

kilnd_in_netns "$SRV"
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
metric() { in_srv curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}' || true; }
refused() { local v; v=$(metric "kiln_dhcp_dropped_total{reason=\"$1\"}"); echo "${v%.*}"; }
# wait_refused REASON N: until N such refusals are counted (the packets were handled), bounded.
wait_refused() {
  for _ in $(seq 40); do
    [[ "$(refused "$1")" -ge "$2" ]] 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
probe() { in_cli "$KILN_BUILD/dhcp_probe" --iface kds-vc --vendor-class MSFT --wait-ms 1000 "$@"; }
db() { sqlite3 "$WORK/var/kiln.db" "$1"; }
db_state() { db "SELECT state FROM dhcp_leases WHERE ip = '$1' AND mac = '$2'"; }
# wait_state IP MAC STATE: the lease row reaches STATE (leases are committed asynchronously).
wait_state() {
  for _ in $(seq 40); do
    [[ "$(db_state "$1" "$2")" == "$3" ]] && return 0
    sleep 0.05
  done
  return 1
}

cat >"$WORK/base.json" <<'JSON'
{ "dhcp": { "mode": "authoritative", "interfaces": ["kds-vs"],
    "subnets": [
      { "subnet": "10.77.0.0/24", "pool": "10.77.0.100-10.77.0.199", "lease_time_s": 600 },
      { "subnet": "10.79.0.0/24", "pool": "10.79.0.10-10.79.0.250", "lease_time_s": 600 } ] } }
JSON
start_kilnd --config "$WORK/base.json"

log "a real client (udhcpc) gets a lease: the victim"
cat >"$WORK/udhcpc-script" <<EOF
#!/bin/sh
[ "\$1" = bound ] && echo "ip=\$ip serverid=\$serverid" >>"$WORK/udhcpc.out"
exit 0
EOF
chmod +x "$WORK/udhcpc-script"
: >"$WORK/udhcpc.out"
# -C: no client identifier (option 61), so the probes below speak for it by MAC alone.
in_cli timeout 30 busybox udhcpc -i kds-vc -C -f -q -n -t 3 -T 1 -s "$WORK/udhcpc-script" >/dev/null 2>&1 || true
vip=$(sed -n 's/^ip=\([^ ]*\).*/\1/p' "$WORK/udhcpc.out" | tail -1)
vmac=$(in_cli cat /sys/class/net/kds-vc/address)
[[ "$vip" =~ ^10\.77\.0\.1[0-9][0-9]$ ]] && ok || fail "udhcpc got no lease: $(cat "$WORK/udhcpc.out")"
wait_state "$vip" "$vmac" bound && ok || fail "the victim's lease is not bound in SQLite"

log "1. INIT-REBOOT from clients without a record: silent, nothing persisted"
out=$(probe --type request --requested 10.77.0.150 --mac 52:54:00:66:00:01 --count 5)
[[ -z "$out" ]] && ok || fail "INIT-REBOOT without a record was answered: $out"
wait_refused init_reboot_unknown 5 && ok || fail "init_reboot_unknown not counted: '$(refused init_reboot_unknown)'"
expect_eq "$(db "SELECT count(*) FROM dhcp_leases WHERE mac LIKE '52:54:00:66:00:%'")" "0" \
  "leases persisted for spoofed INIT-REBOOTs"
grep -q 'event=dhcp.refused reason=init_reboot_unknown type=REQUEST' "$WORK/kilnd.0.log" && ok ||
  fail "no event=dhcp.refused log line"
# The victim, which has a record, gets its address back by INIT-REBOOT (an ACK, type 5).
out=$(probe --type request --requested "$vip" --mac "$vmac")
grep -q "type=5 yiaddr=$vip " <<<"$out" && ok || fail "INIT-REBOOT with a record: '$out'"

log "2. RELEASE / DECLINE from another address are ignored; the client's own are honoured"
in_cli ip addr add 10.77.0.2/24 dev kds-vc
probe --type release --mac "$vmac" --ciaddr "$vip" --server-id 10.77.0.1 --bind 10.77.0.2 \
  --dest 10.77.0.1 --wait-ms 0
wait_refused release_not_from_client 1 && ok ||
  fail "spoofed RELEASE not counted: '$(refused release_not_from_client)'"
expect_eq "$(db_state "$vip" "$vmac")" "bound" "the victim's lease after a spoofed RELEASE"
# A second machine (W) by DISCOVER/REQUEST, then a DECLINE of its address from the attacker.
wmac=52:54:00:66:02:01
wip=$(probe --type discover --mac $wmac | sed -n 's/.*type=2 yiaddr=\([^ ]*\).*/\1/p' | head -1)
out=$(probe --type request --mac $wmac --server-id 10.77.0.1 --requested "$wip")
grep -q "type=5 yiaddr=$wip " <<<"$out" && ok || fail "W got no lease: '$wip' '$out'"
wait_state "$wip" $wmac bound || fail "W's lease not bound"
probe --type decline --mac $wmac --requested "$wip" --server-id 10.77.0.1 --bind 10.77.0.2 --wait-ms 0
wait_refused decline_not_from_client 1 && ok ||
  fail "spoofed DECLINE not counted: '$(refused decline_not_from_client)'"
expect_eq "$(db_state "$wip" $wmac)" "bound" "W's lease after a spoofed DECLINE"
# The victim's own RELEASE (from its address) frees its lease.
in_cli ip addr add "$vip/32" dev kds-vc
probe --type release --mac "$vmac" --ciaddr "$vip" --server-id 10.77.0.1 --bind "$vip" \
  --dest 10.77.0.1 --wait-ms 0
wait_state "$vip" "$vmac" released && ok || fail "the client's own RELEASE: $(db_state "$vip" "$vmac")"
in_cli ip addr del "$vip/32" dev kds-vc

log "3. giaddr from a directly attached client (no dhcp.relays): refused"
out=$(probe --type request --giaddr 10.79.0.1 --server-id 10.77.0.1 --requested 10.79.0.20 \
  --mac 52:54:00:66:03:01 --count 3)
wait_refused relay_not_allowed 3 && ok || fail "spoofed relay not counted: '$(refused relay_not_allowed)'"
expect_eq "$(db "SELECT count(*) FROM dhcp_leases WHERE ip LIKE '10.79.0.%'")" "0" \
  "leases in the other subnet's pool"
stop_kilnd TERM

log "3b. dhcp.relays: the configured relay is served, a client using its giaddr is not"
in_cli ip addr add 10.79.0.1/24 dev kds-vc
in_srv ip route add 10.79.0.0/24 via 10.77.0.2
cat >"$WORK/limits.json" <<'JSON'
{ "dhcp": { "mode": "authoritative", "interfaces": ["kds-vs"], "relays": ["10.79.0.1"],
    "new_lease_rate": 1, "new_lease_burst": 6, "new_lease_rate_per_mac": 2,
    "subnets": [
      { "subnet": "10.77.0.0/24", "pool": "10.77.0.100-10.77.0.199", "lease_time_s": 600 },
      { "subnet": "10.79.0.0/24", "pool": "10.79.0.10-10.79.0.250", "lease_time_s": 600 } ] } }
JSON
start_kilnd --config "$WORK/limits.json"
out=$(probe --type discover --giaddr 10.79.0.1 --bind 10.79.0.1 --port 67 --dest 10.77.0.1 \
  --mac 52:54:00:66:04:01)
grep -q 'from=10.77.0.1 type=2 yiaddr=10.79.0.' <<<"$out" && ok || fail "no offer through the relay: '$out'"
before=$(refused relay_not_allowed)
out=$(probe --type discover --giaddr 10.79.0.1 --bind 10.77.0.2 --dest 10.77.0.1 --mac 52:54:00:66:04:02)
wait_refused relay_not_allowed $((${before:-0} + 1)) && ok || fail "giaddr from a client not refused: '$out'"

log "4. new leases: per MAC (one MAC cycling client ids), then globally; renewals pass"
out=$(probe --type discover --mac 52:54:00:66:05:01 --client-id cycle- --count 5)
granted=$(grep -c 'type=2 ' <<<"$out" || true)
wait_refused rate_limited_mac $((5 - granted)) || true
limited=$(refused rate_limited_mac)
log "per MAC: $granted of 5 offered, ${limited:-0} refused"
[[ "$granted" -ge 1 && "$granted" -lt 5 && "${limited:-0}" -eq $((5 - granted)) ]] && ok ||
  fail "per-MAC limit: $granted offered, '${limited}' refused"
out=$(probe --type discover --mac 52:54:00:66:06:01 --count 10)
granted=$(grep -c 'type=2 ' <<<"$out" || true)
wait_refused rate_limited_global $((10 - granted)) || true
limited=$(refused rate_limited_global)
log "global: $granted of 10 offered, ${limited:-0} refused"
[[ "$granted" -lt 10 && "${limited:-0}" -ge 1 && "${limited:-0}" -eq $((10 - granted)) ]] && ok ||
  fail "global limit: $granted offered, '${limited}' refused"
# W renews (REQUEST from its address, ciaddr set) while the bucket is empty: ACKed.
in_cli ip addr add "$wip/32" dev kds-vc
out=$(probe --type request --mac $wmac --ciaddr "$wip" --bind "$wip" --dest 10.77.0.1)
grep -q "type=5 yiaddr=$wip " <<<"$out" && ok || fail "renewal under the rate limit: '$out'"
in_cli ip addr del "$wip/32" dev kds-vc
# ... and the bucket was still empty: the next new client is refused.
before=$(refused rate_limited_global)
out=$(probe --type discover --mac 52:54:00:66:07:01)
[[ -z "$out" ]] && wait_refused rate_limited_global $((before + 1)) && ok ||
  fail "a new lease right after the renewal: '$out'"
stop_kilnd TERM

log "5. dhcp.known_only: unknown MACs get nothing until the machine is registered"
cat >"$WORK/known.json" <<'JSON'
{ "dhcp": { "mode": "authoritative", "interfaces": ["kds-vs"], "known_only": true,
    "subnets": [ { "subnet": "10.77.0.0/24", "pool": "10.77.0.100-10.77.0.199" } ] } }
JSON
start_kilnd --config "$WORK/known.json"
kmac=52:54:00:66:08:01
out=$(probe --type discover --mac $kmac)
[[ -z "$out" ]] && ok || fail "an unknown machine got an offer: $out"
wait_refused unknown_client 1 && ok || fail "unknown_client not counted"
TOKEN=$(make_token ops)
status=$(in_srv curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' --data-binary "{\"mac\": \"$kmac\"}" "$URL/api/v1/machines")
expect_eq "$status" "201" "machine registered"
got=""
for _ in $(seq 10); do  # the DHCP server re-reads the machines every 2 s
  out=$(probe --type discover --mac $kmac --wait-ms 500)
  grep -q 'type=2 yiaddr=10.77.0.1' <<<"$out" && { got=1; break; }
done
[[ -n "$got" ]] && ok || fail "the registered machine got no offer"
stop_kilnd TERM

finish
