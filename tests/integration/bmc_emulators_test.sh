#!/usr/bin/env bash
# bmc_emulators_test.sh — the lab's BMC emulators (tests/tools/redfish_bmc.py, ipmi_bmc.py)
# behave like real BMCs, judged by independent clients, not by kiln: python3-sushy (OpenStack's
# Redfish library) and redfishtool (DMTF's CLI) for Redfish, ipmitool -I lanplus for IPMI. Then
# one round with a real QEMU over QMP (no OS, blank disk, SeaBIOS; skipped when not root or no
# QEMU): a one-time PXE override really makes the next boot try the network first, and only that
# boot, as SeaBIOS's own debug log shows.
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3  # Debian's python, where python3-sushy and python3-pyghmi live
TOOLS=$KILN_ROOT/tests/tools
for need in redfishtool ipmitool curl jq; do
  command -v $need >/dev/null || { log "SKIP: $need is missing (deploy/install-deps.sh)"; exit 77; }
done
$PY -c 'import sushy, pyghmi' 2>/dev/null || { log "SKIP: python3-sushy / python3-pyghmi missing"; exit 77; }

USER_=labadmin
PASS='pa ss:w0rd!'  # a space and a colon: credentials must travel intact
printf '%s\n' "$PASS" >"$WORK/bmc.pass"
chmod 600 "$WORK/bmc.pass"
EMU_PIDS=()
stop_emulators() {
  for p in "${EMU_PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
  for p in "${EMU_PIDS[@]:-}"; do [[ -n $p ]] && wait "$p" 2>/dev/null || true; done
  EMU_PIDS=()
}
CLEANUP_CMDS+=("stop_emulators")

# wait_file F — bounded wait until F exists and is not empty.
wait_file() {
  for _ in $(seq 1 100); do [[ -s $1 ]] && return 0; sleep 0.1; done
  return 1
}

# check DESC CMD... — runs CMD; ok when it succeeds.
check() {
  local d=$1
  shift
  if "$@"; then ok; else fail "$d"; fi
}
contains() { grep -qF -- "$2" <<<"$1"; }

###############################################################################################
log "Redfish emulator (--sim)"
"$PY" "$TOOLS/redfish_bmc.py" --sim --listen 127.0.0.1:0 --user "$USER_" --password-file "$WORK/bmc.pass" \
  --ready-file "$WORK/rf.ready" >/dev/null 2>"$WORK/rf.log" &
EMU_PIDS+=($!)
wait_file "$WORK/rf.ready" || { cat "$WORK/rf.log" >&2; fail "redfish emulator did not start"; finish; }
RF=$(head -n1 "$WORK/rf.ready")
SYS=$RF/redfish/v1/Systems/1
state() { curl -s "$RF/_emulator/state"; }
faults() { curl -s -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary "$1" "$RF/_emulator/faults"; }

# --- python3-sushy: basic auth and session auth ----------------------------------------------
cat >"$WORK/sushy_check.py" <<'EOF'
import json, sys, urllib.request
import sushy
from sushy import auth

url, user, password = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().rstrip("\n")

def check(desc, cond):
    print(("OK " if cond else "FAIL ") + desc, flush=True)

def emu_state():
    return json.load(urllib.request.urlopen(url + "/_emulator/state"))

