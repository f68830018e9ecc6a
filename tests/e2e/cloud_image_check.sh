#!/usr/bin/env bash
# Proves the lab's Debian 12 cloud image (deploy/lab/build-cloud-image.sh) with independent
# tools, no kilnd involved: run by hand (root: a network namespace and a tap), not by ctest.
#
#   tests/e2e/cloud_image_check.sh [--raw IMAGE.raw] [--only drive-bios|drive-uefi|part-bios|part-uefi|url-bios|url-uefi]...
#
# (--raw: an image built with --seed-url http://10.98.0.1:8000/nocloud/ for the url runs;
# EXPECT_IMAGE=name:version also checks its image= value. KEEP=1 keeps the work directory.)
#
# The image is built with --seed-url pointing at a python3 http.server in a private network
# namespace (10.98.0.1, dnsmasq for DHCP, a bridge + tap for QEMU, no route out) and is booted
# under QEMU (TCG, snapshot: the raw image is never written) three ways:
#   drive-bios, drive-uefi: a NoCloud seed made by Debian's cloud-localds (a second disk,
#     label cidata): meta-data (instance-id, local-hostname with a domain), user-data
#     (#cloud-config: ssh_authorized_keys, a runcmd printing a marker to the console; checked
#     with `cloud-init schema` from the image's own cloud-init first), network-config v2 (the
#     NIC matched by MAC, dhcp4 plus a static extra address). The HTTP seed serves OTHER
#     values: the drive must win, and the server must see no request.
#   part-bios, part-uefi: the same seed as a vfat CIDATA partition after the image's last
#     byte on a larger disk (the backup GPT moved to its end), as kiln's agent writes it.
#   url-bios: no drive: the image seeds from the URL (the metadata-service path); the server
#     must have served meta-data and user-data, and the values must be the URL's.
# Each boot must print the runcmd marker and the image's own KILN-CLOUD line, whose values are
# checked one by one against what the seed said (the key by `ssh-keygen -lf` on this side).
# Measures and prints: build time, time from power-on to the KILN-CLOUD line per boot, sizes.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export KILN_BUILD=${KILN_BUILD:-$ROOT/build}
FAILURES=0 CHECKS=0
log() { echo "[cloud-check] $*" >&2; }
fail() { echo "[cloud-check] FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
ok() { CHECKS=$((CHECKS + 1)); }
if [[ $(id -u) -ne 0 ]]; then log "skipped: needs root (network namespace, tap)"; exit 77; fi
for c in qemu-system-x86_64 cloud-localds ssh-keygen dnsmasq python3 mmdebstrap; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; exit 1; }
done
RAW='' ONLY=()
while (($#)); do
  case $1 in
    --raw) RAW=$2; shift 2 ;;
    --only) ONLY+=("$2"); shift 2 ;;
    *) echo "usage: $0 [--raw IMAGE.raw] [--only drive-bios|drive-uefi|part-bios|part-uefi|url-bios|url-uefi]..." >&2; exit 2 ;;
  esac
