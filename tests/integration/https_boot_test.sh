#!/usr/bin/env bash
# HTTPS boot policy (dhcp.boot.https_base): kilnd's DHCP server against DISCOVERs carrying
# iPXE's option 175 feature list, from a client namespace this test creates and deletes (never
# on a real interface). Debian's stock iPXE ROM (no HTTPS feature) must be chainloaded to the
# HTTPS build over TFTP (and that file must be served), the HTTPS build must get the https
# script URL, and an iPXE that cannot do HTTPS must never get a plain http script when
# dhcp.boot.https_required is set. Before HTTPS boot existed, every iPXE got the plain
# http:// script URL (its agent token in clear on the wire).
#
# Topology: netns $SRV holds bridge kht-br (10.81.0.1/24) with port kht-vs, whose peer kht-vc
# is in $CLI (the clients: tests/tools/dhcp_probe, tftp-hpa).
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77
fi
command -v tftp >/dev/null || { fail "missing tftp (tftp-hpa, deploy/install-deps.sh)"; finish; }

SRV=kht-srv-$$ CLI=kht-cli-$$
netns_add $SRV $CLI
ip link add kht-vs netns "$SRV" type veth peer name kht-vc netns "$CLI"
ip -n "$SRV" link add kht-br type bridge
ip -n "$SRV" link set kht-vs master kht-br
ip -n "$SRV" addr add 10.81.0.1/24 dev kht-br
for l in kht-br kht-vs; do ip -n "$SRV" link set "$l" up; done
ip -n "$CLI" addr add 10.81.0.2/24 dev kht-vc  # for TFTP (the pool starts at .100)
ip -n "$CLI" link set kht-vc up

kilnd_in_netns "$SRV"
in_cli() { ip netns exec "$CLI" "$@"; }
probe() { in_cli "$KILN_BUILD/dhcp_probe" --iface kht-vc --wait-ms 1500 "$@"; }

# Stand-ins for deploy/build-ipxe.sh's output, in a boot root as kiln/ipxe-https.{kpxe,efi}.
mkdir -p "$WORK/roots/kiln"
head -c 70000 /dev/urandom >"$WORK/roots/kiln/ipxe-https.kpxe"
head -c 90000 /dev/urandom >"$WORK/roots/kiln/ipxe-https.efi"

# iPXE's option 175 feature lists, real ones (see tests/unit/dhcp/packet_test.cc): Debian 12's
# QEMU ROM (efi-virtio.rom; no HTTPS) and the undionly.kpxe deploy/build-ipxe.sh builds (HTTPS
# is sub-option 0x14).
STOCK_175=eb03010000170101240101130101110101270101290101150101120101
HTTPS_175=eb03010000170101220101130101140101110101270101190101100102210101150101180101120101

config() {  # config FILE EXTRA-BOOT-JSON
  cat >"$1" <<JSON
{ "boot": { "roots": ["$WORK/roots"] },
  "tftp": { "listen": "10.81.0.1:69" },
  "dhcp": { "mode": "authoritative", "interfaces": ["kht-br"],
    "subnets": [ { "subnet": "10.81.0.0/24", "pool": "10.81.0.100-10.81.0.199",
                   "lease_time_s": 600 } ],
    "boot": { "http_base": "http://10.81.0.1:8080" $2 } } }
JSON
}

log "HTTPS boot on: the stock ROM chainloads the HTTPS build, which gets the https script"
config "$WORK/https.json" ', "https_base": "https://10.81.0.1:8443"'
start_kilnd --config "$WORK/https.json"
sleep 0.3
out=$(probe --mac 52:54:00:81:00:01 --arch 0 --user-class iPXE --opt175 "$STOCK_175")
grep -q '^from=10.81.0.1 type=2 yiaddr=10.81.0.1[0-9][0-9] siaddr=10.81.0.1 file=kiln/ipxe-https.kpxe ' <<<"$out" &&
  ok || fail "stock BIOS iPXE was not chainloaded to the HTTPS build: $out"
out=$(probe --mac 52:54:00:81:00:02 --arch 7 --vendor-class PXEClient:Arch:00007:UNDI:003001 \
  --user-class iPXE --opt175 "$STOCK_175")
grep -q ' siaddr=10.81.0.1 file=kiln/ipxe-https.efi ' <<<"$out" &&
  ok || fail "stock UEFI iPXE was not chainloaded to the HTTPS build: $out"
