#!/usr/bin/env bash
# End-to-end provisioning time, kiln vs. the classic stream-to-disk stack, on the same QEMU
# machine in the same lab (deploy/lab/lab.sh: private network namespace, TCG unless KVM works):
#
#   kiln: kilnd (DHCP, RA, HTTP, /boot/<mac>.ipxe) + kiln-agent: signed manifest, chunks
#         fetched by hash, verified before they are written, zero chunks as BLKZEROOUT, chunks
#         already on the disk skipped (delta); then reboot, kilnd says "boot from disk".
#   peer: dnsmasq (DHCP + RA + iPXE's no-ProxyDHCP-wait option, as kilnd sends) + busybox httpd (a CGI script: agent or sanboot) + a busybox
#         initramfs running `wget -O- URL | zstd -dc | dd of=/dev/vda bs=1M conv=fsync`,
#         dropping the page cache and reading the image back to check its sha256 (the only
#         check that stack can make, after the fact); then reboot, the CGI says sanboot.
#
# Three rounds each on a blank-then-reused disk: the first deploy (demo:1), a redeploy
# (demo:2, which differs from demo:1 in 2 of its 64 MiB) and a rollback (demo:1). Prints the
# seconds from power-on to "image written and verified" and to "deployed image booted", and
# the ratios. Not a test: figures only. Root needed.   sudo bench/e2e.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export KILN_BUILD=${KILN_BUILD:-$ROOT/build}
[[ $(id -u) -eq 0 ]] || { echo "bench/e2e: needs root" >&2; exit 1; }
for c in qemu-system-x86_64 dnsmasq busybox zstd jq; do
  command -v "$c" >/dev/null || { echo "bench/e2e: missing $c (deploy/install-deps.sh --bench)" >&2; exit 1; }
done
source "$ROOT/deploy/lab/lab.sh"
PEER_PID=()
cleanup() {
  set +e  # a killed server's non-zero wait status must not end the cleanup half-way
  for p in "${PEER_PID[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  lab_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[bench/e2e] $*" >&2; }
at() { sed -n "s/^\[ *\([0-9.]*\)\] .*$1.*/\1/p" "$2" | head -n1; }

lab_up
lab_build
lab_kilnd
for v in 1 2; do
  "$ROOT/deploy/lab/build-test-image.sh" --version "$v" --sign "$LAB_DIR/site.pem" \
    --out "$LAB_DIR/build/demo-$v.kiln" --raw "$LAB_DIR/build/demo-$v.raw" >&2
  kiln_cli image push "$LAB_DIR/build/demo-$v.kiln" >/dev/null
done
MAC=$LAB_MAC
kiln_cli machine create --mac "$MAC" --name bench >/dev/null

declare -A W B
round() {  # round SYSTEM NAME MARKER_WRITTEN MARKER_BOOTED
  local log=$LAB_DIR/serial-$1-$2.log
  lab_vm_start "$log"
  lab_wait_log "$log" "$4" 300 >/dev/null || { tail -n 30 "$log" >&2; echo "bench/e2e: $1 $2 did not boot" >&2; exit 1; }
  lab_vm_wait || true
  W[$1.$2]=$(at "$3" "$log")
  B[$1.$2]=$(at "$4" "$log")
  log "$1 $2: written ${W[$1.$2]} s, booted ${B[$1.$2]} s after power-on"
}

log "kiln ($(lab_accel))"
kiln_cli machine assign "$MAC" demo 1 >/dev/null
round kiln first 'kiln-agent: done:' 'KILN-TEST-OS: BOOTED image=demo:1'
kiln_cli machine assign "$MAC" demo 2 >/dev/null
round kiln redeploy 'kiln-agent: done:' 'KILN-TEST-OS: BOOTED image=demo:2'
kiln_cli machine rollback "$MAC" >/dev/null
round kiln rollback 'kiln-agent: done:' 'KILN-TEST-OS: BOOTED image=demo:1'
kill "$LAB_KILND_PID"
wait "$LAB_KILND_PID" 2>/dev/null || true
LAB_KILND_PID=

# --- the peer stack -------------------------------------------------------------------------------
P=$LAB_DIR/peer
mkdir -p "$P/www/cgi-bin" "$P/root"/{bin,dev,proc,sys,tmp,etc,lib/modules} "$P/state"
source "$ROOT/deploy/lab/kernel.sh"
kernel_unpack
mods=$(kernel_modules virtio_pci virtio_net virtio_blk)
mapfile -t MODS <<<"$mods"
R=$P/root
cp /bin/busybox "$R/bin/"
for a in $(busybox --list); do [[ -e $R/bin/$a ]] || ln -s busybox "$R/bin/$a"; done
cp "$(command -v zstd)" "$R/bin/zstd"
for lib in $(ldd "$(command -v zstd)" | grep -o '/[^ ]*'); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
ln -s lib "$R/lib64" 2>/dev/null || true
for m in "${MODS[@]}"; do
  mkdir -p "$R/lib/modules/$(dirname "$m")"
  cp "$KROOT/lib/modules/$KVER/$m" "$R/lib/modules/$m"
