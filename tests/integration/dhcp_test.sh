#!/usr/bin/env bash
# DHCP: kilnd's DHCPv4 server against real clients inside network namespaces this test creates
# and deletes (never on a real interface): ISC dhclient and busybox udhcpc (DORA, options, PXE
# boot files by architecture and user class, RELEASE), perfdhcp (DORA through a relay: giaddr,
# a second subnet), leases persisted in SQLite and reloaded after a restart, malformed packets,
# interface binding, and proxyDHCP beside dnsmasq acting as the site's DHCP server.
#
# Topology: netns $SRV holds bridge kdt-br (10.77.0.1/24) with two ports: kdt-vs (peer kdt-vc in
# $CLI, the clients) and kdt-vsite (peer kdt-site in $SITE, dnsmasq for the proxy test). A
# second pair kdt-vx / kdt-cx is on 10.78.0.0/24 and NOT in kilnd's interface list.
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77  # ctest's SKIP_RETURN_CODE: a skip, not a pass
fi
for c in dhclient busybox perfdhcp dnsmasq sqlite3; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; finish; }
done

SRV=kdt-srv-$$ CLI=kdt-cli-$$ SITE=kdt-site-$$
netns_add $SRV $CLI $SITE
ip link add kdt-vs netns "$SRV" type veth peer name kdt-vc netns "$CLI"
ip link add kdt-vsite netns "$SRV" type veth peer name kdt-site netns "$SITE"
ip link add kdt-vx netns "$SRV" type veth peer name kdt-cx netns "$CLI"
ip -n "$SRV" link add kdt-br type bridge
ip -n "$SRV" link set kdt-vs master kdt-br
ip -n "$SRV" link set kdt-vsite master kdt-br
ip -n "$SRV" addr add 10.77.0.1/24 dev kdt-br
ip -n "$SRV" addr add 10.78.0.1/24 dev kdt-vx
for l in kdt-br kdt-vs kdt-vsite kdt-vx; do ip -n "$SRV" link set "$l" up; done
ip -n "$CLI" link set kdt-vc up
ip -n "$CLI" link set kdt-cx up
ip -n "$SITE" addr add 10.77.0.3/24 dev kdt-site
ip -n "$SITE" link set kdt-site up
# perfdhcp always plays a relay (giaddr = its address; both are in dhcp.relays), for
# 10.79.0.0/24 too: the server reaches it through the client namespace.
ip -n "$SRV" route add 10.79.0.0/24 via 10.77.0.2

# kilnd runs inside $SRV (a wrapper, so lib.sh's start/stop by PID work unchanged).
kilnd_in_netns "$SRV"
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
metric() { in_srv curl -s "$URL/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

cat >"$WORK/auth.json" <<'JSON'
{ "dhcp": { "mode": "authoritative", "interfaces": ["kdt-br"],
    "relays": ["10.77.0.2", "10.79.0.1"],
    "subnets": [
      { "subnet": "10.77.0.0/24", "pool": "10.77.0.100-10.77.0.199", "router": "10.77.0.1",
        "dns": ["10.77.0.1", "10.77.0.2"], "domain": "lab.test", "lease_time_s": 600 },
      { "subnet": "10.79.0.0/24", "pool": "10.79.0.10-10.79.0.250", "router": "10.79.0.1",
        "lease_time_s": 900 } ] } }
JSON
start_kilnd --config "$WORK/auth.json"
grep -q 'event=dhcp.listening mode=authoritative interfaces=kdt-br=10.77.0.1' "$WORK/kilnd.0.log" &&
  ok || fail "no dhcp.listening line"

log "dhclient: DORA with the subnet's options; the lease is in SQLite"
# A minimal dhclient-script: records what it got and configures only the address (the stock
# script would rewrite the host's /etc/resolv.conf, which network namespaces share).
cat >"$WORK/dhclient-script" <<EOF
#!/bin/sh
echo "\$reason ip=\$new_ip_address routers=\$new_routers dns=\$new_domain_name_servers domain=\$new_domain_name server=\$new_dhcp_server_identifier lease=\$new_dhcp_lease_time filename=\$new_filename" >>"$WORK/dhclient.out"
case \$reason in
  BOUND|RENEW|REBIND|REBOOT) ip addr replace \$new_ip_address/24 dev \$interface ;;
  RELEASE|EXPIRE|FAIL|STOP) ip addr flush dev \$interface ;;