def faults(d):
    req = urllib.request.Request(url + "/_emulator/faults", data=json.dumps(d).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()

P = sushy.PowerState
for name, a in (("basic", auth.BasicAuth(user, password)), ("session", auth.SessionAuth(user, password))):
    root = sushy.Sushy(url + "/redfish/v1", auth=a)
    system = root.get_system()
    check("%s: get_system finds system 1" % name, system.identity == "1")
    if name == "session":
        check("session: a session was created (X-Auth-Token)", bool(a.get_session_key()))
        check("session: its resource id is under SessionService/Sessions",
              (a.get_session_resource_id() or "").startswith("/redfish/v1/SessionService/Sessions/"))
    allowed = {v.value for v in system.get_allowed_reset_system_values()}
    check("%s: all six reset types are offered (%s)" % (name, sorted(allowed)),
          allowed == {"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"})
    # Each allowed reset type, with the power state a real BMC ends in.
    steps = [("ForceOff", P.OFF), ("On", P.ON), ("On", P.ON), ("GracefulShutdown", P.OFF),
             ("ForceRestart", P.ON), ("GracefulRestart", P.ON), ("PowerCycle", P.ON),
             ("ForceOff", P.OFF), ("ForceOff", P.OFF), ("PowerCycle", P.ON)]
    for kind, want in steps:
        system.reset_system(sushy.ResetType(kind))
        system.refresh()
        check("%s: %s -> %s" % (name, kind, system.power_state.value), system.power_state == want)
    system.reset_system(sushy.ResetType.FORCE_OFF)
    system.set_system_boot_options(sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE,
                                   mode=sushy.BootSourceOverrideMode.UEFI)
    system.refresh()
    check("%s: override reads back Pxe/Once/UEFI (%s %s %s)" % (name, system.boot.target, system.boot.enabled, system.boot.mode),
          system.boot.target == sushy.BootSource.PXE and system.boot.enabled == sushy.BootSourceOverrideEnabled.ONCE
          and system.boot.mode == sushy.BootSourceOverrideMode.UEFI)
    system.reset_system(sushy.ResetType.ON)
    system.refresh()
    last = emu_state()["boots"][-1]
    check("%s: the power-on booted the network first (%s)" % (name, last["first"]), last["first"] == "network")
    check("%s: the Once override is consumed: Disabled/None (%s %s)" % (name, system.boot.enabled, system.boot.target),
          system.boot.enabled == sushy.BootSourceOverrideEnabled.DISABLED and system.boot.target == sushy.BootSource.NONE)
    system.reset_system(sushy.ResetType.FORCE_RESTART)
    last = emu_state()["boots"][-1]
    check("%s: the boot after it is from disk again (%s)" % (name, last["first"]), last["first"] == "disk")
    # A stale ETag on the first try: sushy retries without If-Match, as it does with real BMCs.
    fired = emu_state()["counts"]["faults_fired"]
    faults({"stale_etag": 1})
    system.set_system_boot_options(sushy.BootSource.HDD, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS)
    system.refresh()
    check("%s: after a 412 sushy's retry set Hdd/Continuous" % name,
          system.boot.target == sushy.BootSource.HDD and system.boot.enabled == sushy.BootSourceOverrideEnabled.CONTINUOUS)
    check("%s: the stale_etag fault fired once" % name, emu_state()["counts"]["faults_fired"] == fired + 1)
    system.set_system_boot_options(sushy.BootSource.NONE, enabled=sushy.BootSourceOverrideEnabled.DISABLED)
    if name == "session":
        a.close()
        check("session: closing it ended it on the BMC", not a.get_session_key())
    # Wrong password: sushy reports an access error.
    try:
        sushy.Sushy(url + "/redfish/v1", auth=auth.BasicAuth(user, password + "x")).get_system()
        check("%s: a wrong password is refused" % name, False)
    except sushy.exceptions.AccessError as e:
        check("%s: a wrong password is refused (%s)" % (name, type(e).__name__), True)
EOF
SUSHY_OUT=$("$PY" "$WORK/sushy_check.py" "$RF" "$USER_" "$WORK/bmc.pass" 2>"$WORK/sushy.err") || {
  cat "$WORK/sushy.err" >&2
  fail "the sushy script failed"
}
while IFS= read -r line; do
  case $line in
    OK\ *) ok ;;
    FAIL\ *) fail "sushy: ${line#FAIL }" ;;
  esac
done <<<"$SUSHY_OUT"
[[ $(grep -c '^OK ' <<<"$SUSHY_OUT") -ge 35 ]] || fail "sushy: fewer checks ran than written: $SUSHY_OUT"
contains "$(cat "$WORK/rf.log")" "POST /redfish/v1/SessionService/Sessions 201" && ok || fail "sushy never created a session"
contains "$(cat "$WORK/rf.log")" "DELETE /redfish/v1/SessionService/Sessions/" && ok || fail "sushy's session was never deleted"

