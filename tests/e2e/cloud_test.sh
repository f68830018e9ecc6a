#!/usr/bin/env bash
# cloud_test.sh — one image, many identities: a Debian 12 image with Debian's cloud-init
# (deploy/lab/build-cloud-image.sh) on a QEMU machine with a Redfish BMC (the lab's emulator),
# reimaged by kilnd with one call each time, its identity from kiln's configuration:
#   A  config drive: hostname + FQDN, an SSH key, a runcmd marker, a static address from
#      network-config (version 2) -> the serial console shows each one; the boot is confirmed
#      by cloud-init's phone_home.
#   B  a new configuration, the SAME image redeployed (a delta): the new values apply and A's
#      key is gone (the disk is the image again, plus the new drive).
#   rollback: A's image and A's configuration return.
#   C  the metadata service only (config_drive false), the image built by `kiln image build`
#      from the qcow2 of the same disk (the same SHA-256 as the raw build): the OS seeds from
#      kilnd's /nocloud/ by its lease address; a second address in the namespace gets 404.
# Every user-data passes `cloud-init schema` (the image's own cloud-init). The console line
# "KILN-CLOUD: ..." comes from the image (after cloud-final), the fingerprints from ssh-keygen
# here: kiln never checks itself. Both GPT copies are checked with sgdisk after every deployment
# (the config drive's partition entry there, or, with the metadata service only, not).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export KILN_BUILD=${KILN_BUILD:-$ROOT/build}
FAILURES=0 CHECKS=0
log() { echo "[cloud-e2e] $*" >&2; }
fail() { echo "[cloud-e2e] FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
ok() { CHECKS=$((CHECKS + 1)); }
if [[ $(id -u) -ne 0 ]]; then log "skipped: needs root (network namespaces, tap, chroot)"; exit 77; fi
[[ ${KILN_E2E_CLOUD:-1} == 1 ]] || { log "skipped: KILN_E2E_CLOUD=0"; exit 77; }
for c in qemu-system-x86_64 jq mmdebstrap sgdisk ssh-keygen qemu-img; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; exit 1; }
done
LAB_MAC=52:54:00:99:00:03
source "$ROOT/deploy/lab/lab.sh"
trap 'lab_down' EXIT
trap 'exit 130' INT TERM
MAC=$LAB_MAC
B=$LAB_DIR/build
SERIAL=$LAB_DIR/serial-cloud.log

# cloud_line DEPLOYMENT TIMEOUT — the image's evidence line of that deployment's boot (its
# instance-id is kiln-<deployment>); sets LINE.
cloud_line() {
  local re="KILN-CLOUD: .*instance=kiln-$1( |$)"
  LINE=''
  lab_wait_log "$SERIAL" "$re" "$2" >/dev/null || return 1
  LINE=$(grep -a -m1 -E "$re" "$SERIAL" | sed 's/.*KILN-CLOUD: //')
}
field() { tr ' ' '\n' <<<"$LINE" | sed -n "s/^$1=//p"; }
fp() { ssh-keygen -lf "$1" | awk '{print $2}'; }
expect() { [[ $1 == "$2" ]] && ok || fail "$3: expected '$2', got '$1'"; }
has() { [[ $1 == *"$2"* ]] && ok || fail "$3: '$2' not in '$1'"; }
lacks() { [[ $1 != *"$2"* ]] && ok || fail "$3: '$2' in '$1'"; }
# gpt_ok — both GPT copies valid (sgdisk -v). (The disk is not compared with the image: the
# deployed OS has booted and written to its root filesystem by the time it confirms.)
gpt_ok() {
  sgdisk -v "$LAB_DIR/disk.raw" 2>&1 | grep -q 'No problems found' && ok ||
    fail "sgdisk -v: $(sgdisk -v "$LAB_DIR/disk.raw" 2>&1 | head -5)"
}
# deploy VERSION WHAT — assigns cloud:VERSION (kilnd reimages through the BMC) and waits for the
# confirmed boot and its evidence line; sets D and LINE.
deploy() {
  local t0=$SECONDS
  kiln_cli machine assign "$MAC" cloud "$1" >/dev/null || fail "assign cloud:$1 ($2)"
  D=$(lab_latest | jq -r .id)
  if lab_wait_latest ".id == $D and .status == \"booted\"" 1200 && cloud_line "$D" 120; then
    log "$2: deployment $D booted and confirmed in $((SECONDS - t0)) s: $LINE"
    ok
  else
    fail "$2: deployment $D not booted: $(lab_latest)"
    tail -n 40 "$SERIAL" >&2
  fi
}
booted_via() {
  local since=0 page via
  while :; do
    page=$(in_ns curl -s -H "Authorization: Bearer $LAB_TOKEN" \
      "$LAB_URL/api/v1/events?since=$since&limit=1000&machine=$MAC")
    via=$(jq -r --argjson d "$1" \
      '[.events[] | select(.type == "deployment.booted" and .deployment_id == $d)][0].data.via // empty' <<<"$page")
    [[ -n $via ]] && { echo "$via"; return 0; }
    [[ $(jq '.events | length' <<<"$page") -gt 0 ]] || return 0
    since=$(jq '.events[-1].id' <<<"$page")
  done
}

