#!/usr/bin/env bash
# power_test.sh — kilnd's power control, confirmed boots and deadlines against the lab's BMC
# emulators (tests/tools/redfish_bmc.py and ipmi_bmc.py, --sim, on 127.0.0.1), the agent played
# with curl through the agent API (an external raw image: the cheapest proof). Every check reads
# what the emulator itself recorded (GET /_emulator/state, the IPMI --state-file), not what kilnd
# says it did:
#   1. BMC secrets: write-only, in no database file, log, event or CLI output; the key file
#      0600 (kilnd refuses a 0644 one); kept on a PUT without credentials; tampered → clear error.
#   2. power on/off/cycle/soft-off/status through the API and the CLI; no BMC → 404; a wrong
#      password → 401 without the password in it.
#   3. reimage on assign/rollback/bulk: one-time PXE override then a reset, consumed by the boot;
#      explicit reboot without a BMC → 422 and nothing created; power.reboot_on_assign default.
#   4. confirmed boots: the instance credential; 409 before written; once; rollback target.
#   5. deadlines: a boot not confirmed → power-cycle from disk → failed → auto-rollback (with
#      reboot) to the last booted version; a machine without a BMC fails at once.
#   6. faults: ignored override (then the written deadline retries), 500, stale ETag, timeout.
#   7. IPMI through ipmitool.  8. power.max_concurrent: resets never overlap.
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
TOOLS=$KILN_ROOT/tests/tools
for need in curl jq sqlite3 ipmitool; do
  command -v $need >/dev/null || { log "SKIP: $need is missing (deploy/install-deps.sh)"; exit 77; }
done
$PY -c 'import pyghmi' 2>/dev/null || { log "SKIP: python3-pyghmi missing"; exit 77; }
cd "$WORK"

PASS='Zq7-pw:unique 4417'  # <= 20 bytes (IPMI), a space and a colon
printf '%s\n' "$PASS" >bmc.pass
printf '%s\n' 'Zq7-wrong-pw' >wrong.pass
chmod 600 bmc.pass wrong.pass
EMU_PIDS=()
stop_emulators() {
  for p in "${EMU_PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
  for p in "${EMU_PIDS[@]:-}"; do [[ -n $p ]] && wait "$p" 2>/dev/null || true; done
  EMU_PIDS=()
}
CLEANUP_CMDS+=("stop_emulators")