done
printf '%s\n' "${MODS[@]}" >"$R/etc/modules.list"
cp "$ROOT/deploy/initramfs/udhcpc.script" "$R/etc/udhcpc.script"
cat >"$R/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
arg() { echo " $(cat /proc/cmdline)" | sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p"; }
while read -r m; do insmod "/lib/modules/$m"; done </etc/modules.list
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -n -q -t 5 -T 2 >/dev/null 2>&1
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
URL=$(arg peer.url) SIZE=$(arg peer.size) SHA=$(arg peer.sha256)
wget -q -O - "$URL" | zstd -dc | dd of=/dev/vda bs=1M conv=fsync 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
SUM=$(head -c "$SIZE" /dev/vda | sha256sum | cut -d' ' -f1)
if [ "$SUM" = "$SHA" ]; then
  echo "PEER-AGENT: WRITTEN-AND-VERIFIED"
  wget -q -O /dev/null "$(arg peer.report)"
else
  echo "PEER-AGENT: CHECKSUM-MISMATCH"
fi
sync
reboot -f
INIT
chmod 755 "$R/init"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$P/www/initrd.img"
cp "$LAB_DIR/build/vmlinuz" "$P/www/vmlinuz"
for v in 1 2; do zstd -q -3 -T0 -f "$LAB_DIR/build/demo-$v.raw" -o "$P/www/demo-$v.raw.zst"; done
cat >"$P/www/cgi-bin/boot.ipxe" <<CGI
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "#!ipxe"
if [ -e $P/state/deployed ]; then
  echo "sanboot --no-describe --drive 0x80 || exit 1"
else
  v=\$(cat $P/state/version)
  size=\$(stat -c %s $LAB_DIR/build/demo-\$v.raw)
  sum=\$(cat $P/state/sha256)
  echo "kernel http://$LAB_SERVER:8081/vmlinuz initrd=initrd.img console=ttyS0,115200 panic=10 peer.url=http://$LAB_SERVER:8081/demo-\$v.raw.zst peer.size=\$size peer.sha256=\$sum peer.report=http://$LAB_SERVER:8081/cgi-bin/report"
  echo "initrd http://$LAB_SERVER:8081/initrd.img"
  echo "boot"
fi
CGI
cat >"$P/www/cgi-bin/report" <<CGI
#!/bin/sh
echo "Content-Type: text/plain"
echo
touch $P/state/deployed
echo ok
CGI
chmod 755 "$P/www/cgi-bin/boot.ipxe" "$P/www/cgi-bin/report"
in_ns busybox httpd -f -p "$LAB_SERVER:8081" -h "$P/www" &
PEER_PID+=($!)
in_ns dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --interface="$LAB_BR" \
  --bind-interfaces --dhcp-range=10.99.0.100,10.99.0.199,1h --dhcp-userclass=set:ipxe,iPXE \
  --dhcp-boot=tag:ipxe,http://$LAB_SERVER:8081/cgi-bin/boot.ipxe --enable-ra \
  --dhcp-option=tag:ipxe,encap:175,176,1 \
  --dhcp-range=fd99:0:0:99::,ra-only,64,1h --ra-param="$LAB_BR,60,0" --user=root \
  --dhcp-leasefile="$P/leases" --pid-file="$P/dnsmasq.pid" --log-facility="$P/dnsmasq.log" &
PEER_PID+=($!)
sleep 1
peer_set() {
  echo "$1" >"$P/state/version"
  sha256sum "$LAB_DIR/build/demo-$1.raw" | cut -d' ' -f1 >"$P/state/sha256"
  rm -f "$P/state/deployed"
}
log "peer: dnsmasq + busybox httpd + wget | zstd -dc | dd + read-back sha256"
peer_set 1
round peer first 'PEER-AGENT: WRITTEN-AND-VERIFIED' 'KILN-TEST-OS: BOOTED image=demo:1'
peer_set 2
round peer redeploy 'PEER-AGENT: WRITTEN-AND-VERIFIED' 'KILN-TEST-OS: BOOTED image=demo:2'
peer_set 1
round peer rollback 'PEER-AGENT: WRITTEN-AND-VERIFIED' 'KILN-TEST-OS: BOOTED image=demo:1'

echo
echo "seconds from power-on ($(lab_accel), $LAB_FIRMWARE, 1 vCPU, 64 MiB image, $(date -u +%F))"
printf '%-10s %14s %14s %8s   %14s %14s %8s\n' round "kiln written" "peer written" ratio "kiln booted" "peer booted" ratio
for r in first redeploy rollback; do
  printf '%-10s %14s %14s %7sx   %14s %14s %7sx\n' "$r" "${W[kiln.$r]}" "${W[peer.$r]}" \
    "$(awk -v a="${W[peer.$r]}" -v b="${W[kiln.$r]}" 'BEGIN{printf "%.2f", a/b}')" \
    "${B[kiln.$r]}" "${B[peer.$r]}" \
    "$(awk -v a="${B[peer.$r]}" -v b="${B[kiln.$r]}" 'BEGIN{printf "%.2f", a/b}')"
done
echo "(ratio = peer / kiln: above 1, kiln is faster)"
echo "agent lines: $(grep -h 'kiln-agent: done:' "$LAB_DIR"/serial-kiln-*.log | cut -c12- | sed 's/, copied.*//' | tr '\n' ';')"