lab_up || { fail "lab up"; exit 1; }
lab_build || { fail "initramfs build"; exit 1; }
# Reimage on assignment, and boot deadlines long enough for Debian under TCG.
LAB_REBOOT_ON_ASSIGN=true LAB_WRITTEN_S=1200 LAB_BOOTED_S=1200 lab_kilnd || { fail "kilnd"; exit 1; }
t0=$SECONDS
lab_cloud_image 1 --qcow2 "$B/cloud-1.qcow2" || { fail "cloud image"; exit 1; }
log "cloud:1 built and pushed in $((SECONDS - t0)) s"
# The same disk through kiln's qcow2 reader: the same image.
"$KILN_BUILD/kiln" image build "$B/cloud-1.qcow2" -o "$B/cloud-2.kiln" --name cloud --version 2 \
  --chunk-size 1M --sign "$LAB_DIR/site.pem" >/dev/null && kiln_cli image push "$B/cloud-2.kiln" >/dev/null ||
  fail "cloud:2 from the qcow2"
sha() { kiln_cli --json image show cloud "$1" | jq -r .sha256; }
S1=$(sha 1) S2=$(sha 2)
[[ -n $S1 && $S1 == "$S2" && $S1 == "$(sha256sum <"$B/cloud-1.raw" | cut -d' ' -f1)" ]] && ok ||
  fail "the qcow2 build is not the raw disk: $S1 / $S2"

# The machine, its BMC and the three configurations.
kiln_cli machine create --mac "$MAC" --name cloud-node >/dev/null || fail "machine create"
lab_cloud_machine
LAB_VM_TIMEOUT=3600 lab_vm_start_managed "$SERIAL" || fail "managed VM"
lab_bmc_start redfish || fail "Redfish BMC emulator"
kiln_cli machine bmc set "$MAC" --driver redfish --address "$LAB_BMC_ADDRESS" --insecure \
  --username "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" >/dev/null || fail "bmc set"
for k in a b; do ssh-keygen -q -t ed25519 -N '' -C "e2e-$k" -f "$LAB_DIR/key-$k"; done
FPA=$(fp "$LAB_DIR/key-a.pub") FPB=$(fp "$LAB_DIR/key-b.pub")
for c in A B C; do
  printf '#cloud-config\nruncmd:\n  - echo "KILN-E2E-MARKER config=%s host=$(hostname)" > /dev/console\n' "$c" \
    >"$LAB_DIR/user-data-$c"
done
lab_cloud_schema "$LAB_DIR"/user-data-{A,B,C} >/dev/null && ok || fail "cloud-init schema refused a user-data"
printf '#cloud-config\nruncmd: 5\n' >"$LAB_DIR/user-data-bad"
lab_cloud_schema "$LAB_DIR/user-data-bad" >/dev/null 2>&1 && fail "cloud-init schema accepts anything" || ok
# config KEY USER-DATA HOSTNAME [EXTRA JSON] — the machine's document.
config() {
  jq -n --rawfile ud "$LAB_DIR/user-data-$1" --rawfile key "$LAB_DIR/key-$2.pub" --arg h "$3" \
    --argjson extra "${4:-{\}}" '{hostname: $h, fqdn: ($h + ".lab.example"),
      ssh_authorized_keys: [$key | rtrimstr("\n")], user_data: $ud} + $extra' >"$LAB_DIR/config.json"
  in_ns curl -sf -X PUT -H "Authorization: Bearer $LAB_TOKEN" -H 'Content-Type: application/json' \
    --data-binary @"$LAB_DIR/config.json" "$LAB_URL/api/v1/machines/$MAC/config" >/dev/null ||
    fail "config $1"
}
NET="{\"network_config\": {\"version\": 2, \"ethernets\": {\"lab\": {\"match\": {\"macaddress\": \"$MAC\"}, \"dhcp4\": true, \"addresses\": [\"10.99.0.77/24\"]}}}}"

