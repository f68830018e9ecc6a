#!/usr/bin/env bash
# The agent's fallback servers (several kilnd instances sharing one database). Without the
# shared database (PostgreSQL; the lead's cluster test kills an instance mid-deploy), this shows
# what one live kilnd can: 
#   - the plan carries the instance's cluster.peers as "servers";
#   - an agent booted with kiln.server=DEAD,LIVE (the first instance SIGKILLed before the agent
#     starts) opens its session, fetches plan, manifest and chunks, and reports progress and its
#     result through the second: the deployment succeeds and the disk is the image.
source "$(dirname "$0")/lib.sh"
AGENT=${KILN_AGENT:-$KILN_BUILD/kiln-agent} # KILN_AGENT: another build of the agent
cd "$WORK"
"$KILN" key generate --out signer >/dev/null
truncate -s 16M v1.raw
head -c $((6 << 20)) /dev/urandom | base64 -w 0 | head -c $((8 << 20)) | dd of=v1.raw conv=notrunc status=none
"$KILN" image build v1.raw -o v1.kiln --name os --version 1 --chunk-size 1M --sign signer.pem \
  >/dev/null 2>&1 || fail "build"
head -c 48 /dev/urandom | base64 -w 0 >cluster.token

# The instance that dies: started, then SIGKILLed (its port now refuses connections).
DATA_DIR=$WORK/dead start_kilnd
DEAD_URL=$URL
stop_kilnd KILL || true
code=$(curl -s -o /dev/null -w '%{http_code}' "$DEAD_URL/v1/chunks/x" || true)
expect_eq "$code" 000 "the first instance is gone"

cat >live.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"] },
  "cluster": { "peers": ["$DEAD_URL", "http://127.0.0.1:9"], "token_file": "$WORK/cluster.token" } }
JSON
DATA_DIR=$WORK/live start_kilnd --config live.json
LIVE_URL=$URL
TOKEN=$(DATA_DIR=$WORK/live make_token ops admin)
export KILN_URL=$LIVE_URL KILN_TOKEN=$TOKEN
"$KILN" image push v1.kiln >/dev/null 2>&1 || fail "push"
"$KILN" machine create --mac 52:54:00:00:00:51 >/dev/null
api PUT /api/v1/machines/1/assignment '{"image":"os","version":"1","force":true}'
expect_status 201 "assign"
DEP=$(jqb .id)

log "the plan names the other instances"
ADMIN=$TOKEN
agent_session "$DEP"
TOKEN=$SESSION api GET /api/v1/agent/deployment
expect_status 200 "plan"
expect_eq "$(jqb '.servers | join(",")')" "$DEAD_URL,http://127.0.0.1:9" "the plan's servers"
TOKEN=$ADMIN

log "an agent whose first server is dead deploys through the second"
truncate -s 16M disk.img
LOOP=$(losetup -f --show disk.img)
CLEANUP_CMDS+=("losetup -d $LOOP")
api POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
echo "kiln.server=$DEAD_URL,$LIVE_URL kiln.ticket=$AT kiln.disk=$LOOP kiln.after=none" >cmdline
RC=0
"$AGENT" --cmdline cmdline --trust-key signer.pub.pem --timeout-ms 2000 --backoff-ms 50 \
  >agent.log 2>&1 || RC=$?
expect_eq "$RC" 0 "the agent exits 0: $(tail -3 agent.log)"
cmp -s <(head -c 16M "$LOOP") v1.raw && ok || fail "the disk holds the image byte for byte"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "the deployment succeeded (result reported to the live one)"
expect_eq "$(jqb .bytes_done)" $((16 << 20)) "progress reached the live instance"
grep -q "kilnd servers (in order of fallback):" agent.log && ok || fail "the agent logs its servers"
finish
