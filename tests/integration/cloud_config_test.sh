#!/usr/bin/env bash
# cloud_config_test.sh — per-machine cloud-init configuration (docs/config.md) against a real
# kilnd, the agent played with curl through the agent API (an external raw image):
#   1. profiles and machine documents: validation (422/400 naming the field), merge order,
#      the effective configuration; user-data write-only for read tokens, sealed at rest (in no
#      database file, log or event).
#   2. the snapshot: assignment fixes it (config_sha256 in the history), the plan's config drive
#      carries it (instance-id from the deployment, phone_home with the instance credential).
#   3. the metadata service: NoCloud and EC2 paths answer the instance credential or the source
#      address of a bound lease only; anyone else (another address, an expired lease, a wrong
#      credential) gets 404; the first answered fetch confirms the boot; so does phone_home, with
#      its credential never in kilnd's log (debug level).
#   4. a configuration change redeploys the same image with the new values; a rollback returns
#      the image and the configuration that went with it; config_drive false leaves the plan
#      without a drive; the CLI's config, profile and deployment config commands.
source "$(dirname "$0")/lib.sh"
for need in curl jq sqlite3; do
  command -v $need >/dev/null || { log "SKIP: $need is missing"; exit 77; }
done
cd "$WORK"

KEY1='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKeyOneForCloudInitConfigAAAAAAAAAA ops@r12'
KEY2='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKeyTwoForCloudInitConfigBBBBBBBBBB web@m1'
SECRET='pw-Sekr1t-6f1d9a'  # inside user-data: must never show outside an admin's read
KILND_LOG_LEVEL=debug start_kilnd
ADMIN=$(make_token ops admin)
READER=$(make_token viewer read)
TOKEN=$ADMIN
export KILN_URL=$URL KILN_TOKEN=$ADMIN
sha_of() { printf '%064d' "$1"; }
for v in 1 2; do
  api POST "/api/v1/images/demo/versions/$v" "{\"format\":\"raw\",\"source_url\":\"http://127.0.0.1:9/demo$v.raw\",\"sha256\":\"$(sha_of $v)\",\"size_bytes\":4096}"
  expect_status 201 "register demo:$v"
done
MAC1=52:54:00:00:0c:01
api POST /api/v1/machines "{\"macs\":[\"$MAC1\"],\"name\":\"node-1\",\"labels\":{\"rack\":\"r12\"}}"
M1=$(jqb .id)
api POST /api/v1/machines '{"macs":["52:54:00:00:0c:02"],"name":"node-2","labels":{"rack":"r13"}}'
M2=$(jqb .id)

# write_ok DEPLOYMENT [VERSION] — plays the agent: session, plan (sets PLAN and INST), a succeeded
# result for demo:VERSION (default 1).
write_ok() {
  TOKEN=$ADMIN agent_session "$1"
  local s=$SESSION
  TOKEN=$s api GET /api/v1/agent/deployment
  PLAN=$BODY
  INST=$(jqb '.instance.token // empty')
  TOKEN=$s api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"detail\":{\"instance_block\":true},\"proof\":$(external_proof "$(sha_of "${2:-1}")" 4096)}"
  [[ $STATUS == 200 ]] || fail "agent result for deployment $1: $STATUS $BODY"
  TOKEN=$ADMIN
}
plan_file() { jq -r --arg f "$1" '.config_drive.files[$f] // empty' <<<"$PLAN"; }
deployment() { TOKEN=$ADMIN api GET "/api/v1/deployments/$1"; }
events_of() {
  curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/events?since=0&limit=1000" |
    jq -c --arg t "$1" '[.events[] | select(.type == $t)]'
}

