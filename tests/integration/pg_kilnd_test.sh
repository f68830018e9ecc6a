#!/usr/bin/env bash
# kilnd on PostgreSQL (db_url): its own PostgreSQL (pg_start: initdb in a temporary directory,
# never a system service), kilnd on it; a machine registered, an image pushed (.kiln, chunks on
# disk, metadata in PostgreSQL), an assignment, an offline token; kilnd restarted and everything
# still there (in PostgreSQL, not in a SQLite file); two kilnd on one database see one fleet;
# a kilnd whose database is unreachable fails at start with a clear error; and `kilnd db-copy`
# moves a SQLite kiln (machines, labels, an image, a deployment, a sealed BMC password, tokens,
# the event history) into an empty PostgreSQL database: kilnd on it then answers the same token
# with the same fleet, events and ids (new ids continue after the copied ones), the sealed
# credential is the same bytes, and a second copy into the now non-empty database is refused.
# Skipped without PostgreSQL installed, unless KILN_REQUIRE_PG=1.
source "$(dirname "$0")/lib.sh"

if ! pg_start; then
  [[ "${KILN_REQUIRE_PG:-}" == 1 ]] && { fail "KILN_REQUIRE_PG=1 but no PostgreSQL could start"; finish; }
  log "skipped: no PostgreSQL"
  exit 0
fi

cd "$WORK"
printf '{ "db_url": "%s" }\n' "$PG_URL" >kilnd.json
TOKEN=$("$KILND" --data-dir "$WORK/var" --config kilnd.json token create --name ops --scope admin 2>"$WORK/token.err") || true
[[ -n "$TOKEN" ]] && ok || fail "offline token creation on PostgreSQL: $(cat "$WORK/token.err")"
start_kilnd --config kilnd.json || { fail "kilnd does not start on PostgreSQL"; finish; }
grep -q 'backend=postgresql' "$WORK/kilnd.0.log" && ok || fail "kilnd reports the postgresql backend"
export KILN_URL=$URL KILN_TOKEN=$TOKEN

api POST /api/v1/machines '{"mac":"52:54:00:00:00:01","name":"node1","labels":{"rack":"r1"}}'
expect_status 201 "register a machine"
MID=$(jqb .id)

head -c $((3 << 20)) /dev/urandom >v1.raw
"$KILN" image build v1.raw -o v1.kiln --name os --version 1 --chunk-size 1M >/dev/null 2>&1
"$KILN" image push v1.kiln >push.out 2>push.err && ok || fail "kiln image push: $(cat push.err)"

api PUT "/api/v1/machines/$MID/assignment" '{"image":"os","version":"1"}'
expect_status 201 "assign the pushed image"
DID=$(jqb .id)

# The state lives in PostgreSQL: the rows are there, and no SQLite file was made.
expect_eq "$(pg_sql "SELECT count(*) FROM machines WHERE name = 'node1'")" 1 "machine row in PostgreSQL"
expect_eq "$(pg_sql "SELECT status FROM deployments WHERE id = $DID")" pending "deployment row in PostgreSQL"
expect_eq "$(pg_sql "SELECT max(version) FROM schema_migrations")" \
  "$(ls "$KILN_ROOT"/db-migrations/*.sql | wc -l)" "schema migrated to the latest version"
[[ ! -e "$WORK/var/kiln.db" ]] && ok || fail "no SQLite database is created when db_url is set"

# Restart: everything is still there.
stop_kilnd TERM || true
start_kilnd --config kilnd.json
api GET "/api/v1/machines/$MID"
expect_status 200 "machine after restart"
expect_eq "$(jqb .name)" node1 "machine name after restart"
api GET "/api/v1/deployments/$DID"
expect_status 200 "deployment after restart"
expect_eq "$(jqb .status)" pending "deployment status after restart"
api GET /api/v1/images/os/versions/1
expect_status 200 "image version after restart"

# A second kilnd on the same database (its own data dir): one fleet, one history.
FIRST_URL=$URL
DATA_DIR=$WORK/var2 start_kilnd --config kilnd.json
api GET "/api/v1/machines/$MID"
expect_status 200 "the second instance sees the machine"
api PUT "/api/v1/machines/$MID/assignment" '{"image":"os","version":"1"}'
expect_status 200 "the second instance sees the active deployment (idempotent re-assign)"
expect_eq "$(jqb .id)" "$DID" "same deployment through either instance"
URL=$FIRST_URL

# Unreachable database: a clear error at start, no listener.
printf '{ "db_url": "host=127.0.0.1 port=1 user=kiln dbname=kiln connect_timeout=3" }\n' >bad.json
rc=0
"$KILND" --data-dir "$WORK/var3" --listen 127.0.0.1:0 --config bad.json >bad.log 2>&1 || rc=$?
[[ $rc -ne 0 ]] && ok || fail "kilnd with an unreachable database must exit non-zero"
grep -q 'cannot connect to PostgreSQL' bad.log && ok || fail "unreachable database explained: $(tail -n 3 bad.log)"

