#!/usr/bin/env bash
# `kiln image build` from qcow2 made by the independent `qemu-img` (Debian qemu-utils): a GPT
# disk with an ext4 partition of real files, a region of written zeros and a hole, converted
# plain, zlib- and zstd-compressed, as version 2 (compat=0.10), with 4 KiB and 2 MiB clusters,
# with extended L2 entries, and with zero-flag clusters written by qemu-io. Every build must
# describe the raw disk's bytes (same sha256, same DATA chunks) and store no zero or
# unallocated region as data. Refused with a clear error and no output: a backing file, a
# truncated file, a corrupted L1 table offset. One build is pushed to a real kilnd.
source "$(dirname "$0")/lib.sh"

for c in qemu-img qemu-io mkfs.ext4 sfdisk jq; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; finish; }
done

cd "$WORK"
# 64 MiB GPT disk: partition 1 (40 MiB at 1 MiB) is ext4 populated from real files; 44-48 MiB
# holds written zeros (allocated in the raw file); 48-63 MiB is a hole; the backup GPT is last.
mkdir -p tree/usr
cp -r /usr/share/common-licenses /usr/include/boost/asio tree/usr/
head -c 3000000 /dev/urandom >tree/usr/random.bin
truncate -s 64M disk.raw
printf 'label: gpt\nstart=2048,size=81920,type=L\n' | sfdisk -q disk.raw
truncate -s 40M part.raw
mkfs.ext4 -q -F -d tree part.raw
dd if=part.raw of=disk.raw bs=1M seek=1 conv=notrunc status=none
dd if=/dev/zero of=disk.raw bs=1M seek=44 count=4 conv=notrunc status=none
WANT=$(sha256sum <disk.raw | cut -d' ' -f1)

build() {  # build INPUT NAME [args...]: output NAME.kiln, summary in NAME.out
  local in=$1 name=$2
  shift 2
  "$KILN" image build "$in" -o "$name.kiln" --name cloud --version 1 --chunk-size "${CHUNK:-1M}" "$@" \
    >"$name.out" 2>"$name.err"
}
# chunk kinds of a built image as one string, e.g. "DDDZZUU..."
kinds() { "$KILN" --json image inspect "$1" | jq -r '[.chunks[] | .[0]] | join("")'; }
# the stored chunks (DATA and RAW: index, kind, sha256, payload size) as one JSON line
data_chunks() { "$KILN" --json image inspect "$1" | jq -c '[.chunks | to_entries[] | select(.value[0]=="D" or .value[0]=="R")]'; }

build disk.raw raw && ok || fail "raw build: $(cat raw.err)"
build disk.raw raw-free --free-holes && ok || fail "raw --free-holes build: $(cat raw-free.err)"
RAW_DATA=$(data_chunks raw.kiln)
RAW_KINDS=$(kinds raw.kiln)
RAW_FREE_KINDS=$(kinds raw-free.kiln)
log "raw:               $RAW_KINDS"
log "raw --free-holes:  $RAW_FREE_KINDS"
[[ ${RAW_KINDS:44:19} == "$(printf 'Z%.0s' {1..19})" ]] && ok || fail "raw: zeros and hole are ZERO"