###############################################################################################
log "1. documents: validation, merge, secrets"
api PUT /api/v1/profiles/rack-r12 '{"selector":"rack=r12","config":{"hostname":"Bad_Name"}}'
expect_status 422 "a bad hostname"
[[ $(jqb .error.message) == hostname:* ]] && ok || fail "the 422 names the field: $BODY"
api PUT /api/v1/profiles/rack-r12 '{"selector":"rack=r12","config":{"user_data":"runcmd: [true]"}}'
expect_status 422 "user-data without a cloud-init header"
api PUT /api/v1/profiles/rack-r12 '{"selector":"rack=r12","config":{"ssh_authorized_keys":"x"}}'
expect_status 400 "a wrong type"
api PUT /api/v1/profiles/rack-r12 '{"selector":"rack==r12","config":{}}'
expect_status 422 "a bad selector"
api PUT /api/v1/profiles/Bad%20Name '{"config":{}}'
expect_status 422 "a bad profile name"
api PUT /api/v1/machines/$M1/config "{\"user_data\":\"#cloud-config\\n$(head -c 70000 /dev/zero | tr '\0' x)\"}"
expect_status 422 "user-data over cloud_init.max_user_data_bytes"
api PUT /api/v1/profiles/rack-r12 "{\"selector\":\"rack=r12\",\"config\":{\"ssh_authorized_keys\":[\"$KEY1\"],\"metadata\":{\"rack\":\"r12\"},\"fqdn\":\"rack-default.r12.example.net\"}}"
expect_status 200 "profile rack-r12"
api PUT /api/v1/profiles/everyone '{"priority":-10,"config":{"metadata":{"site":"lab","rack":"none"}}}'
expect_status 200 "profile everyone"
USER_A="#cloud-config\nruncmd:\n  - echo KILN-MARKER-A $SECRET\n"
api PUT /api/v1/machines/$M1/config "{\"hostname\":\"web-01\",\"ssh_authorized_keys\":[\"$KEY2\"],\"user_data\":\"$USER_A\",\"network_config\":{\"version\":2,\"ethernets\":{\"nic\":{\"match\":{\"macaddress\":\"$MAC1\"},\"dhcp4\":true}}}}"
expect_status 200 "machine config"
expect_eq "$(jqb '.effective.sources | join(",")')" "profile:everyone,profile:rack-r12,machine" "merge order"
expect_eq "$(jqb '.effective.config.metadata | "\(.site):\(.rack)"')" "lab:r12" "metadata merges key by key"
expect_eq "$(jqb '.effective.config.fqdn')" "web-01.r12.example.net" "the FQDN follows the machine's hostname"
expect_eq "$(jqb '.effective.config.ssh_authorized_keys | length')" "2" "keys accumulate"
SHA_A=$(jqb .effective.config_sha256)
TOKEN=$READER api GET /api/v1/machines/$M1/config
expect_status 200 "a reader sees the configuration"
grep -qF "$SECRET" <<<"$BODY" && fail "a read token sees user-data: $BODY" || ok
expect_eq "$(jqb '.config.user_data | keys | join(",")')" "bytes" "a reader sees only the user-data's size"
expect_eq "$(jqb '.config.network_config | keys | join(",")')" "bytes" "... and network_config's"
TOKEN=$ADMIN api GET /api/v1/machines/$M1/config
grep -qF "$SECRET" <<<"$BODY" && ok || fail "an admin reads user-data back"
TOKEN=$READER api PUT /api/v1/machines/$M1/config '{}'
expect_status 403 "a reader cannot set configuration"
api GET /api/v1/machines/$M2/config
expect_eq "$(jqb '.effective.sources | join(",")')" "profile:everyone" "another rack gets only the common profile"

###############################################################################################
log "2. the snapshot and the config drive"
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"1"}'
expect_status 201 "assign demo:1"
D1=$(jqb .id)
expect_eq "$(jqb .config_sha256)" "$SHA_A" "the deployment snapshots the effective configuration"
# Same version, same configuration while active: idempotent.
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"1"}'
expect_status 200 "the same assignment again is idempotent"
TOKEN=$READER api GET /api/v1/deployments/$D1/config
expect_status 403 "a deployment's configuration is for admins"
api GET /api/v1/deployments/$D1/config
expect_status 200 "deployment config"
expect_eq "$(jqb .config.hostname):$(jqb .config_sha256)" "web-01:$SHA_A" "the snapshot"
write_ok "$D1"
MD=$(plan_file meta-data)
expect_eq "$(jq -r '."instance-id"' <<<"$MD"):$(jq -r '."local-hostname"' <<<"$MD")" \
  "kiln-$D1:web-01.r12.example.net" "config drive meta-data"
