#!/usr/bin/env bash
# Builds the agent's kernel + initramfs from Debian packages only: Debian's kernel
# (linux-image-amd64, fetched with apt-get download, nothing installed), busybox-static, the
# static kiln-agent, the kernel modules the agent needs (virtio, common NICs and storage,
# FAT/ext4 for kexec) and deploy/initramfs/init.
#
#   deploy/build-initramfs.sh [--out DIR] [--trust-key PUB.pem] [--ca CA.pem] [--module NAME]...
#
# Writes DIR/vmlinuz and DIR/initrd.img (default var/lab/build). Copy them to kilnd's files
# dir as kiln/vmlinuz and kiln/initrd.img (boot.kernel, boot.initrd). With --trust-key the
# public key is packed as /etc/kiln/trusted.pem: the agent then verifies manifests with it.
# With --ca the site CA (PEM certificates) is packed as /etc/kiln/ca.pem: the agent then
# speaks https:// to a kiln.server whose certificate chains to it, and to no other.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/var/lab/build
KEY=
CA=
EXTRA=()
while (($#)); do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --trust-key) KEY=$2; shift 2 ;;
    --ca) CA=$2; shift 2 ;;
    --module) EXTRA+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-initramfs: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -n $CA ]]; then
  # A CA the agent cannot load would only fail at boot, on the machine: check it here.
  openssl x509 -in "$CA" -noout 2>/dev/null ||
    { echo "build-initramfs: --ca $CA is not a PEM certificate" >&2; exit 2; }
fi
AGENT=${KILN_BUILD:-$ROOT/build}/kiln-agent
[[ -x $AGENT ]] || { echo "build-initramfs: $AGENT missing (deploy/build.sh)" >&2; exit 1; }
# ldd fails on a static binary: that is what the initramfs (no libraries) needs.
! ldd "$AGENT" >/dev/null 2>&1 || { echo "build-initramfs: $AGENT is not static" >&2; exit 1; }
BUSYBOX=/bin/busybox
! ldd "$BUSYBOX" >/dev/null 2>&1 ||
  { echo "build-initramfs: $BUSYBOX is not static (apt-get install busybox-static)" >&2; exit 1; }
source "$ROOT/deploy/lab/kernel.sh"
kernel_unpack

# virtio (QEMU/KVM clouds), Intel/Broadcom/Mellanox-free common NICs, SATA/NVMe/SAS disks,
# and the filesystems kexec reads the next kernel from.
MODULES=(virtio_pci virtio_net virtio_blk virtio_scsi e1000 e1000e igb ixgbe tg3 bnx2
         r8169 ahci nvme sd_mod vfat nls_cp437 nls_ascii ext4 "${EXTRA[@]}")
mods=$(kernel_modules "${MODULES[@]}")  # (a failure here stops the script; under mapfile < <() it would not)
mapfile -t ORDER <<<"$mods"

mkdir -p "$OUT"
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,mnt,etc/kiln,lib/modules}
ln -s bin "$R/sbin"
mkdir -p "$R/usr"
ln -s ../bin "$R/usr/bin"
ln -s ../bin "$R/usr/sbin"
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
strip -o "$R/bin/kiln-agent" "$AGENT"  # RelWithDebInfo carries ~30 MB of debug info
install -m 755 "$ROOT/deploy/initramfs/init" "$R/init"
install -m 755 "$ROOT/deploy/initramfs/udhcpc.script" "$R/etc/udhcpc.script"
[[ -n $KEY ]] && install -m 644 "$KEY" "$R/etc/kiln/trusted.pem"
[[ -n $CA ]] && install -m 644 "$CA" "$R/etc/kiln/ca.pem"
for p in "${ORDER[@]}"; do
  mkdir -p "$R/lib/modules/$(dirname "$p")"
  cp "$KROOT/lib/modules/$KVER/$p" "$R/lib/modules/$p"
done
# The module index kiln-agent --load-modules reads (agent/modules.h): load order, each module's
# modalias patterns and dependencies, and the filesystems loaded just before a kexec.
printf '%s\n' "${ORDER[@]}" >"$R/etc/kiln/modules.list"
: >"$R/etc/kiln/modules.alias"
: >"$R/etc/kiln/modules.deps"
for p in "${ORDER[@]}"; do
  name=${p##*/}
  name=${name%.ko}
  name=${name//-/_}
  info=$(tr '\0' '\n' <"$KROOT/lib/modules/$KVER/$p")
  sed -n "s/^alias=\(.*\)/\1 $name/p" <<<"$info" >>"$R/etc/kiln/modules.alias"
  for d in $(sed -n 's/^depends=//p' <<<"$info" | tr ',' ' '); do
    echo "$name ${d//-/_}" >>"$R/etc/kiln/modules.deps"
  done
done
: >"$R/etc/kiln/modules.always"
printf '%s\n' vfat nls_cp437 nls_ascii ext4 >"$R/etc/kiln/modules.kexec"
if [[ $(id -u) -eq 0 ]]; then
  mknod -m 600 "$R/dev/console" c 5 1
  mknod -m 666 "$R/dev/null" c 1 3
fi
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "build-initramfs: kernel $KVER ($KPKG), ${#ORDER[@]} modules ($(wc -l <"$R/etc/kiln/modules.alias") aliases), agent $(du -h "$AGENT" | cut -f1)," \
  "trusted key: ${KEY:-none}, CA: ${CA:-none} -> $OUT/vmlinuz ($(du -h "$OUT/vmlinuz" | cut -f1)), $OUT/initrd.img ($(du -h "$OUT/initrd.img" | cut -f1))"
