#!/usr/bin/env bash
# rollout_test.sh — rollouts (docs/rollouts.md) on a simulated fleet: a real kilnd, real HTTP,
# $KILN_ROLLOUT_MACHINES (1000) machines of tests/tools/fleet_sim in 10 racks, each with its own
# simulated Redfish BMC, deploying through the agent protocol. Judged by what kilnd records (the
# rollout, deployments in its SQLite file, events) and by what the simulated machines did.
#   0. the API refuses bad rollouts (400/403/404/409/422) and reports a machine it cannot
#      deploy (no BMC) instead of leaving it out.
#   1. a good image, 5% batches, canary 10, spread over racks: every machine deployed once,
#      batch after batch, each batch started after the previous one's gate; pause holds it.
#   2. a version that never boots: it stops at the canary, the canary comes back on the
#      previous version, confirmed; no other machine is touched.
#   3. kilnd SIGKILLed mid-rollout and restarted: the rollout resumes and completes, every
#      machine deployed exactly once, none lost.
source "$(dirname "$0")/lib.sh"

N=${KILN_ROLLOUT_MACHINES:-1000}
SIM=$KILN_BUILD/fleet_sim
for need in curl jq sqlite3 python3; do
  command -v $need >/dev/null || { log "SKIP: $need is missing (deploy/install-deps.sh)"; exit 77; }
done
[[ -x $SIM ]] || { fail "$SIM is not built (cmake --build build --target fleet_sim)"; finish; }
cd "$WORK"

# Small images: 1 MiB, 4 chunks of 256 KiB; v2 is the one that never boots.
truncate -s 1M v.raw
for v in 1 2 3; do
  head -c $((512 << 10)) /dev/urandom | dd of=v.raw bs=256K seek=1 conv=notrunc status=none
  "$KILN" image build v.raw -o v$v.kiln --name os --version $v --chunk-size 256K >/dev/null 2>&1 ||
    { fail "image build v$v"; finish; }
done

# A fixed port: the restarted kilnd must be where the machines (and their scripts) expect it.
PORT=$(free_port)
cat >kilnd.json <<'JSON'
{ "http": { "max_connections_per_address": 1024 },
  "power": { "max_concurrent": 64, "timeout_ms": 3000, "retries": 1 },
  "boot": { "after": "reboot",
            "deadlines": { "written_s": 30, "booted_s": 5, "retries": 1, "startup_grace_s": 5 } },
  "rollouts": { "tick_ms": 200 } }
JSON
export KILND_LISTEN=127.0.0.1:$PORT KILND_LOG_LEVEL=info
start_kilnd --config kilnd.json || { fail "kilnd did not start"; finish; }
ADMIN=$(make_token ops admin)
READER=$(make_token viewer read)
TOKEN=$ADMIN
export KILN_URL=$URL KILN_TOKEN=$ADMIN
for v in 1 2 3; do "$KILN" image push v$v.kiln >/dev/null 2>&1 || fail "push v$v"; done

