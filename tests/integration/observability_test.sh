#!/usr/bin/env bash
# observability_test.sh — kilnd's /metrics as Prometheus and Grafana read it, against a real kilnd
# in a network namespace this test creates and deletes (DHCP needs an interface of its own):
#   1. deploy stage histograms (kiln_deployment_stage_seconds): a deployment driven through its
#      stages with real HTTP (assign, agent session, progress, result with proof, the instance's
#      boot confirmation), one failed by its agent, one superseded; each stage counted once, in
#      the bucket its duration (from the deployment's own timestamps in SQLite) belongs to, with
#      _sum equal to it; repeated reports and scrapes count nothing twice.
#   2. gauges: DHCP pool (a real lease from busybox udhcpc), BMCs (the Redfish emulator powered
#      off, a dead BMC unreachable), image store (chunk bytes = the files on disk, statvfs),
#      oldest active deployment, rollouts.
#   3. `promtool check metrics` accepts the whole exposition; `promtool check rules` and
#      `promtool test rules` pass on deploy/prometheus; kiln.json is valid (jq); every metric
#      kiln.json and kiln-rules.yml use is one this kilnd exposes (drift check).
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  log "skipped: needs root for network namespaces"
  exit 77
fi
for c in promtool busybox sqlite3 jq curl python3 bc; do
  command -v "$c" >/dev/null || { fail "missing $c (deploy/install-deps.sh)"; finish; }
done
RULES=$KILN_ROOT/deploy/prometheus
DASH=$KILN_ROOT/deploy/grafana/kiln.json
cd "$WORK"

SRV=kob-srv-$$ CLI=kob-cli-$$
netns_add $SRV $CLI
ip link add kob-vs netns "$SRV" type veth peer name kob-vc netns "$CLI"
ip -n "$SRV" addr add 10.91.0.1/24 dev kob-vs
ip -n "$SRV" link set kob-vs up
ip -n "$CLI" link set kob-vc up
kilnd_in_netns "$SRV"
in_srv() { ip netns exec "$SRV" "$@"; }
in_cli() { ip netns exec "$CLI" "$@"; }
api() {  # lib.sh's api, from inside the namespace
  local method=$1 path=$2 body=${3:-}
  local args=(-s -o "$WORK/body" -w '%{http_code}' -X "$method")
  [[ -n "${TOKEN:-}" ]] && args+=(-H "Authorization: Bearer $TOKEN")
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  STATUS=$(in_srv curl "${args[@]}" "$URL$path")
  BODY=$(cat "$WORK/body")
}
scrape() { in_srv curl -s -H "Authorization: Bearer $ADMIN" "$URL/metrics" >"$WORK/metrics.txt"; }
# sample NAME{labels} — the value of one exact sample line of the last scrape (empty if none).
sample() { awk -v m="$1" '$1 == m {print $2}' "$WORK/metrics.txt"; }
expect_sample() { expect_eq "$(sample "$1")" "$2" "$3 ($1)"; }
sha_of() { printf '%064d' "$1"; }

cat >kilnd.json <<'JSON'
{ "dhcp": { "mode": "authoritative", "interfaces": ["kob-vs"],
    "subnets": [ { "subnet": "10.91.0.0/24", "pool": "10.91.0.100-10.91.0.109",
                   "router": "10.91.0.1", "lease_time_s": 600 } ] },
  "power": { "reboot_on_assign": false, "timeout_ms": 500, "retries": 0 } }
JSON
start_kilnd --config kilnd.json --tftp-listen 127.0.0.1:0
ADMIN=$(make_token ops admin)
TOKEN=$ADMIN
DB=$WORK/var/kiln.db

for v in 1 2; do
  api POST "/api/v1/images/demo/versions/$v" "{\"format\":\"raw\",\"source_url\":\"http://127.0.0.1:9/demo$v.raw\",\"sha256\":\"$(sha_of $v)\",\"size_bytes\":4096}"
  expect_status 201 "register demo:$v"
