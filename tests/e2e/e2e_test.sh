#!/usr/bin/env bash
# End to end: a QEMU machine PXE-boots from kilnd inside a private network namespace (see
# deploy/lab/lab.sh), with Debian's iPXE ROM, and walks the whole lifecycle:
#   BIOS: discovered -> inventory -> ready (waits) -> assigned demo:1 -> agent writes it ->
#         reboot -> kilnd says sanboot -> demo:1 boots from the disk;
#         demo:2 (a delta: most chunks skipped) -> boots demo:2; `kiln machine rollback` ->
#         demo:1 again; demo:3 with a corrupt chunk on the server -> the deployment fails, the
#         disk is left unbootable, the next boot retries (kilnd:retry) and, with the chunk
#         repaired, demo:3 boots.
#   Two machines, each with its own Redfish BMC (machine 2 registered blank and powered off):
#         one rollout of demo:4, canary 1, batch 1, gate booted: machine 1 confirms its boot
#         before machine 2 starts; the rollout ends succeeded.
#   UEFI (OVMF + iPXE EFI ROM, disk first), over HTTPS: the ROM chainloads iPXE with HTTPS
#         (deploy/build-ipxe.sh, the lab CA) over TFTP; script, kernel, initrd and the agent's
#         API over kilnd's TLS listener: discovered -> demo:1 -> kexec into it.
# Each disk is compared byte for byte with the raw image it should hold.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export KILN_BUILD=${KILN_BUILD:-$ROOT/build}
FAILURES=0 CHECKS=0
log() { echo "[e2e] $*" >&2; }
fail() { echo "[e2e] FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
ok() { CHECKS=$((CHECKS + 1)); }
if [[ $(id -u) -ne 0 ]]; then log "skipped: needs root (network namespaces, tap)"; exit 77; fi
for c in qemu-system-x86_64 jq cpio mkfs.vfat mcopy syslinux sfdisk dpkg-deb; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; exit 1; }
done
source "$ROOT/deploy/lab/lab.sh"
trap 'lab_down' EXIT
trap 'exit 130' INT TERM
MAC=$LAB_MAC

# boot_until N REGEX TIMEOUT — powers the machine on and waits for a serial line.
boot_until() {
  SERIAL=$LAB_DIR/serial-$1.log
  lab_vm_start "$SERIAL"
  T=$(lab_wait_log "$SERIAL" "$2" "$3") || {
    fail "power-on $1: no '$2' within $3 s"
    tail -n 30 "$SERIAL" >&2
    lab_vm_stop  # the next stage starts from a machine that is off
    return 1
  }
}
# disk_holds VERSION [MACHINE] — the disk of lab machine MACHINE (default 1) starts with the raw
# image of demo:VERSION; disk_holds_named NAME VERSION [MACHINE] — with the raw image NAME:VERSION.
disk_holds() { disk_holds_named demo "$1" "${2:-1}"; }
disk_holds_named() {
  local raw=$LAB_DIR/build/$1-$2.raw n=${3:-1} disk
  disk=$(LAB_MACHINE=$n lab_file disk.raw)
  cmp -s -n "$(stat -c %s "$raw")" "$raw" "$disk" && ok || fail "machine $n's disk does not hold $1:$2"
}
image() {
  "$ROOT/deploy/lab/build-test-image.sh" --version "$1" --sign "$LAB_DIR/site.pem" \
    --out "$LAB_DIR/build/demo-$1.kiln" --raw "$LAB_DIR/build/demo-$1.raw" >&2 &&
    kiln_cli image push "$LAB_DIR/build/demo-$1.kiln" >/dev/null
}
deployments() { kiln_cli --json machine history "$MAC" | jq '.items // .'; }
done_line() { grep -m1 'kiln-agent: done:' "$SERIAL"; }

lab_up || { fail "lab up"; exit 1; }
lab_build || { fail "initramfs build"; exit 1; }
lab_kilnd || { fail "kilnd start"; exit 1; }
for v in 1 2 3; do image $v || fail "image demo:$v"; done
log "lab ready in $(lab_elapsed) s ($(lab_accel)); BIOS machine $MAC"

