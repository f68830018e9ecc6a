#!/usr/bin/env bash
# REST API v1 against a real kilnd with curl: machines, images, assignment (single, bulk,
# concurrent), rollback, history, events long-poll, auth failures and malformed input.
source "$(dirname "$0")/lib.sh"

start_kilnd
ADMIN=$(make_token ops admin)
READER=$(make_token dashboard read)
TOKEN=$ADMIN
SHA=$(printf 'a%.0s' $(seq 64))

# --- auth -----------------------------------------------------------------------------------
TOKEN="" api GET /api/v1/machines
expect_status 401 "no token"
expect_eq "$(jqb .error.code)" unauthorized "401 error code"
TOKEN=kiln_not_a_real_token api GET /api/v1/machines
expect_status 401 "unknown token"
TOKEN=$READER api GET /api/v1/machines
expect_status 200 "read token lists machines"
TOKEN=$READER api POST /api/v1/machines '{"mac":"52:54:00:00:00:99"}'
expect_status 403 "read token cannot create"
expect_eq "$(jqb .error.code)" forbidden "403 error code"
TOKEN="" api GET /healthz
expect_status 200 "healthz is public"

# --- machines -------------------------------------------------------------------------------
for i in 1 2 3 4; do
  rack=r12
  [[ $i -eq 4 ]] && rack=r13
  api POST /api/v1/machines "{\"mac\":\"52:54:00:00:00:0$i\",\"name\":\"node$i\",\"labels\":{\"rack\":\"$rack\",\"role\":\"web\"}}"
  expect_status 201 "create machine $i"
done
expect_eq "$(jqb .state)" ready "new machine is ready"
api POST /api/v1/machines '{"mac":"52-54-00-00-00-01"}'
expect_status 409 "duplicate MAC (other spelling)"
api POST /api/v1/machines '{"mac":"not-a-mac"}'
expect_status 422 "invalid MAC"
api POST /api/v1/machines '{"mac":"52:54:00:00:00:10","labels":{"Bad Key":"x"}}'
expect_status 422 "invalid label key"
api POST /api/v1/machines '{"mac":"52:54:00:00:00:10","lables":{}}'
expect_status 400 "unknown field is an error, not ignored"
api POST /api/v1/machines '{"mac":'
expect_status 400 "truncated JSON"
api POST /api/v1/machines '[1,2]'
expect_status 400 "JSON that is not an object"
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: text/plain' --data '{"mac":"52:54:00:00:00:10"}' "$URL/api/v1/machines")
expect_status 415 "wrong content type"
api GET /api/v1/machines/52:54:00:00:00:02
expect_status 200 "get machine by MAC"
expect_eq "$(jqb .name)" node2 "machine by MAC"
api GET /api/v1/machines/999
expect_status 404 "unknown machine"
api GET "/api/v1/machines?selector=rack%3Dr12"
expect_eq "$(jqb '.items | length')" 3 "selector rack=r12"
api GET "/api/v1/machines?selector=rack%3Dr12&limit=2"
expect_eq "$(jqb '.items | length')" 2 "page size"
NEXT=$(jqb .next_after)
api GET "/api/v1/machines?selector=rack%3Dr12&limit=2&after=$NEXT"
expect_eq "$(jqb '.items | length')" 1 "second page"
expect_eq "$(jqb .next_after)" null "last page has no cursor"
api GET "/api/v1/machines?selector=Rack%3D%3D"
expect_status 422 "bad selector"
api GET "/api/v1/machines?state=sleeping"
expect_status 422 "bad state"
api PATCH /api/v1/machines/4 '{"labels":{"rack":"r12","role":null,"gpu":"a100"}}'
expect_status 200 "patch labels"
expect_eq "$(jq -c .labels <<<"$BODY")" '{"gpu":"a100","rack":"r12"}' "labels after patch"
api POST /api/v1/machines/4 '{}'
expect_status 405 "wrong method"
# Hostile bodies: nesting a hundred thousand levels deep costs a 400, not the process.
printf '{"mac":"52:54:00:00:00:11","labels":%s1%s}' "$(head -c 100000 /dev/zero | tr '\0' '[')" \
  "$(head -c 100000 /dev/zero | tr '\0' ']')" >"$WORK/deep.json"
STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' --data-binary @"$WORK/deep.json" "$URL/api/v1/machines")
BODY=$(cat "$WORK/body")
expect_status 400 "deeply nested body"
api POST /api/v1/machines '{"mac":"52:54:00:00:00:11","name":"caf\u00e9 \"quoted\" \\ \t"}'
expect_status 201 "escapes and unicode in names"
expect_eq "$(jqb .name)" "$(printf 'caf\xc3\xa9 "quoted" \\ \t')" "name round-trips"
api DELETE "/api/v1/machines/$(jqb .id)"
expect_status 204 "cleanup"
api GET "/api/v1/machines/%FF%FE"
expect_status 404 "invalid UTF-8 in a path is a 404, not a 500"
# Unknown methods do not mint metric series.
curl -s -o /dev/null -X FROBNICATE123 "$URL/api/v1/machines"
curl -s -o /dev/null -X FROBNICATE456 "$URL/files/x"

# --- images ---------------------------------------------------------------------------------
for v in 1.0 2.0; do
  api POST /api/v1/images/ubuntu/versions/$v "{\"size_bytes\":1048576,\"sha256\":\"$SHA\",\"format\":\"raw.zst\",\"source_url\":\"http://images.local/ubuntu-$v.raw.zst\"}"
  expect_status 201 "register ubuntu $v"
done
api POST /api/v1/images/ubuntu/versions/1.0 "{\"size_bytes\":1048576,\"sha256\":\"$SHA\",\"format\":\"raw.zst\",\"source_url\":\"http://images.local/ubuntu-1.0.raw.zst\"}"
expect_status 200 "identical re-registration is idempotent"
api POST /api/v1/images/ubuntu/versions/1.0 "{\"size_bytes\":2,\"sha256\":\"$SHA\",\"format\":\"raw.zst\",\"source_url\":\"http://images.local/x\"}"
expect_status 409 "versions are immutable"
api POST /api/v1/images/ubuntu/versions/3.0 '{"size_bytes":1,"sha256":"xyz","source_url":"http://a/b"}'
expect_status 422 "bad sha256"
api GET /api/v1/images/ubuntu
expect_eq "$(jqb '.items | length')" 2 "two versions"

# --- assignment, concurrency ------------------------------------------------------------------
api PUT /api/v1/machines/1/assignment '{"image":"ubuntu","version":"9.9"}'
expect_status 404 "unknown version"
# Eight concurrent assignments of different versions to the same machine: exactly one wins
# (201 or the idempotent 200 for the winner's version), the others get 409, and the database
# holds exactly one active deployment.
pids=()
for i in $(seq 1 8); do
  v=$([[ $((i % 2)) -eq 0 ]] && echo 1.0 || echo 2.0)
  curl -s -o /dev/null -w '%{http_code} '"$v"'\n' -X PUT -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data "{\"image\":\"ubuntu\",\"version\":\"$v\"}" \
    "$URL/api/v1/machines/1/assignment" >"$WORK/conc.$i" &
  pids+=($!)
done
wait "${pids[@]}"
cat "$WORK"/conc.* >"$WORK/conc"
expect_eq "$(grep -c '^201' "$WORK/conc")" 1 "exactly one concurrent assignment creates a deployment"
WIN=$(awk '/^201/{print $2}' "$WORK/conc")
expect_eq "$(awk -v w="$WIN" '$1=="200" && $2!=w' "$WORK/conc" | wc -l)" 0 "200 only for the winning version"
expect_eq "$(awk -v w="$WIN" '$1=="409" && $2==w' "$WORK/conc" | wc -l)" 0 "409 only for the other version"
api GET /api/v1/machines/1/deployments
expect_eq "$(jqb '[.items[] | select(.status=="pending")] | length')" 1 "one active deployment"
expect_eq "$(jqb '.items | length')" 1 "no partial deployments recorded"

