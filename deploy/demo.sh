#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and provisions a QEMU machine
# over PXE from kilnd, end to end, in a private network namespace (deploy/lab/lab.sh):
#
#   power on -> iPXE -> kilnd's DHCP + /boot/<mac>.ipxe -> discovery agent -> `ready`
#   `kiln machine assign <mac> demo 1` -> the agent streams, verifies and writes demo:1
#   -> reboot -> kilnd answers "boot from disk" -> demo:1 boots (its marker on the serial log)
#   `kiln machine assign <mac> demo 2` -> power on -> delta redeploy -> demo:2 boots
#   `kiln machine rollback <mac>` -> power on -> demo:1 boots again
#
# and prints each stage with its time since power-on. Everything (namespace, kilnd, QEMU,
# files) is removed at the end, also on failure or Ctrl-C. Needs root (netns, tap).
#   deploy/demo.sh [--firmware bios|uefi] [--after reboot|kexec] [--keep]
# --keep leaves the lab directory (serial logs, kilnd log and database) for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
while (($#)); do
  case $1 in
    --firmware) export LAB_FIRMWARE=$2; shift 2 ;;
    --after) export LAB_AFTER=$2; shift 2 ;;
    --keep) export LAB_KEEP=1; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
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
row() { ROWS+=("$(printf '%-34s %9s %9s   %s' "$@")"); }
die() { echo "demo: $*" >&2; [[ -n ${SERIAL:-} ]] && tail -n 25 "$SERIAL" >&2; exit 1; }
stage_t() { sed -n "s/^\[ *\([0-9.]*\)\] .*$1.*/\1/p" "$SERIAL" | head -n1; }
MAC=$LAB_MAC

b "== building the agent initramfs and the demo image (Debian packages only)"
lab_up
lab_build
lab_kilnd
for v in 1 2; do lab_image "$v"; done
echo "kilnd runs in netns $LAB_NS at $LAB_URL (DHCP/TFTP/HTTP on $LAB_BR); accel: $(lab_accel), firmware: $LAB_FIRMWARE"
step image list

b "== power on: the machine is unknown, PXE-boots and is discovered"
SERIAL=$LAB_DIR/serial-1.log
lab_vm_start "$SERIAL"
T=$(lab_wait_log "$SERIAL" 'kiln-agent: DISCOVERED' 240) || die "the machine was not discovered"
echo "discovered ${T}s after power-on (serial log: $SERIAL)"
lab_wait_state "$MAC" ready 10 || die "not ready"
step machine list
DISC=$T

b "== assign demo:1: the waiting machine picks it up, is imaged, reboots and boots it"
step machine assign "$MAC" demo 1
T=$(lab_wait_log "$SERIAL" 'KILN-TEST-OS: BOOTED image=demo:1' 240) || die "demo:1 did not boot"
lab_vm_wait || true
echo "$(grep -m1 'kiln-agent: done:' "$SERIAL" | cut -c12-)"
echo "$(grep -m1 'KILN-TEST-OS' "$SERIAL" | cut -c12-)"
row "first deploy (discover + demo:1)" "$(stage_t 'kiln-agent: done:')" "$T" "discovered at ${DISC}s"

# redeploy TITLE VERSION_BOOTED N KILN-ARGS... — the CLI call, a power-on, the boot of the
# expected version; one row of the table.
redeploy() {
  local title=$1 version=$2 n=$3 done_line
  shift 3
  step "$@"
  SERIAL=$LAB_DIR/serial-$n.log
  lab_vm_start "$SERIAL"
  T=$(lab_wait_log "$SERIAL" "KILN-TEST-OS: BOOTED image=demo:$version" 180) || die "$title: demo:$version did not boot"
  lab_vm_wait || true
  done_line=$(grep -m1 'kiln-agent: done:' "$SERIAL" | cut -c12-)
  echo "$done_line"
  grep -m1 'KILN-TEST-OS' "$SERIAL" | cut -c12-
  row "$title (demo:$version)" "$(stage_t 'kiln-agent: done:')" "$T" \
    "$(sed -n 's/.*\(fetched [0-9.]* MiB, skipped [0-9.]* MiB\).*/\1/p' <<<"$done_line")"
}
b "== assign demo:2 and power on: a delta redeploy"
redeploy "delta redeploy" 2 2 machine assign "$MAC" demo 2
b "== demo:2 misbehaves: roll back with one call and power on"
redeploy "rollback" 1 3 machine rollback "$MAC"
step machine history "$MAC"

b "== seconds from power-on ($(lab_accel), $LAB_FIRMWARE, one vCPU)"
printf '%-34s %9s %9s   %s\n' "" "written" "booted" ""
printf '%s\n' "${ROWS[@]}"
echo
echo "Done in $(lab_elapsed) s; the lab is being removed${LAB_KEEP:+ (kept: $LAB_DIR)}."
