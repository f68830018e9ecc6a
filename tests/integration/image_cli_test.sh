#!/usr/bin/env bash
# `kiln image build|inspect|verify` and `kiln key generate` on a real filesystem image: a GPT
# disk with an ext4 partition full of files, built from raw and from gzip, signed, verified,
# tampered with and truncated.
source "$(dirname "$0")/lib.sh"

cd "$WORK"
# A 96 MiB GPT disk; partition 1 is ext4 populated from a directory of real files.
mkdir -p tree/etc tree/usr
cp -r /usr/share/common-licenses /usr/include/boost/asio tree/usr/
head -c 3000000 /dev/urandom >tree/usr/random.bin
truncate -s 96M disk.raw
printf 'label: gpt\n,,L\n' | sfdisk -q disk.raw
truncate -s 94M part.raw
mkfs.ext4 -q -F -d tree part.raw
dd if=part.raw of=disk.raw bs=1M seek=1 conv=notrunc,sparse status=none
WANT=$(sha256sum <disk.raw | cut -d' ' -f1)

"$KILN" key generate --out signer >/dev/null && ok || fail "key generate"
"$KILN" key generate --out other >/dev/null
rc=0; "$KILN" key generate --out signer >/dev/null 2>&1 || rc=$?
expect_eq "$rc" 2 "key generate never overwrites a key"

"$KILN" image build disk.raw -o disk.kiln --name debian --version 12.1 --chunk-size 1M \
  --sign signer.pem --free-holes --label os=debian >build.out 2>build.err && ok || fail "build: $(cat build.err)"
grep -q "sha256 $WANT" build.out && ok || fail "build prints the image's sha256: $(cat build.out)"
[[ -z "$(ls disk.kiln.partial* 2>/dev/null)" ]] && ok || fail "no partial file left"
"$KILN" image inspect disk.kiln --key signer.pub.pem >inspect.out && ok || fail "inspect: $(cat inspect.out)"
grep -q "signature trusted" inspect.out && ok || fail "inspect verifies the signature"
"$KILN" --json image inspect disk.kiln >manifest.json
expect_eq "$(jq -r .sha256 manifest.json)" "$WANT" "manifest sha256 = sha256sum of the raw disk"
expect_eq "$(jq -r '.partition_tables | length' manifest.json)" 2 "GPT primary and backup regions found"
expect_eq "$(jq -r '.partition_tables[1].offset + .partition_tables[1].length' manifest.json)" $((96 << 20)) "backup GPT ends at the disk's end"
expect_eq "$(jq -r '[.chunks[] | select(.[0]=="U")] | length > 0' manifest.json)" true "free space is UNMAPPED"
expect_eq "$(jq -r '[.chunks[] | select(.[0]=="D")] | length > 0' manifest.json)" true "files are DATA"
[[ $(stat -c %s disk.kiln) -lt $((20 << 20)) ]] && ok || fail "packed image is small ($(stat -c %s disk.kiln) bytes)"

rc=0; "$KILN" image verify disk.kiln --key other.pub.pem 2>verify.err || rc=$?
expect_eq "$rc" 1 "wrong key refused"
grep -q "signature" verify.err && ok || fail "signature failure explained: $(cat verify.err)"

# The same image from a compressed input gives the same manifest (created_at aside).
gzip -1 -k disk.raw
"$KILN" image build disk.raw.gz -o gz.kiln --name debian --version 12.1 --chunk-size 1M >gz.out 2>&1 \
  && ok || fail "build from gzip: $(cat gz.out)"
grep -q "sha256 $WANT" gz.out && ok || fail "gzip input decodes to the same image"
"$KILN" image verify gz.kiln && ok || fail "gzip-built image verifies"

# Tampering: one byte inside the first DATA payload; the error names the chunk.
first=$(jq -r '[.chunks | to_entries[] | select(.value[0]=="D")][0].key' manifest.json)
cp disk.kiln bad.kiln
printf '\xff' | dd of=bad.kiln bs=1 seek=$((64 + 10)) conv=notrunc status=none
rc=0; "$KILN" image verify bad.kiln 2>bad.err || rc=$?
expect_eq "$rc" 1 "tampered image refused"
grep -q "chunk $first (offset" bad.err && ok || fail "error names the chunk: $(cat bad.err)"
head -c $(( $(stat -c %s disk.kiln) - 100 )) disk.kiln >trunc.kiln
rc=0; "$KILN" image verify trunc.kiln 2>trunc.err || rc=$?
expect_eq "$rc" 1 "truncated image refused"
rc=0; "$KILN" image build nonexistent.raw -o x.kiln --name a --version 1 2>/dev/null || rc=$?
expect_eq "$rc" 2 "missing input is a usage error"
rc=0; "$KILN" image build disk.raw -o x.kiln --name a --version 1 --chunk-size 3M 2>/dev/null || rc=$?
expect_eq "$rc" 2 "chunk size must be a power of two"
finish
