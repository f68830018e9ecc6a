#!/usr/bin/env bash
# fleet_sim_test.sh — the fleet simulator (tests/tools/fleet_sim) against a real kilnd on
# loopback, judged by what kilnd records (deployments, events) and by an independent Redfish
# client (redfishtool), not by the simulator alone:
#   1. --register: 21 machines (sim-NNNN, rack=rNN, sim=1) with their Redfish BMCs in kilnd;
#      redfishtool reads one simulated BMC (system, power state, boot override).
#   2. a bulk assignment with reboot of 20 machines: kilnd sets one-time PXE and power-cycles
#      every BMC; each machine fetches its script, writes the image through the agent protocol
#      (chunks hash-checked), reboots and confirms: all 20 deployments reach `booted`, each
#      simulated disk holds the version, written exactly once. One of them (--die-mid-write)
#      stops after half its chunks; kilnd's written deadline power-cycles it and it recovers.
#   3. a --bmc-timeout machine: its reimage fails as a power.failed event naming the timeout.
#   4. a --never-boots version: written, never confirmed; kilnd power-cycles it to disk
#      (the simulator boots its disk and hangs again), then fails it and rolls back (auto-
#      rollback) to the booted version, which the machine writes and confirms.
#   5. POST /quit stops the simulator.
source "$(dirname "$0")/lib.sh"

SIM=$KILN_BUILD/fleet_sim
for need in curl jq redfishtool; do
  command -v $need >/dev/null || { log "SKIP: $need is missing (deploy/install-deps.sh)"; exit 77; }
done
[[ -x $SIM ]] || { fail "$SIM is not built (cmake --build build --target fleet_sim)"; finish; }
cd "$WORK"

# A small image: 4 MiB, 16 chunks of 256 KiB (some zero), signed.
"$KILN" key generate --out signer >/dev/null
truncate -s 4M v.raw
head -c $((2 << 20)) /dev/urandom | base64 -w 0 | dd of=v.raw bs=256K seek=2 conv=notrunc status=none
for v in 1 2; do
  "$KILN" image build v.raw -o v$v.kiln --name os --version $v --chunk-size 256K --sign signer.pem >/dev/null 2>&1 ||
    { fail "image build v$v"; finish; }
done

cat >kilnd.json <<'JSON'
{ "power": { "max_concurrent": 16, "reboot_on_assign": true, "timeout_ms": 1000, "retries": 0 },
  "boot": { "after": "reboot",
            "deadlines": { "written_s": 8, "booted_s": 4, "retries": 1, "startup_grace_s": 0 },
            "auto_rollback": true } }
JSON
start_kilnd --config kilnd.json
ADMIN=$(make_token ops admin)
TOKEN=$ADMIN
export KILN_URL=$URL KILN_TOKEN=$ADMIN
for v in 1 2; do "$KILN" image push v$v.kiln >/dev/null 2>&1 || fail "push v$v"; done