api PUT /api/v1/machines/2/assignment '{"image":"ubuntu","version":"1.0"}'
expect_status 201 "assign machine 2"
D2=$(jqb .id)
api PUT /api/v1/machines/2/assignment '{"image":"ubuntu","version":"2.0"}'
expect_status 409 "other version while deploying"
api PUT /api/v1/machines/2/assignment '{"image":"ubuntu","version":"2.0","force":true}'
expect_status 201 "force supersedes"
expect_eq "$(jqb .superseded_deployment_id)" "$D2" "superseded id reported"
api GET /api/v1/deployments/$D2
expect_eq "$(jqb .status)" superseded "old deployment superseded"

# bulk: all-or-nothing
api POST /api/v1/assignments '{"selector":"rack=r12","image":"ubuntu","version":"1.0"}'
expect_status 409 "bulk refuses while machines deploy another version"
api GET /api/v1/machines/4
expect_eq "$(jqb .assignment)" null "nothing assigned after a refused bulk"
api POST /api/v1/assignments '{"selector":"rack=nowhere","image":"ubuntu","version":"1.0"}'
expect_status 404 "bulk with no match"
api POST /api/v1/assignments '{"selector":"rack=r12","image":"ubuntu","version":"1.0","force":true}'
expect_status 201 "bulk with force"
expect_eq "$(jqb .matched)" 4 "bulk matched 4 machines"
api GET "/api/v1/machines?state=deploying"
expect_eq "$(jqb '.items | length')" 4 "four machines deploying"

# --- agent reports, rollback ----------------------------------------------------------------
# finish_deployment MACHINE STATUS — plays the agent for the machine's active deployment.
finish_deployment() {
  api GET /api/v1/machines/$1
  local dep
  dep=$(jqb .assignment.deployment_id)
  agent_session "$dep"
  expect_status 201 "agent session"
  local agent=$SESSION
  TOKEN=$agent api POST /api/v1/agent/progress '{"stage":"writing","bytes_done":512,"bytes_total":1024,"detail":{"rate_bps":1000}}'
  expect_status 200 "agent progress"
  expect_eq "$(jqb .status)" running "running after first report"
  # A success without proof, or with a proof that does not match the image, is refused.
  if [[ $2 == succeeded ]]; then
    TOKEN=$agent api POST /api/v1/agent/result '{"status":"succeeded"}'
    expect_status 422 "a success without proof"
    TOKEN=$agent api POST /api/v1/agent/result "{\"status\":\"succeeded\",\"proof\":$(external_proof "$(printf 'b%.0s' $(seq 64))" 1048576)}"
    expect_status 422 "a success proving another image"
  fi
  local body="{\"status\":\"succeeded\",\"bytes_done\":1024,\"bytes_total\":1024,\"proof\":$(external_proof "$SHA" 1048576)}"
  [[ $2 == failed ]] && body='{"status":"failed","reason":"no disk found"}'
  TOKEN=$agent api POST /api/v1/agent/result "$body"
  expect_status 200 "agent result"
  TOKEN=$agent api POST /api/v1/agent/progress '{"stage":"writing"}'
  expect_status 401 "agent token dies with the deployment"
}
finish_deployment 3 succeeded
api GET /api/v1/machines/3
expect_eq "$(jqb .state)" deployed "deployed"
expect_eq "$(jqb .current_version.version)" 1.0 "current version"
api POST /api/v1/machines/3/rollback
expect_status 409 "no previous version to roll back to"
expect_eq "$(jqb .error.code)" conflict "rollback conflict code"
api PUT /api/v1/machines/3/assignment '{"image":"ubuntu","version":"2.0"}'
expect_status 201 "upgrade to 2.0"
finish_deployment 3 succeeded
api POST /api/v1/machines/3/rollback
expect_status 201 "rollback"
expect_eq "$(jqb .kind)/$(jqb .to.version)/$(jqb .from.version)" rollback/1.0/2.0 "rollback goes 2.0 -> 1.0"
api GET /api/v1/machines/3/deployments
expect_eq "$(jqb '[.items[].to.version] | join(",")')" "1.0,2.0,1.0" "history newest first"
TOKEN=$READER api POST /api/v1/machines/3/rollback
expect_status 403 "read token cannot roll back"
TOKEN=bogus api POST /api/v1/agent/result '{"status":"succeeded"}'
expect_status 401 "agent route with an API-less token"