expect_eq "$(jq -r '."public-keys" | length' <<<"$MD")" "2" "the keys in meta-data"
expect_eq "$(plan_file user-data)" "$(printf "$USER_A")" "config drive user-data"
expect_eq "$(jq -r '.config_drive.label' <<<"$PLAN")" "cidata" "NoCloud's label"
grep -q "\"version\": 2" <<<"$(plan_file network-config)" && ok || fail "network-config in the drive"
VD=$(plan_file vendor-data)
grep -qF "/api/v1/instance/phone-home/$INST" <<<"$VD" && ok || fail "phone_home with the instance credential: $VD"
# The secret is in no database file, log or event.
sqlite3 var/kiln.db .dump >db.dump
for f in var/kiln.db var/kiln.db-wal db.dump "$WORK"/kilnd.*.log; do
  [[ -e $f ]] || continue
  grep -aqF "$SECRET" "$f" && fail "the user-data secret is readable in $f" || ok
done
curl -s -H "Authorization: Bearer $ADMIN" "$URL/api/v1/events?since=0&limit=1000" | grep -qF "$SECRET" &&
  fail "the secret is in an event" || ok

###############################################################################################
log "3. the metadata service"
curl -s -o /dev/null -w '%{http_code}' "$URL/nocloud/meta-data" | grep -qx 404 && ok ||
  fail "an unknown address gets 404"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer 0000" "$URL/nocloud/meta-data")
expect_eq "$code" "404" "a wrong credential gets 404"
deployment "$D1"
expect_eq "$(jqb .status)" "succeeded" "nothing confirmed the boot yet"
curl -sf -H "Authorization: Bearer $INST" "$URL/nocloud/meta-data" >md.json || fail "meta-data with the credential"
expect_eq "$(jq -r '."instance-id"' md.json)" "kiln-$D1" "NoCloud meta-data for the credential's instance"
curl -sf -H "Authorization: Bearer $INST" "$URL/nocloud/user-data" >ud.txt
grep -qF KILN-MARKER-A ud.txt && ok || fail "NoCloud user-data"
deployment "$D1"
expect_eq "$(jqb .status)" "booted" "the first metadata fetch confirms the boot"
expect_eq "$(events_of deployment.booted | jq -r '.[-1].data.via')" "metadata:instance-credential" "recorded how"
# A bound lease's source address (the DHCP server writes this row before its ACK).
now_ms=$(($(date +%s%3N)))
sqlite3 var/kiln.db "INSERT INTO dhcp_leases (ip, client, mac, state, expires_at, updated_at) VALUES
  ('127.0.0.2', '$MAC1', '$MAC1', 'bound', $((now_ms + 600000)), $now_ms),
  ('127.0.0.4', '52:54:00:00:0c:02', '52:54:00:00:0c:02', 'bound', $((now_ms + 600000)), $now_ms),
  ('127.0.0.5', '$MAC1', '$MAC1', 'bound', $((now_ms - 1000)), $now_ms);"