SIM_PID=
stop_sim() { [[ -n $SIM_PID ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true; }
CLEANUP_CMDS+=("stop_sim")
T0=$SECONDS
"$SIM" --machines "$N" --racks 10 --kilnd "$URL" --register --token "$ADMIN" --never-boots 2 \
  --boot-delay 100 --workers 64 --verbose-machines 0 --ready-file sim.ready --max-seconds 900 \
  >sim.out 2>sim.log &
SIM_PID=$!
for _ in $(seq 1 1200); do [[ -s sim.ready ]] && break; kill -0 $SIM_PID 2>/dev/null || break; sleep 0.1; done
[[ -s sim.ready ]] || { tail -20 sim.log >&2; fail "fleet_sim did not become ready"; finish; }
CTL=$(head -n1 sim.ready)
log "$N simulated machines registered with their BMCs in $((SECONDS - T0)) s"
state() { curl -s "$CTL/state"; }
DB=$WORK/var/kiln.db
sql() { sqlite3 -readonly "$DB" "$1"; }

# One more machine in the fleet, without a BMC: kilnd cannot reboot it.
api POST /api/v1/machines '{"macs":["02:4b:53:ff:00:01"],"name":"no-bmc","labels":{"sim":"1","rack":"r00"}}'
expect_status 201 "a machine without a BMC"
NOBMC=$(jqb .id)

# rollout ID — sets BODY to the rollout (with machines).
rollout() { api GET "/api/v1/rollouts/$1" >/dev/null; }
# wait_state ID STATE... SECONDS — polls until the rollout is in one of the states.
wait_state() {
  local id=$1 limit=${*: -1} want=("${@:2:$#-2}") s
  for _ in $(seq 1 $((limit * 2))); do
    s=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/rollouts/$id" | jq -r .state)
    for w in "${want[@]}"; do [[ $s == "$w" ]] && return 0; done
    sleep 0.5
  done
  log "rollout $id is $s after ${limit} s"
  return 1
}

###############################################################################################
log "0. what the API refuses"
TOKEN=$READER
api POST /api/v1/rollouts '{"selector":"sim=1","image":"os","version":"1","batch":5}'
expect_status 403 "a read token cannot start a rollout"
api GET /api/v1/rollouts
expect_status 200 "a read token lists rollouts"
TOKEN=$ADMIN
bad() {  # bad STATUS BODY WHAT [MESSAGE-PART]
  api POST /api/v1/rollouts "$2"
  expect_status "$1" "$3"
  [[ -z ${4:-} ]] || { grep -qF -- "$4" <<<"$(jqb .error.message)" && ok || fail "$3: message '$(jqb .error.message)'"; }
}
bad 400 '{"selector":"sim=1","image":"os","version":"1"}' "no batch" "'batch' is required"
bad 400 '{"selector":"sim=1","image":"os","version":"1","batch":true}' "batch a boolean" "batch"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":"0%"}' "batch 0%" "batch:"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":"5 %"}' "batch '5 %'" "batch:"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":0}' "batch 0" "batch:"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":5,"on_failure":"explode"}' "on_failure" "on_failure:"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":5,"gate":"maybe"}' "gate" "gate:"
bad 422 '{"selector":"sim=1","image":"os","version":"1","batch":5,"canary":-1}' "canary -1" "canary:"
bad 400 '{"selector":"sim=1","image":"os","version":"1","batch":5,"batches":3}' "unknown field" "batches"
bad 404 '{"selector":"sim=1","image":"os","version":"9","batch":5}' "unknown version" "os:9"
bad 404 '{"selector":"sim=nobody","image":"os","version":"1","batch":5}' "a selector matching nothing" "matched no machines"
api POST /api/v1/rollouts/99/pause
expect_status 404 "pausing a rollout that does not exist"
api GET /api/v1/rollouts/x
expect_status 400 "a rollout id that is not a number"

###############################################################################################
log "1. a good image to $N machines: 5% batches, canary 10, spread over racks"
T1=$SECONDS
api POST /api/v1/rollouts '{"selector":"sim=1","image":"os","version":"1","batch":"5%","canary":10,
  "spread_by":"rack","gate_timeout_s":300}'
expect_status 201 "rollout of os:1"
R1=$(jqb .id)
expect_eq "$(jqb '.counts.total'):$(jqb '.counts.skipped'):$(jqb .batch_size)" "$((N + 1)):1:$(((N + 19) / 20))" \
  "every machine planned; the one without a BMC reported, not left out; batches of 5%"
expect_eq "$(jqb "[.machines[] | select(.machine_id == $NOBMC)][0].reason | startswith(\"no BMC\")")" true \
  "the skipped machine's reason says it has no BMC"
expect_eq "$(jqb '[.machines[] | select(.batch == 0) | .name] | length')" 10 "a canary batch of 10"
CANARY_RACKS=$(jq -r '[.machines[] | select(.batch == 0) | .name[4:] | tonumber % 10] | unique | length' <<<"$BODY")
expect_eq "$CANARY_RACKS" 10 "the canary takes one machine from each of the 10 racks (spread_by)"
api POST /api/v1/rollouts '{"selector":"rack=r03","image":"os","version":"3","batch":1}'
expect_status 409 "a machine is in one unfinished rollout at a time"
grep -q "rollout $R1" <<<"$(jqb .error.message)" && ok || fail "the conflict names the rollout: $BODY"

# Pause once the canary passed: nothing more starts, then resume.
for _ in $(seq 1 240); do
  rollout "$R1"
  [[ $(jqb '.batches[0].done') == 10 ]] && break
  sleep 0.5