# --- A: the config drive -------------------------------------------------------------------
config A a cloud-a "$NET"
deploy 1 "A (config drive)"
DA=$D
expect "$(field hostname)" cloud-a "A: hostname"
expect "$(field fqdn)" cloud-a.lab.example "A: FQDN"
has "$(field keys)" "$FPA" "A: the authorized key"
has "$(field addrs)" 10.99.0.77/24 "A: the static address from network-config"
expect "$(field cloudinit)" ok "A: cloud-init without errors"
expect "$(field image)" cloud:1 "A: the image"
grep -aq "KILN-E2E-MARKER config=A host=cloud-a" "$SERIAL" && ok || fail "A: no runcmd marker"
expect "$(booted_via "$DA")" instance-credential "A: confirmed by phone_home (the instance credential)"
lab_bmc_state | jq -e '[.boots[] | select(.first == "network")] | length == 1' >/dev/null && ok ||
  fail "A: expected one network boot: $(lab_bmc_state | jq -c .boots)"
gpt_ok
parts=$(sgdisk -p "$LAB_DIR/disk.raw" | awk '/^ +[0-9]+ /{n++} END{print n}')
expect "$parts" 3 "A: the image's two partitions and the config drive"

# --- B: new values, the same image ------------------------------------------------------------
config B b cloud-b
deploy 1 "B (same image, new configuration)"
DB=$D
expect "$(field hostname)" cloud-b "B: hostname"
has "$(field keys)" "$FPB" "B: the new key"
lacks "$(field keys)" "$FPA" "B: A's key is gone"
lacks "$(field addrs)" 10.99.0.77 "B: no static address without network-config"
grep -aq "KILN-E2E-MARKER config=B host=cloud-b" "$SERIAL" && ok || fail "B: no runcmd marker"
kiln_cli --json machine history "$MAC" | jq -e --argjson a "$DA" --argjson b "$DB" \
  '[(.items // .)[] | select(.id == $a or .id == $b) | .config_sha256] | length == 2 and .[0] != .[1]' \
  >/dev/null && ok || fail "B: the history shows two configurations"

# --- rollback: A's image and configuration ---------------------------------------------------
t0=$SECONDS
kiln_cli machine rollback "$MAC" >/dev/null || fail "rollback"
D=$(lab_latest | jq -r .id)
if lab_wait_latest ".id == $D and .status == \"booted\"" 1200 && cloud_line "$D" 120; then
  log "rollback: deployment $D booted in $((SECONDS - t0)) s: $LINE"
  ok
else
  fail "rollback not booted: $(lab_latest)"
fi
expect "$(field hostname)" cloud-a "rollback: A's hostname"
has "$(field keys)" "$FPA" "rollback: A's key"
lacks "$(field keys)" "$FPB" "rollback: B's key is gone"
has "$(field addrs)" 10.99.0.77/24 "rollback: A's network-config"
n=$(grep -ac "KILN-E2E-MARKER config=A host=cloud-a" "$SERIAL")
((n >= 2)) && ok || fail "rollback: A's runcmd ran $n time(s)"
[[ $(lab_latest | jq -r .config_sha256) == $(kiln_cli --json deployment show "$DA" | jq -r .config_sha256) ]] && ok ||
  fail "rollback: not A's snapshot"

# --- C: the metadata service only, the qcow2-built image --------------------------------------
config C b cloud-c '{"config_drive": false}'
deploy 2 "C (metadata service, qcow2 build)"
DC=$D
expect "$(field hostname)" cloud-c "C: hostname from the metadata service"
has "$(field keys)" "$FPB" "C: the key from the metadata service"
expect "$(field image)" cloud:1 "C: the same disk (the image names itself cloud:1)"
grep -aq "KILN-E2E-MARKER config=C host=cloud-c" "$SERIAL" && ok || fail "C: no runcmd marker"
expect "$(booted_via "$DC")" metadata:lease-address "C: confirmed by its first metadata fetch"
parts=$(sgdisk -p "$LAB_DIR/disk.raw" | awk '/^ +[0-9]+ /{n++} END{print n}')
expect "$parts" 2 "C: no config drive"
gpt_ok
# Anyone else on the segment gets nothing: a second address in the namespace, and kilnd's own.
in_ns ip addr add 10.99.0.250/24 dev "$LAB_BR"
for src in 10.99.0.250 "$LAB_SERVER"; do
  for p in nocloud/meta-data nocloud/user-data latest/meta-data/instance-id latest/user-data; do
    code=$(in_ns curl -s -o /dev/null -w '%{http_code}' --interface "$src" "$LAB_URL/$p")
    expect "$code" 404 "GET /$p from $src"
  done
done
grep -q 'event=metadata.refused' "$LAB_DIR/kilnd.log" && ok || fail "refusals are logged"
for s in A B C; do
  grep -qF "KILN-E2E-MARKER config=$s" "$LAB_DIR/kilnd.log" && fail "user-data $s in kilnd's log" || ok
done

lab_vm_stop
if ((FAILURES)); then
  log "$FAILURES failure(s), $CHECKS check(s) passed"
  exit 1
fi
log "ok: $CHECKS checks"
