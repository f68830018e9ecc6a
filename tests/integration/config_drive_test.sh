#!/usr/bin/env bash
# The config drive (issue 16): a NoCloud CIDATA VFAT partition written after the image's last
# byte, checked with independent tools only (sgdisk -v, sfdisk --verify/-d, fsck.vfat -n,
# blkid -p, mtools' mcopy, the kernel's vfat through mount -o ro).
#  1. tests/tools/config_drive_tool on a GPT image made by sgdisk and an MBR image made by
#     sfdisk, on loop devices; refusals (no room, a full MBR, a hybrid MBR, no table) leave the
#     disk untouched.
#  2. The real kiln-agent against a real kilnd, its plan given a config_drive by
#     tests/tools/plan_proxy.py (until kilnd fills it): deploy, a delta redeploy of the same image
#     with new files (the edited table is rewritten, the image's chunks skipped, the drive holds
#     the new files), a deployment whose drive cannot be written fails at stage "config-drive",
#     and one without room fails before any byte is written.
source "$(dirname "$0")/lib.sh"
[[ $(id -u) -eq 0 ]] || { log "needs root (loop devices, mount)"; exit 77; }
for t in sgdisk sfdisk fsck.vfat blkid mcopy losetup python3; do
  command -v $t >/dev/null || { log "missing $t (deploy/install-deps.sh)"; exit 77; }
done
TOOL=$KILN_BUILD/config_drive_tool
AGENT=${KILN_AGENT:-$KILN_BUILD/kiln-agent}  # KILN_AGENT: another agent build (e.g. the old one)
cd "$WORK"
MIB=$((1 << 20))

printf 'instance-id: kiln-42\nlocal-hostname: web-01\n' >meta-data
{ printf '#cloud-config\nruncmd:\n  - echo KILN-MARK\n'; head -c 300000 /dev/urandom | base64; } >user-data
printf 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n' >network-config
: >vendor-data
FILES=(meta-data user-data network-config vendor-data)
# The kernel's own reading of the drive, where this kernel has vfat (a container's may not).
HAVE_VFAT=
modprobe vfat 2>/dev/null || true
grep -qw vfat /proc/filesystems && HAVE_VFAT=1 || log "this kernel has no vfat: the mount checks are skipped (fsck.vfat, mtools and blkid still read the drive)"

# attach FILE — a loop device with partition scanning; sets DEV.
attach() {
  DEV=$(losetup -f --show -P "$@")
  CLEANUP_CMDS+=("losetup -d $DEV")
}
# detach DEV — detaches it now and drops it from the exit cleanup (where the same name could
# by then be another test's device).
detach() {
  losetup -d "$1"
  local c kept=()
  for c in "${CLEANUP_CMDS[@]}"; do [[ $c == "losetup -d $1" ]] || kept+=("$c"); done
  CLEANUP_CMDS=("${kept[@]}")
}
# check_drive DISK_FILE DEV PARTNO OFFSET — the drive, read back by independent tools.
check_drive() {
  local file=$1 dev=$2 n=$3 off=$4 part=${2}p${3}
  udevadm settle 2>/dev/null || true
  partx -u "$dev" 2>/dev/null || true
  [[ -b $part ]] && ok || { fail "no $part after the edit"; return; }
  local blk
  blk=$(blkid -p -o export "$part")
  grep -qx 'LABEL=CIDATA' <<<"$blk" && ok || fail "blkid label on $part: $blk"
  grep -qx 'TYPE=vfat' <<<"$blk" && ok || fail "blkid type on $part: $blk"
  fsck.vfat -n "$part" >fsck.log 2>&1 && ok || fail "fsck.vfat -n $part: $(cat fsck.log)"
  for f in "${FILES[@]}"; do
    rm -f got
    mcopy -n -i "$file@@$off" "::$f" got 2>mcopy.err && cmp -s got "$f" && ok ||
      fail "mcopy ::$f from offset $off: $(cat mcopy.err)"
  done
  mkdir -p mnt
  if [[ -z $HAVE_VFAT ]]; then
    return  # logged once below
  elif mount -o ro -t vfat "$part" mnt; then
    for f in "${FILES[@]}"; do cmp -s "mnt/$f" "$f" && ok || fail "mounted $f differs"; done
    ls mnt | sort >names
    printf '%s\n' "${FILES[@]}" | sort | cmp -s - names && ok || fail "names in the drive: $(cat names)"
    umount mnt
  else
    fail "mount -o ro $part"
  fi
}
run_tool() {
  RC=0
  OUT=$("$TOOL" "$@" meta-data=meta-data user-data=user-data network-config=network-config \
    vendor-data=vendor-data 2>tool.err) || RC=$?
}