# --- raw HTTP: status codes and error bodies ---------------------------------------------------
code() { curl -s -o "$WORK/body" -w '%{http_code}' "$@"; }
expect_eq "$(code "$RF/redfish/v1/")" 200 "service root without auth"
expect_eq "$(jq -r '.Links.Sessions["@odata.id"]' "$WORK/body")" /redfish/v1/SessionService/Sessions "service root links Sessions"
expect_eq "$(code "$RF/redfish/v1/Systems")" 401 "Systems without credentials"
expect_eq "$(code -u "$USER_:wrong" "$RF/redfish/v1/Systems")" 401 "Systems with a wrong password"
expect_eq "$(code -u "$USER_:$PASS" "$RF/redfish/v1/Systems")" 200 "Systems with basic auth"
expect_eq "$(code -u "$USER_:$PASS" -X PUT -d '{}' "$SYS")" 405 "PUT on the system"
expect_eq "$(code -u "$USER_:$PASS" -H 'Content-Type: application/json' -d '{"ResetType":"Nmi"}' "$SYS/Actions/ComputerSystem.Reset")" 400 \
  "a ResetType the system does not offer"
expect_eq "$(jq -r '.error["@Message.ExtendedInfo"][0].MessageId' "$WORK/body")" Base.1.8.ActionParameterValueNotInList \
  "the 400 names the problem in @Message.ExtendedInfo"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Floppy"}}' "$SYS")" 400 "PATCH with a target not in the allowable values"
expect_eq "$(jq -r '.error["@Message.ExtendedInfo"][0].MessageId' "$WORK/body")" Base.1.8.PropertyValueNotInList "400 body of a bad target"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' -d '{"PowerState":"On"}' "$SYS")" 400 \
  "PATCH of a read-only property"
# ETag / If-Match
ETAG=$(curl -s -D - -o "$WORK/sys.json" -u "$USER_:$PASS" "$SYS" | sed -n 's/^ETag: //Ip' | tr -d '\r')
expect_eq "$(jq -r '.["@odata.etag"]' "$WORK/sys.json")" "$ETAG" "ETag header = @odata.etag"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' -H 'If-Match: "0000"' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}' "$SYS")" 412 "PATCH with a wrong If-Match"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' -H "If-Match: $ETAG" \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}' "$SYS")" 204 "PATCH with the current If-Match"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' -H "If-Match: $ETAG" \
  -d '{"Boot":{"BootSourceOverrideEnabled":"Disabled"}}' "$SYS")" 412 "the same If-Match again is stale (the resource changed)"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r .Boot.BootSourceOverrideEnabled)" Once "the 412 changed nothing"
# Sessions by hand
code -D "$WORK/hdr" -H 'Content-Type: application/json' \
  -d "$(jq -n --arg u "$USER_" --arg p "$PASS" '{UserName:$u,Password:$p}')" "$RF/redfish/v1/SessionService/Sessions" >"$WORK/st"