# --- BIOS: discovery, first deployment ---------------------------------------------------------
if boot_until 1 'kiln-agent: DISCOVERED' 180; then
  log "discovered at ${T}s after power-on"
  lab_wait_state "$MAC" ready 10 && ok || fail "machine not ready after discovery"
  inv=$(kiln_cli --json machine show "$MAC")
  expect=$((LAB_DISK_MB << 20))
  [[ $(jq -r '.inventory.disks[0].size_bytes' <<<"$inv") == "$expect" ]] && ok || fail "inventory disk size: $inv"
  [[ $(jq -r '.inventory.nics[0].mac' <<<"$inv") == "$MAC" ]] && ok || fail "inventory NIC: $inv"
  # A ready machine with nothing to do polls; the assignment starts it without a power cycle.
  lab_wait_log "$SERIAL" 'is ready: waiting for an assignment' 60 >/dev/null && ok || fail "no wait script"
  kiln_cli machine assign "$MAC" demo 1 >/dev/null || fail "assign demo:1"
  if T=$(lab_wait_log "$SERIAL" 'KILN-TEST-OS: BOOTED image=demo:1 via=syslinux' 180); then
    W=$(sed -n 's/^\[ *\([0-9.]*\)\] kiln-agent: done:.*/\1/p' "$SERIAL" | head -n1)
    log "demo:1 written at ${W}s, booted at ${T}s after power-on: $(done_line | cut -c12-)"
    ok
  else
    fail "demo:1 did not boot"
    tail -n 40 "$SERIAL" >&2
  fi
  grep -q 'is deployed with demo:1: booting from the local disk' "$SERIAL" && ok || fail "no localboot script"
  lab_vm_wait
  [[ $(kiln_cli --json machine show "$MAC" | jq -r '.state + " " + .current_version.version') == "deployed 1" ]] &&
    ok || fail "machine after demo:1: $(kiln_cli machine show "$MAC")"
  disk_holds 1
fi

# --- delta redeploy, rollback -------------------------------------------------------------------
kiln_cli machine assign "$MAC" demo 2 >/dev/null || fail "assign demo:2"
if boot_until 2 'KILN-TEST-OS: BOOTED image=demo:2 via=syslinux' 120; then
  line=$(done_line)
  log "demo:2 booted at ${T}s: $(cut -c12- <<<"$line")"
  fetched=$(sed -n 's/.*fetched \([0-9.]*\) MiB.*/\1/p' <<<"$line")
  skipped=$(sed -n 's/.*skipped \([0-9.]*\) MiB.*/\1/p' <<<"$line")
  awk -v f="$fetched" -v s="$skipped" 'BEGIN{exit !(f <= 3 && s >= 6)}' && ok ||
    fail "demo:2 was not a delta (fetched $fetched MiB, skipped $skipped MiB)"
  lab_vm_wait
  disk_holds 2
fi
kiln_cli machine rollback "$MAC" >/dev/null || fail "rollback"
if boot_until 3 'KILN-TEST-OS: BOOTED image=demo:1 via=syslinux' 120; then
  log "rollback to demo:1 booted at ${T}s: $(done_line | cut -c12-)"
  lab_vm_wait
  disk_holds 1
  [[ $(deployments | jq -r '.[0].kind + " " + .[0].to.version + " " + .[0].status') == "rollback 1 booted" ]] &&
    ok || fail "history after rollback: $(deployments | jq -c '.[0]')"
fi

# --- a corrupt chunk: the deployment fails, nothing half-written boots, the next boot retries ----
manifest() { in_ns curl -sf -H "Authorization: Bearer $LAB_TOKEN" "$LAB_URL/api/v1/images/demo/versions/$1/manifest"; }
data_chunks() { manifest "$1" | jq -r '.chunks[] | select(.[0] == "D") | .[1]' | sort -u; }
bad=$(comm -13 <(data_chunks 1) <(data_chunks 3) | head -n1)
chunk=$(ls "$LAB_DIR"/kilnd/images/chunks/"${bad:0:2}"/"$bad".* 2>/dev/null | head -n1)
if [[ -z $bad || -z $chunk ]]; then
  fail "no chunk of demo:3 to corrupt (bad=$bad)"
