#!/usr/bin/env bash
# tests/integration/cli_test.sh — drives the real `kiln` CLI end to end against a real kilnd:
# machines, labels, selectors, images, single and bulk assignment, agent success (via curl),
# history, rollback, tokens and scopes, events, config resolution, exit codes, timeouts, TLS.
#
# Every `kiln` run goes through `k`, which gives it a clean environment (HOME in the scratch
# directory, so no real ~/.config/kiln is read) plus the variables in the KENV array.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -x "$KILN" ]] || { echo "missing $KILN (ninja -C build kiln)" >&2; exit 1; }

ADMIN=$(make_token cli-admin admin)
READER=$(make_token cli-reader read)
start_kilnd
TOKEN=$ADMIN
mkdir -p "$WORK/home"
KENV=(KILN_URL="$URL" KILN_TOKEN="$ADMIN")

# k ARGS... — runs kiln; sets OUT (stdout), ERR (stderr) and RC (exit code).
k() {
  local rc=0
  OUT=$(env -i PATH="$PATH" HOME="$WORK/home" "${KENV[@]}" "$KILN" "$@" 2>"$WORK/stderr") || rc=$?
  RC=$rc
  ERR=$(cat "$WORK/stderr")
}
expect_rc() {
  if [[ "$RC" == "$1" ]]; then ok; else fail "$2: expected exit $1, got $RC; stderr: $ERR; stdout: $OUT"; fi
}
# expect_match TEXT REGEX DESCRIPTION (bash ERE)
expect_match() {
  if [[ "$1" =~ $2 ]]; then ok; else fail "$3: '$1' does not match /$2/"; fi
}
expect_no_match() {
  if [[ "$1" =~ $2 ]]; then fail "$3: '$1' unexpectedly matches /$2/"; else ok; fi
}
# jqo FILTER — applies a jq filter to $OUT.
jqo() { jq -r "$1" <<<"$OUT"; }
# rows TEXT — number of table rows (lines minus the header); "no-table" without a header line.
rows() {
  if [[ "$1" =~ ^[A-Z_]+\ \  ]]; then echo $(($(printf '%s\n' "$1" | wc -l) - 1)); else echo no-table; fi
}
# detail TEXT KEY — the value of "KEY:  value" in a details view.
detail() { printf '%s\n' "$1" | sed -n "s/^$2: *//p"; }

# succeed_deployment ID — plays the agent: opens the deployment's agent session (a ticket
# reissued by the admin) and reports success with a proof for the version's sha256 and size.
succeed_deployment() {
  local agent_token to sha size
  agent_session "$1"
  expect_status 201 "agent session for deployment $1"
  agent_token=$SESSION
  api GET "/api/v1/deployments/$1"
  to=$(jqb '.to | "\(.image)/versions/\(.version)"')
  api GET "/api/v1/images/$to"
  sha=$(jqb .sha256) size=$(jqb .size_bytes)
  STATUS=$(curl -s -o "$WORK/body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $agent_token" -H 'Content-Type: application/json' \
    --data-binary "{\"status\":\"succeeded\",\"proof\":$(external_proof "$sha" "$size")}" \
    "$URL/api/v1/agent/result")
  BODY=$(cat "$WORK/body")
  expect_status 200 "agent result for deployment $1"
  expect_eq "$(jqb .status)" succeeded "deployment $1 status after the agent's report"
}

H1=$(printf '%064d' 1 | tr 0 a)
H2=$(printf '%064d' 2 | tr 0 b)

