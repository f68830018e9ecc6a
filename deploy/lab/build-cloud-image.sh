#!/usr/bin/env bash
# Builds the lab's Debian 12 cloud image (Debian's cloud-init, from Debian packages) without
# touching the host (no mounts, no loop devices, nothing installed), and packs it with
# `kiln image build`:
#
#   deploy/lab/build-cloud-image.sh --version V --out FILE.kiln [--name N] [--raw F.raw]
#        [--qcow2 F.qcow2] [--seed-url URL] [--sign KEY.pem] [--size-mb 1024]
#
# The root filesystem: `mmdebstrap --variant=apt` of bookworm with $ROOTFS_PKGS (systemd,
# cloud-init, openssh-server, sudo, iproute2; no kernel), cached as a tarball in
# $KILN_LAB_CACHE keyed by the package list and the mmdebstrap recipe, then the image's own
# files (deploy/lab/cloud-image/: cloud-init's 90-kiln.cfg, the kiln-cloud-seed and
# kiln-cloud-evidence units), the lab kernel's modules the running system needs, and
# `mkfs.ext4 -d` into the root partition.
# The disk: GPT, 1 = ESP (FAT, 64 MiB, legacy-BIOS-bootable attribute) with the lab kernel
# (deploy/lab/kernel.sh), a busybox initramfs (deploy/lab/cloud-image/init: storage + ext4
# modules, mounts root=LABEL=kiln-root, switch_root to systemd), systemd-boot (UEFI) and
# SYSLINUX (BIOS, gptmbr.bin in the MBR); 2 = ext4 root "kiln-root". Console on ttyS0.
# Fixed disk and partition GUIDs, FAT volume id, ext4 UUID and hash seed, and file times
# (SOURCE_DATE_EPOCH): two versions differ mostly where their contents do.
# --seed-url URL: with no CIDATA drive attached, cloud-init seeds NoCloud from URL (kilnd's
# metadata service; URL ends with '/': cloud-init appends meta-data, user-data, vendor-data).
# Env: KILN_LAB_CACHE, KILN_BUILD, KILN_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# KILN_CLOUD_TRIM=0 (keep the units the image masks for boot time), KILN_CLOUD_TMP (staging
# directory; default /dev/shm when it has 3 GiB free, else $TMPDIR or /tmp).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NAME=cloud VERSION='' OUT='' SIGN='' SIZE_MB=1024 RAW='' QCOW2='' SEED_URL=''
while (($#)); do
  case $1 in
    --name) NAME=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --sign) SIGN=$2; shift 2 ;;
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --raw) RAW=$2; shift 2 ;;
    --qcow2) QCOW2=$2; shift 2 ;;
    --seed-url) SEED_URL=$2; shift 2 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "build-cloud-image: unknown option $1" >&2; exit 2 ;;
  esac