out=$(probe --mac 52:54:00:81:00:03 --arch 0 --user-class iPXE --opt175 "$HTTPS_175")
grep -q ' file=https://10.81.0.1:8443/boot/52-54-00-81-00-03.ipxe ' <<<"$out" &&
  ok || fail "iPXE with HTTPS did not get the https script URL: $out"
out=$(probe --mac 52:54:00:81:00:04 --arch 9 --vendor-class PXEClient:Arch:00009:UNDI:003001 \
  --user-class iPXE --opt175 "$HTTPS_175")
grep -q ' file=https://10.81.0.1:8443/boot/52-54-00-81-00-04.ipxe ' <<<"$out" &&
  ok || fail "UEFI iPXE with HTTPS did not get the https script URL: $out"
# A plain PXE ROM (not iPXE) gets the HTTPS build directly.
out=$(probe --mac 52:54:00:81:00:05 --arch 0)
grep -q ' file=kiln/ipxe-https.kpxe ' <<<"$out" && ok || fail "PXE ROM: $out"
# The chainload target is what kilnd's TFTP serves, byte for byte (from the client namespace).
for f in kiln/ipxe-https.kpxe kiln/ipxe-https.efi; do
  rm -f "$WORK/got"
  (cd "$WORK" && in_cli timeout 60 tftp -m binary 10.81.0.1 -c get "$f" got) || true
  cmp -s "$WORK/got" "$WORK/roots/$f" && ok || fail "TFTP did not serve $f"
done
# An iPXE for which no HTTPS build exists (arm64) still gets the plain script: not required.
out=$(probe --mac 52:54:00:81:00:06 --arch 11 --vendor-class PXEClient:Arch:00011:UNDI:003001 \
  --user-class iPXE --opt175 "$STOCK_175")
grep -q ' file=http://10.81.0.1:8080/boot/52-54-00-81-00-06.ipxe ' <<<"$out" && ok ||
  fail "arm64 iPXE without HTTPS (https not required): $out"
stop_kilnd || true

log "https_required: an iPXE without HTTPS never gets a plain http script"
config "$WORK/required.json" ', "https_base": "https://10.81.0.1:8443", "https_required": true'
start_kilnd --config "$WORK/required.json"
sleep 0.3
out=$(probe --mac 52:54:00:81:00:07 --arch 11 --vendor-class PXEClient:Arch:00011:UNDI:003001 \
  --user-class iPXE --opt175 "$STOCK_175")
grep -q '^from=10.81.0.1 type=2 .* file= ' <<<"$out" && ok ||
  fail "https_required: arm64 iPXE without HTTPS got a boot file (or no offer): $out"
out=$(probe --mac 52:54:00:81:00:08 --arch 0 --user-class iPXE --opt175 "$STOCK_175")
grep -q ' file=kiln/ipxe-https.kpxe ' <<<"$out" && ok || fail "https_required, BIOS: $out"
stop_kilnd || true

log "HTTPS boot off (the default): iPXE gets the http script whatever it announces"
config "$WORK/off.json" ''
start_kilnd --config "$WORK/off.json"
sleep 0.3
out=$(probe --mac 52:54:00:81:00:09 --arch 0 --user-class iPXE --opt175 "$HTTPS_175")
grep -q ' file=http://10.81.0.1:8080/boot/52-54-00-81-00-09.ipxe ' <<<"$out" && ok ||
  fail "HTTPS boot off: $out"
stop_kilnd || true

log "bad configuration is refused with a clear error"
config "$WORK/bad.json" ', "https_base": "http://10.81.0.1:8443"'
if "$KILND" --data-dir "$WORK/var" --config "$WORK/bad.json" --print-config >"$WORK/bad.out" 2>&1; then
  fail "an http:// https_base was accepted"
else
  grep -q 'dhcp.boot.https_base must be an https:// URL' "$WORK/bad.out" && ok ||
    fail "no clear error for an http:// https_base: $(cat "$WORK/bad.out")"
fi
config "$WORK/bad2.json" ', "https_required": true'
if "$KILND" --data-dir "$WORK/var" --config "$WORK/bad2.json" --print-config >"$WORK/bad2.out" 2>&1; then
  fail "https_required without https_base was accepted"
else
  grep -q 'https_required needs dhcp.boot.https_base' "$WORK/bad2.out" && ok ||
    fail "no clear error for https_required alone: $(cat "$WORK/bad2.out")"
fi

finish