# --- 1a. GPT, a 32 MiB image on a 64 MiB disk --------------------------------------------
truncate -s 32M gpt.raw
sgdisk -n 1:2048:+8M -t 1:ef00 -n 2:0:0 -t 2:8300 gpt.raw >/dev/null
head -c $((16 * MIB)) /dev/urandom | dd of=gpt.raw bs=1M seek=12 conv=notrunc status=none
cp gpt.raw gptdisk.img
truncate -s 64M gptdisk.img
attach gptdisk.img
run_tool "$DEV" $((32 * MIB)) 42 cidata
expect_eq "$RC" 0 "tool on GPT: $(cat tool.err)"
expect_eq "$(jq -r .table <<<"$OUT")" gpt "table kind"
expect_eq "$(jq -r .partition <<<"$OUT")" 3 "partition number"
expect_eq "$(jq -r .offset <<<"$OUT")" $((32 * MIB)) "offset: the image's end"
sgdisk -v "$DEV" >sgdisk.log 2>&1 || true
grep -q 'No problems found' sgdisk.log && ok || fail "sgdisk -v: $(cat sgdisk.log)"
sfdisk --verify "$DEV" >sfv.log 2>&1 && grep -q 'No errors detected' sfv.log && ! grep -qi 'warn\|corrupt' sfv.log && ok ||
  fail "sfdisk --verify: $(cat sfv.log)"
sfdisk -d "$DEV" >dump.txt 2>sfd.err || true
grep -q "^$DEV""p3 : start= *$((32 * MIB / 512)), size= *8192, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" dump.txt &&
  ok || fail "sfdisk -d: $(cat dump.txt sfd.err)"
grep -q 'name="config-drive"' dump.txt && ok || fail "GPT name: $(cat dump.txt)"
grep -q "last-lba: $((64 * MIB / 512 - 34))" dump.txt && ok || fail "last usable LBA: $(cat dump.txt)"
# The image's own partitions are unchanged.
sfdisk -d gpt.raw | grep -E '^gpt.raw[12]' | sed 's/^gpt.raw//' >before.txt
grep -E "^${DEV}p[12]" dump.txt | sed "s|^${DEV}p||" >after.txt
cmp -s before.txt after.txt && ok || fail "image partitions changed: $(diff before.txt after.txt)"
check_drive gptdisk.img "$DEV" 3 $((32 * MIB))
detach "$DEV"

# --- 1b. MBR, one partition, the image not a MiB multiple ----------------------------------
truncate -s $((24 * MIB + 4096)) mbr.raw
printf 'label: dos\n2048,40000,83\n' | sfdisk -q mbr.raw
cp mbr.raw mbrdisk.img
truncate -s 64M mbrdisk.img
attach mbrdisk.img
run_tool "$DEV" $((24 * MIB + 4096)) 42 cidata
expect_eq "$RC" 0 "tool on MBR: $(cat tool.err)"
expect_eq "$(jq -r .table <<<"$OUT")" mbr "table kind"
expect_eq "$(jq -r .partition <<<"$OUT")" 2 "partition number"
expect_eq "$(jq -r .offset <<<"$OUT")" $((25 * MIB)) "offset: rounded up to 1 MiB"
sfdisk --verify "$DEV" >sfv.log 2>&1 && grep -q 'No errors detected' sfv.log && ! grep -qi 'warn' sfv.log && ok ||
  fail "sfdisk --verify (MBR): $(cat sfv.log)"
sfdisk -d "$DEV" >dump.txt || true
grep -q "^${DEV}p2 : start= *$((25 * MIB / 512)), size= *8192, type=e" dump.txt && ok ||
  fail "sfdisk -d (MBR): $(cat dump.txt)"
grep -q "^${DEV}p1 : start= *2048, size= *40000, type=83" dump.txt && ok || fail "p1 kept: $(cat dump.txt)"
check_drive mbrdisk.img "$DEV" 2 $((25 * MIB))
detach "$DEV"

# --- 1c. GPT on a 4 KiB-sector device (the drive is FAT12 with 4 KiB sectors) ---------------
truncate -s 64M 4k.img
attach -b 4096 4k.img
sgdisk -n 1:256:+8M -t 1:8300 "$DEV" >/dev/null 2>&1
run_tool "$DEV" $((16 * MIB)) 42 cidata
expect_eq "$RC" 0 "tool on a 4Kn GPT: $(cat tool.err)"
expect_eq "$(jq -r .partition <<<"$OUT")" 2 "4Kn partition number"
sgdisk -v "$DEV" >sgdisk.log 2>&1 || true
grep -q 'No problems found' sgdisk.log && ok || fail "sgdisk -v (4Kn): $(cat sgdisk.log)"
sfdisk -d "$DEV" >dump.txt 2>&1 || true
grep -q "^${DEV}p2 : start= *$((16 * MIB / 4096)), size= *1024," dump.txt && ok || fail "4Kn: $(cat dump.txt)"
check_drive 4k.img "$DEV" 2 $((16 * MIB))
detach "$DEV"