log "usage errors and unreachable servers exit 2"
k
expect_rc 2 "no command"
k machine
expect_rc 2 "machine without a subcommand"
k machine list --bogus-flag
expect_rc 2 "unknown flag"
k machine assign 1 ubuntu
expect_rc 2 "missing positional"
k machine list --selector 'rack=='
expect_rc 2 "malformed selector"
expect_match "$ERR" "bad selector 'rack=='" "malformed selector message"
k machine list --state sleeping
expect_rc 2 "unknown state"
k machine create --mac not-a-mac
expect_rc 2 "malformed MAC"
k image register ubuntu 1 --url http://images/u.raw --sha256 abc --size 10
expect_rc 2 "short sha256"
k image register ubuntu 1 --url http://images/u.raw --sha256 "$H1" --size 10 --format zip
expect_rc 2 "unknown image format"
k token create --name x --scope root
expect_rc 2 "unknown scope"
k events --follow --wait 0
expect_rc 2 "--follow without a long-poll wait (would spin)"
k --version
expect_rc 0 "--version"
expect_match "$OUT" "^kiln [0-9]+\.[0-9]+\.[0-9]+$" "--version output"
KENV=(KILN_URL=http://127.0.0.1:1 KILN_TOKEN="$ADMIN")
k machine list
expect_rc 2 "connection refused"
expect_match "$ERR" "^kiln: cannot connect to http://127\.0\.0\.1:1" "unreachable message names the URL"
KENV=(KILN_URL=ftp://127.0.0.1/ KILN_TOKEN="$ADMIN")
k machine list
expect_rc 2 "unsupported URL scheme"
expect_match "$ERR" "ftp://127\.0\.0\.1/" "bad URL message names the URL"
KENV=(KILN_URL="$URL" KILN_TOKEN="$ADMIN")
k --help
expect_rc 0 "--help"
expect_match "$OUT" "machine" "--help lists the machine command"
api GET /api/v1/machines
expect_eq "$(jqb '.items | length')" 0 "no machine was created by the refused commands"

log "machine create / show"
k machine create --mac 52:54:00:00:00:01 --name web-1 --label rack=r12 --label role=web --json
expect_rc 0 "create web-1"
W1=$(jqo .id)
expect_eq "$(jqo '.labels | to_entries | map("\(.key)=\(.value)") | join(",")')" "rack=r12,role=web" "web-1 labels"
k machine create --mac 52-54-00-00-00-02 --name web-2 --label rack=r12 --label role=web
expect_rc 0 "create web-2"
expect_eq "$(detail "$OUT" Name)" "web-2" "create prints the new machine"
expect_eq "$(detail "$OUT" MACs)" "52:54:00:00:00:02" "MAC normalized by the server"
W2=$(detail "$OUT" ID)
k machine create --mac 52:54:00:00:00:03 --mac 52:54:00:00:00:04 --name db-1 --label rack=r13 \
  --label role=db --uuid 0A1B2C3D-0000-4000-8000-000000000001 --json
expect_rc 0 "create db-1"
DB1=$(jqo .id)
expect_eq "$(jqo '.macs | join(",")')" "52:54:00:00:00:03,52:54:00:00:00:04" "db-1 has both MACs"
k machine create --mac 52:54:00:00:00:01
expect_rc 1 "duplicate MAC"
expect_match "$ERR" "\(HTTP 409 conflict\)$" "duplicate MAC is a conflict"
k machine create --mac 52:54:00:00:00:09 --label Rack=r1
expect_rc 2 "label key with an upper-case letter is refused locally"
k machine show 52:54:00:00:00:04
expect_rc 0 "show by secondary MAC"
expect_eq "$(detail "$OUT" ID)" "$DB1" "show by MAC finds db-1"
expect_eq "$(detail "$OUT" UUID)" "0a1b2c3d-0000-4000-8000-000000000001" "uuid shown"

log "machine list: table, --json, selectors, state, limit"
k machine list
expect_rc 0 "list"
expect_match "$(head -n1 <<<"$OUT")" "^ID +NAME +STATE +MACS +LABELS +CURRENT +ASSIGNED$" "list header"
expect_eq "$(rows "$OUT")" 3 "list shows three machines"
expect_eq "$(awk -v id="$W1" '$1 == id {print $2, $3, $4, $5, $6, $7}' <<<"$OUT")" \
  "web-1 ready 52:54:00:00:00:01 rack=r12,role=web - -" "web-1 row"
expect_eq "$(awk -v id="$DB1" '$1 == id {print $4}' <<<"$OUT")" \
  "52:54:00:00:00:03,52:54:00:00:00:04" "db-1 row lists both MACs"
k machine list --json --selector rack=r12
expect_rc 0 "list --json --selector"
expect_eq "$(jqo '[.items[].name] | join(",")')" "web-1,web-2" "selector rack=r12"
expect_eq "$(jqo .next_after)" null "all pages followed"
k machine list --selector 'rack=r12,role!=web'
expect_eq "$(rows "$OUT")" 0 "conjunction matching nothing"
k machine list -l '!role'
expect_eq "$(rows "$OUT")" 0 "absent-key selector"
k machine list --selector role=db
expect_eq "$(awk 'NR > 1 {print $2}' <<<"$OUT")" "db-1" "selector role=db (table)"
k machine list --state ready --json
expect_eq "$(jqo '.items | length')" 3 "state filter"
k machine list --limit 1 --json
expect_rc 0 "list --limit"
expect_eq "$(jqo '.items | length')" 1 "--limit 1 returns one machine"
expect_eq "$(jqo .next_after)" "$W1" "--limit returns the server's cursor unfollowed"

log "machine label"
k machine label "$W1" env=prod role-
expect_rc 0 "label set and remove"
expect_eq "$(detail "$OUT" Labels)" "env=prod, rack=r12" "label output"
api GET "/api/v1/machines/$W1"
expect_eq "$(jqb '.labels | to_entries | map("\(.key)=\(.value)") | join(",")')" "env=prod,rack=r12" \
  "labels stored on the server"
k machine label "$W1" Env=x
expect_rc 2 "invalid label key"
k machine label "$W1" env
expect_rc 2 "label without = or -"
k machine label "$W1" env=a env-
expect_rc 2 "same key twice"
api GET "/api/v1/machines/$W1"
expect_eq "$(jqb .labels.env)" prod "refused label commands changed nothing"

log "image register / list / show"
k image register ubuntu 22.04.1 --url http://images.test/ubuntu-22.04.1.raw --sha256 "$H1" \
  --size 1073741824 --description "first build"
expect_rc 0 "register 22.04.1"
expect_eq "$OUT" "registered image ubuntu:22.04.1 (raw, 1.0 GiB)" "register output"
k image register ubuntu 22.04.2 --url http://images.test/ubuntu-22.04.2.raw.zst --sha256 "$H2" \
  --size 2147483648 --format raw.zst --label channel=stable --json
expect_rc 0 "register 22.04.2"
expect_eq "$(jqo .format)/$(jqo .labels.channel)" "raw.zst/stable" "register --json"
api GET /api/v1/images/ubuntu/versions/22.04.2
expect_eq "$(jqb .sha256)/$(jqb .size_bytes)" "$H2/2147483648" "registered metadata on the server"
k image register ubuntu 22.04.1 --url http://images.test/ubuntu-22.04.1.raw --sha256 "$H1" \
  --size 1073741824 --description "first build"
expect_rc 0 "identical re-registration"
expect_match "$OUT" "already registered" "identical re-registration is reported"
k image register ubuntu 22.04.1 --url http://images.test/other.raw --sha256 "$H2" --size 5
expect_rc 1 "conflicting re-registration"
expect_match "$ERR" "\(HTTP 409 conflict\)$" "conflicting re-registration status"
k image list
expect_rc 0 "image list"
expect_eq "$(rows "$OUT")" 2 "image list rows"
expect_eq "$(awk '$2 == "22.04.2" {print $3, $4, $5}' <<<"$OUT")" "raw.zst 2.0 GiB" "image list row"
k image show ubuntu 22.04.1
expect_eq "$(detail "$OUT" Description)" "first build" "image show version"
k image show nonexistent
expect_rc 1 "unknown image"
expect_match "$ERR" "\(HTTP 404 not_found\)$" "unknown image status"

log "machine assign, scopes, agent success"
k machine assign "$W1" ubuntu 22.04.1 --json
expect_rc 0 "assign web-1"
D1=$(jqo .id)
expect_eq "$(jqo .kind)/$(jqo .status)/$(jqo .to.version)" "assign/pending/22.04.1" "assignment"
k machine assign "$W1" ubuntu 22.04.1
expect_rc 0 "idempotent re-assign"
expect_match "$OUT" "already deploying ubuntu:22.04.1" "idempotent re-assign output"
k machine assign "$W1" ubuntu 22.04.2
expect_rc 1 "assign over an active deployment without --force"
expect_match "$ERR" "use force.*\(HTTP 409 conflict\)$" "conflict message"
KENV=(KILN_URL="$URL" KILN_TOKEN="$READER")
k machine assign "$W2" ubuntu 22.04.1
expect_rc 1 "read-scope token cannot assign"
expect_match "$ERR" "^kiln: .*scope 'read'.*\(HTTP 403 forbidden\)$" "read-scope refusal message"
k machine list --json
expect_rc 0 "read-scope token can list"
KENV=(KILN_URL="$URL")
k machine list
expect_rc 1 "no token"
expect_match "$ERR" "\(HTTP 401 unauthorized\)" "no token is unauthorized"
expect_match "$ERR" "hint: .*KILN_TOKEN" "no-token hint"
KENV=(KILN_URL="$URL" KILN_TOKEN="$ADMIN")
api GET "/api/v1/machines/$W2"
expect_eq "$(jqb .state)" ready "refused assignment left web-2 alone"

succeed_deployment "$D1"
k machine show "$W1"
expect_eq "$(detail "$OUT" State)" deployed "web-1 deployed"
expect_eq "$(detail "$OUT" Current)" "ubuntu:22.04.1" "web-1 current version"

log "bulk assign by selector"
k assign --selector rack=r12 ubuntu 22.04.2
expect_rc 0 "bulk assign"
expect_match "$(head -n1 <<<"$OUT")" "^selector rack=r12 matched 2 machine\(s\); 2 new" "bulk summary"
expect_eq "$(awk -v id="$W1" '$1 == id {print $3, $4, $5, $6}' <<<"$OUT")" \
  "ubuntu:22.04.1 ubuntu:22.04.2 pending yes" "bulk row for web-1"
k assign --selector rack=r12 ubuntu 22.04.2 --json
expect_rc 0 "bulk assign again"
expect_eq "$(jqo .matched)/$(jqo .created)" "2/0" "repeated bulk assign creates nothing"
D2=$(jqo ".deployments[] | select(.machine_id == $W1) | .id")
D2W2=$(jqo ".deployments[] | select(.machine_id == $W2) | .id")
k assign --selector rack=r99 ubuntu 22.04.2
expect_rc 1 "bulk assign matching nothing"
expect_match "$ERR" "matched no machines \(HTTP 404 not_found\)$" "empty selector message"
k assign --selector 'rack r12' ubuntu 22.04.2
expect_rc 2 "bulk assign with a malformed selector"
api GET "/api/v1/machines/$DB1"
expect_eq "$(jqb .state)" ready "db-1 (rack=r13) untouched by bulk assign"
succeed_deployment "$D2"
succeed_deployment "$D2W2"

log "history / deployment show"
k machine history "$W1"
expect_rc 0 "history"
expect_match "$(head -n1 <<<"$OUT")" "^ID +KIND +FROM +TO +STATUS +REQUESTED_BY +CREATED +FINISHED +BOOT_S +CONFIG +REASON$" "history header"
expect_eq "$(rows "$OUT")" 2 "two deployments in web-1's history"
expect_eq "$(awk -v id="$D2" '$1 == id {print $2, $3, $4, $5, $6}' <<<"$OUT")" \
  "assign ubuntu:22.04.1 ubuntu:22.04.2 succeeded cli-admin" "history row"
k machine history "$W1" --json
expect_eq "$(jqo '[.items[].id] | sort | join(",")')" "$(printf '%s\n' "$D1" "$D2" | sort -n | paste -sd,)" \
  "history --json ids"
k deployment show "$D2"
expect_rc 0 "deployment show"
expect_eq "$(detail "$OUT" From) -> $(detail "$OUT" To)" "ubuntu:22.04.1 -> ubuntu:22.04.2" \
  "deployment from/to"
expect_eq "$(detail "$OUT" Status)" succeeded "deployment status"
k deployment show 99999
expect_rc 1 "unknown deployment"

log "rollback"
k machine rollback "$W1" --json
expect_rc 0 "rollback web-1"
D3=$(jqo .id)
expect_eq "$(jqo .kind)/$(jqo .from.version)/$(jqo .to.version)" "rollback/22.04.2/22.04.1" \
  "rollback goes back to the previous version"
k machine show "$W1" --json
expect_eq "$(jqo .assignment.version)/$(jqo .assignment.deployment_id)" "22.04.1/$D3" \
  "web-1 assigned the previous version"
k machine rollback "$W2"
expect_rc 1 "rollback without a previous version"
expect_match "$ERR" "no previous successfully deployed version.*\(HTTP 409 conflict\)$" \
  "rollback refusal message"
k machine rollback "$DB1"
expect_rc 1 "rollback without any history"

log "not found carries the server's message"
api GET /api/v1/machines/987654
expect_status 404 "curl: unknown machine"
k machine show 987654
expect_rc 1 "unknown machine"
expect_eq "$ERR" "kiln: $(jqb .error.message) (HTTP 404 not_found)" "unknown machine message"
k machine label 987654 a=b
expect_rc 1 "label an unknown machine"

log "tokens"
k token create --name ci-bot
expect_rc 0 "token create"
CI=$OUT
expect_match "$CI" "^kiln_[0-9a-f]+$" "token create prints only the token on stdout"
expect_match "$ERR" "scope read" "token create note on stderr"
k token list
expect_rc 0 "token list"
expect_match "$(head -n1 <<<"$OUT")" "^ID +NAME +SCOPE +CREATED +REVOKED$" "token list header"
CI_ID=$(awk '$2 == "ci-bot" {print $1}' <<<"$OUT")
expect_eq "$(awk '$2 == "ci-bot" {print $3, $5}' <<<"$OUT")" "read -" "new token listed, not revoked"
expect_no_match "$OUT" "$CI" "token list never shows token values"
k --token "$CI" image list
expect_rc 0 "new read token works (--token overrides KILN_TOKEN)"
k --token "$CI" token list
expect_rc 1 "read token cannot list tokens"
k token revoke "$CI_ID"
expect_rc 0 "token revoke"
k --token "$CI" image list
expect_rc 1 "revoked token refused"
expect_match "$ERR" "\(HTTP 401 unauthorized\)$" "revoked token status"
k token create --name ci-admin --scope admin --json
expect_eq "$(jqo .scope)" admin "token create --scope admin --json"

log "config: flags > environment > config file > default"
mkdir -p "$WORK/home/.config/kiln"
printf '{"url": "%s", "token": "%s"}\n' "$URL" "$ADMIN" >"$WORK/home/.config/kiln/config.json"
KENV=()
k machine list
expect_rc 0 "url and token from ~/.config/kiln/config.json"
expect_eq "$(rows "$OUT")" 3 "config file reaches the same server"
KENV=(KILN_URL=http://127.0.0.1:1)
k machine list
expect_rc 2 "KILN_URL overrides the config file"
k --url "$URL" machine list
expect_rc 0 "--url overrides KILN_URL"
KENV=()
k --url http://127.0.0.1:1 machine list
expect_rc 2 "--url overrides the config file"
printf '{"url": "%s", "token": "%s"}\n' "$URL" "$READER" >"$WORK/alt.json"
k --config "$WORK/alt.json" machine assign "$W2" ubuntu 22.04.1
expect_rc 1 "--config selects another file (read token)"
KENV=(KILN_CONFIG="$WORK/alt.json")
k machine delete "$DB1"
expect_rc 1 "KILN_CONFIG selects another file (read token)"
KENV=(KILN_CONFIG="$WORK/missing.json")
k machine list
expect_rc 2 "explicit config file missing"
expect_match "$ERR" "missing\.json" "missing config message names the file"
echo '{"url": 5}' >"$WORK/bad.json"
KENV=()
k --config "$WORK/bad.json" machine list
expect_rc 2 "malformed config file"
rm "$WORK/home/.config/kiln/config.json"
KENV=(KILN_TOKEN="$ADMIN")
if curl -s -o /dev/null --max-time 2 http://127.0.0.1:8080/; then
  log "skipped the default-URL check: something listens on 127.0.0.1:8080"
else
  k --timeout 2 machine list
  expect_rc 2 "default URL http://127.0.0.1:8080 (nothing listens there)"
  expect_match "$ERR" "http://127\.0\.0\.1:8080" "default URL named in the message"
fi
KENV=(KILN_URL="$URL" KILN_TOKEN="$ADMIN")

log "events"
k events --json
expect_rc 0 "events --json"
LAST=$(jqo .next)
expect_match "$(jqo '[.events[].type] | unique | join(" ")')" "deployment.created" "events include deployments"
k events --since 0
expect_match "$OUT" " machine.created machine=$W1 " "event line format"
k events --since "$LAST" --wait 1
expect_rc 0 "long-poll with nothing new"
expect_eq "$OUT" "" "no events after the cursor"
env -i PATH="$PATH" HOME="$WORK/home" "$KILN" --url "$URL" --token "$ADMIN" events --follow --since "$LAST" >"$WORK/follow.out" 2>"$WORK/follow.err" &
FOLLOW_PID=$!
sleep 0.3
k machine label "$W2" follow=yes
for _ in $(seq 1 100); do
  grep -q "machine.labels_changed machine=$W2" "$WORK/follow.out" && break
  sleep 0.1
done
k machine label "$W2" follow-
for _ in $(seq 1 100); do
  [[ $(grep -c "machine.labels_changed machine=$W2" "$WORK/follow.out") -ge 2 ]] && break
  sleep 0.1
done
kill "$FOLLOW_PID" 2>/dev/null || true
wait "$FOLLOW_PID" 2>/dev/null || true
expect_eq "$(grep -c "machine.labels_changed machine=$W2" "$WORK/follow.out")" 2 \
  "--follow printed both label events"
expect_match "$(head -n1 "$WORK/follow.out")" '"follow":"yes"' "--follow prints the event data"

log "delete"
k machine delete "$W1"
expect_rc 1 "delete a machine with an active deployment (the rollback)"
expect_match "$ERR" "\(HTTP 409 conflict\)$" "delete conflict"
k machine delete "$W1" --force
expect_rc 0 "delete --force"
expect_eq "$OUT" "machine $W1 deleted" "delete output"
k machine delete 52:54:00:00:00:03
expect_rc 0 "delete db-1 by MAC"
k machine show "$DB1"
expect_rc 1 "deleted machine is gone"
k machine list --json
expect_eq "$(jqo '[.items[].name] | join(",")')" "web-2" "only web-2 is left"
k image delete ubuntu 22.04.2
expect_rc 1 "delete an image version in use (web-2 runs it)"
expect_match "$ERR" "\(HTTP 409 conflict\)$" "image delete conflict"
k image register scratch 1 --url http://images.test/scratch.raw --sha256 "$H1" --size 512
expect_rc 0 "register an unused image version"
k image delete scratch 1
expect_rc 0 "delete an unused image version"
expect_eq "$OUT" "deleted image scratch:1" "image delete output"
k image show scratch 1
expect_rc 1 "deleted image version is gone"

log "pagination: 1001 machines are listed across pages"
: >"$WORK/curl.cfg"
for i in $(seq 1 1001); do
  [[ $i -gt 1 ]] && echo next >>"$WORK/curl.cfg"
  printf 'url = "%s/api/v1/machines"\nrequest = "POST"\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\ndata = "{\\"mac\\":\\"02:00:00:00:%02x:%02x\\",\\"labels\\":{\\"bulk\\":\\"yes\\"}}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
    "$URL" "$ADMIN" $((i / 256)) $((i % 256)) >>"$WORK/curl.cfg"
done
expect_eq "$(curl -s -K "$WORK/curl.cfg" | sort | uniq -c | awk '{print $1, $2}')" "1001 201" "1001 machines created"
api GET "/api/v1/machines?selector=bulk%3Dyes"
expect_eq "$(jqb '.items | length')/$(jqb '.next_after != null')" "1000/true" "the server pages at 1000"
k machine list --selector bulk=yes --json
expect_eq "$(jqo '.items | length')/$(jqo '[.items[].id] | unique | length')" "1001/1001" \
  "list --json follows next_after"
k machine list --selector bulk=yes
expect_eq "$(rows "$OUT")" 1001 "list table follows next_after"

log "timeouts: a stopped server"
kill -STOP "$KILND_PID"
START=$SECONDS
k --timeout 1 image list
kill -CONT "$KILND_PID"
expect_rc 2 "timeout exits 2"
expect_match "$ERR" "no response from $URL within 1 s" "timeout message"
if (( SECONDS - START <= 5 )); then ok; else fail "timeout took $((SECONDS - START)) s"; fi

log "https: verification, --cacert, --insecure"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=kiln-test -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
DATA_DIR=$WORK/var-tls make_token tls-admin admin >"$WORK/tls.token"
DATA_DIR=$WORK/var-tls start_kilnd --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key"
expect_match "$URL" "^https://127\.0\.0\.1:" "TLS kilnd URL"
KENV=(KILN_URL="$URL" KILN_TOKEN="$(cat "$WORK/tls.token")")
k image list
expect_rc 2 "self-signed certificate refused"
expect_match "$ERR" "certificate not trusted" "verification failure message"
k --cacert "$WORK/tls.crt" image list
expect_rc 0 "--cacert trusts the certificate"
expect_eq "$(head -n1 <<<"$OUT" | awk '{print $1}')" NAME "image list over https"
k --insecure machine list --json
expect_rc 0 "--insecure skips verification"
k --url "${URL/127.0.0.1/localhost}" --cacert "$WORK/tls.crt" image list
expect_rc 0 "host name in the certificate"
k --cacert "$WORK/missing.crt" image list
expect_rc 2 "--cacert file missing"
k --url "http://${URL#https://}" --timeout 5 image list
expect_rc 2 "plain http to an https server"
echo "{\"url\": \"$URL\", \"token\": \"$(cat "$WORK/tls.token")\", \"cacert\": \"$WORK/tls.crt\"}" \
  >"$WORK/tls.json"
KENV=(KILN_CONFIG="$WORK/tls.json")
k image list
expect_rc 0 "cacert from the config file"

finish