done
for i in 1 2 3 4; do
  api POST /api/v1/machines "{\"macs\":[\"52:54:00:00:91:0$i\"],\"name\":\"ob$i\"}"
  expect_status 201 "machine ob$i"
  declare "M$i=$(jqb .id)"
done
assign() {  # assign MACHINE [VERSION]
  TOKEN=$ADMIN api PUT "/api/v1/machines/$1/assignment" "{\"image\":\"demo\",\"version\":\"${2:-1}\",\"force\":true}"
  DEP=$(jqb '.id // empty')
}

# An image in the store (before the first scrape: chunk bytes are recounted at most every 30 s).
head -c $((3 << 19)) /dev/urandom >small.raw
"$KILN" image build small.raw -o small.kiln --name small --version 1 --chunk-size 256K >build.out 2>&1 ||
  fail "kiln image build: $(cat build.out)"
STATUS=$(in_srv curl -s -o body -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/octet-stream' --data-binary @small.kiln "$URL/api/v1/images/small/versions/1")
BODY=$(cat body 2>/dev/null)
expect_status 201 "upload small:1"

scrape
grep -q '^# TYPE kiln_deployment_stage_seconds histogram$' metrics.txt && ok ||
  fail "no kiln_deployment_stage_seconds histogram in /metrics"
grep -q '^kiln_deployment_stage_seconds_count' metrics.txt &&
  fail "stage observations before any deployment: $(grep stage_seconds_count metrics.txt)" || ok

###############################################################################################
log "1. a deployment through its stages: waiting, imaging, booting, total"
assign "$M1"
D1=$DEP
sleep 1.2  # so the waiting stage is not in the first bucket (its bucket is checked from the DB)
TOKEN=$ADMIN agent_session "$D1"
S1=$SESSION
TOKEN=$S1 api GET /api/v1/agent/deployment
INST=$(jqb '.instance.token // empty')
[[ -n $INST ]] && ok || fail "the plan carries an instance token: $BODY"
TOKEN=$S1 api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":1024,"bytes_total":4096}'
expect_status 200 "progress"
TOKEN=$S1 api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":2048,"bytes_total":4096}'
expect_status 200 "second progress"
TOKEN=$S1 api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"detail\":{\"instance_block\":true},\"proof\":$(external_proof "$(sha_of 1)" 4096)}"
expect_status 200 "succeeded result"
TOKEN=$INST api POST /api/v1/instance/booted
expect_status 200 "boot confirmed"
TOKEN=$INST api POST /api/v1/instance/booted  # a repeated confirmation
TOKEN=$ADMIN

# The deployment's own timestamps (ms) decide which bucket each stage belongs in.
IFS='|' read -r created started written booted <<<"$(sqlite3 "$DB" \
  "SELECT created_at, started_at, written_at, booted_at FROM deployments WHERE id = $D1")"
[[ -n $booted && -n $written && -n $started ]] && ok || fail "deployment $D1 timestamps: $created $started $written $booted"
# check_stage STAGE RESULT FROM_MS TO_MS — one observation, in exactly the buckets >= its value.
check_stage() {
  local stage=$1 result=$2 from=$3 to=$4
  local secs
  secs=$(python3 -c "print(max(0, $to - $from) / 1000.0)")
  local l="stage=\"$stage\",result=\"$result\""
  expect_sample "kiln_deployment_stage_seconds_count{$l}" 1 "$stage/$result observed once"
  local s
  s=$(sample "kiln_deployment_stage_seconds_sum{$l}")
  python3 -c "import sys; sys.exit(0 if abs(float('$s' or 'nan') - $secs) < 1e-6 else 1)" && ok ||
    fail "$stage/$result _sum: $s, expected $secs"
  local n=0 bad=0 line le v want
  while read -r line; do
    le=$(sed -n 's/.*le="\([^"]*\)".*/\1/p' <<<"$line")
    v=${line##* }
    n=$((n + 1))
    if [[ $le == "+Inf" ]]; then want=1; else want=$(python3 -c "print(1 if $secs <= $le else 0)"); fi
    [[ $v == "$want" ]] || { bad=1; fail "$stage/$result le=$le: $v, expected $want ($secs s)"; }
  done < <(grep "^kiln_deployment_stage_seconds_bucket{$l,le=" metrics.txt)
  [[ $n -ge 10 && $bad -eq 0 ]] && ok || fail "$stage/$result: $n buckets"
}
scrape
check_stage waiting ok "$created" "$started"
check_stage imaging ok "$started" "$written"
check_stage booting ok "$written" "$booted"
check_stage total ok "$created" "$booted"
python3 -c "import sys; sys.exit(0 if ($started - $created) > 1000 else 1)" && ok ||
  fail "the waiting stage lasted over 1 s (sleep 1.2)"
expect_sample 'kiln_deployment_stage_seconds_bucket{stage="waiting",result="ok",le="1"}' 0 \
  "a 1.2 s wait is not in the 1 s bucket"
scrape  # a second scrape counts nothing again
expect_sample 'kiln_deployment_stage_seconds_count{stage="total",result="ok"}' 1 "a second scrape adds nothing"

log "1b. a deployment its agent fails; one superseded before its agent came"
assign "$M2"
D2=$DEP
TOKEN=$ADMIN agent_session "$D2"
S2=$SESSION
TOKEN=$S2 api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":1,"bytes_total":4096}'
TOKEN=$S2 api POST /api/v1/agent/result '{"status":"failed","reason":"disk write error","detail":{}}'
expect_status 200 "failed result"
TOKEN=$ADMIN
assign "$M3"
D3=$DEP
assign "$M3" 2  # supersedes D3
D3b=$DEP
[[ -n $D3b && $D3b != "$D3" ]] && ok || fail "the second assignment made a new deployment: $BODY"
expect_eq "$(sqlite3 "$DB" "SELECT status FROM deployments WHERE id = $D3")" superseded "D3 superseded"
scrape
IFS='|' read -r c2 s2 f2 <<<"$(sqlite3 "$DB" "SELECT created_at, started_at, finished_at FROM deployments WHERE id = $D2")"
IFS='|' read -r c3 f3 <<<"$(sqlite3 "$DB" "SELECT created_at, finished_at FROM deployments WHERE id = $D3")"
expect_sample 'kiln_deployment_stage_seconds_count{stage="waiting",result="ok"}' 2 "D1 and D2 agents started"
check_stage imaging failed "$s2" "$f2"
check_stage waiting superseded "$c3" "$f3"
expect_sample 'kiln_deployment_stage_seconds_count{stage="total",result="failed"}' 1 "one failed"
expect_sample 'kiln_deployment_stage_seconds_count{stage="total",result="superseded"}' 1 "one superseded"
expect_sample 'kiln_deployment_stage_seconds_count{stage="booting",result="failed"}' "" "no booting failure"
expect_sample 'kiln_deployments{status="pending"}' 1 "D3b pending"
age=$(sample 'kiln_deployment_oldest_active_seconds{status="pending"}')
python3 -c "import sys; sys.exit(0 if float('${age:-nan}') >= 0 else 1)" && ok || fail "oldest pending age: $age"
expect_sample 'kiln_deployment_oldest_active_seconds{status="running"}' 0 "nothing running"

###############################################################################################
log "2. gauges: DHCP pool, BMCs, image store, rollouts"
expect_sample 'kiln_dhcp_pool_addresses{subnet="10.91.0.0/24"}' 10 "pool size"
expect_sample 'kiln_dhcp_pool_free_addresses{subnet="10.91.0.0/24"}' 10 "pool free before any lease"
cat >udhcpc-script <<SH
#!/bin/sh
[ "\$1" = bound ] && echo "ip=\$ip" >>"$WORK/udhcpc.out"
exit 0
SH
chmod +x udhcpc-script
in_cli timeout 30 busybox udhcpc -i kob-vc -f -q -n -t 3 -T 1 -s "$WORK/udhcpc-script" >/dev/null 2>&1 || true
grep -q '^ip=10.91.0.10[0-9]$' udhcpc.out 2>/dev/null && ok || fail "udhcpc got no lease from the pool: $(cat udhcpc.out 2>/dev/null)"
expect_eq "$(sqlite3 "$DB" "SELECT count(*) FROM dhcp_leases WHERE state = 'bound'")" 1 "one bound lease in SQLite"
scrape
expect_sample 'kiln_dhcp_pool_leases{subnet="10.91.0.0/24",state="bound"}' 1 "one bound lease"
expect_sample 'kiln_dhcp_pool_free_addresses{subnet="10.91.0.0/24"}' 9 "nine free"
# A machine registered with an address in the pool holds it: no other client is offered it.
LEASED=$(sed -n 's/^ip=//p' udhcpc.out | head -n1)
RES=10.91.0.109
[[ $LEASED == "$RES" ]] && RES=10.91.0.108
api POST /api/v1/machines "{\"mac\":\"52:54:00:91:00:99\",\"name\":\"reserved-1\",\"ipv4\":\"$RES\"}"
expect_status 201 "a machine with a reserved address ($BODY)"
scrape
expect_sample 'kiln_dhcp_pool_leases{subnet="10.91.0.0/24",state="reserved"}' 1 "one reserved address"
expect_sample 'kiln_dhcp_pool_free_addresses{subnet="10.91.0.0/24"}' 8 "eight free with the reservation"

printf 'bmc-pass-91\n' >bmc.pass
in_srv python3 "$KILN_ROOT/tests/tools/redfish_bmc.py" --sim --listen 127.0.0.1:0 --user admin \
  --password-file bmc.pass --ready-file rf.ready >/dev/null 2>rf.log &
RF_PID=$!
CLEANUP_CMDS+=("kill $RF_PID")
for _ in $(seq 1 100); do [[ -s rf.ready ]] && break; sleep 0.1; done
RF=$(head -n1 rf.ready 2>/dev/null)
[[ -n $RF ]] && ok || { fail "the Redfish emulator did not start: $(cat rf.log)"; finish; }
api PUT "/api/v1/machines/$M1/bmc" "{\"driver\":\"redfish\",\"address\":\"$RF\",\"insecure\":true,\"username\":\"admin\",\"password\":\"bmc-pass-91\"}"
expect_status 200 "BMC of ob1"
api PUT "/api/v1/machines/$M4/bmc" '{"driver":"redfish","address":"http://127.0.0.1:9","insecure":true,"username":"admin","password":"x"}'
expect_status 200 "a dead BMC for ob4"
scrape
expect_sample 'kiln_bmc_machines{power_state="unknown"}' 2 "not asked yet: unknown"
expect_sample 'kiln_bmc_unreachable_machines' 0 "none known unreachable yet"
api POST "/api/v1/machines/$M1/power" '{"action":"status"}'
expect_status 200 "power status of ob1"
expect_eq "$(jqb .power_state)" off "the emulator starts off"
api POST "/api/v1/machines/$M4/power" '{"action":"status"}'
[[ $STATUS -ge 400 ]] && ok || fail "a dead BMC answered: $STATUS $BODY"
scrape
expect_sample 'kiln_bmc_machines{power_state="off"}' 1 "ob1 off"
expect_sample 'kiln_bmc_machines{power_state="unknown"}' 1 "ob4 unknown"
expect_sample 'kiln_bmc_machines{power_state="on"}' 0 "none on"
expect_sample 'kiln_bmc_unreachable_machines' 1 "ob4 unreachable"
expect_sample 'kiln_bmc_operations_total{result="ok"}' 1 "one operation reached a BMC"
expect_sample 'kiln_bmc_operations_total{result="failed"}' 1 "one failed"
api POST "/api/v1/machines/$M1/power" '{"action":"on"}'
expect_status 200 "power on ob1"
scrape
expect_sample 'kiln_bmc_machines{power_state="on"}' 1 "ob1 on"

chunks=$(find "$WORK/var" -path '*/chunks/*' -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
[[ $chunks -gt 0 ]] && ok || fail "no chunk files after the upload"
expect_sample kiln_image_store_chunk_bytes "$chunks" "chunk bytes are the chunk files' sizes"
idir=$(dirname "$(find "$WORK/var" -type d -name chunks | head -1)")
expect_sample kiln_image_store_filesystem_size_bytes "$(stat -f -c '%b * %S' "$idir" | bc)" "filesystem size (statvfs)"
free=$(sample kiln_image_store_filesystem_free_bytes)
size=$(sample kiln_image_store_filesystem_size_bytes)
python3 -c "import sys; sys.exit(0 if 0 < float('${free:-0}') <= float('${size:-0}') else 1)" && ok ||
  fail "free bytes $free of $size"
expect_sample 'kiln_rollouts{state="running"}' 0 "no rollout running"
expect_sample 'kiln_machines{state="deployed"}' 1 "ob1 deployed"

###############################################################################################
log "3. promtool and the dashboard"
promtool check metrics <metrics.txt >promtool.out 2>&1 && ok ||
  fail "promtool check metrics: $(cat promtool.out)"
promtool check rules "$RULES/kiln-rules.yml" >/dev/null 2>&1 && ok || fail "promtool check rules"
(cd "$RULES" && promtool test rules kiln-rules.test.yml >"$WORK/rules-test.out" 2>&1) && ok ||
  fail "promtool test rules: $(cat rules-test.out)"
jq -e '.schemaVersion >= 36
  and ([.templating.list[] | select(.type == "datasource" and .query == "prometheus")] | length == 1)
  and ([.panels[] | select(.type != "row")] | length >= 10)
  and ([.panels[] | select(.type != "row")
        | (.datasource.uid == "${datasource}") and (.targets | length > 0)
          and all(.targets[]; (.expr | length > 0) and .datasource.uid == "${datasource}")] | all)' \
  "$DASH" >/dev/null && ok || fail "kiln.json: a panel without datasource or targets"
# Drift: the metric names the dashboard and the rules use, against what this kilnd exposes
# (family names from # TYPE lines, plus a histogram's _bucket/_sum/_count).
awk '/^# TYPE /{print $3; if ($4 == "histogram") {print $3"_bucket"; print $3"_sum"; print $3"_count"}}' \
  metrics.txt | sort -u >exposed.txt
{ jq -r '.. | .expr? // empty' "$DASH"; python3 -c "
import yaml, sys
for g in yaml.safe_load(open('$RULES/kiln-rules.yml'))['groups']:
    for r in g['rules']: print(r['expr'])"; } | grep -o 'kiln_[a-z0-9_]*' | sort -u >used.txt
[[ $(wc -l <used.txt) -ge 15 ]] && ok || fail "few metric names found in the dashboard and rules: $(cat used.txt)"
missing=$(comm -23 used.txt exposed.txt)
[[ -z $missing ]] && ok || fail "used by kiln.json or kiln-rules.yml but not exposed by kilnd: $missing"

###############################################################################################
log "4. a restart: the histograms count what ends from then on"
stop_kilnd
start_kilnd --config kilnd.json --tftp-listen 127.0.0.1:0
scrape
grep -q '^kiln_deployment_stage_seconds_count' metrics.txt &&
  fail "history replayed after a restart: $(grep stage_seconds_count metrics.txt)" || ok
TOKEN=$ADMIN agent_session "$D3b"
TOKEN=$SESSION api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":1,"bytes_total":4096}'
TOKEN=$ADMIN
scrape
expect_sample 'kiln_deployment_stage_seconds_count{stage="waiting",result="ok"}' 1 "D3b's agent started after the restart"
expect_sample 'kiln_deployments{status="running"}' 1 "D3b running"

finish
