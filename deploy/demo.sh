#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and provisions a QEMU machine
# over PXE from kilnd, end to end, in a private network namespace (deploy/lab/lab.sh). The
# machine is an installed server: disk first, off, with a BMC (the lab's Redfish emulator over
# QMP). Every step is one kiln call and no power button is touched:
#
#   kiln machine create + kiln machine bmc set          registered with its MAC and BMC
#   kiln machine assign <mac> demo 1   -> kilnd sets a one-time network boot and powers it on
#       -> iPXE -> kilnd's DHCP + /boot/<mac>.ipxe -> the agent streams, verifies, writes demo:1
#       -> reboot -> its disk -> demo:1 runs and confirms its boot (deployment "booted")
#   kiln machine assign <mac> demo 2   -> kilnd resets the running machine -> delta -> booted
#   kiln machine rollback <mac>        -> the emergency: demo:1 running again, confirmed
#
# and prints a table of seconds from each call to the image written and to its confirmed boot.
# Everything (namespace, kilnd, BMC emulator, QEMU, files) is removed at the end, also on
# failure or Ctrl-C. Needs root (netns, tap).
#   deploy/demo.sh [--firmware bios|uefi] [--after reboot|kexec] [--keep]
# --keep leaves the lab directory (serial log, kilnd log and database) for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
while (($#)); do
  case $1 in
    --firmware) export LAB_FIRMWARE=$2; shift 2 ;;
    --after) export LAB_AFTER=$2; shift 2 ;;
    --keep) export LAB_KEEP=1; shift ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespace, tap device for the VM); deploy/tour.sh runs without" >&2
  exit 1
fi
deploy/install-deps.sh
deploy/build.sh
source deploy/lab/lab.sh
trap lab_down EXIT
trap 'exit 130' INT TERM
b() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { printf '\033[1m$ kiln %s\033[0m\n' "$*"; kiln_cli "$@"; }
ROWS=()
row() { ROWS+=("$(printf '%-46s %9s %9s   %s' "$@")"); }
die() { echo "demo: $*" >&2; [[ -n ${SERIAL:-} ]] && tail -n 25 "$SERIAL" >&2; exit 1; }
MAC=$LAB_MAC
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }
latest() { kiln_cli --json machine history "$MAC" | jq -c '(.items // .)[0]'; }

# reimage TITLE VERSION KILN-ARGS... — one kiln call, then waits (bounded) for the newest
# deployment to be written and then booted (confirmed by the OS); one row of the table.
reimage() {
  local title=$1 version=$2 t0 written= d st deadline
  shift 2
  t0=$EPOCHREALTIME
  step "$@"
  deadline=$((SECONDS + 300))
  while ((SECONDS < deadline)); do
    d=$(latest)
    st=$(jq -r .status <<<"$d")
    [[ -z $written && ( $st == succeeded || $st == booted ) ]] && written=$(since "$t0")
    [[ $st == booted ]] && break
    [[ $st == failed ]] && die "$title: $(jq -r .status_reason <<<"$d")"
    sleep 0.5
  done
  [[ $st == booted ]] || die "$title: demo:$version not confirmed booted within 300 s"
  local booted
  booted=$(since "$t0")
  grep 'kiln-agent: done:' "$SERIAL" | tail -n1 | cut -c12-
  grep "KILN-TEST-OS: CONFIRMED .*image=demo:$version" "$SERIAL" | tail -n1 | cut -c12-
  row "$title (demo:$version)" "$written" "$booted" \
    "$(grep 'kiln-agent: done:' "$SERIAL" | tail -n1 | sed -n 's/.*\(fetched [0-9.]* MiB, skipped [0-9.]* MiB\).*/\1/p')"
}

b "== building the agent initramfs and the demo images (Debian packages only)"
lab_up
lab_build
LAB_REBOOT_ON_ASSIGN=true lab_kilnd
for v in 1 2; do LAB_IMAGE_FLAGS=--stay-up lab_image "$v"; done
echo "kilnd runs in netns $LAB_NS at $LAB_URL (DHCP/TFTP/HTTP on $LAB_BR); accel: $(lab_accel), firmware: $LAB_FIRMWARE"
step image list

b "== an installed server: disk first, powered off, with a BMC (Redfish)"
SERIAL=$LAB_DIR/serial.log
LAB_VM_TIMEOUT=1200 lab_vm_start_managed "$SERIAL" || die "QEMU did not start"
lab_bmc_start redfish || die "the BMC emulator did not start"
step machine create --mac "$MAC" --name rack1-node1 --label rack=r1
mode=uefi
[[ $LAB_FIRMWARE == bios ]] && mode=legacy
# (--insecure: the lab's emulator speaks plain http, on the namespace's loopback only)
step machine bmc set "$MAC" --driver redfish --address "$LAB_BMC_ADDRESS" --insecure --username "$LAB_BMC_USER" \
  --password-file "$LAB_DIR/bmc.pass" --boot-mode "$mode"
step machine power "$MAC" status

b "== assign demo:1: kilnd powers it on with a one-time network boot; it is imaged and boots"
reimage "first deploy (off -> booted)" 1 machine assign "$MAC" demo 1

b "== assign demo:2 to the running machine: kilnd resets it, a delta redeploy"
reimage "delta redeploy of a running machine" 2 machine assign "$MAC" demo 2

b "== demo:2 misbehaves: the emergency rollback is one call"
reimage "emergency rollback (one call)" 1 machine rollback "$MAC"
step machine history "$MAC"

b "== seconds from the kiln call ($(lab_accel), $LAB_FIRMWARE, one vCPU)"
printf '%-46s %9s %9s   %s\n' "" "written" "booted" ""
printf '%s\n' "${ROWS[@]}"
echo
echo "Done in $(lab_elapsed) s; the lab is being removed${LAB_KEEP:+ (kept: $LAB_DIR)}."
