#!/usr/bin/env bash
# images.chunks_require_token: /v1/chunks/ serves agent sessions only (from the session's own
# address), marked private for caches, and kiln-agent sends its session token with chunk reads
# (to kilnd only, never to a mirror). Default: chunks are public and cacheable.
source "$(dirname "$0")/lib.sh"
AGENT=$KILN_BUILD/kiln-agent
cd "$WORK"
"$KILN" key generate --out signer >/dev/null
truncate -s 8M v1.raw
head -c $((3 << 20)) /dev/urandom | dd of=v1.raw bs=1M seek=1 conv=notrunc status=none
"$KILN" image build v1.raw -o v1.kiln --name os --version 1 --chunk-size 1M --sign signer.pem >/dev/null 2>&1
cat >kilnd.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"], "chunks_require_token": true } }
JSON
start_kilnd --config kilnd.json
export KILN_URL=$URL KILN_TOKEN
KILN_TOKEN=$(make_token ops admin)
TOKEN=$KILN_TOKEN
"$KILN" image push v1.kiln >/dev/null 2>&1 || fail "push"
"$KILN" machine create --mac 52:54:00:00:00:31 >/dev/null
api GET /api/v1/images/os/versions/1/manifest
CHUNK=$(jqb '[.chunks[] | select(.[0] == "D" or .[0] == "R")][0][1]')
[[ ${#CHUNK} -eq 64 ]] && ok || fail "a data chunk in the manifest: $BODY"

code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/v1/chunks/$CHUNK")
expect_eq "$code" 401 "a chunk without a session token"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KILN_TOKEN" "$URL/v1/chunks/$CHUNK")
expect_eq "$code" 401 "an API token is not a session"

api PUT /api/v1/machines/1/assignment '{"image":"os","version":"1"}'
DEP=$(jqb .id)
agent_session "$DEP"
expect_status 201 "agent session"
S=$SESSION
hdr=$(curl -s -D - -o chunk.bin -H "Authorization: Bearer $S" "$URL/v1/chunks/$CHUNK")
[[ $hdr == *" 200 "* ]] && ok || fail "the session reads the chunk: $hdr"
grep -qi '^cache-control: private' <<<"$hdr" && ok || fail "private for caches: $hdr"
code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 -H "Authorization: Bearer $S" \
  "$URL/v1/chunks/$CHUNK")
expect_eq "$code" 401 "the session token from another address"
api GET /api/v1/agent/deployment
TOKEN=$S api GET /api/v1/agent/deployment
expect_eq "$(jqb .chunks_require_token)" true "the plan tells the agent"

truncate -s 8M disk.img
LOOP=$(losetup -f --show disk.img)
CLEANUP_CMDS+=("losetup -d $LOOP")
TOKEN=$KILN_TOKEN api POST "/api/v1/deployments/$DEP/agent-ticket"
RC=0
"$AGENT" --server "$URL" --ticket "$(jqb .ticket)" --disk "$LOOP" --trust-key signer.pub.pem \
  --after none --mirror "http://127.0.0.1:9/" >agent.log 2>&1 || RC=$?
expect_eq "$RC" 0 "the agent deploys from a private chunk store: $(tail -3 agent.log)"
grep -q "private chunks: mirrors are not used" agent.log && ok || fail "the mirror (and the token) was skipped"
cmp -s <(head -c 8M "$LOOP") v1.raw && ok || fail "the device holds the image"
stop_kilnd

log "default: chunks are public and cacheable"
DATA_DIR=$WORK/var start_kilnd
hdr=$(curl -s -D - -o /dev/null "$URL/v1/chunks/$CHUNK")
[[ $hdr == *" 200 "* ]] && grep -qi '^cache-control: public' <<<"$hdr" && ok ||
  fail "public chunk: $hdr"
stop_kilnd
finish