expect_eq "$(cat "$WORK/st")" 201 "POST Sessions"
TOK=$(sed -n 's/^X-Auth-Token: //Ip' "$WORK/hdr" | tr -d '\r')
LOC=$(sed -n 's/^Location: //Ip' "$WORK/hdr" | tr -d '\r')
[[ -n $TOK && $LOC == /redfish/v1/SessionService/Sessions/* ]] && ok || fail "session: token '$TOK' location '$LOC'"
expect_eq "$(code -H "X-Auth-Token: $TOK" "$SYS")" 200 "GET with the session token"
expect_eq "$(code -H "X-Auth-Token: $TOK" -X DELETE "$RF$LOC")" 204 "DELETE the session"
expect_eq "$(code -H "X-Auth-Token: $TOK" "$SYS")" 401 "the deleted session's token is refused"
expect_eq "$(code -H 'Content-Type: application/json' -d "{\"UserName\":\"$USER_\",\"Password\":\"nope\"}" \
  "$RF/redfish/v1/SessionService/Sessions")" 401 "POST Sessions with a wrong password"
grep -qF "$PASS" "$WORK/rf.log" && fail "the password appears in the emulator's log" || ok
grep -qF "$TOK" "$WORK/rf.log" && fail "a session token appears in the emulator's log" || ok

# --- faults -------------------------------------------------------------------------------------
faults '{"error_500": 2}'
expect_eq "$(code -u "$USER_:$PASS" "$SYS")" 500 "error_500: first request"
expect_eq "$(jq -r '.error.code' "$WORK/body")" Base.1.8.InternalError "error_500: a Redfish error body"
expect_eq "$(code -u "$USER_:$PASS" "$SYS")" 500 "error_500: second request"
expect_eq "$(code -u "$USER_:$PASS" "$SYS")" 200 "error_500: the third is served"
curl -s -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' \
  -d '{"Boot":{"BootSourceOverrideEnabled":"Disabled","BootSourceOverrideTarget":"None"}}' "$SYS"
faults '{"ignore_override": true}'
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}' "$SYS")" 204 "ignore_override: PATCH answers 204"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r '.Boot | .BootSourceOverrideEnabled + "/" + .BootSourceOverrideTarget')" \
  Disabled/None "ignore_override: a read-back shows nothing changed"
faults '{"ignore_override": false, "drop_override": 1}'
curl -s -u "$USER_:$PASS" -H 'Content-Type: application/json' -d '{"ResetType":"ForceOff"}' "$SYS/Actions/ComputerSystem.Reset"
expect_eq "$(code -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}' "$SYS")" 204 "drop_override: PATCH answers 204"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r '.Boot | .BootSourceOverrideEnabled + "/" + .BootSourceOverrideTarget')" \
  Once/Pxe "drop_override: reads back as set"
curl -s -u "$USER_:$PASS" -H 'Content-Type: application/json' -d '{"ResetType":"On"}' "$SYS/Actions/ComputerSystem.Reset"
expect_eq "$(state | jq -r '.boots[-1] | .first + " " + (.override_dropped|tostring)')" "disk true" \
  "drop_override: the boot ignored it and went to disk"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r .Boot.BootSourceOverrideEnabled)" Disabled "drop_override: consumed after the boot"
faults '{"delay_ms": 400}'
T=$(curl -s -o /dev/null -w '%{time_total}' -u "$USER_:$PASS" "$SYS")
awk -v t="$T" 'BEGIN{exit !(t >= 0.4)}' && ok || fail "delay_ms 400: the reply took only ${T}s"
faults '{"delay_ms": 0}'
expect_eq "$(code -X POST -H 'Content-Type: application/json' -d '{"no_such_fault":1}' "$RF/_emulator/faults")" 400 \
  "an unknown fault is refused"
# The action log records what the BMC was asked to do.
state | jq -e '[.log[] | select(.action == "reset") | .detail] | any(startswith("ResetType=GracefulRestart"))' >/dev/null &&
  ok || fail "the action log lacks the GracefulRestart"
state | jq -e '.counts.resets > 20 and .counts.patches > 5' >/dev/null && ok || fail "counts: $(state | jq -c .counts)"

# --- redfishtool (DMTF) --------------------------------------------------------------------------
RFT=(redfishtool -r "${RF#http://}" -S Never -u "$USER_" -p "$PASS")
OUT=$("${RFT[@]}" Systems 2>&1) || fail "redfishtool Systems: $OUT"
expect_eq "$(jq -r '.Members[0]["@odata.id"]' <<<"$OUT")" /redfish/v1/Systems/1 "redfishtool lists the system"
OUT=$("${RFT[@]}" -A Session Systems -1 setBootOverride Once Pxe 2>&1) || fail "redfishtool setBootOverride: $OUT"
OUT=$("${RFT[@]}" Systems -1 get 2>&1) || fail "redfishtool get: $OUT"
expect_eq "$(jq -r '.Boot | .BootSourceOverrideEnabled + "/" + .BootSourceOverrideTarget' <<<"$OUT")" Once/Pxe \
  "redfishtool reads back its override"
OUT=$("${RFT[@]}" -A Session Systems -1 reset ForceRestart 2>&1) || fail "redfishtool reset ForceRestart: $OUT"
expect_eq "$(state | jq -r '.boots[-1] | .cause + " " + .first')" "forcerestart network" "redfishtool's reset booted the network first"
OUT=$("${RFT[@]}" Systems -1 reset ForceOff 2>&1) || fail "redfishtool reset ForceOff: $OUT"
expect_eq "$("${RFT[@]}" Systems -1 get 2>/dev/null | jq -r .PowerState)" Off "redfishtool: ForceOff -> Off"
if redfishtool -r "${RF#http://}" -S Never -u "$USER_" -p wrong Systems >/dev/null 2>&1; then
  fail "redfishtool with a wrong password succeeded"
else ok; fi
stop_emulators

log "Redfish emulator over TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=lab bmc" \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/bmc.key" -out "$WORK/bmc.pem" 2>/dev/null ||
  fail "openssl could not make the test certificate"
"$PY" "$TOOLS/redfish_bmc.py" --sim --listen 127.0.0.1:0 --user "$USER_" --password-file "$WORK/bmc.pass" \
  --cert "$WORK/bmc.pem" --key "$WORK/bmc.key" --ready-file "$WORK/rft.ready" \
  --reset-types On,ForceOff,ForceRestart --restart-when-off refuse >/dev/null 2>"$WORK/rft.log" &
EMU_PIDS+=($!)
wait_file "$WORK/rft.ready" || fail "redfish emulator (TLS) did not start"
RFT_URL=$(head -n1 "$WORK/rft.ready")
[[ $RFT_URL == https://127.0.0.1:* ]] && ok || fail "the TLS emulator's URL: $RFT_URL"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/bmc.pem" -u "$USER_:$PASS" "$RFT_URL/redfish/v1/Systems/1")" 200 \
  "HTTPS with the BMC's certificate as the CA"
curl -s -o /dev/null "$RFT_URL/redfish/v1/" && fail "HTTPS without trusting the certificate succeeded" || ok
# requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override sushy's verify=: unset them.
OUT=$(env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE "$PY" -c '
import sys, sushy
from sushy import auth
r = sushy.Sushy(sys.argv[1] + "/redfish/v1", auth=auth.SessionAuth(sys.argv[2], open(sys.argv[3]).read().rstrip("\n")), verify=sys.argv[4])
print(r.get_system().power_state.value)' "$RFT_URL" "$USER_" "$WORK/bmc.pass" "$WORK/bmc.pem" 2>&1)
expect_eq "$OUT" Off "sushy over HTTPS (session auth, verified)"
# A BMC offering fewer reset types, and refusing ForceRestart while off (409), as some do.
tcurl() { curl -s -o "$WORK/body" -w '%{http_code}' --cacert "$WORK/bmc.pem" -u "$USER_:$PASS" "$@"; }
tcurl "$RFT_URL/redfish/v1/Systems/1" >/dev/null
expect_eq "$(jq -r '.Actions["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"] | join(",")' "$WORK/body")" \
  On,ForceOff,ForceRestart "--reset-types limits the allowable values"
expect_eq "$(tcurl -H 'Content-Type: application/json' -d '{"ResetType":"PowerCycle"}' \
  "$RFT_URL/redfish/v1/Systems/1/Actions/ComputerSystem.Reset")" 400 "a reset type left out is refused"
expect_eq "$(tcurl -H 'Content-Type: application/json' -d '{"ResetType":"ForceRestart"}' \
  "$RFT_URL/redfish/v1/Systems/1/Actions/ComputerSystem.Reset")" 409 "--restart-when-off refuse: ForceRestart while off"
expect_eq "$(tcurl "$RFT_URL/redfish/v1/Systems/1" && jq -r .PowerState "$WORK/body")" "200Off" "the refused restart left it off"
stop_emulators

###############################################################################################
log "IPMI emulator (--sim)"
"$PY" "$TOOLS/ipmi_bmc.py" --sim --listen 127.0.0.1:0 --user "$USER_" --password-file "$WORK/bmc.pass" \
  --ready-file "$WORK/ipmi.ready" --state-file "$WORK/ipmi.state" --faults-file "$WORK/ipmi.faults" >/dev/null 2>"$WORK/ipmi.log" &
EMU_PIDS+=($!)
wait_file "$WORK/ipmi.ready" || { cat "$WORK/ipmi.log" >&2; fail "ipmi emulator did not start"; finish; }
IPORT=$(sed 's/.*://' "$WORK/ipmi.ready")
# -E: the password from $IPMI_PASSWORD, never on the command line (as kilnd does it).
ipmi() { IPMI_PASSWORD=$PASS timeout 30 ipmitool -I lanplus -H 127.0.0.1 -p "$IPORT" -U "$USER_" -E -R 2 -N 2 "$@" 2>&1; }
ist() { jq -r "$1" "$WORK/ipmi.state"; }
expect_eq "$(ipmi power status)" "Chassis Power is off" "ipmitool: starts off"
OUT=$(ipmi power cycle) && fail "power cycle of an off chassis succeeded: $OUT" || ok
contains "$OUT" "not supported in present state" && ok || fail "power cycle when off: $OUT"
ipmi power on >/dev/null || fail "ipmitool power on"
expect_eq "$(ipmi power status)" "Chassis Power is on" "ipmitool: power on"
ipmi power off >/dev/null || fail "ipmitool power off"
expect_eq "$(ipmi power status)" "Chassis Power is off" "ipmitool: power off"
ipmi power on >/dev/null
ipmi power soft >/dev/null || fail "ipmitool power soft"
expect_eq "$(ipmi power status)" "Chassis Power is off" "ipmitool: power soft (the simulated guest complies)"
ipmi power on >/dev/null
ipmi power reset >/dev/null || fail "ipmitool power reset"
expect_eq "$(ist '.boots[-1].cause')" forcerestart "ipmitool: power reset is a hard reset"
OUT=$(ipmi chassis bootdev pxe options=efiboot) || fail "bootdev pxe efiboot: $OUT"
OUT=$(ipmi chassis bootparam get 5)
for want in "Boot Flag Valid" "Options apply to only next boot" "BIOS EFI boot" "Boot Device Selector : Force PXE"; do
  contains "$OUT" "$want" && ok || fail "bootparam get 5 after bootdev pxe efiboot lacks '$want': $OUT"
done
expect_eq "$(ist '.boot | .BootSourceOverrideTarget + "/" + .BootSourceOverrideEnabled + "/" + .BootSourceOverrideMode')" \
  Pxe/Once/UEFI "the state file shows the IPMI override"
ipmi power cycle >/dev/null || fail "ipmitool power cycle"
expect_eq "$(ist '.boots[-1] | .cause + " " + .first')" "power cycle network" "power cycle booted the network first"
OUT=$(ipmi chassis bootparam get 5)
contains "$OUT" "Boot Flag Invalid" && ok || fail "the one-time flag is not consumed by the boot: $OUT"
ipmi power reset >/dev/null
expect_eq "$(ist '.boots[-1].first')" disk "the boot after it is from disk"
OUT=$(ipmi chassis bootdev disk options=persistent)
OUT=$(ipmi chassis bootparam get 5)
for want in "Boot Flag Valid" "Options apply to all future boots" "BIOS PC Compatible (legacy) boot" "Force Boot from default Hard-Drive"; do
  contains "$OUT" "$want" && ok || fail "bootparam get 5 after bootdev disk persistent lacks '$want': $OUT"
done
ipmi chassis bootdev none >/dev/null
# Faults through the faults file
echo '{"ignore_override": true}' >"$WORK/ipmi.faults"
ipmi chassis bootdev pxe >/dev/null || fail "bootdev pxe under ignore_override should still answer success"
contains "$(ipmi chassis bootparam get 5)" "Boot Device Selector : No override" && ok || fail "ignore_override: the flag changed"
echo '{"ignore_override": false, "error_500": 1}' >"$WORK/ipmi.faults.tmp" && mv "$WORK/ipmi.faults.tmp" "$WORK/ipmi.faults"
touch -d '+1 second' "$WORK/ipmi.faults"
OUT=$(ipmi power status) && fail "error_500: power status succeeded: $OUT" || ok
expect_eq "$(ipmi power status)" "Chassis Power is on" "error_500: the next command is served"
OUT=$(IPMI_PASSWORD=wrong timeout 30 ipmitool -I lanplus -H 127.0.0.1 -p "$IPORT" -U "$USER_" -E -R 1 -N 1 power status 2>&1) &&
  fail "ipmitool with a wrong password succeeded: $OUT" || ok
grep -qF "$PASS" "$WORK/ipmi.log" && fail "the password appears in the IPMI emulator's log" || ok
stop_emulators

###############################################################################################
if [[ $(id -u) -ne 0 ]] || ! command -v qemu-system-x86_64 >/dev/null; then
  log "SKIP the QMP round: needs root and qemu-system-x86_64"
  finish
  exit 0
fi
log "QMP round: a real QEMU (TCG, no OS, blank disk, SeaBIOS)"
truncate -s 16M "$WORK/disk.raw"
# Two QMP sockets: one for the emulator, one for this test's own, independent look.
timeout 120 qemu-system-x86_64 -machine q35 -accel tcg -m 128 -nographic -no-user-config -nodefaults \
  -S -no-shutdown -qmp "unix:$WORK/qmp.sock,server=on,wait=off" -qmp "unix:$WORK/qmp-test.sock,server=on,wait=off" \
  -chardev "file,id=seabios,path=$WORK/seabios.log" -device isa-debugcon,iobase=0x402,chardev=seabios \
  -device virtio-net-pci,disable-legacy=on,id=net0,bootindex=2,romfile=/usr/lib/ipxe/qemu/pxe-virtio.rom \
  -drive "file=$WORK/disk.raw,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0,id=disk0,bootindex=1 \
  >"$WORK/qemu.log" 2>&1 &
EMU_PIDS+=($!)
for _ in $(seq 1 100); do [[ -S $WORK/qmp.sock && -S $WORK/qmp-test.sock ]] && break; sleep 0.1; done
"$PY" "$TOOLS/redfish_bmc.py" --qmp "$WORK/qmp.sock" --boot-settle 3 --listen 127.0.0.1:0 --user "$USER_" \
  --password-file "$WORK/bmc.pass" --ready-file "$WORK/rfq.ready" >/dev/null 2>"$WORK/rfq.log" &
EMU_PIDS+=($!)
wait_file "$WORK/rfq.ready" || { cat "$WORK/rfq.log" "$WORK/qemu.log" >&2; fail "redfish emulator (qmp) did not start"; finish; }
RF=$(head -n1 "$WORK/rfq.ready")
SYS=$RF/redfish/v1/Systems/1
# qmp_status — QEMU's run state from the test's own QMP socket (plain socket, not bmc_qmp.py).
qmp_status() {
  "$PY" - "$WORK/qmp-test.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rwb")
f.readline()
for cmd in ("qmp_capabilities", "query-status"):
    f.write(json.dumps({"execute": cmd}).encode() + b"\n"); f.flush()
    while True:
        m = json.loads(f.readline())
        if "return" in m or "error" in m:
            break
print(m["return"]["status"])
EOF
}
# boots_seen — how many boots SeaBIOS has started (one "boot order:" listing each).
boots_seen() { grep -c '^boot order:' "$WORK/seabios.log" 2>/dev/null || true; }
# first_boot_of N — what SeaBIOS tried first in boot N ("Hard Disk" or "ROM": the NIC's iPXE).
first_boot_of() {
  awk -v n="$1" '/^boot order:/{b++} b==n && /^Booting from /{sub(/^Booting from /,""); sub(/\.\.\.$/,""); print; exit}' "$WORK/seabios.log"
}
# wait_boot N — bounded wait until boot N has tried a first device.
wait_boot() {
  for _ in $(seq 1 150); do [[ -n $(first_boot_of "$1") ]] && return 0; sleep 0.1; done
  return 1
}
reset() { curl -s -o /dev/null -w '%{http_code}' -u "$USER_:$PASS" -H 'Content-Type: application/json' \
  -d "{\"ResetType\":\"$1\"}" "$SYS/Actions/ComputerSystem.Reset"; }

expect_eq "$(qmp_status)" prelaunch "QEMU starts powered off (-S)"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r .PowerState)" Off "Redfish: Off before power-on"
expect_eq "$(reset On)" 204 "Redfish On"
expect_eq "$(qmp_status)" running "On -> query-status running"
wait_boot 1 || fail "SeaBIOS did not boot (boot 1)"
expect_eq "$(first_boot_of 1)" "Hard Disk" "boot 1 (no override): disk first"
expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -u "$USER_:$PASS" -X PATCH -H 'Content-Type: application/json' \
  -d '{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once","BootSourceOverrideMode":"Legacy"}}' "$SYS")" 204 \
  "PATCH Pxe Once"
expect_eq "$(reset ForceRestart)" 204 "Redfish ForceRestart"
wait_boot 2 || fail "SeaBIOS did not boot (boot 2)"
expect_eq "$(first_boot_of 2)" "ROM" "boot 2 (Pxe once): the NIC's boot ROM first"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r .Boot.BootSourceOverrideEnabled)" Disabled "the override is consumed"
expect_eq "$(reset ForceRestart)" 204 "Redfish ForceRestart again"
wait_boot 3 || fail "SeaBIOS did not boot (boot 3)"
expect_eq "$(first_boot_of 3)" "Hard Disk" "boot 3: disk first again"
expect_eq "$(reset ForceOff)" 204 "Redfish ForceOff"
expect_eq "$(curl -s -u "$USER_:$PASS" "$SYS" | jq -r .PowerState)" Off "ForceOff -> Off"
[[ $(qmp_status) != running ]] && ok || fail "ForceOff left QEMU running"
expect_eq "$(curl -s "$RF/_emulator/state" | jq -r '[.boots[].first] | join(",")')" disk,network,disk \
  "the emulator's boot log agrees with SeaBIOS"
stop_emulators
finish