# --- 1d. refusals leave the disk as it was -------------------------------------------------
refuse() {  # refuse FILE IMAGE_SIZE EXPECTED_MESSAGE WHAT
  local before
  before=$(sha256sum <"$1")
  run_tool "$1" "$2" 42 cidata
  [[ $RC -ne 0 ]] && ok || fail "$4: the tool succeeded"
  grep -q "$3" tool.err && ok || fail "$4: message '$(cat tool.err)' lacks '$3'"
  expect_eq "$(sha256sum <"$1")" "$before" "$4: the disk is unchanged"
}
cp gpt.raw small.img
truncate -s $((36 * MIB)) small.img
refuse small.img $((32 * MIB)) "no room for the config drive" "a disk too small"
cp mbr.raw full.img
printf 'label: dos\n2048,4096,83\n8192,4096,83\n16384,4096,83\n24576,4096,83\n' | sfdisk -q full.img
truncate -s 64M full.img
refuse full.img $((24 * MIB + 4096)) "no free primary partition slot" "a full MBR"
cp full.img ext.img
printf 'label: dos\n2048,4096,83\n8192,30000,5\n' | sfdisk -q ext.img 2>/dev/null
refuse ext.img $((24 * MIB + 4096)) "extended partition" "an extended partition"
cp gpt.raw hybrid.img
truncate -s 64M hybrid.img
sgdisk -h 1 hybrid.img >/dev/null 2>&1
refuse hybrid.img $((32 * MIB)) "hybrid MBR" "a hybrid MBR"
truncate -s 64M none.img
refuse none.img $((32 * MIB)) "no partition table" "no partition table"

# --- 2. the agent, through its plan ----------------------------------------------------------
"$KILN" key generate --out signer >/dev/null
"$KILN" image build gpt.raw -o gpt.kiln --name os --version 1 --chunk-size 1M --sign signer.pem >/dev/null 2>&1
printf 'label: dos\n2048,4096,83\n8192,4096,83\n16384,4096,83\n24576,4096,83\n' >full.layout
truncate -s 32M full.raw
sfdisk -q full.raw <full.layout
"$KILN" image build full.raw -o full.kiln --name full --version 1 --chunk-size 1M --sign signer.pem >/dev/null 2>&1
KILND_LISTEN=127.0.0.1:$(free_port)
start_kilnd
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push gpt.kiln >/dev/null 2>&1 || fail "push gpt"
"$KILN" image push full.kiln >/dev/null 2>&1 || fail "push full"
"$KILN" machine create --mac 52:54:00:00:00:01 >/dev/null
python3 "$KILN_ROOT/tests/tools/plan_proxy.py" 0 "${URL#http://}" cd.json results.log proxy.ready &
PROXY_PID=$!
CLEANUP_CMDS+=("kill $PROXY_PID")
for _ in $(seq 1 100); do [[ -s proxy.ready ]] && break; sleep 0.05; done
PROXY=http://127.0.0.1:$(cat proxy.ready)

# plan_drive — the config_drive the proxy adds to the plan, from the files on disk.
plan_drive() {
  jq -n --rawfile m meta-data --rawfile u user-data --rawfile n network-config --rawfile v vendor-data \
    '{label:"cidata", files:{"meta-data":$m, "user-data":$u, "network-config":$n, "vendor-data":$v}}' >cd.json
}
assign() {  # assign IMAGE — sets DEP and AT
  api PUT /api/v1/machines/1/assignment "{\"image\":\"$1\",\"version\":\"1\",\"force\":true}"
  DEP=$(jqb .id)
  api POST "/api/v1/deployments/$DEP/agent-ticket"
  AT=$(jqb .ticket)
}
agent() {  # agent DEVICE — sets RC; log in agent.log
  RC=0
  "$AGENT" --server "$PROXY" --ticket "$AT" --disk "$1" --trust-key signer.pub.pem --after none \
    --timeout-ms 3000 --backoff-ms 50 >agent.log 2>&1 || RC=$?
}
last_result() { tail -1 results.log; }

truncate -s 64M agent.img
attach agent.img
plan_drive
assign os
agent "$DEV"
expect_eq "$RC" 0 "agent with a config drive: $(tail -3 agent.log)"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "deployment with a config drive"
expect_eq "$(last_result | jq -c .detail.config_drive)" \
  "{\"offset\":$((32 * MIB)),\"partition\":3,\"size\":$((4 * MIB)),\"table\":\"gpt\"}" "reported drive"
