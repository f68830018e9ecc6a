#!/usr/bin/env bash
# Signed-only mode at kilnd (images.trusted_keys): an external (raw URL) image is registered only
# with a trusted key's signature over its name, version, URL, SHA-256, size and format; unsigned,
# foreign-signed and replayed signatures (made for another URL, size or version) are refused
# with a clear 422, and nothing is registered. Without trusted keys, registration stays open
# (the agent side of signed-only is in agent_test).
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$KILN" key generate --out site >/dev/null
"$KILN" key generate --out outsider >/dev/null
cat >kilnd.json <<JSON
{ "images": { "trusted_keys": ["$WORK/site.pub.pem"] } }
JSON
start_kilnd --config kilnd.json
export KILN_URL=$URL KILN_TOKEN
KILN_TOKEN=$(make_token ops admin)
TOKEN=$KILN_TOKEN
SHA=$(printf 'ab%.0s' {1..32})
reg() { # reg VERSION [extra kiln args] — kiln image register of a fixed URL/hash/size; sets RC
  RC=0
  "$KILN" image register os "$@" --url http://images.lab/os.raw.zst --sha256 "$SHA" \
    --size 1048576 --format raw.zst >reg.out 2>reg.err || RC=$?
}

reg 1
expect_eq "$RC" 1 "unsigned external image refused: $(cat reg.err)"
grep -q "needs a signature by a trusted key" reg.err && ok || fail "the refusal says why: $(cat reg.err)"
reg 2 --sign outsider.pem
expect_eq "$RC" 1 "an outsider's signature is refused"
grep -q "does not verify against any trusted key" reg.err && ok || fail "explained: $(cat reg.err)"
reg 3 --sign site.pem
expect_eq "$RC" 0 "signed by the site key: $(cat reg.err)"
api GET /api/v1/images/os/versions/3
SIG=$(jqb .signature)
[[ ${#SIG} -eq 128 ]] && ok || fail "the signature is stored and shown: $BODY"

# Replays: the signature of os:3 on other metadata.
body() { printf '{"source_url":"%s","sha256":"%s","size_bytes":%s,"format":"%s","signature":"%s"}' "$@"; }
api POST /api/v1/images/os/versions/4 "$(body http://images.lab/os.raw.zst "$SHA" 1048576 raw.zst "$SIG")"
expect_status 422 "another version"
api POST /api/v1/images/os/versions/3 "$(body http://evil.lab/os.raw.zst "$SHA" 1048576 raw.zst "$SIG")"
expect_status 422 "another URL"
api POST /api/v1/images/os/versions/3 "$(body http://images.lab/os.raw.zst "$SHA" 2097152 raw.zst "$SIG")"
expect_status 422 "another size"
api POST /api/v1/images/os/versions/3 "$(body http://images.lab/os.raw.zst "$SHA" 1048576 raw "$SIG")"
expect_status 422 "another format"
api POST /api/v1/images/os/versions/5 "$(body http://images.lab/os.raw.zst "$SHA" 1048576 raw.zst 1234)"
expect_status 422 "a malformed signature"
api POST /api/v1/images/os/versions/6 "$(body 'http://images.lab/a b' "$SHA" 1048576 raw.zst "$SIG")"
expect_status 422 "a URL with a space"
api GET /api/v1/images/os
expect_eq "$(jqb '[.items[].version] | join(",")')" 3 "only the signed version is registered"
stop_kilnd

log "without trusted keys registration stays open (kilnd warns at start)"
DATA_DIR=$WORK/open start_kilnd
KILN_URL=$URL KILN_TOKEN=$(DATA_DIR=$WORK/open make_token ops admin)
reg 1
expect_eq "$RC" 0 "unsigned accepted without trusted keys: $(cat reg.err)"
grep -q 'event=daemon.unsigned_images_accepted' "$WORK"/kilnd.*.log && ok || fail "no warning at start"
stop_kilnd
finish
