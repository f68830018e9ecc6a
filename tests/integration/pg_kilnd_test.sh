#!/usr/bin/env bash
# kilnd on PostgreSQL (db_url): its own PostgreSQL (pg_start: initdb in a temporary directory,
# never a system service), kilnd on it; a machine registered, an image pushed (.kiln, chunks on
# disk, metadata in PostgreSQL), an assignment, an offline token; kilnd restarted and everything
# still there (in PostgreSQL, not in a SQLite file); two kilnd on one database see one fleet;
# and a kilnd whose database is unreachable fails at start with a clear error.
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

finish