esac
exit 0
EOF
chmod +x "$WORK/dhclient-script"
dhc() { in_cli timeout 30 dhclient -4 -sf "$WORK/dhclient-script" -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" "$@"; }
dhc -1 kdt-vc >/dev/null 2>&1 || fail "dhclient got no lease"
[[ -s "$WORK/dhclient.pid" ]] && CLEANUP_CMDS+=("kill $(cat "$WORK/dhclient.pid")")
bound=$(grep '^BOUND' "$WORK/dhclient.out" | tail -1)
ip1=$(sed -n 's/.* ip=\([^ ]*\).*/\1/p' <<<"$bound")
[[ "$ip1" =~ ^10\.77\.0\.1[0-9][0-9]$ ]] && ok || fail "address not from the pool: $bound"
grep -q 'routers=10.77.0.1 dns=10.77.0.1 10.77.0.2 domain=lab.test server=10.77.0.1 lease=600' <<<"$bound" &&
  ok || fail "options: $bound"
mac=$(in_cli cat /sys/class/net/kdt-vc/address)
db_state() { sqlite3 "$WORK/var/kiln.db" "SELECT state FROM dhcp_leases WHERE ip = '$1' AND mac = '$2'"; }
expect_eq "$(db_state "$ip1" "$mac")" "bound" "lease row in SQLite"

log "dhclient -r: RELEASE frees the lease"
dhc -r kdt-vc >/dev/null 2>&1 || true
sleep 0.3
expect_eq "$(db_state "$ip1" "$mac")" "released" "released lease row"

log "udhcpc: PXE boot files by architecture and user class"
cat >"$WORK/udhcpc-script" <<EOF
#!/bin/sh
[ "\$1" = bound ] && echo "ip=\$ip router=\$router boot_file=\$boot_file siaddr=\$siaddr serverid=\$serverid" >>"$WORK/udhcpc.out"
exit 0
EOF
chmod +x "$WORK/udhcpc-script"
udh() { # udh IFACE [udhcpc options...]: one lease, printed
  : >"$WORK/udhcpc.out"
  in_cli timeout 30 busybox udhcpc -i "$1" -f -q -n -t 3 -T 1 -s "$WORK/udhcpc-script" "${@:2}" >/dev/null 2>&1 || true
  cat "$WORK/udhcpc.out"
}
out=$(udh kdt-vc -V "PXEClient:Arch:00000:UNDI:002001" -x 0x5d:0000)
grep -q 'boot_file=undionly.kpxe siaddr=10.77.0.1 serverid=10.77.0.1' <<<"$out" && ok || fail "BIOS PXE: $out"
out=$(udh kdt-vc -V "PXEClient:Arch:00007:UNDI:003016" -x 0x5d:0007)
grep -q 'boot_file=ipxe.efi' <<<"$out" && ok || fail "UEFI x64 PXE: $out"
out=$(udh kdt-vc -V "PXEClient:Arch:00000:UNDI:002001" -x 0x5d:0000 -x 0x4d:69505845)  # 77 = "iPXE"
grep -q "boot_file=http://10.77.0.1:[0-9]*/boot/${mac//:/-}.ipxe" <<<"$out" && ok || fail "iPXE script URL: $out"
out=$(udh kdt-vc)
grep -q 'ip=10.77.0.1[0-9][0-9] router=10.77.0.1 boot_file= ' <<<"$out" && ok || fail "plain client: $out"

log "interface binding: nothing answers on an interface not in dhcp.interfaces"
out=$(udh kdt-cx)
[[ -z "$out" ]] && ok || fail "a lease on an unserved interface: $out"

log "malformed packets are dropped and counted"
in_cli ip addr add 10.77.0.2/24 dev kdt-vc
for junk in 'x' "$(head -c 300 /dev/zero | tr '\0' 'A')" "$(printf '\001\001\006\000%.0s' $(seq 70))"; do
  in_cli bash -c "printf '%s' '$junk' >/dev/udp/10.77.0.1/67" 2>/dev/null || true
done
sleep 0.3
dropped=$(metric 'kiln_dhcp_dropped_total{reason="malformed"}')
[[ "${dropped%.*}" -ge 3 ]] && ok || fail "malformed packets counted: '$dropped'"

log "perfdhcp: DORA exchanges through a relay (giaddr) on two subnets"
pd() { in_cli timeout 60 perfdhcp -4 -W 1000000 "$@" 10.77.0.1 2>&1 || true; }
# 90 simulated clients: the pool (100 addresses) already lends two to dhclient and udhcpc.
res=$(pd -l kdt-vc -r 50 -n 90 -R 90)
echo "$res" >"$WORK/perfdhcp1.out"
drops=$(grep -A3 'Statistics for: DISCOVER-OFFER\|Statistics for: REQUEST-ACK' <<<"$res" | awk '/^drops:/ {print $2}' | tr '\n' ' ')
rcv=$(grep -A3 'Statistics for: REQUEST-ACK' <<<"$res" | awk '/^received packets:/ {print $3}')
expect_eq "$drops" "0 0 " "perfdhcp drops (offers, acks)"
[[ "$drops" == "0 0 " ]] || echo "$res" >&2
expect_eq "$rcv" "90" "perfdhcp ACKs received"
in_cli ip addr add 10.79.0.1/24 dev kdt-vc
res=$(pd -l 10.79.0.1 -r 20 -n 20 -R 20)
grep -A3 'Statistics for: REQUEST-ACK' <<<"$res" | grep -q 'received packets: 2[0-9]\|received packets: 1[5-9]' &&
  ok || fail "perfdhcp as a relay for 10.79.0.0/24: $res"
relayed=$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM dhcp_leases WHERE ip LIKE '10.79.0.%' AND state = 'bound'")
[[ "$relayed" -ge 15 ]] && ok || fail "leases from the relay's subnet: $relayed"
commits=$(metric kiln_dhcp_lease_commits_total)
writes=$(metric kiln_dhcp_lease_writes_total)
log "lease writes: ${writes%.*} in ${commits%.*} commits"
in_cli ip addr del 10.77.0.2/24 dev kdt-vc
in_cli ip addr del 10.79.0.1/24 dev kdt-vc

log "restart: leases reload, dhclient keeps its address"
dhc -1 kdt-vc >/dev/null 2>&1 || fail "dhclient got no lease"
ip2=$(grep '^BOUND\|^REBOOT' "$WORK/dhclient.out" | tail -1 | sed -n 's/.* ip=\([^ ]*\).*/\1/p')
in_cli sh -c "kill \$(cat $WORK/dhclient.pid)" 2>/dev/null || true
stop_kilnd TERM
n_leases=$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM dhcp_leases")
start_kilnd --config "$WORK/auth.json"
grep -q "leases_loaded=$n_leases" "$WORK/kilnd.1.log" && ok || fail "leases not reloaded ($n_leases rows)"
dhc -1 kdt-vc >/dev/null 2>&1 || fail "dhclient got no lease after the restart"
ip3=$(grep '^BOUND\|^REBOOT' "$WORK/dhclient.out" | tail -1 | sed -n 's/.* ip=\([^ ]*\).*/\1/p')
expect_eq "$ip3" "$ip2" "the same address after kilnd restarted"
in_cli sh -c "kill \$(cat $WORK/dhclient.pid)" 2>/dev/null || true

log "reservations: a machine registered with an ipv4 gets exactly that address"
TOKEN=$(make_token ops)
api_ns() { # api_ns METHOD PATH JSON
  STATUS=$(in_srv curl -s -o "$WORK/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data-binary "$3" "$URL$2")
  BODY=$(cat "$WORK/body")
}
api_ns POST /api/v1/machines '{"mac": "52:54:00:99:99:01", "ipv4": "10.77.0.300"}'
expect_status 422 "malformed reservation"
api_ns POST /api/v1/machines "{\"mac\": \"$mac\", \"ipv4\": \"10.77.0.42\"}"
expect_status 201 "machine with a reservation"
expect_eq "$(jqb .ipv4)" "10.77.0.42" "ipv4 in the machine"
api_ns POST /api/v1/machines '{"mac": "52:54:00:99:99:02", "ipv4": "10.77.0.42"}'
expect_status 409 "the same address reserved twice"
sleep 2.5  # the DHCP server re-reads machines every 2 s
# dhclient first asks for its old address (INIT-REBOOT): NAK, then DISCOVER: the reservation.
dhc -1 kdt-vc >/dev/null 2>&1 || fail "dhclient got no lease with a reservation"
in_cli sh -c "kill \$(cat $WORK/dhclient.pid)" 2>/dev/null || true
ip4=$(grep '^BOUND' "$WORK/dhclient.out" | tail -1 | sed -n 's/.* ip=\([^ ]*\).*/\1/p')
expect_eq "$ip4" "10.77.0.42" "the reserved address"
stop_kilnd TERM

log "proxyDHCP beside dnsmasq: address from the site server, boot file from kilnd"
in_srv ip route del 10.79.0.0/24 || true
in_srv ip addr flush dev kdt-br
in_srv ip addr add 10.77.0.1/24 dev kdt-br
ip netns exec "$SITE" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
  --interface=kdt-site --bind-interfaces --dhcp-range=10.77.0.50,10.77.0.60,600 \
  --dhcp-leasefile="$WORK/dnsmasq.leases" --pid-file="$WORK/dnsmasq.pid" --user=root \
  --log-facility=- --log-dhcp >"$WORK/dnsmasq.log" 2>&1 &
DNSMASQ_PID=$!
CLEANUP_CMDS+=("kill $DNSMASQ_PID")
cat >"$WORK/proxy.json" <<'JSON'
{ "dhcp": { "mode": "proxy", "interfaces": ["kdt-br"] } }
JSON
start_kilnd --config "$WORK/proxy.json"
grep -q 'event=dhcp.listening mode=proxy' "$WORK/kilnd.2.log" && ok || fail "proxy mode did not start"
sleep 0.5
# A PXE ROM's DISCOVER gets an address offer from dnsmasq (its log) and a proxy offer from
# kilnd: no address; boot file, option 60 "PXEClient", option 43 discovery control 8.
offers=$(in_cli "$KILN_BUILD/dhcp_probe" --iface kdt-vc --mac "$mac" --arch 0 --wait-ms 1500)
seen=""
for _ in $(seq 30); do  # dnsmasq writes its log lines asynchronously
  grep -Eq "DHCPOFFER\\(kdt-site\\) 10\\.77\\.0\\.(5[0-9]|60) $mac" "$WORK/dnsmasq.log" && { seen=1; break; }
  sleep 0.1
done
[[ -n "$seen" ]] && ok ||
  fail "dnsmasq made no address offer to the PXE DISCOVER: $(tail -3 "$WORK/dnsmasq.log")"
grep -q '^from=10.77.0.1 type=2 yiaddr=0.0.0.0 siaddr=10.77.0.1 file=undionly.kpxe vendor_class=PXEClient opt43=060108ff' <<<"$offers" &&
  ok || fail "no proxy offer from kilnd: $offers"
offers=$(in_cli "$KILN_BUILD/dhcp_probe" --iface kdt-vc --mac "$mac" --arch 7 \
  --vendor-class PXEClient:Arch:00007 --wait-ms 1500)
grep -q '^from=10.77.0.1 type=2 yiaddr=0.0.0.0 .*file=ipxe.efi' <<<"$offers" && ok ||
  fail "no UEFI proxy offer: $offers"
# An ordinary client (dhclient, no PXE vendor class) is served by dnsmasq alone; kilnd stays
# silent and leaves the REQUEST on port 67 to it.
rm -f "$WORK/dhclient.leases"
: >"$WORK/dhclient.out"
dhc -1 kdt-vc >/dev/null 2>&1 || fail "dhclient got no lease beside the proxy"
in_cli sh -c "kill \$(cat $WORK/dhclient.pid)" 2>/dev/null || true
bound=$(grep '^BOUND' "$WORK/dhclient.out" | tail -1)
grep -Eq 'ip=10\.77\.0\.(5[0-9]|60) .*server=10.77.0.3' <<<"$bound" && ok || fail "address not from dnsmasq: $bound"
sent=$(metric 'kiln_dhcp_sent_total{type="OFFER"}')
expect_eq "${sent%.*}" "2" "kilnd offered only to the two PXE probes"
[[ "$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM dhcp_leases WHERE ip LIKE '10.77.0.5%'")" == 0 ]] &&
  ok || fail "proxy mode wrote leases"
out=$(udh kdt-vc)  # a client that is not PXE: only dnsmasq answers it
grep -Eq 'ip=10\.77\.0\.(5[0-9]|60) .*serverid=10.77.0.3' <<<"$out" && ok || fail "plain client beside the proxy: $out"

finish