done
expect_eq "$(jqb '.batches[0].done')" 10 "the canary batch passed its gate"
api POST "/api/v1/rollouts/$R1/pause"
expect_status 200 "pause"
for _ in $(seq 1 120); do rollout "$R1"; [[ $(jqb .counts.deploying) == 0 ]] && break; sleep 0.5; done
P1=$(jqb .counts.pending)
sleep 2
rollout "$R1"
expect_eq "$(jqb .state):$(jqb .counts.pending):$(jqb .counts.deploying)" "paused:$P1:0" \
  "paused: machines in flight finished, none started"
api POST "/api/v1/rollouts/$R1/pause"
expect_status 409 "a paused rollout cannot be paused again"
api POST "/api/v1/rollouts/$R1/resume"
expect_status 200 "resume"
if "$KILN" rollout show "$R1" --watch >watch1.out 2>&1; then ok; else fail "rollout $R1 did not succeed: $(tail -5 watch1.out)"; fi
grep -q "(canary)" watch1.out && ok || fail "--watch shows the canary batch"
rollout "$R1"
log "rollout 1: $N machines in $((SECONDS - T1)) s"
expect_eq "$(jqb .state):$(jqb .counts.done):$(jqb .counts.failed)" "succeeded:$N:0" "every machine done"
B=$(((N + 19) / 20))
BATCHES=$((1 + (N - 10 + B - 1) / B))
expect_eq "$(jqb '.batches | length')" "$BATCHES" "canary + $((BATCHES - 1)) batches of 5%"
# The gate: each batch started after the previous one finished.
expect_eq "$(jqb '[.batches as $b | range(1; $b | length) | select($b[.].started_at < $b[. - 1].finished_at)] | length')" 0 \
  "no batch started before the previous one passed its gate"
S=$(state)
expect_eq "$(jq '[.machines[] | select(.disk == "os:1" and (.deployments_written | length) == 1)] | length' <<<"$S")" "$N" \
  "every simulated disk holds os:1, written exactly once"
expect_eq "$(sql "SELECT COUNT(*) FROM deployments WHERE requested_by = 'rollout $R1' AND status = 'booted'")" "$N" \
  "kilnd recorded $N booted deployments of the rollout"
METRICS=$(curl -s "$URL/metrics")
grep -q "^kiln_rollout_batches_total $BATCHES\$" <<<"$METRICS" && ok || fail "metrics count $BATCHES batches: $(grep batches_total <<<"$METRICS")"

###############################################################################################
log "2. a version that never boots stops at the canary and comes back"
T2=$SECONDS
api POST /api/v1/rollouts '{"selector":"sim=1","image":"os","version":"2","batch":"5%","canary":10,
  "spread_by":"rack","on_failure":"rollback","gate_timeout_s":120}'
expect_status 201 "rollout of os:2"
R2=$(jqb .id)
CANARY=$(jq -c '[.machines[] | select(.batch == 0) | .machine_id]' <<<"$BODY")
wait_state "$R2" rolled_back failed 240 && ok || fail "rollout $R2 did not end"
rollout "$R2"
log "rollout 2: stopped and rolled back in $((SECONDS - T2)) s ($(jqb .reason))"
expect_eq "$(jqb .state)" rolled_back "the rollout is rolled back"
expect_eq "$(jqb .counts.rolled_back):$(jqb .counts.skipped)" "10:$((N + 1 - 10))" \
  "the 10 canary machines rolled back; the others never started"
expect_eq "$(jq -c '[.machines[] | select(.state == "rolled_back") | .machine_id] | sort' <<<"$BODY")" "$(jq -c sort <<<"$CANARY")" \
  "exactly the canary machines were touched"
expect_eq "$(jqb '[.machines[] | select(.state == "rolled_back") | .reason | test("no confirmed boot|did not confirm")] | any')" true \
  "the reason: a boot that was never confirmed"
for m in $(jq -r '.[]' <<<"$CANARY"); do
  api GET "/api/v1/machines/$m/deployments"
  got=$(jqb '[.items[0], .items[1]] | map(.kind + ":" + .to.version + ":" + .status) | join(" ")')
  [[ $got =~ ^rollback:1:booted\ assign:2:(failed|succeeded)$ ]] && ok || fail "machine $m: $got"
