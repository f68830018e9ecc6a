#!/usr/bin/env bash
# Durability: kilnd is killed with SIGKILL in the middle of a burst of API writes. After a
# restart the database must pass PRAGMA integrity_check (checked by the sqlite3 CLI, a third
# party) and every write that was acknowledged with a 2xx must be there.
source "$(dirname "$0")/lib.sh"

start_kilnd
TOKEN=$(make_token burst admin)
api POST /api/v1/machines '{"mac":"52:54:00:ff:ff:ff"}'
expect_status 201 "machine for label writes"
LABELLED=$(jqb .id)

# writer N — up to 3000 writes, logging "<kind> <key> <http status>" per request; stops at the
# first connection failure after the kill.
writer() {
  local n=$1 i code
  for i in $(seq 1 3000); do
    if (( i % 2 )); then
      local mac
      mac=$(printf '52:54:%02x:%02x:%02x:01' "$n" $((i / 256)) $((i % 256)))
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data "{\"mac\":\"$mac\",\"labels\":{\"writer\":\"w$n\"}}" "$URL/api/v1/machines") || true
      echo "machine $mac $code"
    else
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X PATCH \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data "{\"labels\":{\"w$n-$i\":\"v$i\"}}" "$URL/api/v1/machines/$LABELLED") || true
      echo "label w$n-$i $code"
    fi
    [[ "$code" == 000 ]] && break
  done
}

pids=()
for n in 1 2 3 4; do
  writer "$n" >"$WORK/writer.$n" &
  pids+=($!)
done
sleep 2
stop_kilnd KILL || true
wait "${pids[@]}"
cat "$WORK"/writer.* >"$WORK/acks"
ACKED_MACHINES=$(awk '$1=="machine" && $3 ~ /^2/' "$WORK/acks" | wc -l)
ACKED_LABELS=$(awk '$1=="label" && $3 ~ /^2/' "$WORK/acks" | wc -l)
UNANSWERED=$(awk '$3=="000"' "$WORK/acks" | wc -l)
log "acknowledged before the kill: $ACKED_MACHINES machines, $ACKED_LABELS label writes; $UNANSWERED unanswered"
[[ $ACKED_MACHINES -gt 20 && $ACKED_LABELS -gt 20 ]] && ok || fail "the burst was too small to mean anything"
[[ $UNANSWERED -ge 1 ]] && ok || fail "kilnd was not killed mid-burst"
expect_eq "$(awk '$3 !~ /^2/ && $3 != "000"' "$WORK/acks" | wc -l)" 0 "no write was refused before the kill"

# Integrity, checked by the sqlite3 command-line client on the file kilnd left behind.
expect_eq "$(sqlite3 "$WORK/var/kiln.db" 'PRAGMA integrity_check')" ok "integrity_check after SIGKILL"
"$KILND" --data-dir "$WORK/var" db-check >"$WORK/dbcheck" && ok || fail "kilnd db-check: $(cat "$WORK/dbcheck")"

start_kilnd
api GET "/api/v1/machines?selector=writer&limit=10000"
jq -r '.items[].macs[0]' <<<"$BODY" | sort >"$WORK/present"
awk '$1=="machine" && $3 ~ /^2/ {print $2}' "$WORK/acks" | sort >"$WORK/acked"
MISSING=$(comm -23 "$WORK/acked" "$WORK/present" | wc -l)
expect_eq "$MISSING" 0 "every acknowledged machine survived"
api GET /api/v1/machines/$LABELLED
jq -r '.labels | keys[]' <<<"$BODY" | sort >"$WORK/present_labels"
awk '$1=="label" && $3 ~ /^2/ {print $2}' "$WORK/acks" | sort >"$WORK/acked_labels"
expect_eq "$(comm -23 "$WORK/acked_labels" "$WORK/present_labels" | wc -l)" 0 "every acknowledged label write survived"
# Each surviving change was recorded with its event in the same transaction: exactly one
# machine.created event per machine, one labels_changed event per surviving label write.
expect_eq "$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM events WHERE type='machine.created'")" \
  "$(sqlite3 "$WORK/var/kiln.db" 'SELECT count(*) FROM machines')" "one machine.created event per machine"
expect_eq "$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM events WHERE type='machine.labels_changed'")" \
  "$(sqlite3 "$WORK/var/kiln.db" "SELECT count(*) FROM machine_labels WHERE machine_id=$LABELLED")" \
  "one labels_changed event per surviving label"
api POST /api/v1/machines '{"mac":"52:54:00:ee:ee:ee"}'
expect_status 201 "kilnd accepts writes after the restart"
stop_kilnd
finish