api DELETE /api/v1/images/ubuntu/versions/1.0
expect_status 409 "image in use cannot be deleted"
api DELETE /api/v1/machines/1
expect_status 409 "machine with an active deployment is not deleted"
api DELETE "/api/v1/machines/1?force=true"
expect_status 204 "forced delete"
api GET /api/v1/machines/1
expect_status 404 "deleted machine is gone"

# --- events long-poll ---------------------------------------------------------------------
api GET "/api/v1/events?since=0&limit=1000"
LAST=$(jqb .next)
[[ $LAST -gt 10 ]] && ok || fail "events recorded ($LAST)"
start=$(date +%s%N)
(sleep 0.5; curl -s -o /dev/null -X PATCH -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  --data '{"labels":{"woken":"yes"}}' "$URL/api/v1/machines/2") &
writer=$!
api GET "/api/v1/events?since=$LAST&wait=20"
wait $writer
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expect_eq "$(jqb '.events[0].type')" machine.labels_changed "long-poll returns the new event"
[[ $elapsed_ms -lt 15000 ]] && ok || fail "long-poll woke on the event, not the timeout (${elapsed_ms} ms)"
t0=$(date +%s%N)
api GET "/api/v1/events?since=$((LAST + 1))&wait=1"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
expect_eq "$(jqb '.events | length')" 0 "long-poll times out empty"
[[ $ms -ge 900 ]] && ok || fail "an empty long-poll waits for its timeout (${ms} ms)"
api GET "/api/v1/events?wait=100000"
expect_status 422 "wait above the maximum"

# --- tokens over the API ----------------------------------------------------------------------
api POST /api/v1/tokens '{"name":"robot","scope":"read"}'
expect_status 201 "create token"
ROBOT=$(jqb .token)
RID=$(jqb .id)
TOKEN=$ROBOT api GET /api/v1/machines
expect_status 200 "new token works"
api DELETE /api/v1/tokens/$RID
expect_status 204 "revoke"
TOKEN=$ROBOT api GET /api/v1/machines
expect_status 401 "revoked token refused"
api GET /api/v1/tokens
if grep -q "$ROBOT" <<<"$BODY"; then fail "token list leaks a token"; else ok; fi

# --- metrics --------------------------------------------------------------------------------
METRICS=$(curl -s "$URL/metrics")
if grep -q FROBNICATE <<<"$METRICS"; then fail "client-chosen methods became metric labels"; else ok; fi
grep -q 'method="OTHER"' <<<"$METRICS" && ok || fail "unknown methods counted as OTHER"
grep -q '^kiln_machines{state="deploying"} 3$' <<<"$METRICS" && ok || fail "machines by state metric: $(grep kiln_machines <<<"$METRICS")"
grep -q '^kiln_deployments{status="succeeded"} 2$' <<<"$METRICS" && ok || fail "deployments by status metric"
grep -q 'kiln_http_requests_total{route="/api/v1/machines/{id}/rollback",method="POST",code="409"} 1' <<<"$METRICS" \
  && ok || fail "requests by route/status metric"

stop_kilnd
finish