SIM_PID=
stop_sim() { [[ -n $SIM_PID ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true; }
CLEANUP_CMDS+=("stop_sim")
BMC_PASS='sim-pw:7 x'
"$SIM" --machines 21 --kilnd "$URL" --register --token "$ADMIN" --bmc-password "$BMC_PASS" \
  --bmc-timeout 20 --die-mid-write 5 --never-boots 2 --boot-delay 200 --workers 8 \
  --ready-file sim.ready --max-seconds 170 >sim.out 2>sim.log &
SIM_PID=$!
for _ in $(seq 1 300); do [[ -s sim.ready ]] && break; kill -0 $SIM_PID 2>/dev/null || break; sleep 0.1; done
[[ -s sim.ready ]] || { cat sim.log >&2; fail "fleet_sim did not become ready"; finish; }
CTL=$(head -n1 sim.ready)
state() { curl -s "$CTL/state"; }
# sim_machine I — machine I's entry in the simulator's /state.
sim_machine() { state | jq -c ".machines[$1]"; }
# events TYPE [DEPLOYMENT] — kilnd's events of TYPE (of that deployment), every page.
events() {
  local since=0 page all=
  while :; do
    page=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/events?since=$since&limit=1000")
    all+=$(jq -c ".events[] | select(.type == \"$1\"${2:+ and .deployment_id == $2})" <<<"$page")$'\n'
    [[ $(jq '.events | length' <<<"$page") -lt 1000 ]] && break
    since=$(jq '.events[-1].id' <<<"$page")
  done
  jq -sc . <<<"$all"
}

###############################################################################################
log "1. registration and one BMC read by redfishtool"
api GET "/api/v1/machines?selector=sim%3D1&limit=100"
expect_eq "$(jqb '.items | length')" 21 "21 machines registered"
expect_eq "$(jqb '[.items[] | .name] | sort | .[0] + " " + .[20]')" "sim-0000 sim-0020" "names sim-NNNN"
expect_eq "$(jqb '[.items[] | select(.name == "sim-0013")][0].labels.rack')" r03 "rack label rNN (i % 10)"
expect_eq "$(jqb '[.items[] | select(.name == "sim-0013")][0].macs[0]')" 02:4b:53:00:00:0d "MAC from the index"
ID0=$(jqb '[.items[] | select(.name == "sim-0000")][0].id')
api GET "/api/v1/machines/$ID0/bmc"
BMC0=$(jqb .address)
expect_eq "$BMC0" "$(sim_machine 0 | jq -r .bmc)" "kilnd holds sim-0000's BMC address"
RFT=(redfishtool -r "${BMC0#http://}" -S Never -u admin -p "$BMC_PASS")
OUT=$("${RFT[@]}" Systems 2>&1) || fail "redfishtool Systems: $OUT"
expect_eq "$(jq -r '.Members[0]["@odata.id"]' <<<"$OUT")" /redfish/v1/Systems/1 "redfishtool lists the system"
OUT=$("${RFT[@]}" -A Session Systems -1 get 2>&1) || fail "redfishtool get (session auth): $OUT"
expect_eq "$(jq -r '.PowerState + " " + .Boot.BootSourceOverrideEnabled + " " + .Name' <<<"$OUT")" "Off Disabled sim-0000" \
  "redfishtool reads PowerState, the boot override and the name"
jq -e '.Boot["BootSourceOverrideTarget@Redfish.AllowableValues"] | index("Pxe")' <<<"$OUT" >/dev/null && ok ||
  fail "Pxe among the allowable override targets: $OUT"
code=$(curl -s -o /dev/null -w '%{http_code}' "$BMC0/redfish/v1/Systems/1")
expect_eq "$code" 401 "the simulated BMC refuses a request without credentials"
code=$(curl -s -o /dev/null -w '%{http_code}' -u "admin:$BMC_PASS" -X PATCH -H 'If-Match: "0"' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe"}}' "$BMC0/redfish/v1/Systems/1")
expect_eq "$code" 412 "a stale If-Match is refused"
# The bmc-timeout machine stays out of the bulk assignment.
api PATCH "/api/v1/machines/$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/machines?selector=sim%3D1&limit=100" |
  jq '[.items[] | select(.name == "sim-0020")][0].id')" '{"labels":{"pool":"faulty"}}'
expect_status 200 "label sim-0020"

###############################################################################################
log "2. bulk assignment with reboot: 20 machines reach booted"
api POST /api/v1/assignments '{"selector":"sim=1,pool!=faulty","image":"os","version":"1","reboot":true}'
expect_status 201 "bulk assignment"
expect_eq "$(jqb '[.deployments[] | select(.reboot)] | length')" 20 "20 deployments with reboot"
DEPS=$(jq -c '[.deployments[] | {id, machine_id}]' <<<"$BODY")
# count_booted — sets STATES (the bulk's deployment statuses, counted) and BOOTED.
count_booted() {
  STATES=$(for d in $(jq -r '.[].id' <<<"$DEPS"); do
    curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/deployments/$d" | jq -r .status
  done | sort | uniq -c | tr -s ' \n' ' ')
  BOOTED=$(grep -o '[0-9]* booted' <<<"$STATES" | awk '{print $1}' || true)
}
for _ in $(seq 1 60); do
  count_booted
  [[ $BOOTED == 20 ]] && break
  sleep 1
done
expect_eq "$BOOTED" 20 "all 20 deployments booted (statuses: $STATES)"
S=$(state)
for row in $(jq -c '.[]' <<<"$DEPS"); do
  d=$(jq .id <<<"$row")
  m=$(jq .machine_id <<<"$row")
  name=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/machines/$m" | jq -r .name)
  i=$((10#${name#sim-}))
  got=$(jq -c ".machines[$i] | [.disk, .deployments_written, .confirmations >= 1, .override.enabled]" <<<"$S")
  expect_eq "$got" "[\"os:1\",[$d],true,\"Disabled\"]" "$name: disk os:1, deployment $d written once, confirmed, override consumed"
done
M5=$(jq -c '.machines[5]' <<<"$S")
expect_eq "$(jq -r '.faults_hit.die_mid_write' <<<"$M5"):$(jq -r '.counts.agent_runs' <<<"$M5")" "1:2" \
  "sim-0005 died mid-write once, then its second agent run wrote"
D5=$(jq -r '.deployments_written[0]' <<<"$M5")
[[ $(events deployment.deadline_missed "$D5" | jq length) -ge 1 ]] && ok ||
  fail "kilnd's written deadline retried sim-0005's deployment: $(events deployment.deadline_missed "$D5")"
[[ $(events power.reimage "$D5" | jq length) -ge 2 ]] && ok || fail "sim-0005 was reimaged twice"
expect_eq "$(jq '[.machines[0:20][] | select(.counts.network_boots >= 1 and .counts.disk_boots >= 1)] | length' <<<"$S")" 20 \
  "every machine booted the network (kilnd's override) and then its disk (after the write)"

###############################################################################################
log "3. a BMC that never answers: power.failed"
ID20=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/machines?selector=pool%3Dfaulty" | jq '.items[0].id')
api PUT "/api/v1/machines/$ID20/assignment" '{"image":"os","version":"1","reboot":true}'
expect_status 201 "assign sim-0020 with reboot"
D20=$(jqb .id)
for _ in $(seq 1 100); do [[ $(events power.failed "$D20" | jq length) -ge 1 ]] && break; sleep 0.1; done
EV=$(events power.failed "$D20")
[[ $(jq length <<<"$EV") -ge 1 ]] && ok || fail "a power.failed event for sim-0020: $EV"
grep -q "timed out" <<<"$(jq -r '.[0].data.error' <<<"$EV")" && ok || fail "power.failed names the timeout: $EV"
[[ $(sim_machine 20 | jq '.faults_hit.bmc_timeout') -ge 1 ]] && ok || fail "the simulator counted the hung BMC: $(sim_machine 20)"
expect_eq "$(sim_machine 20 | jq -r '.power + " " + (.counts.boots // 0 | tostring)')" "Off 0" "sim-0020 never powered on"

###############################################################################################
log "4. a version that never boots: power-cycled to disk, failed, rolled back"
api POST /api/v1/assignments '{"selector":"sim=1,rack=r01","image":"os","version":"2","reboot":true}'
expect_status 201 "bulk assignment of version 2 to rack r01"
NB=$(jq -c '[.deployments[] | {id, machine_id}]' <<<"$BODY")
expect_eq "$(jq length <<<"$NB")" 2 "two machines in r01 (sim-0001, sim-0011)"
for row in $(jq -c '.[]' <<<"$NB"); do
  d=$(jq .id <<<"$row")
  for _ in $(seq 1 60); do
    st=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/deployments/$d" | jq -r .status)
    [[ $st == failed ]] && break
    sleep 0.5
  done
  api GET "/api/v1/deployments/$d"
  expect_eq "$(jqb .status):$(jqb .booted_at)" "failed:null" "deployment $d (version 2) failed, never booted"
  grep -q "did not confirm" <<<"$(jqb .status_reason)" && ok || fail "the reason: $(jqb .status_reason)"
  expect_eq "$(events power.reimage "$d" | jq -r '[.[].data.boot] | join(",")')" "network,disk" \
    "kilnd reimaged from the network, then power-cycled to disk"
done
# The auto-rollback: version 1 again, written and confirmed.
for row in $(jq -c '.[]' <<<"$NB"); do
  m=$(jq .machine_id <<<"$row")
  RB=
  for _ in $(seq 1 60); do
    RB=$(curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/machines/$m/deployments" |
      jq -c '[.items[] | select(.requested_by == "kilnd:auto-rollback")][0] // empty')
    [[ -n $RB && $(jq -r .status <<<"$RB") == booted ]] && break
    sleep 0.5
  done
  expect_eq "$(jq -r '.to.version + " " + .status' <<<"$RB")" "1 booted" "machine $m rolled back to version 1, booted"
done
S=$(state)
for i in 1 11; do
  M=$(jq -c ".machines[$i]" <<<"$S")
  expect_eq "$(jq -r '.disk' <<<"$M"):$(jq '.deployments_written | length' <<<"$M")" "os:1:3" \
    "sim-00$i: disk back on os:1 (written: v1, v2, the rollback)"
  [[ $(jq '.faults_hit.never_boots' <<<"$M") -ge 2 ]] && ok ||
    fail "sim-00$i: version 2 hung at its first boot and at the power-cycle to disk: $M"
done
expect_eq "$(jq '[.machines[] | .counts.confirmations_refused // 0] | add' <<<"$S")" 0 "no boot confirmation was refused"

###############################################################################################
log "5. POST /quit"
curl -s -X POST "$CTL/quit" >/dev/null
RC=0
for _ in $(seq 1 100); do kill -0 $SIM_PID 2>/dev/null || break; sleep 0.1; done
kill -0 $SIM_PID 2>/dev/null && fail "fleet_sim still runs after POST /quit" || ok
wait $SIM_PID || RC=$?
SIM_PID=
expect_eq "$RC" 0 "fleet_sim exits 0"
grep -q "event=sim.summary" sim.log && ok || fail "the simulator logs a summary"
grep -qF "$BMC_PASS" sim.log "$WORK"/kilnd.*.log && fail "the BMC password is in a log" || ok
[[ $FAILURES -eq 0 ]] || tail -n 60 sim.log >&2
finish