else
  cp "$chunk" "$LAB_DIR/chunk.good"
  printf 'corrupted' | dd of="$chunk" bs=1 seek=20 conv=notrunc status=none
  kiln_cli machine assign "$MAC" demo 3 >/dev/null || fail "assign demo:3"
  if boot_until 4 'KILN-INIT: FAILED' 120; then
    log "demo:3 failed at ${T}s as it should: $(grep -m1 'kiln-agent: FAILED' "$SERIAL" | cut -c12-)"
    # The failed agent invalidated the partition table first: the disk boots nothing.
    sig=$(od -An -tx1 -j510 -N2 "$LAB_DIR/disk.raw" | tr -d ' ')
    [[ $sig != 55aa ]] && ok || fail "the half-written disk still has a boot signature"
    cp "$LAB_DIR/chunk.good" "$chunk"  # repaired before the retry fetches it
    reason=$(deployments | jq -r '[.[] | select(.status == "failed")][0].status_reason')
    # zstd's frame check or the chunk's hash, depending on which bytes the corruption hit.
    [[ $reason == *"chunk "*"Data corruption"* || $reason == *"chunk "*"SHA-256 mismatch"* ]] && ok ||
      fail "failure reason names no corrupt chunk: $reason"
    if T=$(lab_wait_log "$SERIAL" 'KILN-TEST-OS: BOOTED image=demo:3' 120); then
      log "the retry deployed demo:3, booted at ${T}s"
      ok
    else
      fail "the retry did not boot demo:3"
      tail -n 30 "$SERIAL" >&2
    fi
    grep -q 'KILN-TEST-OS: BOOTED image=demo:1' "$SERIAL" && fail "booted the old image after the failure" || ok
    lab_vm_wait  # the test OS confirms its boot, then powers off
    [[ $(deployments | jq -r '.[0].requested_by + " " + .[0].status') == "kilnd:retry booted" ]] &&
      ok || fail "no confirmed kilnd:retry deployment: $(deployments | jq -c '.[0]')"
    disk_holds 3
  fi