done
((${#ONLY[@]})) || ONLY=(drive-bios drive-uefi url-bios)

NS=kiln-cloudchk-$$ BR=kcbr$$ TAP=kctap$$
SERVER=10.98.0.1 MAC=52:54:00:98:00:01 STATIC=10.98.7.7/24
SEED_URL=http://$SERVER:8000/nocloud/
W=$(mktemp -d /tmp/kiln-cloudchk.XXXXXX)
PIDS=() NS_MADE=
in_ns() { ip netns exec "$NS" "$@"; }
cleanup() {
  local p
  [[ $BASHPID == "$$" ]] || return 0
  trap - EXIT
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && wait "$p" 2>/dev/null; done
  if [[ -n $NS_MADE ]]; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$NS"
  fi
  [[ ${KEEP:-0} == 1 ]] && log "kept $W" || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
report=()
measure() { report+=("$*"); log "$*"; }

# --- The image ----------------------------------------------------------------------------
if [[ -z $RAW ]]; then
  t0=$SECONDS
  "$ROOT/deploy/lab/build-cloud-image.sh" --version check --out "$W/cloud.kiln" --raw "$W/cloud.raw" \
    --qcow2 "$W/cloud.qcow2" --seed-url "$SEED_URL" >&2 || { fail "build-cloud-image.sh"; exit 1; }
  measure "image build: $((SECONDS - t0)) s; raw $(du -m --apparent-size "$W/cloud.raw" | cut -f1) MiB" \
    "($(du -m "$W/cloud.raw" | cut -f1) MiB allocated), qcow2 $(du -m "$W/cloud.qcow2" | cut -f1) MiB," \
    ".kiln $(du -m "$W/cloud.kiln" | cut -f1) MiB"
  # The qcow2 (for `kiln image build`'s qcow2 input) holds the same disk: qemu-img's own check.
  qemu-img check -q "$W/cloud.qcow2" && qemu-img compare -q "$W/cloud.raw" "$W/cloud.qcow2" && ok ||
    fail "the qcow2 is not the raw image"
  # The disk: GPT with both headers valid, the ESP legacy-BIOS-bootable (gptmbr.bin boots it).
  sfdisk -d "$W/cloud.raw" | grep -q 'name="kiln-esp", attrs="LegacyBIOSBootable"' && ok ||
    fail "the ESP lacks the LegacyBIOSBootable attribute"
  if command -v sgdisk >/dev/null; then
    sgdisk -v "$W/cloud.raw" | grep -q 'No problems found' && ok || fail "sgdisk -v: the GPT has problems"
  fi
  RAW=$W/cloud.raw
elif [[ -z ${EXPECT_IMAGE+set} ]]; then
  EXPECT_IMAGE=''
fi
[[ -s $RAW ]] || { fail "no image $RAW"; exit 1; }
EXPECT_IMAGE=${EXPECT_IMAGE-cloud:check}  # (with --raw: set it to the image's name:version, or '')

# --- The seeds ------------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C kiln-check -f "$W/id_check" || { fail ssh-keygen; exit 1; }
FP=$(ssh-keygen -lf "$W/id_check.pub" | awk '{print $2}')
TAG=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
# seed DIR HOSTNAME IID MARKER: meta-data, user-data and network-config in DIR.
seed() {
  mkdir -p "$1"
  printf 'instance-id: %s\nlocal-hostname: %s\n' "$3" "$2" >"$1/meta-data"
  cat >"$1/user-data" <<EOF
#cloud-config
ssh_authorized_keys:
  - $(cat "$W/id_check.pub")
runcmd:
  - [ sh, -c, 'echo "KILN-RUNCMD: marker=$4 host=\$(hostname)" >/dev/console' ]
EOF
  cat >"$1/network-config" <<EOF
version: 2
ethernets:
  nic0:
    match:
      macaddress: "$MAC"
    dhcp4: true
    addresses: [ $STATIC ]
EOF
}
seed "$W/drive" "drive-$TAG.lab.example" "iid-drive-$TAG" "drive-$TAG"
seed "$W/http/nocloud" "url-$TAG.lab.example" "iid-url-$TAG" "url-$TAG"
# NoCloud-net (22.4) fetches meta-data, user-data and vendor-data only (a missing one costs
# ten retries): the URL's network configuration is meta-data's network-interfaces (ENI),
# written before the url boot (it names the interface: the one the drive boot reported).
rm -f "$W/http/nocloud/network-config"
: >"$W/http/nocloud/vendor-data"
URL_STATIC=10.98.8.8/24
url_network() {
  printf 'network-interfaces: |\n  auto %s\n  iface %s inet dhcp\n  auto %s:1\n  iface %s:1 inet static\n    address %s\n' \
    "$1" "$1" "$1" "$1" "$URL_STATIC" >>"$W/http/nocloud/meta-data"
}
IFNAME=enp0s1  # q35, the NIC first on the command line; replaced by what a boot reports
cloud-localds --network-config="$W/drive/network-config" "$W/seed.iso" "$W/drive/user-data" \
  "$W/drive/meta-data" || { fail cloud-localds; exit 1; }

# part_disk — what kiln's agent does at deploy time, done here with sfdisk: the image on a
# larger disk, the backup GPT moved to the disk's end, and a third partition after the image's
# last byte holding a vfat CIDATA filesystem (cloud-localds --filesystem=vfat).
part_disk() {
  local d=$W/cloud-part.raw size start
  [[ -s $d ]] && return 0
  cp --sparse=always "$RAW" "$d"
  size=$(stat -c %s "$RAW")
  truncate -s $((size + 64 * 1048576)) "$d"
  sfdisk -q --relocate gpt-bak-std "$d" || return 1
  start=$((size / 512))
  echo "start=$start, size=$((60 * 2048)), type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"cidata\"" |
    sfdisk -q --append "$d" || return 1
  cloud-localds --filesystem=vfat --network-config="$W/drive/network-config" "$W/seed.vfat" \
    "$W/drive/user-data" "$W/drive/meta-data" || return 1
  dd if="$W/seed.vfat" of="$d" bs=512 seek="$start" conv=notrunc status=none
}

# `cloud-init schema` from the image's own cloud-init (22.4; nothing of cloud-init is installed
# on this host), and it does reject what is wrong (the check can fail).
schema_check() {
  local out
  if out=$("$ROOT/deploy/lab/cloud-init-schema.sh" "$@" 2>&1); then
    ok
    log "$out"
  else
    fail "cloud-init schema: $out"
  fi
  printf '#cloud-config\nruncmd: 42\nssh_authorized_keys: nope\n' >"$W/bad-user-data"
  if out=$("$ROOT/deploy/lab/cloud-init-schema.sh" "$W/bad-user-data" 2>&1); then
    fail "cloud-init schema accepts a wrong user-data: $out"
  else
    ok
  fi
}
schema_check "$W/drive/user-data" "$W/http/nocloud/user-data"

# --- The network namespace: bridge + tap, DHCP, the HTTP seed -------------------------------
ip netns add "$NS" || { fail "netns"; exit 1; }
NS_MADE=1
in_ns ip link set lo up
in_ns ip link add "$BR" type bridge
in_ns ip addr add "$SERVER/24" dev "$BR"
in_ns ip tuntap add dev "$TAP" mode tap
in_ns ip link set "$TAP" master "$BR"
in_ns ip link set "$TAP" up
in_ns ip link set "$BR" up
if in_ns ip route show default | grep -q .; then fail "a default route in $NS"; exit 1; fi
ip netns exec "$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --bind-interfaces \
  --interface="$BR" --except-interface=lo --dhcp-range=10.98.0.100,10.98.0.150,10m \
  --dhcp-leasefile="$W/dnsmasq.leases" --pid-file= --log-facility="$W/dnsmasq.log" --log-dhcp &
PIDS+=($!)
ip netns exec "$NS" python3 -m http.server 8000 --bind "$SERVER" --directory "$W/http" >"$W/http.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
  in_ns curl -sf --max-time 2 "${SEED_URL}meta-data" >/dev/null 2>&1 && break
  sleep 0.2
done
in_ns curl -sf --max-time 2 "${SEED_URL}meta-data" | grep -q "url-$TAG" || { fail "the HTTP seed does not answer"; exit 1; }

# boot NAME FIRMWARE WITH_DRIVE — boots the image (snapshot) and waits for the KILN-CLOUD line.
boot() {
  local name=$1 fw=$2 drive=$3 serial=$W/serial-$1.log t0 args
  local disk=$RAW
  if [[ $drive == part ]]; then
    part_disk || { fail "$name: cannot make the disk with a CIDATA partition"; return 1; }
    disk=$W/cloud-part.raw
  fi
  # shellcheck disable=SC2054  # (QEMU's comma-separated options)
  args=(-name "kiln-cloudchk-$name" -machine q35 -accel tcg,thread=single -cpu "${QEMU_CPU:-max}" -m "${MEM_MB:-1024}" -smp 1
    -nographic -no-user-config -nodefaults -serial stdio
    -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=$MAC,romfile="
    -drive "file=$disk,if=none,id=d0,format=raw,snapshot=on" -device virtio-blk-pci,drive=d0,bootindex=1)
  if [[ $drive == 1 ]]; then
    # shellcheck disable=SC2054
    args+=(-drive "file=$W/seed.iso,if=none,id=d1,format=raw,readonly=on" -device virtio-blk-pci,drive=d1)
  fi
  if [[ $fw == uefi ]]; then
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$W/vars-$name.fd"
    args+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
      -drive "if=pflash,format=raw,unit=1,file=$W/vars-$name.fd")
  fi
  : >"$W/http.log.mark"
  local before
  before=$(wc -l <"$W/http.log")
  t0=${EPOCHREALTIME/./}
  ip netns exec "$NS" timeout "${BOOT_TIMEOUT:-400}" qemu-system-x86_64 "${args[@]}" </dev/null \
    > >(while IFS= read -r l; do d=$((${EPOCHREALTIME/./} - t0)); printf '[%4d.%01d] %s\n' $((d / 1000000)) $((d / 100000 % 10)) "${l//$'\r'/}"; done >"$serial") 2>&1 &
  local qpid=$!
  local deadline=$((SECONDS + ${BOOT_TIMEOUT:-400})) line=
  while ((SECONDS < deadline)); do
    line=$(grep -a -m1 'KILN-CLOUD: ' "$serial" 2>/dev/null | grep -v 'echo ' || true)
    [[ -n $line ]] && break
    kill -0 "$qpid" 2>/dev/null || break
    sleep 1
  done
  sleep 2  # let the last lines through
  kill "$qpid" 2>/dev/null
  wait "$qpid" 2>/dev/null
  HTTP_NEW=$(tail -n +"$((before + 1))" "$W/http.log")
  SERIAL=$serial
  if [[ -z $line ]]; then
    fail "$name: no KILN-CLOUD line within ${BOOT_TIMEOUT:-400} s"
    tail -n 40 "$serial" >&2
    return 1
  fi
  LINE=${line#*KILN-CLOUD: }
  local ifn
  ifn=$(field addrs | sed -n 's/^\([^=]*\)=10\.98\.0\..*/\1/p' | head -n1)
  [[ -n $ifn ]] && IFNAME=$ifn
  measure "$name: power-on to KILN-CLOUD $(sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p' <<<"$line") s (guest uptime $(field uptime))"
  log "$name: $LINE"
}
field() { tr ' ' '\n' <<<"$LINE" | sed -n "s/^$1=//p"; }
expect() {  # expect NAME FIELD VALUE
  local got
  got=$(field "$2")
  [[ $got == "$3" ]] && ok || fail "$1: $2=$got, expected $3"
}
expect_match() {  # expect_match NAME FIELD REGEX
  local got
  got=$(field "$2")
  [[ $got =~ $3 ]] && ok || fail "$1: $2=$got does not match $3"
}
# check NAME SOURCE(drive|url)
check() {
  local name=$1 src=$2
  expect "$name" hostname "$src-$TAG"
  expect "$name" fqdn "$src-$TAG.lab.example"
  expect "$name" instance "iid-$src-$TAG"
  expect_match "$name" keys "^debian:(.*,)?${FP//+/\\+}(,|$)"
  expect "$name" cloudinit ok
  [[ -n $EXPECT_IMAGE ]] && expect "$name" image "$EXPECT_IMAGE"
  grep -a -q "KILN-RUNCMD: marker=$src-$TAG host=$src-$TAG" "$SERIAL" && ok ||
    fail "$name: no runcmd marker 'KILN-RUNCMD: marker=$src-$TAG host=$src-$TAG' on the console"
  # DHCP on the NIC, from dnsmasq, in both cases
  expect_match "$name" addrs "=10\.98\.0\.1[0-4][0-9]/24"
  if [[ $src == drive ]]; then
    expect_match "$name" datasource "DataSourceNoCloud.*seed=/dev/vd"
    expect_match "$name" addrs "=${STATIC//./\\.}(,|$)"  # network-config v2 from the drive
    [[ -z $HTTP_NEW ]] && ok || fail "$name: with a config drive the image still asked the URL: $HTTP_NEW"
  else
    expect_match "$name" datasource "DataSourceNoCloudNet.*$SEED_URL"
    expect_match "$name" addrs "=${URL_STATIC//./\\.}(,|$)"  # meta-data's network-interfaces
    grep -q 'GET /nocloud/meta-data ' <<<"$HTTP_NEW" && grep -q 'GET /nocloud/user-data ' <<<"$HTTP_NEW" && ok ||
      fail "$name: the HTTP seed did not serve meta-data and user-data: $HTTP_NEW"
    grep -a -q "kiln-cloud-seed: no config drive: NoCloud seeds from $SEED_URL" "$SERIAL" && ok ||
      fail "$name: kiln-cloud-seed did not say it used $SEED_URL"
  fi
}

for run in "${ONLY[@]}"; do
  case $run in
    drive-bios) boot "$run" bios 1 && check "$run" drive ;;
    drive-uefi) boot "$run" uefi 1 && check "$run" drive ;;
    part-bios) boot "$run" bios part && check "$run" drive ;;
    part-uefi) boot "$run" uefi part && check "$run" drive ;;
    url-bios | url-uefi)
      grep -q '^network-interfaces:' "$W/http/nocloud/meta-data" || url_network "$IFNAME"
      boot "$run" "${run#url-}" 0 && check "$run" url ;;
    *) fail "unknown run $run" ;;
  esac
done

log "---- measurements"
for r in "${report[@]}"; do log "  $r"; done
if ((FAILURES)); then
  log "FAILED: $FAILURES of $((CHECKS + FAILURES)) checks"
  exit 1
fi
log "PASS: $CHECKS checks"
