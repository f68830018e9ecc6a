#!/usr/bin/env bash
# IPv6 router advertisements (ra.*): kilnd answers router solicitations from a real client
# (rdisc6, ndisc6 package) on the configured interface only, with router lifetime 0, no M/O
# flags and the configured prefix; one unsolicited RA at start; nothing on other interfaces.
# Topology: netns $SRV (kra-s1, kra-s2) <-veth-> netns $CLI (kra-c1, kra-c2); created and
# deleted here.
source "$(dirname "$0")/lib.sh"
if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77
fi
command -v rdisc6 >/dev/null || { fail "missing rdisc6 (deploy/install-deps.sh: ndisc6)"; finish; }

SRV=kra-srv-$$ CLI=kra-cli-$$
netns_add $SRV $CLI
for ns in $SRV $CLI; do
  # No duplicate address detection on this private link: link-local addresses are usable at
  # once (DAD would hold them "tentative" for a second or more on a loaded machine).
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
done
ip link add kra-s1 netns "$SRV" type veth peer name kra-c1 netns "$CLI"
ip link add kra-s2 netns "$SRV" type veth peer name kra-c2 netns "$CLI"
for l in kra-s1 kra-s2; do ip -n "$SRV" link set "$l" up; done
for l in kra-c1 kra-c2; do ip -n "$CLI" link set "$l" up; done
ip -n "$SRV" addr add 10.66.0.1/24 dev kra-s1
kilnd_in_netns "$SRV"
cat >"$WORK/ra.json" <<'JSON'
{ "ra": { "interfaces": ["kra-s1"], "prefixes": ["fd66:0:0:1::/64"] } }
JSON
# Link-local addresses need a moment (DAD) before anything can be sent from them.
for _ in $(seq 100); do
  ip -n "$SRV" -6 addr show dev kra-s1 | grep -q 'fe80.*scope link' &&
    ip -n "$CLI" -6 addr show dev kra-c1 | grep -q 'fe80.*scope link' &&
    ! ip -n "$SRV" -6 addr | grep -q tentative && ! ip -n "$CLI" -6 addr | grep -q tentative && break
  sleep 0.1
done
KILND_LISTEN=10.66.0.1:0 start_kilnd --config "$WORK/ra.json"
metric() { ip netns exec "$SRV" curl -s "$URL/metrics" | awk -v m="$1" '$1 ~ m {s += $2} END {print s + 0}'; }

log "a router solicitation on the configured interface gets a lifetime-0 RA with the prefix"
out=$(ip netns exec "$CLI" timeout 10 rdisc6 -1 -w 1000 -r 3 kra-c1 2>&1 || true)
grep -q 'Router lifetime *: *0 ' <<<"$out" && ok || fail "router lifetime 0: $out"
grep -q 'Stateful address conf\. *: *No' <<<"$out" && grep -q 'Stateful other conf\. *: *No' <<<"$out" &&
  ok || fail "no M/O flags: $out"
grep -q 'Prefix *: *fd66:0:0:1::/64' <<<"$out" && ok || fail "prefix: $out"
mac=$(ip -n "$SRV" link show kra-s1 | awk '/link\/ether/ {print $2}')
grep -qi "Source link-layer address: *$mac" <<<"$out" && ok || fail "source link-layer address $mac: $out"
grep -q 'from fe80::' <<<"$out" && ok || fail "RA not from a link-local address: $out"

log "nothing answers on an interface that is not configured"
if ip netns exec "$CLI" timeout 10 rdisc6 -1 -w 500 -r 2 kra-c2 >"$WORK/none" 2>&1; then
  fail "an RA on kra-c2: $(cat "$WORK/none")"
else
  ok
fi
# rdisc6 -1 stops at the first answer: one RS answered on kra-s1, the ones on kra-s2 never
# reached the socket (SO_BINDTODEVICE), so they were neither answered nor even ignored.
solicited=$(metric 'kiln_ra_sent_total.*solicited')
[[ $solicited -eq 1 ]] && ok || fail "kiln_ra_sent_total{why=solicited} = $solicited, expected 1"
ignored=$(metric 'kiln_ra_ignored_total')
[[ $ignored -eq 0 ]] && ok || fail "kiln_ra_ignored_total = $ignored, expected 0"
stop_kilnd

log "a bad prefix is refused at start"
echo '{ "ra": { "interfaces": ["kra-s1"], "prefixes": ["fd66::"] } }' >"$WORK/bad.json"
if "$KILN_BUILD/kilnd" --config "$WORK/bad.json" --data-dir "$WORK/bad" --print-config >"$WORK/bad.out" 2>&1; then
  fail "bad prefix accepted: $(cat "$WORK/bad.out")"
else
  grep -q 'needs a /length' "$WORK/bad.out" && ok || fail "bad prefix error: $(cat "$WORK/bad.out")"
fi
finish