fi
# --- a running machine with a BMC, disk first like an installed server -------------------------
# The same machine and disk, now powered by a Redfish BMC emulator over QMP (starts off, boots
# its disk first). Every reimage is one API call: kilnd sets a one-time network boot and power-
# cycles it; the deployed OS confirms its boot (booted). A broken image misses its boot
# deadline, is power-cycled once, fails, and kilnd rolls the machine back by itself to the last
# version that booted. Then one round through IPMI. No manual power action anywhere.
confirmed() { grep -c "KILN-TEST-OS: CONFIRMED .*image=$1\b" "$SERIAL" || true; }
if [[ ${KILN_E2E_BMC:-1} == 1 ]]; then
  for v in 1 2; do
    "$ROOT/deploy/lab/build-test-image.sh" --name live --version $v --stay-up --sign "$LAB_DIR/site.pem" \
      --out "$LAB_DIR/build/live-$v.kiln" --raw "$LAB_DIR/build/live-$v.raw" >&2 &&
      kiln_cli image push "$LAB_DIR/build/live-$v.kiln" >/dev/null || fail "image live:$v"
  done
  "$ROOT/deploy/lab/build-test-image.sh" --name live --version 3 --stay-up --broken --sign "$LAB_DIR/site.pem" \
    --out "$LAB_DIR/build/live-3.kiln" >&2 && kiln_cli image push "$LAB_DIR/build/live-3.kiln" >/dev/null ||
    fail "image live:3"
  # kilnd again, with boot deadlines, automatic rollback and reboot-on-assign.
  kill "$LAB_KILND_PID" && wait "$LAB_KILND_PID" 2>/dev/null
  LAB_WRITTEN_S=300 LAB_BOOTED_S=60 LAB_AUTO_ROLLBACK=true LAB_REBOOT_ON_ASSIGN=true lab_kilnd ||
    fail "kilnd restart"
  SERIAL=$LAB_DIR/serial-bmc.log
  LAB_VM_TIMEOUT=1800 lab_vm_start_managed "$SERIAL" || fail "managed VM"
  lab_bmc_start redfish || fail "Redfish BMC emulator"
  # (--insecure: the lab's emulator speaks plain http, on the namespace's loopback only)
  kiln_cli machine bmc set "$MAC" --driver redfish --address "$LAB_BMC_ADDRESS" --insecure \
    --username "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" >/dev/null || fail "bmc set"
  [[ $(kiln_cli --json machine power "$MAC" status | jq -r .power_state) == off ]] && ok ||
    fail "the managed machine is not off at the start"

  # live:1 on a machine that is off: kilnd powers it on with a one-time network boot.
  kiln_cli machine assign "$MAC" live 1 >/dev/null || fail "assign live:1"
  if lab_wait_latest '.to.version == "1" and .status == "booted"' 300; then
    log "live:1 deployed and confirmed, $(lab_latest | jq -r .boot_ms) ms from kilnd's power-on"
    ok
  else
    fail "live:1 not booted: $(lab_latest)"
    tail -n 30 "$SERIAL" >&2
  fi
  (($(confirmed live:1) >= 1)) && ok || fail "the serial console shows no confirmation of live:1"
  # The BMC was asked for PXE once, and only that boot went to the network.
  boots=$(lab_bmc_state | jq -c '[.boots[] | {first, override}]')
  jq -e 'map(select(.first == "network")) | length == 1' <<<"$boots" >/dev/null && ok ||
    fail "expected exactly one network boot so far: $boots"

  # live:2 on the running machine: a reset, a delta, a confirmed boot.
  kiln_cli machine assign "$MAC" live 2 >/dev/null || fail "assign live:2"
  lab_wait_latest '.to.version == "2" and .status == "booted"' 300 && ok || fail "live:2 not booted: $(lab_latest)"

  # The emergency: one call, and the machine runs the previous image again, confirmed.
  t0=$EPOCHREALTIME
  kiln_cli machine rollback "$MAC" >/dev/null || fail "rollback"
  if lab_wait_latest '.kind == "rollback" and .to.version == "1" and .status == "booted"' 300; then
    ROLLBACK_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
    log "emergency rollback of a running machine: ${ROLLBACK_S} s from the call to the confirmed boot of live:1"
    echo "rollback_s=$ROLLBACK_S accel=$(lab_accel)" >>"${KILN_E2E_FIGURES:-/dev/null}"
    ok
  else
    fail "rollback to live:1 not confirmed: $(lab_latest)"
  fi

  # live:3 writes fine and never comes up: deadline, power-cycle, deadline, failed, and kilnd
  # rolls back by itself to live:1 (the last version that booted), confirmed.
  kiln_cli machine assign "$MAC" live 3 >/dev/null || fail "assign live:3"
  if lab_wait_latest '.requested_by == "kilnd:auto-rollback" and .to.version == "1" and .status == "booted"' 480; then
    ok
    log "live:3 never confirmed; kilnd rolled back to live:1 by itself"
  else
    fail "no automatic rollback to live:1: $(lab_latest)"
    tail -n 20 "$SERIAL" >&2
  fi
  bad=$(kiln_cli --json machine history "$MAC" | jq -c '[(.items // .)[] | select(.to.version == "3")][0]')
  [[ $(jq -r '.status + " " + (.deadline_misses | tostring)' <<<"$bad") == "failed 2" ]] && ok ||
    fail "live:3 should have failed after 2 missed deadlines: $bad"
  [[ $(jq -r .status_reason <<<"$bad") == *"did not confirm its boot"* ]] && ok || fail "live:3's reason: $bad"
  n=$(grep -c 'KILN-TEST-OS: BROKEN image=live:3' "$SERIAL" || true)
  ((n >= 2)) && ok || fail "live:3 booted $n time(s); the missed deadline should have power-cycled it once"
  kiln_cli events --machine "$MAC" >"$LAB_DIR/events-bmc.txt" 2>&1 || true
  grep -q 'deployment.deadline_missed' "$LAB_DIR/events-bmc.txt" && ok || fail "no deployment.deadline_missed event"

  # One round through IPMI (ipmitool -I lanplus against the pyghmi BMC on the same machine).
  lab_bmc_stop
  if lab_bmc_start ipmi; then
    kiln_cli machine bmc set "$MAC" --driver ipmi --address "$LAB_BMC_ADDRESS" \
      --username "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" >/dev/null || fail "bmc set ipmi"
    kiln_cli machine assign "$MAC" live 2 >/dev/null || fail "assign live:2 (IPMI)"
    if lab_wait_latest '.to.version == "2" and .status == "booted"' 300; then
      ok
      log "IPMI: live:2 deployed and confirmed, $(lab_latest | jq -r .boot_ms) ms from power-on"
    else
      fail "IPMI: live:2 not booted: $(lab_latest)"
    fi
    lab_bmc_state | jq -e '[.boots[] | select(.first == "network")] | length >= 1' >/dev/null && ok ||
      fail "IPMI: no network boot: $(lab_bmc_state | jq -c .boots)"
    disk_holds_named live 2
  else
    fail "IPMI BMC emulator"
  fi
  # (machine 1 keeps running live:2 for the rollout below; lab_down stops it)