expect_eq "$(curl -s --interface 127.0.0.2 "$URL/latest/meta-data/instance-id")" "kiln-$D1" "EC2 instance-id by lease address"
expect_eq "$(curl -s --interface 127.0.0.2 "$URL/2009-04-04/meta-data/public-keys/1/openssh-key")" "$KEY2" "EC2 public key"
expect_eq "$(curl -s --interface 127.0.0.2 "$URL/latest/meta-data/local-ipv4")" "127.0.0.2" "EC2 local-ipv4"
expect_eq "$(curl -s --interface 127.0.0.2 "$URL/latest/meta-data/tags/instance/site")" "lab" "EC2 tags"
curl -s --interface 127.0.0.2 "$URL/latest/user-data" | grep -qF KILN-MARKER-A && ok || fail "EC2 user-data"
tok=$(curl -s --interface 127.0.0.2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$URL/latest/api/token")
[[ ${#tok} -ge 16 ]] && ok || fail "IMDSv2 token: $tok"
for who in 127.0.0.3 127.0.0.5; do  # no lease; an expired one
  code=$(curl -s -o /dev/null -w '%{http_code}' --interface $who "$URL/latest/meta-data/instance-id")
  expect_eq "$code" "404" "EC2 from $who"
  code=$(curl -s -o /dev/null -w '%{http_code}' --interface $who "$URL/nocloud/user-data")
  expect_eq "$code" "404" "NoCloud from $who"
done
# Another machine's address, which has no written deployment: nothing either.
code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.4 "$URL/nocloud/meta-data")
expect_eq "$code" "404" "a machine with nothing deployed"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/latest/meta-data/iam/info")
expect_eq "$code" "404" "unknown EC2 entries"
# (The agent sessions below come from 127.0.0.1: kilnd binds them to a leased address.)
sqlite3 var/kiln.db "DELETE FROM dhcp_leases"

###############################################################################################
log "4. a configuration change, a redeploy, phone_home, a rollback"
USER_B="#cloud-config\nruncmd:\n  - echo KILN-MARKER-B\n"
api PUT /api/v1/machines/$M1/config "{\"hostname\":\"web-02\",\"user_data\":\"$USER_B\"}"
expect_status 200 "new machine config"
SHA_B=$(jqb .effective.config_sha256)
[[ $SHA_B != "$SHA_A" ]] && ok || fail "a new configuration, a new hash"
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"1"}'
expect_status 201 "the same image with the new configuration is a new deployment"
D2=$(jqb .id)
expect_eq "$(jqb .config_sha256)" "$SHA_B" "snapshot B"
write_ok "$D2"
expect_eq "$(plan_file meta-data | jq -r '."local-hostname"')" "web-02.r12.example.net" "the new hostname"
expect_eq "$(plan_file meta-data | jq -r '."instance-id"')" "kiln-$D2" "a new instance-id"
# cloud-init's phone_home (form-encoded POST, the credential in the URL).
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d "instance_id=kiln-$D2&hostname=web-02" "$URL/api/v1/instance/phone-home/$INST")
expect_eq "$code" "200" "phone_home"
deployment "$D2"
expect_eq "$(jqb .status)" "booted" "phone_home confirms the boot"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$URL/api/v1/instance/phone-home/not-a-token")
expect_eq "$code" "401" "phone_home with a wrong credential"
# Through another method or a longer path too (405, 404): never the credential in the log.
curl -s -o /dev/null "$URL/api/v1/instance/phone-home/$INST"
curl -s -o /dev/null -X POST "$URL/api/v1/instance/phone-home/$INST/x"
grep -qF "$INST" "$WORK"/kilnd.*.log && fail "the instance credential is in kilnd's log" || ok
grep -qF "phone-home/{token}" "$WORK"/kilnd.*.log && ok || fail "the request is logged as its route"
# The old deployment's credential answers nothing now.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $INST" "$URL/nocloud/meta-data")
[[ $code == 200 ]] && ok || fail "D2's credential reads its metadata: $code"
api POST /api/v1/machines/$M1/rollback
expect_status 201 "rollback"
D3=$(jqb .id)
expect_eq "$(jqb .to.version):$(jqb .config_sha256)" "1:$SHA_A" "the rollback returns the old configuration with the image"
write_ok "$D3"
expect_eq "$(plan_file meta-data | jq -r '."local-hostname"')" "web-01.r12.example.net" "the old hostname again"
grep -qF KILN-MARKER-A <<<"$(plan_file user-data)" && ok || fail "the old user-data again"
expect_eq "$(plan_file meta-data | jq -r '."instance-id"')" "kiln-$D3" "and a new instance-id"
# A changed configuration while a deployment of the same version runs: a conflict unless forced.
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"2"}'
D4=$(jqb .id)
api PUT /api/v1/machines/$M1/config "{\"hostname\":\"web-03\",\"config_drive\":false}"
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"2"}'
expect_status 409 "another configuration of the running version needs force"
api PUT /api/v1/machines/$M1/assignment '{"image":"demo","version":"2","force":true}'
expect_status 201 "forced"
D5=$(jqb .id)
write_ok "$D5" 2
expect_eq "$(jq -c .config_drive <<<"$PLAN")" "null" "config_drive false: no drive in the plan"
curl -sf -H "Authorization: Bearer $INST" "$URL/nocloud/meta-data" | jq -r '."local-hostname"' | grep -qx web-03.r12.example.net &&
  ok || fail "the metadata service still answers without a drive"

