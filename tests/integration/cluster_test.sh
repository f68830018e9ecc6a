#!/usr/bin/env bash
# cluster_test.sh — three kilnd instances sharing one PostgreSQL (started by this test: initdb
# and pg_ctl in its scratch directory, never a system service), each with its own images
# directory, on loopback:
#   1. concurrent writes through different instances: one MAC registered three times at once,
#      one machine assigned three versions at once — exactly one wins each time;
#   2. a long-poll on one instance wakes for an event written through another (LISTEN/NOTIFY);
#   3. an image pushed to one instance is deployed by kiln-agent (a loop device) through the
#      other two, which fetch its chunks from the first and verify them; the instance the agent
#      talks to is SIGKILLed mid-deploy and the agent finishes through its fallback server;
#   4. a rollout of simulated machines (tests/tools/fleet_sim) survives the SIGKILL of the
#      instance driving it: another takes the engine's lease over and completes it, every
#      machine deployed exactly once.
source "$(dirname "$0")/lib.sh"
AGENT=$KILN_BUILD/kiln-agent
PROXY=$KILN_BUILD/chaos_proxy
SIM=$KILN_BUILD/fleet_sim
for need in curl jq python3 losetup; do
  command -v $need >/dev/null || { log "SKIP: $need is missing (deploy/install-deps.sh)"; exit 77; }
done
for b in "$AGENT" "$PROXY" "$SIM"; do [[ -x $b ]] || { fail "$b is not built"; finish; }; done
cd "$WORK"

pg_start || { fail "PostgreSQL did not start"; finish; }
DB_URL=$PG_URL

# Three fixed ports (each instance names the others as its peers).
PORTS=()
for _ in 1 2 3; do PORTS+=("$(free_port "${PORTS[@]}")"); done
"$KILN" key generate --out signer >/dev/null  # images are signed: peers' manifests are checked
head -c 32 /dev/urandom | base64 >cluster.token
chmod 600 cluster.token
for i in 1 2 3; do
  peers=()
  for j in 1 2 3; do [[ $j == "$i" ]] || peers+=("\"http://127.0.0.1:${PORTS[$((j - 1))]}\""); done
  cat >kilnd.$i.json <<JSON
{ "db_url": "$DB_URL",
  "secrets": { "key_file": "$WORK/secrets.key" },
  "images": { "trusted_keys": ["$WORK/signer.pub.pem"] },
  "cluster": { "peers": [$(IFS=,; echo "${peers[*]}")], "token_file": "$WORK/cluster.token",
               "fetch_timeout_ms": 5000 },
  "http": { "max_connections_per_address": 1024 },
  "power": { "max_concurrent": 64, "timeout_ms": 3000, "retries": 1 },
  "boot": { "after": "reboot",
            "deadlines": { "written_s": 60, "booted_s": 20, "retries": 1, "startup_grace_s": 5 } },
  "rollouts": { "tick_ms": 200 } }