# --- kilnd db-copy: from SQLite into an empty PostgreSQL database ------------------------------
log "db-copy: a SQLite kiln moves into PostgreSQL"
LITE=$WORK/lite
DATA_DIR=$LITE start_kilnd
LITE_TOKEN=$(DATA_DIR=$LITE make_token ops admin)
TOKEN=$LITE_TOKEN
export KILN_URL=$URL KILN_TOKEN=$LITE_TOKEN
api POST /api/v1/machines '{"mac":"52:54:00:00:0c:01","name":"c1","labels":{"rack":"r7","role":"db"}}'
C1=$(jqb .id)
api POST /api/v1/machines '{"mac":"52:54:00:00:0c:02","name":"c2"}'
C2=$(jqb .id)
"$KILN" image push v1.kiln >/dev/null 2>&1 || fail "push to the SQLite kiln"
api PUT "/api/v1/machines/$C1/assignment" '{"image":"os","version":"1"}'
expect_status 201 "assignment on SQLite"
CDEP=$(jqb .id)
api PUT "/api/v1/machines/$C2/bmc" '{"driver":"redfish","address":"https://10.9.9.9","insecure":true,"username":"admin","password":"Copy-Me-Sealed-77"}'
expect_status 200 "a BMC with a password on SQLite"
api GET "/api/v1/machines?limit=100"
MACHINES_BEFORE=$(jq -c '[.items[] | {id, name, macs, labels, state}]' <<<"$BODY")
api GET "/api/v1/events?since=0&limit=1000"
EVENTS_BEFORE=$(jq -c '[.events[] | {id, type, machine_id, deployment_id}]' <<<"$BODY")
[[ $(jq length <<<"$EVENTS_BEFORE") -ge 4 ]] && ok || fail "events to copy: $EVENTS_BEFORE"
stop_kilnd TERM || true
SEALED_LITE=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT credentials FROM machine_bmcs").fetchone()[0])' "$LITE/kiln.db")

"$PG_BIN/psql" -X -q -h "$PG_DIR" -p "$PG_PORT" -U kiln -d postgres -c 'CREATE DATABASE kiln2' >/dev/null
PG2_URL="host=127.0.0.1 port=$PG_PORT user=kiln dbname=kiln2"
rc=0; "$KILND" --data-dir "$LITE" db-copy --to "$PG2_URL" >copy.out 2>copy.err || rc=$?
expect_eq "$rc" 0 "db-copy exits 0: $(cat copy.err)"
expect_eq "$(awk '$1 == "machines" {print $2}' copy.out)" 2 "two machines copied"
expect_eq "$(awk '$1 == "deployments" {print $2}' copy.out)" 1 "one deployment copied"
grep -q "every table read back and verified" copy.out && ok || fail "db-copy reports its check: $(tail -n1 copy.out)"
rc=0; "$KILND" --data-dir "$LITE" db-copy --to "$PG2_URL" >copy2.out 2>copy2.err || rc=$?
expect_eq "$rc" 1 "a second copy into the same database is refused"
grep -q "not empty" copy2.err && ok || fail "and says why: $(cat copy2.err)"
rc=0; "$KILND" --data-dir "$LITE" db-copy --to "$PG_URL password=Db-Pass-9931" >copy3.out 2>copy3.err || rc=$?
expect_eq "$rc" 1 "another kilnd's database (it holds rows) is refused"
expect_eq "$(pg_sql "SELECT count(*) FROM machines")" 1 "and keeps its rows, untouched"
rc=0; "$KILND" --data-dir "$LITE" db-copy --to "host=127.0.0.1 port=$PG_PORT password=Db-Pass 9931" \
  >copy4.out 2>copy4.err || rc=$?
expect_eq "$rc" 2 "a conninfo libpq cannot parse"
grep -q "cannot parse" copy4.err && ok || fail "says so: $(cat copy4.err)"
grep -q "9931" copy3.out copy3.err copy4.out copy4.err && fail "the database password is printed" || ok
PG2() { "$PG_BIN/psql" -X -q -A -t -h "$PG_DIR" -p "$PG_PORT" -U kiln -d kiln2 -c "$1"; }
expect_eq "$(PG2 "SELECT credentials FROM machine_bmcs")" "$SEALED_LITE" "the sealed BMC password, the same bytes"
[[ $SEALED_LITE != *Copy-Me-Sealed-77* ]] && ok || fail "the BMC password is sealed, not in clear"

printf '{ "db_url": "%s" }\n' "$PG2_URL" >kilnd2.json
DATA_DIR=$LITE start_kilnd --config kilnd2.json
grep -q 'backend=postgresql' "$WORK/kilnd.$((${#KILND_PIDS[@]} - 1)).log" && ok || fail "kilnd runs on the copy"
api GET "/api/v1/machines?limit=100"
expect_status 200 "the SQLite token works on the copy"
expect_eq "$(jq -c '[.items[] | {id, name, macs, labels, state}]' <<<"$BODY")" "$MACHINES_BEFORE" "the same fleet"
api GET "/api/v1/events?since=0&limit=1000"
expect_eq "$(jq -c '[.events[] | {id, type, machine_id, deployment_id}]' <<<"$BODY" | jq -c ".[:$(jq length <<<"$EVENTS_BEFORE")]")" \
  "$EVENTS_BEFORE" "the same event history, same ids"
api GET "/api/v1/deployments/$CDEP"
expect_eq "$STATUS/$(jqb .status)" "200/pending" "the deployment"
api GET "/api/v1/machines/$C2/bmc"
expect_eq "$STATUS/$(jqb .address)" "200/https://10.9.9.9" "the BMC"
api POST /api/v1/machines '{"mac":"52:54:00:00:0c:03","name":"c3"}'
expect_status 201 "a new machine on the copy"
expect_eq "$(jqb .id)" "$((C2 + 1))" "new ids continue after the copied ones"

finish