done
die() { echo "build-cloud-image: $*" >&2; exit 1; }
[[ -n $VERSION && -n $OUT ]] || { echo "build-cloud-image: --version and --out are required" >&2; exit 2; }
[[ $SIZE_MB =~ ^[0-9]+$ ]] && ((SIZE_MB >= 512)) || die "--size-mb: at least 512, not '$SIZE_MB'"
if [[ -n $SEED_URL && ! $SEED_URL =~ ^https?://[^[:space:]\"]+/$ ]]; then
  die "--seed-url: an http(s) URL ending with '/' (cloud-init appends meta-data), not '$SEED_URL'"
fi
for t in mmdebstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk depmod; do
  command -v "$t" >/dev/null || die "$t is missing (deploy/install-deps.sh)"
done
[[ -z $QCOW2 ]] || command -v qemu-img >/dev/null || die "qemu-img is missing (qemu-utils)"
KILN=${KILN_BUILD:-$ROOT/build}/kiln
[[ -x $KILN ]] || die "no kiln CLI at $KILN (build it, or set KILN_BUILD)"
HERE=$ROOT/deploy/lab/cloud-image
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH MTOOLS_SKIP_CHECK=1
t_start=$SECONDS

source "$ROOT/deploy/lab/kernel.sh"
kernel_unpack
SDDEB=$(deb_of systemd-boot-efi)
SDDIR=$KILN_LAB_CACHE/systemd-boot-efi
if [[ ! -s $SDDIR/usr/lib/systemd/boot/efi/systemd-bootx64.efi ]]; then
  rm -rf "$SDDIR"
  dpkg -x "$SDDEB" "$SDDIR"
fi

# --- The root filesystem tarball (cached): everything that comes from Debian packages. ----
ROOTFS_SUITE=bookworm
ROOTFS_MIRROR=${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_PKGS=systemd-sysv,udev,cloud-init,openssh-server,sudo,iproute2,kmod,e2fsprogs
ROOTFS_OPTS=(--variant=apt --format=tar --aptopt='Apt::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')
key=$(printf '%s\n' "$ROOTFS_SUITE" "$ROOTFS_MIRROR" "$ROOTFS_PKGS" "${ROOTFS_OPTS[@]}" \
  "$(mmdebstrap --version)" "$SOURCE_DATE_EPOCH" | sha256sum | cut -c1-16)
TARBALL=$KILN_LAB_CACHE/cloud-rootfs-$key.tar
if [[ ! -s $TARBALL ]]; then
  echo "build-cloud-image: building the root filesystem (mmdebstrap $ROOTFS_SUITE: $ROOTFS_PKGS)" >&2
  t0=$SECONDS
  mmdebstrap --quiet "${ROOTFS_OPTS[@]}" --include="$ROOTFS_PKGS" "$ROOTFS_SUITE" \
    "$TARBALL.tmp" "$ROOTFS_MIRROR" >&2 || { rm -f "$TARBALL.tmp"; die "mmdebstrap failed"; }
  mv "$TARBALL.tmp" "$TARBALL"
  echo "build-cloud-image: root filesystem built in $((SECONDS - t0)) s -> $TARBALL" >&2
fi
echo "$TARBALL" >"$KILN_LAB_CACHE/cloud-rootfs.current"  # (deploy/lab/cloud-init-schema.sh)

# The staging area (the unpacked tree, the ext4 and the disk, ~1 GiB mostly sparse) in RAM
# when there is room: on a busy disk, writing and removing 15000 files there costs ~40 s.
TMPBASE=${KILN_CLOUD_TMP:-}
if [[ -z $TMPBASE ]]; then
  TMPBASE=${TMPDIR:-/tmp}
  shm_free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2{print $4}')
  ((${shm_free:-0} > 3 * 1024 * 1024)) && TMPBASE=/dev/shm
fi
STAGE=$(mktemp -d "$TMPBASE/kiln-cloudimg.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"
tar -x -C "$R" --numeric-owner --same-permissions --xattrs --xattrs-include='*' -f "$TARBALL"

# --- The image's own files. --------------------------------------------------------------
# No secrets and no identity baked in: host keys and the machine id are made on first boot
# (cloud-init's ssh module and systemd), the hostname comes from the datasource.
rm -f "$R"/etc/ssh/ssh_host_*
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
echo localhost >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
printf '# kiln lab cloud image\nLABEL=kiln-root\t/\text4\tdefaults,noatime\t0\t0\n' >"$R/etc/fstab"
mkdir -p "$R/etc/kiln" "$R/usr/local/sbin"
echo "$NAME:$VERSION" >"$R/etc/kiln/image"
[[ -n $SEED_URL ]] && echo "$SEED_URL" >"$R/etc/kiln/cloud-seed-url"
install -m 644 "$HERE/90-kiln.cfg" "$R/etc/cloud/cloud.cfg.d/90-kiln.cfg"
for u in kiln-cloud-seed kiln-cloud-evidence; do
  install -m 755 "$HERE/$u" "$R/usr/local/sbin/$u"
  install -m 644 "$HERE/$u.service" "$R/etc/systemd/system/$u.service"
done
systemctl --root="$R" --quiet enable kiln-cloud-seed.service kiln-cloud-evidence.service \
  systemd-networkd.service
if [[ ${KILN_CLOUD_TRIM:-1} == 1 ]]; then
  # Boot time: nothing here updates packages or scrubs filesystems on its own, and only the
  # serial console has a login. systemd-networkd-wait-online waits for one link, not all.
  systemctl --root="$R" --quiet mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer getty@tty1.service systemd-pstore.service
  mkdir -p "$R/etc/systemd/system/systemd-networkd-wait-online.service.d"
  printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60\n' \
    >"$R/etc/systemd/system/systemd-networkd-wait-online.service.d/kiln.conf"
fi
# The running system's modules (the initramfs has the storage and ext4 ones): the NIC, the
# config drive's filesystems (iso9660 from cloud-localds, vfat), and what udev loads for them.
RUNTIME_MODS=(virtio_net virtio_blk virtio_scsi virtio_pci virtio_rng isofs vfat nls_cp437
  nls_ascii nls_utf8 sr_mod ext4 ahci nvme sd_mod e1000e igb ixgbe)
mods=$(kernel_modules "${RUNTIME_MODS[@]}")
while IFS= read -r p; do
  mkdir -p "$R/lib/modules/$KVER/$(dirname "$p")"
  cp "$KROOT/lib/modules/$KVER/$p" "$R/lib/modules/$KVER/$p"
done <<<"$mods"
cp "$KROOT/lib/modules/$KVER/modules.builtin" "$R/lib/modules/$KVER/"
printf '%s\n' "$mods" >"$R/lib/modules/$KVER/modules.order"
: >"$R/lib/modules/$KVER/modules.builtin.modinfo"
depmod -b "$R" "$KVER"
find "$R/etc/kiln" "$R/usr/local/sbin" "$R/etc/systemd/system" "$R/etc/cloud" "$R/lib/modules" \
  "$R/etc/hostname" "$R/etc/hosts" "$R/etc/fstab" "$R/etc/machine-id" "$R/etc/ssh" \
  -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- The initramfs: busybox + /init + the modules that reach the root filesystem. --------
I=$STAGE/initramfs
mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$I/bin/busybox"
for a in $(/bin/busybox --list); do [[ -e $I/bin/$a ]] || ln -s busybox "$I/bin/$a"; done
install -m 755 "$HERE/init" "$I/init"
imods=$(kernel_modules virtio_pci virtio_blk virtio_scsi sd_mod ahci nvme crc32c_generic ext4)
mapfile -t ORDER <<<"$imods"
for p in "${ORDER[@]}"; do
  mkdir -p "$I/lib/modules/$(dirname "$p")"
  cp "$KROOT/lib/modules/$KVER/$p" "$I/lib/modules/$p"
done
printf '%s\n' "${ORDER[@]}" >"$I/lib/modules/load-order"
find "$I" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$I" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 --reproducible) |
  gzip -n -6 >"$STAGE/initrd.img"

# --- The disk: GPT, ESP + root. -----------------------------------------------------------
IMG=$STAGE/disk.raw
ESP_START=2048 ESP_SECTORS=$((64 * 2048))
ROOT_START=$((ESP_START + ESP_SECTORS))
ROOT_SECTORS=$((SIZE_MB * 2048 - ROOT_START - 2048))  # the last MiB: the backup GPT
truncate -s "${SIZE_MB}M" "$IMG"
sfdisk -q "$IMG" <<EOF
label: gpt
label-id: 6B696C6E-C10D-4000-8000-000000000000
start=$ESP_START, size=$ESP_SECTORS, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6B696C6E-C10D-4000-8000-000000000001, name="kiln-esp", attrs="LegacyBIOSBootable"
start=$ROOT_START, size=$ROOT_SECTORS, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=6B696C6E-C10D-4000-8000-000000000002, name="kiln-root"
EOF
dd if=/usr/lib/syslinux/mbr/gptmbr.bin of="$IMG" bs=440 count=1 conv=notrunc status=none

ROOTFS=$STAGE/root.ext4
truncate -s $((ROOT_SECTORS * 512)) "$ROOTFS"
mkfs.ext4 -q -F -L kiln-root -U 6b696c6e-c10d-4000-8000-00000000e4e4 \
  -E hash_seed=6b696c6e-c10d-4000-8000-0000000000a5,root_owner=0:0 -m 1 -d "$R" "$ROOTFS" ||
  die "mkfs.ext4 -d failed (--size-mb $SIZE_MB too small for $(du -sm "$R" | cut -f1) MiB?)"
dd if="$ROOTFS" of="$IMG" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
rm -f "$ROOTFS"

FAT=$STAGE/esp.fat
truncate -s $((ESP_SECTORS * 512)) "$FAT"
mkfs.vfat -n KILNESP -i 6b696c6f -h "$ESP_START" "$FAT" >/dev/null
CMD="root=LABEL=kiln-root console=tty0 console=ttyS0,115200 panic=10"
printf 'SERIAL 0 115200\nDEFAULT os\nPROMPT 0\nTIMEOUT 0\nLABEL os\n  KERNEL /vmlinuz\n  INITRD /initrd.img\n  APPEND %s\n' \
  "$CMD" >"$STAGE/syslinux.cfg"
printf 'timeout 0\ndefault os.conf\n' >"$STAGE/loader.conf"
printf 'title %s %s (Debian 12, cloud-init)\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' \
  "$NAME" "$VERSION" "$CMD" >"$STAGE/os.conf"
# Large, unchanging files first (the same clusters in every version), small changing ones last.
mmd -i "$FAT" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -m -i "$FAT" "$KROOT/boot/vmlinuz-$KVER" ::/vmlinuz
mcopy -m -i "$FAT" "$STAGE/initrd.img" ::/initrd.img
mcopy -m -i "$FAT" "$SDDIR/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
syslinux --install "$FAT"
mcopy -m -i "$FAT" "$STAGE/loader.conf" ::/loader/loader.conf
mcopy -m -i "$FAT" "$STAGE/os.conf" ::/loader/entries/os.conf
mcopy -m -i "$FAT" "$STAGE/syslinux.cfg" ::/syslinux.cfg
dd if="$FAT" of="$IMG" bs=512 seek="$ESP_START" conv=notrunc status=none
rm -f "$FAT"

for f in "$OUT" $RAW $QCOW2; do mkdir -p "$(dirname "$f")"; done
[[ -n $RAW ]] && cp --sparse=always "$IMG" "$RAW"
[[ -n $QCOW2 ]] && qemu-img convert -q -O qcow2 "$IMG" "$QCOW2"
args=(image build "$IMG" -o "$OUT" --name "$NAME" --version "$VERSION" --chunk-size 1M
  --label os=debian-12 --label cloud-init=nocloud
  --boot-partition 1 --boot-kernel /vmlinuz --boot-initrd /initrd.img --boot-cmdline "$CMD")
[[ -n $SIGN ]] && args+=(--sign "$SIGN")
"$KILN" "${args[@]}" >/dev/null
echo "build-cloud-image: $NAME:$VERSION ($SIZE_MB MiB GPT, kernel $KVER, rootfs $(du -sm "$R" | cut -f1) MiB${SEED_URL:+, seed $SEED_URL}) -> $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - t_start)) s"
