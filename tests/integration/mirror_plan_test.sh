#!/usr/bin/env bash
# images.mirrors: kilnd hands each agent the rack caches of the subnet its address is in (the
# most specific subnet wins; [] = none), in the plan; none when chunks are private. A bad rule
# (CIDR, URL) stops kilnd at start with a message naming it. Agents on different addresses are
# played from 127.0.0.2 / 127.0.0.3 / 127.0.0.1 (all loopback): the session binds to the address.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
"$KILN" key generate --out signer >/dev/null
truncate -s 4M v1.raw
head -c $((2 << 20)) /dev/urandom | dd of=v1.raw conv=notrunc status=none
"$KILN" image build v1.raw -o v1.kiln --name os --version 1 --chunk-size 1M --sign signer.pem >/dev/null 2>&1

log "bad rules stop kilnd, naming them"
# refused JSON MESSAGE — kilnd must exit non-zero at start, printing MESSAGE.
refused() {
  echo "$1" >bad.json
  local rc=0
  timeout 20 "$KILND" --data-dir "$WORK/bad" --listen 127.0.0.1:0 --config bad.json >bad.log 2>&1 || rc=$?
  if [[ $rc -ne 0 && $rc -ne 124 ]] && grep -qF "$2" bad.log; then ok; else
    fail "kilnd with $1: rc $rc, want '$2': $(cat bad.log)"
  fi
}
refused '{"images": {"mirrors": [{"subnet": "10.1.0.0/40", "urls": []}]}}' \
  "images.mirrors: subnet '10.1.0.0/40' has a prefix length that is not 0-32"
refused '{"images": {"mirrors": [{"subnet": "10.1.0.9/24", "urls": []}]}}' "has host bits set"
refused '{"images": {"mirrors": [{"subnet": "10.1.0.0/24", "urls": ["ftp://cache"]}]}}' \
  "URL 'ftp://cache' must start with http:// or https://"
refused '{"images": {"chunks_require_token": true, "mirrors": [{"subnet": "10.1.0.0/24", "urls": ["http://c"]}]}}' \
  "images.mirrors cannot serve private chunks"

cat >kilnd.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"], "mirrors": [
    {"subnet": "127.0.0.0/8", "urls": ["http://row-cache:8080"]},
    {"subnet": "127.0.0.2/32", "urls": ["http://rack2-a:8080", "http://rack2-b:8080/"]},
    {"subnet": "127.0.0.3/32", "urls": []} ] } }
JSON
start_kilnd --config kilnd.json
TOKEN=$(make_token ops admin)
export KILN_URL=$URL KILN_TOKEN=$TOKEN
"$KILN" image push v1.kiln >/dev/null 2>&1 || fail "push"
# plan_from ADDRESS MAC — a machine, its deployment, its agent session and plan from ADDRESS;
# sets PLAN.
plan_from() {
  TOKEN=$KILN_TOKEN api POST /api/v1/machines "{\"mac\":\"$2\"}"
  local id
  id=$(jqb .id)
  TOKEN=$KILN_TOKEN api PUT "/api/v1/machines/$id/assignment" '{"image":"os","version":"1"}'
  local dep
  dep=$(jqb .id)
  TOKEN=$KILN_TOKEN api POST "/api/v1/deployments/$dep/agent-ticket"
  local ticket session
  ticket=$(jqb .ticket)
  session=$(curl -s --interface "$1" -X POST -H "Authorization: Bearer $ticket" \
    "$URL/api/v1/agent/session" | jq -r '.token // empty')
  [[ -n "$session" ]] && ok || fail "agent session from $1"
  PLAN=$(curl -s --interface "$1" -H "Authorization: Bearer $session" "$URL/api/v1/agent/deployment")
}
plan_from 127.0.0.2 52:54:00:00:00:52
expect_eq "$(jq -c .mirrors <<<"$PLAN")" '["http://rack2-a:8080","http://rack2-b:8080/"]' \
  "127.0.0.2: its /32 wins over 127.0.0.0/8"
plan_from 127.0.0.3 52:54:00:00:00:53
expect_eq "$(jq -c .mirrors <<<"$PLAN")" '[]' "127.0.0.3: [] turns the rack's caches off"
plan_from 127.0.0.1 52:54:00:00:00:51
expect_eq "$(jq -c .mirrors <<<"$PLAN")" '["http://row-cache:8080"]' "127.0.0.1: the /8"
grep -q 'event=agent.mirrors .*peer=127.0.0.2 mirrors=\["http://rack2-a:8080"' "$WORK"/kilnd.0.log &&
  ok || fail "kilnd logs what it handed out"
stop_kilnd

log "private chunks: no mirrors in the plan"
cat >kilnd2.json <<JSON
{ "images": { "trusted_keys": ["$WORK/signer.pub.pem"], "chunks_require_token": true } }
JSON
start_kilnd --config kilnd2.json
plan_from 127.0.0.2 52:54:00:00:00:54
expect_eq "$(jq -c .mirrors <<<"$PLAN")" '[]' "no mirrors for private chunks"
expect_eq "$(jq -c .chunks_require_token <<<"$PLAN")" true "private chunks"
stop_kilnd
finish