JSON
done
declare -A PID URLS
# up I — starts instance I (1-3) on its port, its own data directory.
up() {
  DATA_DIR=$WORK/var$1 KILND_LISTEN=127.0.0.1:${PORTS[$(($1 - 1))]} start_kilnd --config kilnd.$1.json ||
    { fail "kilnd $1 did not start"; finish; }
  PID[$1]=$KILND_PID
  URLS[$1]=$URL
}
# down I — SIGKILLs instance I.
down() { kill -KILL "${PID[$1]}"; wait "${PID[$1]}" 2>/dev/null || true; }
# on I METHOD PATH [JSON] — api call through instance I.
on() { local i=$1; shift; URL=${URLS[$i]} api "$@"; }
metric() { curl -s "${URLS[$1]}/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# Instance 1 first: it takes the engine's lease (rollouts, deadlines).
up 1
for _ in $(seq 1 50); do [[ $(metric 1 kiln_rollout_engine_leader) == 1 ]] && break; sleep 0.1; done
expect_eq "$(metric 1 kiln_rollout_engine_leader)" 1 "the first instance leads the engine"
up 2
up 3
TOKEN=$("$KILND" --data-dir "$WORK/var1" --config kilnd.1.json token create --name ops --scope admin 2>/dev/null)
[[ -n $TOKEN ]] || { fail "no token"; finish; }
sleep 0.5
expect_eq "$(metric 2 kiln_rollout_engine_leader)$(metric 3 kiln_rollout_engine_leader)" 00 \
  "the other two wait"

###############################################################################################
log "1. concurrent writes through different instances: one wins"
# race PATH-TEMPLATE — one request per instance at once; prints the three status codes sorted.
race() {
  local method=$1 path=$2 body=$3 i
  local pids=()
  for i in 1 2 3; do
    curl -s -o "race.$i" -w '%{http_code}\n' -X "$method" -H "Authorization: Bearer $TOKEN" \
      -H 'Content-Type: application/json' --data-binary "${body//@V@/$i}" \
      "${URLS[$i]}$path" >"race.$i.code" &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat race.1.code race.2.code race.3.code | sort | tr '\n' ' '
}
for k in 1 2 3 4 5; do
  codes=$(race POST /api/v1/machines "{\"mac\":\"52:54:00:aa:00:0$k\",\"name\":\"m$k-@V@\"}")
  expect_eq "$codes" "201 409 409 " "one MAC registered through three instances at once ($k)"
done
on 2 GET "/api/v1/machines?limit=1000"
expect_eq "$(jqb '[.items[] | select(.macs[0] | startswith("52:54:00:aa:00:"))] | length')" 5 \
  "five machines, one per MAC"

truncate -s 16M v.raw
for v in 1 2 3; do
  head -c $((14 << 20)) /dev/urandom | dd of=v.raw bs=1M seek=1 conv=notrunc status=none
  cp v.raw v$v.raw
  "$KILN" image build v.raw -o v$v.kiln --name os --version $v --chunk-size 256K --sign signer.pem >/dev/null 2>&1 ||
    { fail "image build v$v"; finish; }
  KILN_URL=${URLS[1]} KILN_TOKEN=$TOKEN "$KILN" image push v$v.kiln >/dev/null 2>&1 || fail "push v$v to instance 1"
done
on 3 GET /api/v1/images
expect_eq "$(jqb '[.items[] | select(.name == "os")] | length')" 3 "instance 3 lists the versions pushed to instance 1"
for k in 1 2 3 4 5; do
  on 1 GET "/api/v1/machines?limit=1000"
  id=$(jqb ".items[] | select(.macs[0] == \"52:54:00:aa:00:0$k\") | .id")
  codes=$(race PUT "/api/v1/machines/$id/assignment" '{"image":"os","version":"@V@"}')
  expect_eq "$codes" "201 409 409 " "machine $id assigned three versions through three instances at once"
  on 2 GET "/api/v1/machines/$id/deployments"
  expect_eq "$(jqb '.items | length')" 1 "machine $id has exactly one deployment"
done

###############################################################################################
log "2. a long-poll on one instance wakes for a write through another"
LAST=0
for _ in $(seq 1 100); do  # to the end of the stream
  on 3 GET "/api/v1/events?since=$LAST&limit=1000"
  [[ $(jqb '.events | length') == 0 ]] && break
  LAST=$(jqb .next)
done
# Parked on instance 3 for up to 25 s; curl gives up at 15 s, so only a wake-up passes.
curl -s --max-time 15 -H "Authorization: Bearer $TOKEN" \
  "${URLS[3]}/api/v1/events?since=$LAST&wait=25" >poll.json &
POLL=$!
sleep 0.5
on 1 POST /api/v1/machines '{"mac":"52:54:00:bb:00:01","name":"poll-me"}'
expect_status 201 "a machine created through instance 1"
RC=0; wait $POLL || RC=$?
expect_eq "$RC" 0 "the long-poll on instance 3 returned before its timeout"
jq -e '.events[] | select(.type == "machine.created")' poll.json >/dev/null && ok ||
  fail "the long-poll on instance 3 carries the event written through instance 1: $(head -c 300 poll.json)"

###############################################################################################
log "3. kiln-agent through instances 3 then 2; instance 3 SIGKILLed mid-deploy"
truncate -s 32M disk.img
LOOP=$(losetup -f --show disk.img)
CLEANUP_CMDS+=("losetup -d $LOOP")
on 1 POST /api/v1/machines '{"mac":"52:54:00:cc:00:01","name":"agent"}'
AID=$(jqb .id)
on 2 PUT "/api/v1/machines/$AID/assignment" '{"image":"os","version":"1"}'
expect_status 201 "assigned through instance 2"
DEP=$(jqb .id)
on 3 POST "/api/v1/deployments/$DEP/agent-ticket"
AT=$(jqb .ticket)
# The agent reaches instance 3 through a slow proxy (so it can be killed mid-deploy); its
# fallback is instance 2. Neither has a chunk of the image: they fetch them from instance 1.
rm -f proxy.port
"$PROXY" --listen 0 --upstream "${PORTS[2]}" --port-file proxy.port --lifetime-s 120 --delay-ms 400 2>proxy.log &
PROXY_PID=$!
KILND_PIDS+=("$PROXY_PID")
for _ in $(seq 100); do [[ -s proxy.port ]] && break; sleep 0.02; done
"$AGENT" --server "http://127.0.0.1:$(cat proxy.port)" --server "${URLS[2]}" --ticket "$AT" --disk "$LOOP" \
  --trust-key signer.pub.pem --after none --timeout-ms 1500 --backoff-ms 100 >agent.log 2>&1 &
APID=$!
KILND_PIDS+=("$APID")
for _ in $(seq 1 100); do
  on 2 GET "/api/v1/deployments/$DEP"
  [[ $(jqb '.bytes_done // 0') -gt 0 ]] && break
  sleep 0.1
done
[[ $(jqb '.bytes_done // 0') -gt 0 && $(jqb .status) == running ]] && ok ||
  fail "the agent was writing through instance 3 before the kill: $(jqb .status) $(jqb .bytes_done)"
down 3
RC=0; wait "$APID" || RC=$?
expect_eq "$RC" 0 "the agent finished through instance 2: $(tail -3 agent.log)"
cmp -s <(head -c 16M "$LOOP") v1.raw && ok || fail "the device holds version 1 byte for byte"
on 1 GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" succeeded "the deployment succeeded"
grep -q "; trying ${URLS[2]}" agent.log && ok || fail "the agent says it moved to its fallback server: $(tail -5 agent.log)"
c2=$(curl -s "${URLS[2]}/metrics" | awk '/^kiln_cluster_fetches_total\{.*kind="chunk".*result="ok"/ {n += $2} END {print n + 0}')
[[ ${c2:-0} -gt 0 ]] && ok || fail "instance 2 fetched chunks from its peers (${c2:-none})"
up 3  # back, same data directory

###############################################################################################
log "4. a rollout survives the SIGKILL of the instance driving it"
FLEET=6
"$SIM" --machines $FLEET --racks 2 --kilnd "${URLS[3]}" --register --token "$TOKEN" \
  --boot-delay 100 --deploy-time 2000 --workers 16 --verbose-machines 0 --ready-file sim.ready \
  --max-seconds 300 >sim.out 2>sim.log &
SIM_PID=$!
KILND_PIDS+=("$SIM_PID")
for _ in $(seq 1 300); do [[ -s sim.ready ]] && break; kill -0 $SIM_PID 2>/dev/null || break; sleep 0.1; done
[[ -s sim.ready ]] || { tail -20 sim.log >&2; fail "fleet_sim did not become ready"; finish; }
on 2 POST /api/v1/rollouts '{"selector":"sim=1","image":"os","version":"2","batch":2,"canary":1}'
expect_status 201 "a rollout created through instance 2"
RID=$(jqb .id)
# Killed once the canary passed (its chunks are then cached where the fleet boots) and the
# next batch is under way.
killed=0
for _ in $(seq 1 240); do
  on 2 GET "/api/v1/rollouts/$RID"
  if [[ $(jqb '[.machines[] | select(.state == "done")] | length') -ge 1 &&
        $(jqb '[.machines[] | select(.state == "deploying")] | length') -ge 1 ]]; then
    down 1
    killed=1
    break
  fi
  sleep 0.25
done
expect_eq "$killed" 1 "instance 1 was killed mid-rollout (state $(jqb .state))"
for _ in $(seq 1 240); do
  on 2 GET "/api/v1/rollouts/$RID"
  [[ $(jqb .state) == succeeded || $(jqb .state) == failed || $(jqb .state) == paused ]] && break
  sleep 0.5
done
expect_eq "$(jqb .state)" succeeded "the rollout completed after its driver died: $(jqb .reason)"
lead=$(($(metric 2 kiln_rollout_engine_leader) + $(metric 3 kiln_rollout_engine_leader)))
expect_eq "$lead" 1 "exactly one surviving instance leads the engine"
grep -q "event=rollout.leader_acquired" "$WORK"/kilnd.[1-9].log && ok || fail "a takeover was logged"
for id in $(jqb '.machines[].machine_id'); do
  on 3 GET "/api/v1/machines/$id/deployments"
  expect_eq "$(jqb '[.items[] | select(.to.version == "2")] | length')" 1 \
    "machine $id deployed version 2 exactly once"
done
kill "$SIM_PID" 2>/dev/null || true
finish