sgdisk -v "$DEV" >sgdisk.log 2>&1 || true
grep -q 'No problems found' sgdisk.log && ok || fail "sgdisk -v after the agent: $(cat sgdisk.log)"
check_drive agent.img "$DEV" 3 $((32 * MIB))
# Outside the partition tables (first MiB) the image's bytes are on the disk unchanged.
cmp -s <(tail -c +$((MIB + 1)) gpt.raw | head -c $((30 * MIB))) \
  <(dd if="$DEV" bs=1M skip=1 count=30 status=none) && ok || fail "the image's data on the disk"

# A delta redeploy of the same image with new files: skips the image's chunks, rewrites the
# chunk with the edited table, and the drive holds the new files.
printf 'instance-id: kiln-43\nlocal-hostname: web-02\n' >meta-data
printf '#cloud-config\nruncmd:\n  - echo KILN-MARK-2\n' >user-data
plan_drive
assign os
agent "$DEV"
expect_eq "$RC" 0 "redeploy: $(tail -3 agent.log)"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "redeploy succeeded"
skipped=$(last_result | jq .proof.skipped_bytes)
written=$(last_result | jq .proof.written_bytes)
[[ $skipped -gt 0 && $written -le $((2 * MIB)) ]] && ok ||
  fail "delta redeploy: skipped $skipped, written $written bytes"
sgdisk -v "$DEV" >sgdisk.log 2>&1 || true
grep -q 'No problems found' sgdisk.log && ok || fail "sgdisk -v after the redeploy: $(cat sgdisk.log)"
check_drive agent.img "$DEV" 3 $((32 * MIB))

# A deployment without a drive (null) leaves the image's table as built.
echo null >cd.json
assign os
agent "$DEV"
expect_eq "$RC" 0 "deploy without a config drive: $(tail -3 agent.log)"
last_result | jq -e '.detail | has("config_drive") | not' >/dev/null && ok || fail "no drive reported"
partx -u "$DEV" 2>/dev/null || true
sfdisk -d "$DEV" | grep -c "^${DEV}p" | grep -qx 2 && ok || fail "2 partitions without a drive"

# An image whose table has no free slot: the deployment fails at stage config-drive.
plan_drive
assign full
agent "$DEV"
[[ $RC -ne 0 ]] && ok || fail "agent exit code with a full MBR"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" failed "full MBR fails the deployment"
expect_eq "$(jqb .stage)" config-drive "the failing stage"
grep -q "no free primary partition slot" <<<"$(jqb .status_reason)" && ok ||
  fail "the reason names the cause: $(jqb .status_reason)"

# An external raw image (streamed from its URL) gets its drive too: an MBR image here.
mkdir -p var/files
cp mbr.raw var/files/mbr.raw
"$KILN" image register ext 1 --url "$URL/files/mbr.raw" --sha256 "$(sha256sum <mbr.raw | cut -d' ' -f1)" \
  --size $((24 * MIB + 4096)) --format raw --sign signer.pem >/dev/null
api PUT /api/v1/machines/1/assignment '{"image":"ext","version":"1","force":true}'
DEP=$(jqb .id)
api POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
agent "$DEV"
expect_eq "$RC" 0 "external image with a config drive: $(tail -3 agent.log)"
expect_eq "$(last_result | jq -c .detail.config_drive)" \
  "{\"offset\":$((25 * MIB)),\"partition\":2,\"size\":$((4 * MIB)),\"table\":\"mbr\"}" "external: reported drive"
sfdisk --verify "$DEV" >sfv.log 2>&1 && grep -q 'No errors detected' sfv.log && ok ||
  fail "sfdisk --verify (external): $(cat sfv.log)"
check_drive agent.img "$DEV" 2 $((25 * MIB))

# A disk without room: fails before anything is written.
truncate -s 34M tight.img
attach tight.img
dd if=/dev/urandom of=marker bs=1M count=1 status=none
dd if=marker of="$DEV" bs=1M conv=notrunc status=none
assign os
agent "$DEV"
[[ $RC -ne 0 ]] && ok || fail "agent exit code without room"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" failed "no room fails the deployment"
expect_eq "$(jqb .stage)" config-drive "the failing stage (no room)"
grep -q "no room for the config drive" <<<"$(jqb .status_reason)" && ok ||
  fail "reason: $(jqb .status_reason)"
cmp -s marker <(head -c $MIB "$DEV") && ok || fail "nothing was written on a disk without room"

finish