variants=(
  "plain:"
  "zlib:-c"
  "zstd:-c -o compression_type=zstd"
  "v2:-o compat=0.10"
  "v2zlib:-c -o compat=0.10"
  "c4k:-o cluster_size=4096"
  "c2m:-c -o cluster_size=2M"
  "extl2:-o extended_l2=on,cluster_size=128k"
)
for v in "${variants[@]}"; do
  name=${v%%:*}
  # shellcheck disable=SC2086  # the options are words
  qemu-img convert -f raw -O qcow2 ${v#*:} disk.raw "$name.qcow2" || { fail "qemu-img convert $name"; continue; }
done
# Zero-flag clusters: data written over the zero region, then zeroed (qcow2 v3 zero flag, the
# host clusters kept as preallocation), as a guest's discard/write-zeroes leaves them.
cp plain.qcow2 zeroflag.qcow2
qemu-io -f qcow2 -c 'write -P 0xab 44M 4M' -c 'write -z 44M 4M' zeroflag.qcow2 >/dev/null \
  && ok || fail "qemu-io write -z"
qemu-img map -f qcow2 --output=json zeroflag.qcow2 >zeroflag.map
expect_eq "$(jq '[.[] | select(.zero and .start >= 44*1048576 and .start < 48*1048576)] | length > 0' zeroflag.map)" \
  true "qemu-img map shows zero clusters at 44 MiB"
variants+=("zeroflag:")

for v in "${variants[@]}"; do
  name=${v%%:*}
  expect_eq "$(qemu-img info --output=json "$name.qcow2" | jq -r .format)" qcow2 "$name is qcow2"
  expect_eq "$(head -c 4 "$name.qcow2" | xxd -p)" "514649fb" "$name has the qcow magic"
  build "$name.qcow2" "$name" && ok || { fail "$name build: $(cat "$name.err")"; continue; }
  grep -q "sha256 $WANT" "$name.out" && ok || fail "$name: build prints the raw disk's sha256: $(cat "$name.out")"
  "$KILN" image inspect "$name.kiln" >"$name.inspect" && ok || fail "$name: inspect"
  grep -q "SHA-256:     $WANT" "$name.inspect" && ok || fail "$name: inspect shows the raw disk's sha256"
  grep -q "Size:        $((64 << 20)) bytes" "$name.inspect" && ok || fail "$name: size is the virtual size"
  "$KILN" image verify "$name.kiln" >/dev/null 2>&1 && ok || fail "$name: verifies"
  expect_eq "$(data_chunks "$name.kiln")" "$RAW_DATA" "$name: the same DATA chunks as the raw build"
  k=$(kinds "$name.kiln")
  expect_eq "$k" "$RAW_KINDS" "$name: chunk kinds as the raw build's"
  build "$name.qcow2" "$name-free" --free-holes && ok || { fail "$name --free-holes: $(cat "$name-free.err")"; continue; }
  grep -q "sha256 $WANT" "$name-free.out" && ok || fail "$name --free-holes: same sha256"
  kf=$(kinds "$name-free.kiln")
  log "$(printf '%-9s --free-holes: %s' "$name" "$kf")"
  # The written zeros and the hole are not stored: UNMAPPED (qemu-img stored neither), except
  # with 2 MiB clusters where the one holding the backup GPT also holds chunk 62's zeros: ZERO.
  [[ $name == c2m ]] && want="$(printf 'U%.0s' {1..18})Z" || want=$(printf 'U%.0s' {1..19})
  expect_eq "${kf:44:19}" "$want" "$name: zero region and hole are not stored"
  expect_eq "$(data_chunks "$name-free.kiln")" "$RAW_DATA" "$name --free-holes: the same DATA chunks"
  expect_eq "$(jq -r .sha256 <("$KILN" --json image inspect "$name-free.kiln"))" "$WANT" "$name --free-holes: manifest sha256"
done
# The raw build with --free-holes stores the written zeros as ZERO (they are allocated in the
# file) and the hole as UNMAPPED: the qcow2 builds differ only there.
expect_eq "${RAW_FREE_KINDS:44:4}" "ZZZZ" "raw --free-holes: written zeros are ZERO"
expect_eq "${RAW_FREE_KINDS:48:15}" "$(printf 'U%.0s' {1..15})" "raw --free-holes: the hole is UNMAPPED"

# Subclusters: an extended-L2 image written by qemu-io in 4 KiB pieces (128 KiB clusters have
# 4 KiB subclusters: some allocated, some zero, some unallocated in one cluster). kiln must read
# what qemu-img reads.
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k sub.qcow2 8M
qemu-io -f qcow2 -c 'write -P 0x11 0 12k' -c 'write -P 0x22 20k 4k' -c 'write -z 8k 4k' \
  -c 'write -P 0x33 1M 128k' -c 'write -z -u 1M 64k' -c 'write -P 0x44 7M 4k' sub.qcow2 >/dev/null \
  && ok || fail "qemu-io subcluster writes"
qemu-img convert -f qcow2 -O raw sub.qcow2 sub.raw
CHUNK=256K build sub.qcow2 sub && ok || fail "subcluster build: $(cat sub.err)"
grep -q "sha256 $(sha256sum <sub.raw | cut -d' ' -f1)" sub.out && ok \
  || fail "subcluster image = qemu-img's raw conversion: $(cat sub.out)"
CHUNK=256K build sub.qcow2 sub-free --free-holes && ok || fail "subcluster --free-holes build"
want=$(printf 'U%.0s' {1..32})
want="D${want:1:3}D${want:5:23}D${want:29}"  # 256 KiB chunks 0, 4 (1 MiB) and 28 (7 MiB)
expect_eq "$(kinds sub-free.kiln)" "$want" "subcluster image: only the written chunks are stored"

# --- refusals: a clear error, exit status 1, no output and no partial file ---------------------
refused() {  # refused INPUT NAME EXPECTED-MESSAGE-PART
  local rc=0
  "$KILN" image build "$1" -o "$2.kiln" --name cloud --version 1 >"$2.out" 2>"$2.err" || rc=$?
  [[ $rc -ne 0 ]] && ok || fail "$2: build refused (rc $rc)"
  grep -qF -- "$3" "$2.err" && ok || fail "$2: error says '$3': $(cat "$2.err")"
  [[ ! -e "$2.kiln" && -z "$(ls "$2".kiln.partial* 2>/dev/null)" ]] && ok || fail "$2: no output left"
}
qemu-img create -q -f qcow2 -b plain.qcow2 -F qcow2 overlay.qcow2
refused overlay.qcow2 overlay "has a backing file (plain.qcow2)"
head -c $(( $(stat -c %s plain.qcow2) / 2 )) plain.qcow2 >trunc.qcow2
refused trunc.qcow2 trunc "lies outside the file"
cp plain.qcow2 badl1.qcow2
printf '\x00\x00\x10\x00\x00\x00\x00\x00' | dd of=badl1.qcow2 bs=1 seek=40 conv=notrunc status=none
refused badl1.qcow2 badl1 "L1 table at 0x100000000000 lies outside the file"
# LUKS creation benchmarks PBKDF on the CPU and can fail on a loaded machine ("Unable to get
# accurate CPU usage"); then the encryption method is set in a copy of a plain image instead.
if ! qemu-img create -q --object secret,id=sec0,data=pw -f qcow2 \
  -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 enc.qcow2 16M 2>enc.create; then
  log "qemu-img could not make a LUKS image ($(cat enc.create)); setting crypt_method in a copy"
  cp plain.qcow2 enc.qcow2
  printf '\x00\x00\x00\x02' | dd of=enc.qcow2 bs=1 seek=32 conv=notrunc status=none
fi
refused enc.qcow2 enc "the image is encrypted (LUKS)"

# --- a qcow2-built image pushed to a real kilnd is the raw disk's -----------------------------
start_kilnd
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push zstd-free.kiln >push.out 2>push.err && ok || fail "push: $(cat push.err)"
api GET /api/v1/images/cloud/versions/1
expect_status 200 "pushed version visible"
expect_eq "$(jqb .sha256)" "$WANT" "stored version's sha256 = sha256sum of the raw disk"
expect_eq "$(jqb .size_bytes)" $((64 << 20)) "stored version's size"
finish