fi

# --- a rollout across two machines with BMCs, the canary first ---------------------------------
# Machine 1 (registered above, running live:2) and machine 2 (registered now with its own
# Redfish BMC: a blank disk, powered off) share a label. ONE rollout of demo:4 with canary 1 and
# batch 1, gate booted: the canary (machine 1, the lower id) is reimaged through its BMC and
# confirms its boot before machine 2's deployment is even created; both disks then hold demo:4
# byte for byte and the rollout ends succeeded. Each machine boots the network exactly once.
# Both VMs run at once, each as small as machine 1 ($LAB_MEM_MB MiB).
ROLL_SEL=fleet=lab
ROLLOUT=
# roll_out VERSION — ONE call that deploys demo:VERSION to every machine of $ROLL_SEL: a
# rollout, canary 1, batch 1, gate booted; sets ROLLOUT (its id).
roll_out() {
  ROLLOUT=$(kiln_cli --json rollout start --selector "$ROLL_SEL" --image demo --version "$1" \
    --canary 1 --batch 1 --gate booted | jq -r .id)
  [[ $ROLLOUT =~ ^[0-9]+$ ]]
}
# roll_wait VERSION TIMEOUT_S — until the rollout ended (a final state) and both machines
# confirmed booting demo:VERSION; sets ROLL_STATE (the rollout's last state).
roll_wait() {
  local deadline=$((SECONDS + $2)) n
  ROLL_STATE=
  while ((SECONDS < deadline)); do
    ROLL_STATE=$(kiln_cli --json rollout show "$ROLLOUT" | jq -r .state)
    case $ROLL_STATE in succeeded | failed | aborted | rolled_back) break ;; esac
    sleep 1
  done
  for n in 1 2; do
    LAB_MACHINE=$n lab_wait_latest ".to.version == \"$1\" and .status == \"booted\"" $((deadline - SECONDS)) ||
      fail "machine $n did not confirm demo:$1: $(LAB_MACHINE=$n lab_latest)"
  done
}
if [[ ${KILN_E2E_BMC:-1} == 1 && ${KILN_E2E_ROLLOUT:-1} == 1 ]]; then
  T_ROLL=$SECONDS
  image 4 || fail "image demo:4"
  M2=$(LAB_MACHINE=2 lab_mac)
  SERIAL2=$LAB_DIR/serial-m2.log
  # Machine 1 back on a Redfish BMC (the IPMI round left it on IPMI), machine 2 with its own.
  lab_bmc_start redfish || fail "machine 1's Redfish BMC emulator"
  kiln_cli machine bmc set "$MAC" --driver redfish --address "$LAB_BMC_ADDRESS" --insecure \
    --username "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" >/dev/null || fail "bmc set (machine 1)"
  kiln_cli machine label "$MAC" "$ROLL_SEL" >/dev/null || fail "label machine 1"
  kiln_cli machine create --mac "$M2" --name lab-2 --label "$ROLL_SEL" >/dev/null || fail "create machine 2"
  LAB_MACHINE=2 LAB_VM_TIMEOUT=900 lab_vm_start_managed "$SERIAL2" || fail "machine 2's VM"
  LAB_MACHINE=2 lab_bmc_start redfish || fail "machine 2's Redfish BMC emulator"
  kiln_cli machine bmc set "$M2" --driver redfish --address "$LAB_BMC_ADDRESS_2" --insecure \
    --username "$LAB_BMC_USER" --password-file "$LAB_DIR/bmc.pass" >/dev/null || fail "bmc set (machine 2)"
  [[ $(kiln_cli --json machine power "$M2" status | jq -r .power_state) == off ]] && ok ||
    fail "machine 2 is not off at the start"
  ID1=$(kiln_cli --json machine show "$MAC" | jq -r .id) ID2=$(kiln_cli --json machine show "$M2" | jq -r .id)
  ((ID1 < ID2)) && ok || fail "machine 1 (id $ID1) should have the lower id (machine 2: $ID2)"
  [[ $(kiln_cli --json machine list --selector "$ROLL_SEL" | jq -c '[(.items // .)[].id] | sort') == "[$ID1,$ID2]" ]] &&
    ok || fail "the selector $ROLL_SEL does not name exactly machines $ID1 and $ID2"

  t0=$EPOCHREALTIME
  if roll_out 4; then
    roll_wait 4 900
  else
    fail "roll out demo:4: no rollout"
  fi
  ROLL_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
  D1=$(lab_latest) D2=$(LAB_MACHINE=2 lab_latest)
  log "demo:4 on 2 machines (rollout ${ROLLOUT:-?}, ${ROLL_STATE:-not started}): ${ROLL_S} s from the call;" \
    "machine 1 created $(jq -r .created_at <<<"$D1") booted $(jq -r .booted_at <<<"$D1")," \
    "machine 2 created $(jq -r .created_at <<<"$D2") booted $(jq -r .booted_at <<<"$D2")"
  if [[ -n $ROLL_STATE ]]; then
    R=$(kiln_cli --json rollout show "$ROLLOUT")
    [[ $ROLL_STATE == succeeded ]] && ok || fail "rollout $ROLLOUT ended $ROLL_STATE: $(jq -c . <<<"$R")"
    # The plan: machine 1 alone in the canary batch (0), machine 2 in batch 1; both done with
    # the deployments the machines booted.
    want="[{\"machine_id\":$ID1,\"batch\":0,\"state\":\"done\",\"deployment_id\":$(jq .id <<<"$D1")},"
    want+="{\"machine_id\":$ID2,\"batch\":1,\"state\":\"done\",\"deployment_id\":$(jq .id <<<"$D2")}]"
    got=$(jq -c '[.machines[] | {machine_id, batch, state, deployment_id}] | sort_by(.machine_id)' <<<"$R")
    [[ $got == "$want" ]] && ok || fail "rollout $ROLLOUT's machines: $got, expected $want"
    # What a rollback would restore: live:2 on machine 1; nothing on machine 2 (it ran nothing).
    prev=$(jq -c '[.machines | sort_by(.machine_id)[] | .previous | if . == null then null else "\(.image):\(.version)" end]' <<<"$R")
    [[ $prev == '["live:2",null]' ]] && ok || fail "rollout $ROLLOUT's previous versions: $prev"
    jq -e '[.batches[] | {index, canary, size, done}] == [{"index":0,"canary":true,"size":1,"done":1},{"index":1,"canary":false,"size":1,"done":1}]' \
      <<<"$R" >/dev/null && ok || fail "rollout $ROLLOUT's batches: $(jq -c .batches <<<"$R")"
    # The canary gate: machine 2's deployment was created after machine 1's confirmed boot.
    jq -en --argjson d1 "$D1" --argjson d2 "$D2" '$d1.booted_at != null and $d2.created_at > $d1.booted_at' \
      >/dev/null && ok ||
      fail "machine 2 deployed before the canary booted: machine 1 $D1, machine 2 $D2"
  fi
  grep -q 'KILN-TEST-OS: BOOTED image=demo:4' "$SERIAL2" && ok || fail "machine 2's console shows no demo:4 boot"
  for n in 1 2; do
    boots=$(LAB_MACHINE=$n lab_bmc_state | jq -c '[.boots[] | {first, override}]')
    jq -e 'map(select(.first == "network")) | length == 1' <<<"$boots" >/dev/null && ok ||
      fail "machine $n: expected exactly one network boot: $boots"
    disk_holds 4 "$n"
  done
  echo "rollout_section_s=$((SECONDS - T_ROLL)) rollout_s=$ROLL_S accel=$(lab_accel)" >>"${KILN_E2E_FIGURES:-/dev/null}"
  log "the two-machine section took $((SECONDS - T_ROLL)) s"