# A bulk assignment snapshots each machine's own effective configuration (profiles read once).
api GET /api/v1/machines/$M1/config
SHA_M1=$(jqb .effective.config_sha256)
api GET /api/v1/machines/$M2/config
SHA_M2=$(jqb .effective.config_sha256)
[[ -n $SHA_M1 && $SHA_M1 != "$SHA_M2" ]] && ok || fail "two machines, two configurations: $SHA_M1 $SHA_M2"
api POST /api/v1/assignments '{"selector":"rack","image":"demo","version":"1","force":true}'
expect_status 201 "bulk assignment"
api GET /api/v1/machines/$M1/deployments
expect_eq "$(jqb '.items[0].config_sha256')" "$SHA_M1" "the bulk assignment's snapshot of node-1"
api GET /api/v1/machines/$M2/deployments
expect_eq "$(jqb '.items[0].config_sha256')" "$SHA_M2" "the bulk assignment's snapshot of node-2"

###############################################################################################
log "5. the CLI"
printf '%s\n' "$KEY2" >keys.pub
printf '#cloud-config\nruncmd:\n  - echo KILN-MARKER-CLI\n' >ud.yaml
"$KILN" machine config set "$M2" --hostname db-01 --ssh-key-file keys.pub --user-data-file ud.yaml --meta role=db >cli.out ||
  fail "kiln machine config set: $(cat cli.out)"
OUT=$("$KILN" machine config show "$M2")
grep -q "hostname: db-01" <<<"$OUT" && grep -q KILN-MARKER-CLI <<<"$OUT" && ok || fail "config show: $OUT"
OUT=$(KILN_TOKEN=$READER "$KILN" machine config show "$M2")
grep -q KILN-MARKER-CLI <<<"$OUT" && fail "a reader's CLI shows user-data" || ok
grep -q "admin only" <<<"$OUT" && ok || fail "the reader sees that user-data exists: $OUT"
"$KILN" machine config set "$M2" --hostname DB >cli.out 2>&1 && fail "a bad hostname through the CLI" || ok
grep -q "hostname" cli.out && ok || fail "the CLI names the field: $(cat cli.out)"
"$KILN" profile set web --selector role=web --priority 5 --meta tier=front >/dev/null || fail "profile set"
OUT=$("$KILN" profile list)
grep -qE "^web +role=web +5 " <<<"$OUT" && ok || fail "profile list: $OUT"
"$KILN" profile remove web >/dev/null && ok || fail "profile remove"
"$KILN" profile show web >/dev/null 2>&1 && fail "a removed profile" || ok
OUT=$("$KILN" deployment config "$D1")
grep -q "hostname: web-01" <<<"$OUT" && ok || fail "deployment config: $OUT"
OUT=$("$KILN" machine history "$M1")
grep -q "${SHA_A:0:12}" <<<"$OUT" && ok || fail "the history shows the configuration hash: $OUT"
"$KILN" machine config remove "$M2" >/dev/null && ok || fail "config remove"
finish