wait_file() {
  for _ in $(seq 1 100); do [[ -s $1 ]] && return 0; sleep 0.1; done
  return 1
}
# start_rf NAME [flags] — a Redfish emulator (--sim, powered off); sets RF (its base URL).
start_rf() {
  local n=$1
  shift
  "$PY" "$TOOLS/redfish_bmc.py" --sim --listen 127.0.0.1:0 --user admin --password-file bmc.pass \
    --ready-file "rf.$n.ready" "$@" >/dev/null 2>"rf.$n.log" &
  EMU_PIDS+=($!)
  wait_file "rf.$n.ready" || { cat "rf.$n.log" >&2; fail "redfish emulator $n did not start"; finish; }
  RF=$(head -n1 "rf.$n.ready")
}
rf_state() { curl -s "$1/_emulator/state"; }
rf_faults() {
  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary "$2" "$1/_emulator/faults"
}
contains() { grep -qF -- "$2" <<<"$1"; }
# events TYPE [DEPLOYMENT] — the events of TYPE (of that deployment), as a JSON array.
events() {
  local sel=".type == \"$1\""
  [[ -n ${2:-} ]] && sel="$sel and .deployment_id == $2"
  curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/events?since=0&limit=1000" |
    jq -c "[.events[] | select($sel)]"
}
# wait_event N TYPE [DEPLOYMENT] — bounded wait (30 s) until there are at least N such events.
wait_event() {
  local n=$1
  shift
  for _ in $(seq 1 300); do
    [[ $(events "$@" | jq length) -ge $n ]] && return 0
    sleep 0.1
  done
  return 1
}
deployment() { TOKEN=$ADMIN api GET "/api/v1/deployments/$1"; }
# wait_status DEPLOYMENT STATUS — bounded wait (30 s) for a deployment's status.
wait_status() {
  for _ in $(seq 1 300); do
    deployment "$1"
    [[ $(jqb .status) == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}
sha_of() { printf '%064d' "$1"; }
# write_ok DEPLOYMENT VERSION [INSTANCE_BLOCK] — plays the agent: session, plan (sets INST, the
# instance credential), a succeeded result with its proof, saying whether it wrote the instance
# block (default true).
write_ok() {
  TOKEN=$ADMIN agent_session "$1"
  local s=$SESSION
  TOKEN=$s api GET /api/v1/agent/deployment
  INST=$(jqb '.instance.token // empty')
  TOKEN=$s api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"detail\":{\"instance_block\":${3:-true}},\"proof\":$(external_proof "$(sha_of "$2")" 4096)}"
  [[ $STATUS == 200 ]] || fail "agent result for deployment $1: $STATUS $BODY"
}
confirm() { TOKEN=$1 api POST /api/v1/instance/booted; }
# assign MACHINE VERSION [EXTRA JSON] — sets DEP (and STATUS/BODY).
assign() {
  TOKEN=$ADMIN api PUT "/api/v1/machines/$1/assignment" "{\"image\":\"demo\",\"version\":\"$2\",\"force\":true${3:+,$3}}"
  DEP=$(jqb '.id // empty')
}
history_len() { TOKEN=$ADMIN api GET "/api/v1/machines/$1/deployments"; jqb '.items | length'; }

###############################################################################################
cat >kilnd.a.json <<'JSON'
{ "power": { "max_concurrent": 4, "reboot_on_assign": false, "timeout_ms": 500, "retries": 2 } }
JSON
start_kilnd --config kilnd.a.json
ADMIN=$(make_token ops admin)
READER=$(make_token viewer read)
TOKEN=$ADMIN
export KILN_URL=$URL KILN_TOKEN=$ADMIN
for v in 1 2 3 4; do
  api POST "/api/v1/images/demo/versions/$v" "{\"format\":\"raw\",\"source_url\":\"http://127.0.0.1:9/demo$v.raw\",\"sha256\":\"$(sha_of $v)\",\"size_bytes\":4096}"
  expect_status 201 "register demo:$v"
done
# m1..m4 (m2 has no BMC), m5..m7 share one BMC (max_concurrent), m8 for tampering.
for i in 1 2 3 4 5 6 7 8; do
  api POST /api/v1/machines "{\"macs\":[\"52:54:00:00:07:0$i\"],\"name\":\"m$i\"}"
  expect_status 201 "machine m$i"
  declare "M$i=$(jqb .id)"
done

start_rf 1
RF1=$RF
start_rf 2
RF2=$RF
start_rf 3
RF3=$RF

###############################################################################################
log "1. secrets: write-only credentials, sealed at rest"
api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF1\",\"insecure\":true,\"username\":\"admin\",\"password\":\"$PASS\"}"
expect_status 200 "PUT bmc"
expect_eq "$(jqb .credentials):$(jqb 'has("username") or has("password")')" "set:false" "PUT answers without credentials"
api GET "/api/v1/machines/$M1/bmc"
expect_status 200 "GET bmc"
expect_eq "$(jqb .credentials):$(jqb 'has("username") or has("password")'):$(jqb .driver)" "set:false:redfish" \
  "GET never returns the credentials"
contains "$BODY" "$PASS" && fail "GET bmc shows the password" || ok
expect_eq "$(stat -c %a var/secrets.key)" 600 "secrets.key is 0600"
TOKEN=$READER api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF1\",\"insecure\":true,\"username\":\"admin\",\"password\":\"x\"}"
expect_status 403 "a read token cannot PUT a BMC"
TOKEN=$READER api GET "/api/v1/machines/$M1/bmc"
expect_status 200 "a read token can GET a BMC"
api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"telnet\",\"address\":\"$RF1\",\"username\":\"admin\",\"password\":\"x\"}"
expect_status 422 "unknown driver"
api PUT "/api/v1/machines/$M1/bmc" '{"driver":"redfish","address":"https://127.0.0.1:1","username":"admin","password":"x"}'
expect_status 422 "https without ca_file or insecure"
contains "$(jqb .error.message)" "insecure" && ok || fail "the https refusal explains: $BODY"
api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF1\",\"username\":\"admin\",\"password\":\"x\"}"
expect_status 422 "plain http without insecure (the password would cross the network in clear)"
contains "$(jqb .error.message)" "in clear" && ok || fail "the http refusal explains: $BODY"
api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"redfish\",\"address\":\"https://127.0.0.1:1\",\"username\":\"admin\",\"password\":\"x\",\"insecure\":true,\"ca_file\":\"$WORK/bmc.pass\"}"
expect_status 422 "ca_file and insecure together"
api PUT "/api/v1/machines/$M2/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF1\",\"insecure\":true}"
expect_status 422 "a first PUT without credentials"
# A PUT without credentials keeps the old ones (through the CLI: set without --password-file).
"$KILN" machine bmc set "$M1" --driver redfish --address "$RF1" --insecure >cli.set.out 2>&1 && ok || fail "bmc set without credentials: $(cat cli.set.out)"
api POST "/api/v1/machines/$M1/power" '{"action":"status"}'
expect_status 200 "power works with the kept credentials"
expect_eq "$(jqb .power_state)" off "the emulator starts off"
"$KILN" machine bmc show "$M1" >cli.show.out 2>&1 && ok || fail "bmc show: $(cat cli.show.out)"
contains "$(cat cli.show.out)" "$RF1" && ok || fail "bmc show names the address: $(cat cli.show.out)"
# m4's BMC through the CLI with a password file; m3 on the second emulator; m5..m7 share RF3.
"$KILN" machine bmc set "$M3" --driver redfish --address "$RF2" --insecure --username admin --password-file bmc.pass >/dev/null 2>&1 &&
  ok || fail "bmc set m3"
for m in $M5 $M6 $M7; do
  api PUT "/api/v1/machines/$m/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF3\",\"insecure\":true,\"username\":\"admin\",\"password\":\"$PASS\"}"
  expect_status 200 "PUT bmc m$m"
done
api PUT "/api/v1/machines/$M8/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF2\",\"insecure\":true,\"username\":\"admin\",\"password\":\"$PASS\"}"
expect_status 200 "PUT bmc m8"

###############################################################################################
log "2. power through the API and the CLI (Redfish)"
# power ACTION — POST .../power on m1; checks the power.action event it left.
power() {
  local before
  before=$(events power.action | jq length)
  api POST "/api/v1/machines/$M1/power" "{\"action\":\"$1\"}"
  expect_status 200 "power $1"
  local ev
  ev=$(events power.action | jq -c '.[-1]')
  expect_eq "$(events power.action | jq length)" $((before + 1)) "power $1 is one power.action event"
  expect_eq "$(jq -r '.data.action' <<<"$ev"):$(jq -r '.data.took_ms | type' <<<"$ev"):$(jq '.data.steps | length > 0' <<<"$ev")" \
    "$1:number:true" "power $1's event has its steps and took_ms: $ev"
}
S0=$(rf_state "$RF1")
power on
S=$(rf_state "$RF1")
expect_eq "$(jq -r .power_state <<<"$S")" On "on: the emulator is on"
expect_eq "$(jq .counts.boots <<<"$S")" $(($(jq .counts.boots <<<"$S0") + 1)) "on: one boot"
expect_eq "$(jq -r '.boots[-1].first' <<<"$S")" disk "on: from disk (no override asked)"
expect_eq "$(jqb .power_state)" on "the API answers the state after the action"
power off
S=$(rf_state "$RF1")
expect_eq "$(jq -r .power_state <<<"$S")" Off "off: the emulator is off"
expect_eq "$(jq -r '.log[-1].detail' <<<"$S")" "ResetType=ForceOff (was On)" "off is a ForceOff"
"$KILN" machine power "$M1" cycle >cli.power.out 2>&1 && ok || fail "kiln machine power cycle: $(cat cli.power.out)"
expect_eq "$(rf_state "$RF1" | jq -r .power_state)" On "cycle of an off machine powers it on"
B=$(rf_state "$RF1" | jq .counts.resets)
"$KILN" machine power "$M1" cycle >cli.power.out 2>&1 && ok || fail "kiln machine power cycle (on)"
S=$(rf_state "$RF1")
expect_eq "$(jq .counts.resets <<<"$S"):$(jq -r .power_state <<<"$S")" "$((B + 1)):On" "cycle of a running machine resets it"
power soft-off
S=$(rf_state "$RF1")
expect_eq "$(jq .counts.graceful_shutdown <<<"$S"):$(jq -r .power_state <<<"$S")" "1:Off" "soft-off is a GracefulShutdown"
"$KILN" machine power "$M1" status >cli.status.out 2>&1 && ok || fail "kiln machine power status"
grep -qi "off" cli.status.out && ok || fail "the CLI shows the state: $(cat cli.status.out)"
api POST "/api/v1/machines/$M2/power" '{"action":"status"}'
expect_status 404 "power on a machine without a BMC"
api POST "/api/v1/machines/$M1/power" '{"action":"explode"}'
expect_status 422 "an unknown power action"
# A wrong password: 401, and the message carries no password.
api PUT "/api/v1/machines/$M4/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF2\",\"insecure\":true,\"username\":\"admin\",\"password\":\"Zq7-wrong-pw\"}"
api POST "/api/v1/machines/$M4/power" '{"action":"status"}'
expect_status 401 "a wrong BMC password"
contains "$BODY" "Zq7-wrong-pw" && fail "the 401 shows the password: $BODY" || ok
[[ -n $(jqb '.error.message // empty') ]] && ok || fail "the 401 explains: $BODY"
api DELETE "/api/v1/machines/$M4/bmc"
expect_status 204 "remove m4's BMC"

###############################################################################################
log "3+4. reimage on assign, confirmed boots, rollback target"
B=$(rf_state "$RF1" | jq .counts.boots)
assign "$M1" 1 '"reboot":true'
expect_status 201 "assign demo:1 with reboot"
D1=$DEP
expect_eq "$(jqb .reboot)" true "the deployment records reboot"
wait_event 1 power.reimage "$D1" && ok || fail "no power.reimage event for deployment $D1: $(events power.failed)"
S=$(rf_state "$RF1")
# The override PATCH, then the power-on, then the boot that used it (and consumed it).
expect_eq "$(jq -r '[.log[] | select(.action == "override")][-1].detail' <<<"$S")" "target=Pxe enabled=Once mode=UEFI" \
  "the emulator saw a Pxe/Once override"
expect_eq "$(jq .counts.boots <<<"$S")" $((B + 1)) "one boot"
expect_eq "$(jq -r '.boots[-1].first + " " + .boots[-1].override' <<<"$S")" "network Pxe Once UEFI" "the boot used the override"
expect_eq "$(jq -r '.boot.BootSourceOverrideEnabled' <<<"$S")" Disabled "the override is consumed"
[[ $(events power.step "$D1" | jq length) -ge 3 ]] && ok || fail "power.step events: $(events power.step "$D1")"
deployment "$D1"
[[ $(jqb .powered_at) != null ]] && ok || fail "powered_at set: $BODY"
expect_eq "$(jqb .status)" pending "the reimage leaves the deployment pending"

# Explicit reboot without a BMC: 422, nothing created.
assign "$M2" 1 '"reboot":true'
expect_status 422 "explicit reboot on a machine without a BMC"
expect_eq "$(history_len "$M2")" 0 "no deployment created for m2"
# Bulk with reboot where one machine lacks a BMC: 422, nothing assigned.
for m in $M2 $M3; do TOKEN=$ADMIN api PATCH "/api/v1/machines/$m" '{"labels":{"rack":"r1"}}'; done
N3=$(history_len "$M3")
TOKEN=$ADMIN api POST /api/v1/assignments '{"selector":"rack=r1","image":"demo","version":"1","reboot":true}'
expect_status 422 "bulk reboot with a machine without a BMC"
expect_eq "$(history_len "$M2"):$(history_len "$M3")" "0:$N3" "bulk: nothing assigned"

# Confirmed boots.
TOKEN=$ADMIN agent_session "$D1"
S1=$SESSION
TOKEN=$S1 api GET /api/v1/agent/deployment
T1=$(jqb '.instance.token // empty')
expect_eq "$(jqb .instance.deployment_id)" "$D1" "the plan carries the instance block"
[[ -n $T1 ]] && ok || fail "the plan carries an instance token: $BODY"
confirm "$T1"
expect_status 409 "booted before the result"
TOKEN=$S1 api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"detail\":{\"instance_block\":true},\"proof\":$(external_proof "$(sha_of 1)" 4096)}"
expect_status 200 "the agent's result"
confirm "$T1"
expect_status 200 "booted after the result"
expect_eq "$(jqb .status)" booted "status booted"
[[ $(jqb .booted_at) != null && $(jqb '.boot_ms | type') == number ]] && ok || fail "booted_at and boot_ms: $BODY"
expect_eq "$(events deployment.booted "$D1" | jq length)" 1 "one deployment.booted event"
confirm "$T1"
expect_status 200 "a repeated confirmation"
expect_eq "$(events deployment.booted "$D1" | jq length)" 1 "no second deployment.booted event"
confirm "kilninst_$(sha_of 9)"
expect_status 401 "an unknown instance credential"
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/api/v1/instance/booted")
expect_eq "$STATUS" 401 "no instance credential"

# v2 booted (A), v3 written never booted (B), v4 assigned (C): rollback goes to A.
assign "$M1" 2
D2=$DEP
expect_eq "$(jqb .reboot)" false "reboot defaults to power.reboot_on_assign (false)"
write_ok "$D2" 2
confirm "$T1"
expect_status 409 "an older deployment's credential"
confirm "$INST"
expect_status 200 "v2 confirmed"
assign "$M1" 3
D3=$DEP
write_ok "$D3" 3
assign "$M1" 4
B=$(rf_state "$RF1" | jq .counts.boots)
TOKEN=$ADMIN api POST "/api/v1/machines/$M1/rollback" '{"reboot":true}'
expect_status 201 "rollback with reboot"
DR=$(jqb .id)
expect_eq "$(jqb .to.version):$(jqb .kind):$(jqb .reboot)" "2:rollback:true" \
  "rollback goes to the last booted version (2), not the last written (3)"
wait_event 1 power.reimage "$DR" && ok || fail "no power.reimage for the rollback: $(events power.failed)"
S=$(rf_state "$RF1")
expect_eq "$(jq .counts.boots <<<"$S"):$(jq -r '.boots[-1].first' <<<"$S")" "$((B + 1)):network" "the rollback rebooted into the network"
write_ok "$DR" 2
confirm "$INST"
expect_status 200 "the rollback confirmed"

###############################################################################################
log "6. faults: 500, stale ETag, a slow BMC"
F=$(rf_state "$RF1" | jq .counts.faults_fired)
rf_faults "$RF1" '{"error_500":1}'
api POST "/api/v1/machines/$M1/power" '{"action":"status"}'
expect_status 200 "a 500 once is retried"
expect_eq "$(rf_state "$RF1" | jq .counts.faults_fired)" $((F + 1)) "the 500 fired"
rf_faults "$RF1" '{"stale_etag":1}'
assign "$M1" 3 '"reboot":true'
D=$DEP
wait_event 1 power.reimage "$D" && ok || fail "reimage after a stale ETag: $(events power.failed "$D")"
expect_eq "$(rf_state "$RF1" | jq .counts.faults_fired)" $((F + 2)) "the 412 fired"
contains "$(cat rf.1.log)" "PATCH /redfish/v1/Systems/1 412" && ok || fail "the emulator answered 412"
expect_eq "$(rf_state "$RF1" | jq -r '.boots[-1].first')" network "after the 412 the override still took"
write_ok "$D" 3
rf_faults "$RF1" '{"delay_ms":1500}'
STATUS=$(curl -s -m 30 -o body -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' --data-binary '{"action":"status"}' "$URL/api/v1/machines/$M1/power") || true
BODY=$(cat body)
expect_status 503 "a BMC slower than power.timeout_ms"
contains "$(jqb .error.message)" "timed out after 500 ms" && ok || fail "the 503 names the timeout: $BODY"
[[ $(events power.failed | jq '[.[] | select(.data.action == "status")] | length') -ge 1 ]] && ok || fail "the timeout is a power.failed event"
rf_faults "$RF1" '{"delay_ms":0}'

###############################################################################################
log "7. IPMI (ipmitool -I lanplus against ipmi_bmc.py --sim)"
"$PY" "$TOOLS/ipmi_bmc.py" --sim --listen 127.0.0.1:0 --user admin --password-file bmc.pass \
  --state-file ipmi.state --ready-file ipmi.ready >/dev/null 2>ipmi.log &
EMU_PIDS+=($!)
wait_file ipmi.ready || { cat ipmi.log >&2; fail "ipmi emulator did not start"; }
wait_file ipmi.state || true
IPMI=$(head -n1 ipmi.ready)
api PUT "/api/v1/machines/$M4/bmc" "{\"driver\":\"ipmi\",\"address\":\"$IPMI\",\"username\":\"admin\",\"password\":\"$PASS\",\"boot_mode\":\"legacy\"}"
expect_status 200 "PUT ipmi bmc"
api POST "/api/v1/machines/$M4/power" '{"action":"status"}'
expect_eq "$STATUS:$(jqb .power_state)" 200:off "ipmi status"
api POST "/api/v1/machines/$M4/power" '{"action":"on"}'
expect_eq "$STATUS:$(jq -r .power_state ipmi.state)" 200:On "ipmi on"
B=$(jq .counts.boots ipmi.state)
assign "$M4" 1 '"reboot":true'
DI=$DEP
wait_event 1 power.reimage "$DI" && ok || fail "ipmi reimage: $(events power.failed "$DI")"
expect_eq "$(jq .counts.boots ipmi.state):$(jq -r '.boots[-1].first' ipmi.state)" "$((B + 1)):network" "ipmi: the reimage booted the network"
expect_eq "$(jq -r '.boots[-1].override' ipmi.state)" "Pxe Once Legacy" "ipmi: bootdev pxe, legacy, once"
expect_eq "$(jq -r '.power_state' ipmi.state)" On "ipmi: on after the reimage"
write_ok "$DI" 1

###############################################################################################
log "1 (end). the password is nowhere; tampered credentials; a key file others can read"
stop_kilnd
for f in var/kiln.db*; do
  expect_eq "$(grep -c -a -F -- "$PASS" "$f" || true)" 0 "the password is not in $f"
done
grep -c -a -F -- "Zq7-" "$WORK"/kilnd.*.log >/dev/null && fail "a password is in kilnd's log" || ok
for f in cli.*.out; do grep -q -F -- "$PASS" "$f" && fail "the password is in $f" || ok; done
# Flip one character of m8's sealed credentials.
sqlite3 var/kiln.db "UPDATE machine_bmcs SET credentials = substr(credentials, 1, 19) || \
  CASE substr(credentials, 20, 1) WHEN 'A' THEN 'B' ELSE 'A' END || substr(credentials, 21) WHERE machine_id = $M8"
chmod 644 var/secrets.key
RC=0
timeout 20 "$KILND" --data-dir var --listen 127.0.0.1:0 >refused.log 2>&1 || RC=$?
[[ $RC -ne 0 && $RC -ne 124 ]] && ok || fail "kilnd started with a 0644 key file"
contains "$(cat refused.log)" "secrets.key" && ok || fail "the refusal names the key file: $(cat refused.log)"
# A missing key file while the database holds sealed credentials: refused, and no new key left
# behind (the next start would otherwise take it as the key).
chmod 600 var/secrets.key
mv var/secrets.key secrets.key.saved
RC=0
timeout 20 "$KILND" --data-dir var --listen 127.0.0.1:0 >refused2.log 2>&1 || RC=$?
[[ $RC -ne 0 && $RC -ne 124 ]] && ok || fail "kilnd started without its key file while BMCs are sealed"
contains "$(cat refused2.log)" "restore the key file" && ok || fail "the refusal explains: $(cat refused2.log)"
[[ ! -e var/secrets.key ]] && ok || fail "a new key file was left behind"
mv secrets.key.saved var/secrets.key
chmod 600 var/secrets.key

cat >kilnd.b.json <<'JSON'
{ "power": { "max_concurrent": 1, "reboot_on_assign": true, "timeout_ms": 2000, "retries": 2 },
  "boot": { "deadlines": { "written_s": 3, "booted_s": 2, "retries": 1, "startup_grace_s": 0 },
            "auto_rollback": true } }
JSON
start_kilnd --config kilnd.b.json
api GET /api/v1/events?since=0\&limit=1000
EVENTS_ALL=$BODY
contains "$EVENTS_ALL" "$PASS" && fail "the password is in the events" || ok
api POST "/api/v1/machines/$M8/power" '{"action":"status"}'
[[ $STATUS == 5* ]] && ok || fail "tampered credentials: a server error, got $STATUS"
contains "$(jqb .error.message)" "credentials" && ok || fail "the error names the credentials: $BODY"
kill -0 "$KILND_PID" && ok || fail "kilnd died on tampered credentials"
api POST "/api/v1/machines/$M1/power" '{"action":"status"}'
expect_status 200 "other machines' BMCs still work"

###############################################################################################
log "3 (default). power.reboot_on_assign: only machines with a BMC reboot"
# m2 has no BMC: its deployment has no reboot, and no written deadline (no power-on by kilnd).
assign "$M2" 1
expect_status 201 "default assign on a machine without a BMC"
DN=$DEP
expect_eq "$(jqb .reboot):$(jqb .deadline_at)" "false:null" "no reboot, no written deadline without a BMC"

log "6 (ignored override). the reimage fails naming it; the written deadline retries"
rf_faults "$RF2" '{"ignore_override":true}'
B=$(rf_state "$RF2" | jq .counts.boots)
assign "$M3" 1
DO=$DEP
expect_eq "$(jqb .reboot)" true "default reboot on a machine with a BMC"
wait_event 1 power.failed "$DO" && ok || fail "no power.failed for the ignored override"
contains "$(events power.failed "$DO" | jq -r '.[0].data.error')" "did not apply" && ok ||
  fail "power.failed names the override not applied: $(events power.failed "$DO")"
expect_eq "$(rf_state "$RF2" | jq .counts.boots)" "$B" "no reset after an override that did not apply"
deployment "$DO"
expect_eq "$(jqb .status)" pending "the deployment stays pending"
rf_faults "$RF2" '{"ignore_override":0}'
wait_event 1 deployment.deadline_missed "$DO" && ok || fail "the written deadline never retried: $(jqb .)"
wait_event 1 power.reimage "$DO" && ok || fail "the retry's reimage: $(events power.failed "$DO")"
S=$(rf_state "$RF2")
expect_eq "$(jq .counts.boots <<<"$S"):$(jq -r '.boots[-1].first' <<<"$S")" "$((B + 1)):network" "the retry set the override and reset"
write_ok "$DO" 1
confirm "$INST"
expect_status 200 "m3 confirmed"

log "5. deadlines: written but never confirmed → power-cycle → failed → auto-rollback"
# m1 last booted: version 2 (the rollback). Now version 4, written, never confirmed.
assign "$M1" 4
DB=$DEP
wait_event 1 power.reimage "$DB" && ok || fail "reimage for v4: $(events power.failed "$DB")"
write_ok "$DB" 4
deployment "$DB"
[[ $(jqb .deadline_at) != null ]] && ok || fail "a boot deadline once written: $BODY"
B=$(rf_state "$RF1" | jq .counts.boots)
wait_event 1 deployment.deadline_missed "$DB" && ok || fail "no deadline_missed for $DB"
expect_eq "$(events deployment.deadline_missed "$DB" | jq -r '.[0].data.status')" succeeded "the boot stage missed"
wait_event 2 power.reimage "$DB" && ok || fail "no power-cycle after the missed deadline"
expect_eq "$(events power.reimage "$DB" | jq -r '.[1].data.boot')" disk "the retry boots the disk"
S=$(rf_state "$RF1")
expect_eq "$(jq -r ".boots[$B] | .first + \" \" + .override" <<<"$S")" "disk none" \
  "the emulator: the power-cycle boots the disk, no override"
wait_status "$DB" failed && ok || fail "the deployment did not fail: $BODY"
contains "$(jqb .status_reason)" "did not confirm" && ok || fail "the reason: $(jqb .status_reason)"
TOKEN=$ADMIN api GET "/api/v1/machines/$M1/deployments"
RB=$(jq -c '[.items[] | select(.kind == "rollback" and .requested_by == "kilnd:auto-rollback")] | .[0]' <<<"$BODY")
expect_eq "$(jq -r .to.version <<<"$RB"):$(jq -r .reboot <<<"$RB")" "2:true" "auto-rollback to the last booted version (2), with reboot"
DA=$(jq -r .id <<<"$RB")
wait_event 1 power.reimage "$DA" && ok || fail "the auto-rollback's reimage: $(events power.failed "$DA")"
S=$(rf_state "$RF1")
expect_eq "$(jq -r ".boots[$((B + 1))] | .first + \" \" + .override" <<<"$S"):$(jq .counts.boots <<<"$S")" \
  "network Pxe Once UEFI:$((B + 2))" "the auto-rollback: override + reset (and no other boot)"
write_ok "$DA" 2
confirm "$INST"
expect_status 200 "the rolled-back version confirmed"

log "5 (no BMC). m2's missed boot deadline fails at once"
deployment "$DN"
expect_eq "$(jqb .status)" pending "m2: no written deadline ran (it stays pending)"
write_ok "$DN" 1
wait_status "$DN" failed && ok || fail "m2's deployment did not fail: $BODY"
contains "$(jqb .status_reason)" "no BMC" && ok || fail "m2's reason: $(jqb .status_reason)"
expect_eq "$(events deployment.deadline_missed "$DN" | jq length)" 0 "m2: no retry"

log "5 (no instance block). an OS that cannot confirm gets no boot deadline, not a false failure"
assign "$M2" 2
DNB=$DEP
write_ok "$DNB" 2 false
deployment "$DNB"
expect_eq "$(jqb .status):$(jqb .deadline_at)" "succeeded:null" \
  "written without the instance block: succeeded, no boot deadline"

###############################################################################################
log "8. power.max_concurrent 1: reimages through one BMC never overlap"
rf_faults "$RF3" '{"delay_ms":150}'
for m in $M5 $M6 $M7; do TOKEN=$ADMIN api PATCH "/api/v1/machines/$m" '{"labels":{"pool":"p8"}}'; done
TOKEN=$ADMIN api POST /api/v1/assignments '{"selector":"pool=p8","image":"demo","version":"1"}'
expect_status 201 "bulk assign (default reboot)"
expect_eq "$(jqb '[.deployments[] | select(.reboot)] | length')" 3 "three reimages"
for d in $(jqb '.deployments[].id'); do
  wait_event 1 power.reimage "$d" && ok || fail "reimage of deployment $d: $(events power.failed "$d")"
done
# The emulator's action log: each reimage's override, reset/on and boot come in one block.
SEQ=$(rf_state "$RF3" | jq -r '[.log[] | select(.action == "override" or .action == "boot") | .action[0:1]] | join("")')
[[ $SEQ =~ ^(ob)+$ && ${#SEQ} -ge 6 ]] && ok || fail "overrides and boots alternate (no two reimages at once): $SEQ"
rf_faults "$RF3" '{"delay_ms":0}'

finish
