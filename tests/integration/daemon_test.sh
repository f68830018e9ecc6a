#!/usr/bin/env bash
# kilnd as a process: configuration errors, refusing a newer database without touching it,
# clean shutdown on SIGTERM with requests in flight.
source "$(dirname "$0")/lib.sh"

# --- configuration ----------------------------------------------------------------------------
"$KILND" --data-dir "$WORK/var" --print-config >"$WORK/cfg"
expect_eq "$(jq -r .db_path "$WORK/cfg")" "$WORK/var/kiln.db" "db path defaults under the data dir"
expect_eq "$(jq -r .http.listen "$WORK/cfg")" "127.0.0.1:8080" "default listen"
echo '{"http":{"listen":"127.0.0.1:0","bodylimit":5}}' >"$WORK/bad.json"
rc=0; "$KILND" --config "$WORK/bad.json" --data-dir "$WORK/var" 2>"$WORK/err" || rc=$?
expect_eq "$rc" 2 "unknown config key exits 2"
grep -q "unknown key 'http.bodylimit'" "$WORK/err" && ok || fail "config error names the key: $(cat "$WORK/err")"
echo '{"http":{"listen":"127.0.0.1:0","body_limit":4096},"log_level":"warn"}' >"$WORK/good.json"
"$KILND" --config "$WORK/good.json" --listen 127.0.0.1:9 --print-config >"$WORK/cfg"
expect_eq "$(jq -r .http.body_limit "$WORK/cfg")/$(jq -r .http.listen "$WORK/cfg")" "4096/127.0.0.1:9" "flags override the file"
"$KILND" --config "$KILN_ROOT/deploy/kilnd.example.json" --print-config >/dev/null && ok || fail "the example config loads"
echo '{"db_url":"postgresql://kiln:Sup3rS3cret@db.example/kiln?sslmode=require"}' >"$WORK/pg.json"
"$KILND" --config "$WORK/pg.json" --print-config >"$WORK/cfg"
expect_eq "$(jq -r .db_url "$WORK/cfg")" "postgresql://kiln:***@db.example/kiln?sslmode=require" \
  "--print-config masks the database password"
grep -q Sup3rS3cret "$WORK/cfg" && fail "the password is printed" || ok
rc=0; "$KILND" --data-dir "$WORK/var" --listen nonsense 2>/dev/null || rc=$?
expect_eq "$rc" 2 "bad listen address exits 2"

# --- a port in use ------------------------------------------------------------------------------
start_kilnd
PORT=${URL##*:}
rc=0; timeout 10 "$KILND" --data-dir "$WORK/var2" --listen "127.0.0.1:$PORT" >"$WORK/inuse.log" 2>&1 || rc=$?
expect_eq "$rc" 2 "port in use exits 2"
grep -q "event=daemon.listen_failed" "$WORK/inuse.log" && ok || fail "listen failure logged"

# --- clean shutdown with requests in flight ------------------------------------------------------
TOKEN=$(make_token ops admin)
head -c $((8 << 20)) /dev/urandom >"$WORK/var/files/big.bin"
WANT=$(sha256sum <"$WORK/var/files/big.bin" | cut -d' ' -f1)
# A slow download (about 4 s at 2 MB/s) and a long-poll are in flight when SIGTERM arrives.
curl -s --limit-rate 2M -o "$WORK/big.out" "$URL/files/big.bin" &
dl=$!
api GET "/api/v1/events?since=0&limit=1000"
LAST=$(jqb .next)
curl -s -o "$WORK/poll.out" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  "$URL/api/v1/events?since=$LAST&wait=30" >"$WORK/poll.code" &
poll=$!
sleep 0.7
t0=$(date +%s%N)
kill -TERM "$KILND_PID"
sleep 0.3
rc=0; curl -s -o /dev/null --max-time 2 "$URL/healthz" || rc=$?
[[ $rc -ne 0 ]] && ok || fail "new connections are refused while draining"
wait "$poll"
expect_eq "$(cat "$WORK/poll.code")" 200 "the long-poll is answered at shutdown"
wait "$dl" && ok || fail "the in-flight download failed"
expect_eq "$(sha256sum <"$WORK/big.out" | cut -d' ' -f1)" "$WANT" "the in-flight download completed intact"
rc=0; wait "$KILND_PID" || rc=$?
expect_eq "$rc" 0 "kilnd exits 0 after SIGTERM"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[[ $ms -lt 9000 ]] && ok || fail "shutdown took ${ms} ms (should end when the download ends)"
grep -q "event=daemon.stopped" "$WORK"/kilnd.0.log && ok || fail "daemon.stopped logged"
expect_eq "$(sqlite3 "$WORK/var/kiln.db" 'PRAGMA integrity_check')" ok "database intact after shutdown"
[[ ! -s "$WORK/var/kiln.db-wal" ]] && ok || fail "WAL checkpointed and removed at clean close"

# --- SIGTERM while a request body is still arriving: the request completes ----------------------
start_kilnd
HOSTPORT=${URL#http://}
exec {c}<>"/dev/tcp/${HOSTPORT%:*}/${HOSTPORT##*:}"
body='{"mac":"52:54:00:77:77:77"}'
printf 'POST /api/v1/machines HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
  "$TOKEN" "${#body}" "${body:0:10}" >&$c
sleep 0.3
kill -TERM "$KILND_PID"
sleep 0.3
printf '%s' "${body:10}" >&$c
reply=$(timeout 5 head -c 12 <&$c || true)
exec {c}>&-
expect_eq "$reply" "HTTP/1.1 201" "a request half-received at SIGTERM is still answered"
rc=0; wait "$KILND_PID" || rc=$?
expect_eq "$rc" 0 "clean exit after finishing it"

# --- a database newer than the binary is refused and left untouched -------------------------------
sqlite3 "$WORK/var/kiln.db" "INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)"
sqlite3 "$WORK/var/kiln.db" "PRAGMA journal_mode=DELETE" >/dev/null  # as a copied database might be
BEFORE=$(sha256sum <"$WORK/var/kiln.db")
rc=0; "$KILND" --data-dir "$WORK/var" --listen 127.0.0.1:0 >"$WORK/newer.log" 2>&1 || rc=$?
expect_eq "$rc" 2 "newer database refused"
grep -q "newer than this kilnd supports" "$WORK/newer.log" && ok || fail "clear message: $(cat "$WORK/newer.log")"
expect_eq "$(sha256sum <"$WORK/var/kiln.db")" "$BEFORE" "refused database untouched"
[[ ! -e "$WORK/var/kiln.db-wal" ]] && ok || fail "refused database not switched to WAL"
finish
