#!/usr/bin/env bash
# Builds the lab's bootable test image from Debian packages, without root, mounts or loop
# devices, and packs it with `kiln image build`:
#
#   deploy/lab/build-test-image.sh --version V --out FILE.kiln [--name N] [--sign KEY.pem]
#                                  [--size-mb 64] [--raw FILE.raw] [--stay-up] [--broken]
#
# The image: an MBR disk with one active FAT partition at 1 MiB holding Debian's kernel, a
# busybox initramfs (with the virtio modules) whose /init prints "KILN-TEST-OS: BOOTED
# image=N:V via=..." on the serial console, confirms its boot to kilnd with the instance block
# the agent left (deploy/lab/testos-init), and powers off (--stay-up: keeps running, like a
# server; --broken: never confirms, an OS that does not come up), SYSLINUX (BIOS) and
# systemd-boot (UEFI), and the kexec boot hints.
# The FAT volume id is fixed and files are added in a fixed order, so two versions differ only
# where their contents do (the boot entries name the version): a redeploy is a delta.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NAME=demo VERSION= OUT= SIGN= SIZE_MB=64 RAW= EXTRA_ARGS=
while (($#)); do
  case $1 in
    --name) NAME=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --sign) SIGN=$2; shift 2 ;;
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    --stay-up) EXTRA_ARGS+=" kiln.test_after=stay"; shift ;;
    --broken) EXTRA_ARGS+=" kiln.test_broken=1"; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build-test-image: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n $VERSION && -n $OUT ]] || { echo "build-test-image: --version and --out are required" >&2; exit 2; }
KILN=${KILN_BUILD:-$ROOT/build}/kiln
source "$ROOT/deploy/lab/kernel.sh"
kernel_unpack
SDDEB=$(deb_of systemd-boot-efi)
SDDIR=$KILN_LAB_CACHE/systemd-boot-efi
if [[ ! -s $SDDIR/usr/lib/systemd/boot/efi/systemd-bootx64.efi ]]; then
  rm -rf "$SDDIR"
  dpkg -x "$SDDEB" "$SDDIR"
fi
export MTOOLS_SKIP_CHECK=1
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/kiln-testimg.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# The test OS initramfs: busybox + /init. Fixed mtimes: the same bytes for every version.
R=$STAGE/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,lib/modules}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
install -m 755 "$ROOT/deploy/lab/testos-init" "$R/init"
install -m 755 "$ROOT/deploy/initramfs/udhcpc.script" "$R/udhcpc.script"
# The disk and the NIC, to read the instance block and confirm the boot.
mods=$(kernel_modules virtio_pci virtio_blk virtio_net)
mapfile -t ORDER <<<"$mods"
for p in "${ORDER[@]}"; do
  mkdir -p "$R/lib/modules/$(dirname "$p")"
  cp "$KROOT/lib/modules/$KVER/$p" "$R/lib/modules/$p"
done
printf '%s\n' "${ORDER[@]}" >"$R/lib/modules/load-order"
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 --reproducible) |
  gzip -n -6 >"$STAGE/initrd.img"

IMG=$STAGE/disk.raw
START=2048
SECTORS=$((SIZE_MB * 2048 - START))
truncate -s "${SIZE_MB}M" "$IMG"
printf 'label: dos\nlabel-id: 0x6b696c6e\nstart=%d, size=%d, type=ef, bootable\n' "$START" "$SECTORS" |
  sfdisk -q "$IMG"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none
FAT=$STAGE/part.fat
truncate -s $((SECTORS * 512)) "$FAT"
mkfs.vfat -n KILNTEST -i 6b696c6e -h "$START" "$FAT" >/dev/null
CMD="console=ttyS0,115200 panic=10 kiln.test_image=$NAME:$VERSION$EXTRA_ARGS"
printf 'SERIAL 0 115200\nDEFAULT os\nPROMPT 0\nTIMEOUT 0\nLABEL os\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND %s kiln.test_via=syslinux\n' \
  "$CMD" >"$STAGE/syslinux.cfg"
printf 'timeout 0\ndefault os.conf\n' >"$STAGE/loader.conf"
printf 'title kiln test OS %s\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s kiln.test_via=systemd-boot\n' \
  "$VERSION" "$CMD" >"$STAGE/os.conf"
# Large, unchanging files first (the same clusters in every version), small changing ones last.
mmd -i "$FAT" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -m -i "$FAT" "$KROOT/boot/vmlinuz-$KVER" ::/vmlinuz
mcopy -m -i "$FAT" "$STAGE/initrd.img" ::/initrd.img
mcopy -m -i "$FAT" "$SDDIR/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
syslinux --install "$FAT"
mcopy -m -i "$FAT" "$STAGE/loader.conf" ::/loader/loader.conf
mcopy -m -i "$FAT" "$STAGE/os.conf" ::/loader/entries/os.conf
mcopy -m -i "$FAT" "$STAGE/syslinux.cfg" ::/syslinux.cfg
dd if="$FAT" of="$IMG" bs=1M seek=1 conv=notrunc status=none
[[ -n $RAW ]] && cp "$IMG" "$RAW"

args=(image build "$IMG" -o "$OUT" --name "$NAME" --version "$VERSION" --chunk-size 1M
      --boot-partition 1 --boot-kernel /vmlinuz --boot-initrd /initrd.img
      --boot-cmdline "$CMD kiln.test_via=kexec")
[[ -n $SIGN ]] && args+=(--sign "$SIGN")
"$KILN" "${args[@]}" >/dev/null
echo "build-test-image: $NAME:$VERSION ($SIZE_MB MiB, kernel $KVER) -> $OUT ($(du -h "$OUT" | cut -f1))"