fi
kiln_cli events --machine "$MAC" >"$LAB_DIR/events.txt" 2>&1 || true
lab_down

# --- UEFI over HTTPS: OVMF + Debian's iPXE EFI ROM -> (TFTP) iPXE with HTTPS and the lab CA ->
# https script, kernel and initrd -> the agent's API over kilnd's TLS listener; disk first; kexec
# into the image. KILN_E2E_HTTPS=0 runs it over plain HTTP; without an iPXE source here
# (deploy/build-ipxe.sh exit 3) it runs over HTTP and says so, and KILN_E2E_HTTPS=require fails.
if [[ ${KILN_E2E_UEFI:-1} == 1 ]]; then
  LAB_FIRMWARE=uefi LAB_AFTER=kexec LAB_DIR=$(mktemp -d /tmp/kiln-lab.XXXXXX)
  LAB_NS=kiln-lab-uefi-$$ LAB_MAC=52:54:00:99:00:02 MAC=52:54:00:99:00:02
  LAB_HTTPS=1 LAB_LOG_LEVEL=debug  # debug: kilnd logs each request with tls=true|false
  [[ ${KILN_E2E_HTTPS:-1} == 0 ]] && LAB_HTTPS=0
  lab_up && lab_build && lab_kilnd && image 1 || fail "UEFI lab"
  if [[ $LAB_HTTPS != 1 && ${KILN_E2E_HTTPS:-1} != 0 ]]; then
    if [[ ${KILN_E2E_HTTPS:-1} == require ]]; then
      fail "UEFI: HTTPS boot required but iPXE with HTTPS could not be built"
    else
      log "WARNING: the boot path over HTTPS is NOT tested: no iPXE source (deploy/build-ipxe.sh)"
    fi
  fi
  if boot_until 1 'kiln-agent: DISCOVERED' 240; then
    log "UEFI: discovered at ${T}s"
    lab_wait_state "$MAC" ready 10 && ok || fail "UEFI machine not ready"
    kiln_cli machine assign "$MAC" demo 1 >/dev/null || fail "UEFI assign"
    if T=$(lab_wait_log "$SERIAL" 'KILN-TEST-OS: BOOTED image=demo:1 via=kexec firmware=uefi' 240); then
      log "UEFI: demo:1 booted by kexec at ${T}s: $(done_line | cut -c12-)"
      ok
    else
      fail "UEFI: demo:1 did not boot by kexec"
      tail -n 40 "$SERIAL" >&2
    fi
    lab_vm_wait
    disk_holds 1
    if [[ $LAB_HTTPS == 1 ]]; then
      # What went over which listener, from kilnd's log: the stock ROM got the HTTPS iPXE over
      # TFTP; the script (twice: discovery, deployment), kernel, initrd and the agent's API
      # calls came over TLS; no script, kernel or initrd over plain HTTP.
      KLOG=$LAB_DIR/kilnd.log
      grep -q 'event=tftp.transfer_done .*file="kiln/ipxe-https.efi"' "$KLOG" && ok ||
        fail "UEFI: the stock ROM did not fetch kiln/ipxe-https.efi over TFTP"
      n=$(grep -c 'event=boot.script mac=52:54:00:99:00:02 .* proto=https ' "$KLOG")
      ((n >= 2)) && ok || fail "UEFI: $n script(s) served over TLS, expected the discovery and deploy boots"
      for f in vmlinuz initrd.img; do
        grep -Eq "event=http.request peer=[^ ]+ tls=true method=GET target=\"/files/kiln/$f\" status=200" "$KLOG" &&
          ok || fail "UEFI: kiln/$f was not fetched over TLS"
      done
      grep -Eq 'event=http.request peer=[^ ]+ tls=true method=[A-Z]+ target="/api/v1/agent/[a-z-]+[^"]*" status=2' "$KLOG" &&
        ok || fail "UEFI: no agent API call over TLS"
      if grep -Eq 'tls=false method=GET target="/(boot/|files/kiln/(vmlinuz|initrd))' "$KLOG" ||
        grep -q 'event=boot.script mac=52:54:00:99:00:02 .* proto=http ' "$KLOG"; then
        fail "UEFI: part of the boot path went over plain HTTP"
      else
        ok
      fi
    fi
  fi
fi

if ((FAILURES)); then
  log "$FAILURES failure(s), $CHECKS check(s) passed"
  exit 1
fi
log "ok: $CHECKS checks"
