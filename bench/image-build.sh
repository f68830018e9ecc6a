#!/usr/bin/env bash
# bench/image-build.sh — `kiln image build` against `zstd -T0` on the same realistic disk image,
# in the same run: a 2 GiB ext4 filesystem holding ~1.2 GB of real files from /usr (libraries,
# data, text) and free space, like an OS image. Prints seconds, MB/s of image read, output size,
# and the ratios kiln/zstd. Benchmarks print figures; they are not tests.
#
#   bench/image-build.sh                 # level 3, 4 MiB chunks, all cores
#   LEVEL=3 SIZE_MIB=2048 bench/image-build.sh
source "$(dirname "$0")/lib.sh"

KILN=$KILN_BUILD/kiln
LEVEL=${LEVEL:-3}
SIZE_MIB=${SIZE_MIB:-2048}
for tool in zstd mkfs.ext4 "$KILN"; do
  command -v "$tool" >/dev/null || [[ -x "$tool" ]] || die "missing $tool (deploy/install-deps.sh --bench)"
done

log "making a ${SIZE_MIB} MiB ext4 image with real files (cp from /usr)"
mkdir -p "$WORK/tree"
cp -a /usr/lib/x86_64-linux-gnu "$WORK/tree/lib" 2>/dev/null || true
cp -a /usr/share "$WORK/tree/share" 2>/dev/null || true
# Keep the tree at most ~60% of the filesystem so free space remains.
du_kib=$(du -sk "$WORK/tree" | cut -f1)
limit_kib=$((SIZE_MIB * 1024 * 6 / 10))
if ((du_kib > limit_kib)); then rm -rf "$WORK/tree/share"; fi
truncate -s "${SIZE_MIB}M" "$WORK/disk.raw"
mkfs.ext4 -q -F -d "$WORK/tree" "$WORK/disk.raw"
rm -rf "$WORK/tree"
used=$(du -k "$WORK/disk.raw" | cut -f1)
log "image: ${SIZE_MIB} MiB apparent, $((used / 1024)) MiB allocated"
cat "$WORK/disk.raw" >/dev/null  # page cache warm for both tools

# run NAME CMD... — times one command, prints seconds.
elapsed() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; die "failed: $*"; }
  t1=$(date +%s%N)
  echo "scale=3; ($t1 - $t0) / 1000000000" | bc
}

bytes=$((SIZE_MIB * 1024 * 1024))
cmd_kiln=("$KILN" image build "$WORK/disk.raw" -o "$WORK/disk.kiln" --name bench --version 1 --level "$LEVEL")
cmd_kiln_free=("$KILN" image build "$WORK/disk.raw" -o "$WORK/disk-free.kiln" --name bench --version 1 --level "$LEVEL" --free-holes)
cmd_zstd=(zstd -q -f -T0 "-$LEVEL" "$WORK/disk.raw" -o "$WORK/disk.raw.zst")
cmd_zstd_1t=(zstd -q -f -T1 "-$LEVEL" "$WORK/disk.raw" -o "$WORK/disk1.raw.zst")

t_kiln=$(elapsed "${cmd_kiln[@]}")
t_kiln_free=$(elapsed "${cmd_kiln_free[@]}")
t_zstd=$(elapsed "${cmd_zstd[@]}")
t_zstd_1t=$(elapsed "${cmd_zstd_1t[@]}")
s_kiln=$(stat -c %s "$WORK/disk.kiln")
s_kiln_free=$(stat -c %s "$WORK/disk-free.kiln")
s_zstd=$(stat -c %s "$WORK/disk.raw.zst")
s_zstd_1t=$(stat -c %s "$WORK/disk1.raw.zst")
"$KILN" image verify "$WORK/disk.kiln" >/dev/null || die "the built image does not verify"

mbps() { echo "scale=0; $bytes / $1 / 1000000" | bc; }
printf '\n== machine: %s cores, %s, kernel %s\n' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(uname -r)"
printf '== summary (%s MiB ext4 image, zstd level %s; seconds and MB/s of image read; size of output)\n' "$SIZE_MIB" "$LEVEL"
printf '%-44s %8s %8s %14s %8s\n' tool seconds MB/s bytes "% of in"
row() { printf '%-44s %8s %8s %14s %8s\n' "$1" "$2" "$(mbps "$2")" "$3" "$(echo "scale=2; 100 * $3 / $bytes" | bc)"; }
row "kiln image build (chunks, sha256 each)" "$t_kiln" "$s_kiln"
row "kiln image build --free-holes" "$t_kiln_free" "$s_kiln_free"
row "zstd -T0 -$LEVEL (one stream, no hashes)" "$t_zstd" "$s_zstd"
row "zstd -T1 -$LEVEL" "$t_zstd_1t" "$s_zstd_1t"
printf '\nratios: time kiln/zstd-T0 = %s (lower is better); size kiln/zstd-T0 = %s; size kiln --free-holes/zstd-T0 = %s\n' \
  "$(echo "scale=2; $t_kiln / $t_zstd" | bc)" "$(echo "scale=3; $s_kiln / $s_zstd" | bc)" \
  "$(echo "scale=3; $s_kiln_free / $s_zstd" | bc)"
printf '\n== commands\n  %s\n  %s\n  %s\n  %s\n' "${cmd_kiln[*]}" "${cmd_kiln_free[*]}" "${cmd_zstd[*]}" "${cmd_zstd_1t[*]}"