done
expect_eq "$(sql "SELECT COUNT(*) FROM deployments d JOIN image_versions v ON v.id = d.to_version_id WHERE v.version = '2'")" 10 \
  "version 2 reached the canary machines only"
S=$(state)
expect_eq "$(jq '[.machines[] | select(.disk == "os:1")] | length' <<<"$S")" "$N" "every simulated disk holds os:1 again"

###############################################################################################
log "3. kilnd SIGKILLed mid-rollout resumes it"
T3=$SECONDS
api POST /api/v1/rollouts '{"selector":"sim=1","image":"os","version":"3","batch":"5%","canary":10,
  "gate_timeout_s":300,"config":{"metadata":{"wave":"three"}}}'
expect_status 201 "rollout of os:3, with a configuration layer"
R3=$(jqb .id)
[[ $(jqb .config_sha256) =~ ^[0-9a-f]{64}$ ]] && ok || fail "an admin sees the layer's hash: $(jqb .config_sha256)"
TOKEN=$READER
api GET "/api/v1/rollouts/$R3?machines=false"
expect_eq "$(jqb .config_sha256):$(jqb 'has("machines")')" "hidden:false" "a read token sees no hash; machines=false leaves them out"
TOKEN=$ADMIN
for _ in $(seq 1 600); do
  rollout "$R3"
  [[ $(jqb .counts.done) -ge $((N * 2 / 5)) && $(jqb .counts.deploying) -gt 0 ]] && break
  sleep 0.2
done
AT_KILL="done=$(jqb .counts.done) deploying=$(jqb .counts.deploying)"
[[ $(jqb .counts.deploying) -gt 0 ]] && ok || fail "machines were deploying when kilnd was killed ($AT_KILL)"
stop_kilnd KILL || true
log "kilnd killed with $AT_KILL"
sleep 1
start_kilnd --config kilnd.json || { fail "kilnd did not restart"; finish; }
expect_eq "$URL" "http://127.0.0.1:$PORT" "kilnd restarted on the same port"
if "$KILN" rollout show "$R3" --watch >watch3.out 2>&1; then ok; else fail "rollout $R3 did not succeed after the restart: $(tail -5 watch3.out)"; fi
rollout "$R3"
log "rollout 3: $N machines in $((SECONDS - T3)) s, across a kilnd SIGKILL"
expect_eq "$(jqb .state):$(jqb .counts.done):$(jqb .counts.failed)" "succeeded:$N:0" "resumed and completed" ||
  log "failed machines' reasons: $(jqb '[.machines[] | select(.state == "failed") | .reason] | group_by(.) | map("\(length)x \(.[0])")')"
expect_eq "$(sql "SELECT COUNT(*) FROM (SELECT machine_id FROM deployments WHERE requested_by = 'rollout $R3' GROUP BY machine_id HAVING COUNT(*) = 1)")" "$N" \
  "every machine got exactly one deployment from the rollout (none lost, none twice)"
expect_eq "$(sql "SELECT COUNT(*) FROM deployments WHERE requested_by = 'rollout $R3' AND status != 'booted'")" 0 \
  "and every one of them booted"
S=$(state)
expect_eq "$(jq '[.machines[] | select(.disk == "os:3")] | length' <<<"$S")" "$N" "every simulated disk holds os:3"
expect_eq "$(sql 'PRAGMA integrity_check')" ok "the database is intact"
# The layer is in every deployment's configuration snapshot (the machine's own has no metadata).
D=$(sql "SELECT id FROM deployments WHERE requested_by = 'rollout $R3' ORDER BY id LIMIT 1")
api GET "/api/v1/deployments/$D/config"
expect_eq "$(jqb '.config.metadata.wave // .metadata.wave // empty')" three "the rollout's configuration layer is in the snapshot"
grep -q "three" "$WORK"/kilnd.*.log && fail "the configuration layer's content appears in kilnd's log" || ok
grep -q "event=rollout.repower\|event=rollout.machines_started" "$WORK/kilnd.1.log" && ok ||
  fail "the restarted kilnd drove the rollout"

curl -s -X POST "$CTL/quit" >/dev/null
finish
