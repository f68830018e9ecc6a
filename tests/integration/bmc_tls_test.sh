#!/usr/bin/env bash
# kilnd's Redfish client over real HTTPS (build/bmc_probe drives power/redfish.h's driver):
# against a minimal Redfish service (Python's ssl + http.server, here; the full emulator is
# tests/tools/redfish_bmc.py) with a site CA and certificates made with the openssl CLI. The
# client must verify the BMC's certificate against the configured CA file and the address's IP
# or name, refuse a certificate from another CA or for another host, skip verification only with
# insecure, refuse https with neither, and report refused credentials as unauthorized without
# ever printing the password. Loopback only.
source "$(dirname "$0")/lib.sh"
PROBE=$KILN_BUILD/bmc_probe
cd "$WORK"

new_ca site-ca
new_ca other-ca
new_cert bmc site-ca "IP:127.0.0.1,DNS:bmc.test"        # the BMC's
new_cert impostor other-ca "IP:127.0.0.1,DNS:bmc.test"  # right name, another CA
new_cert elsewhere site-ca "IP:127.0.0.2,DNS:other.test" # the site CA, another BMC's

cat >stub.py <<'PY'
# A Redfish service root, one system and its Reset action; HTTP Basic only (no SessionService).
import base64, json, ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
cert, key, portfile, logfile = sys.argv[1:5]
state = {"power": "Off"}
good = "Basic " + base64.b64encode(b"admin:Pw-for-the-BMC").decode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with open(logfile, "a") as f:
            f.write(f"{self.command} {self.path} auth={'yes' if self.headers.get('Authorization') else 'no'}\n")
        if self.path == "/redfish/v1":
            return self.reply(200, {"Systems": {"@odata.id": "/redfish/v1/Systems"}})
        if self.headers.get("Authorization") != good:
            return self.reply(401, {"error": {"message": "Invalid credentials"}})
        if self.path == "/redfish/v1/Systems":
            return self.reply(200, {"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]})
        if self.path == "/redfish/v1/Systems/1" and self.command == "GET":
            return self.reply(200, {"PowerState": state["power"], "Actions": {"#ComputerSystem.Reset": {
                "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff"]}}})
        if self.path.endswith("ComputerSystem.Reset") and self.command == "POST":
            t = json.loads(body)["ResetType"]
            state["power"] = "On" if t == "On" else "Off"
            return self.reply(204)
        return self.reply(404, {"error": {"message": "not found"}})
    do_GET = do_POST = do_PATCH = do_DELETE = handle_any
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(portfile, "w").write(str(srv.server_address[1]))
srv.serve_forever()
PY

STUB_PID=""
CLEANUP_CMDS+=('[[ -n "$STUB_PID" ]] && kill "$STUB_PID"')
# start_stub CERT — the stub with CERT; sets PORT.
start_stub() {
  if [[ -n "$STUB_PID" ]]; then
    kill "$STUB_PID"
    wait "$STUB_PID" 2>/dev/null || true
    STUB_PID=""
  fi
  rm -f port
  python3 stub.py "$1.pem" "$1.key" port requests.log 2>stub.err &
  STUB_PID=$!
  for _ in $(seq 1 100); do [[ -s port ]] && break; sleep 0.05; done
  [[ -s port ]] || { cat stub.err >&2; fail "the stub did not start"; finish; }
  PORT=$(cat port)
}
export KILN_BMC_PASSWORD=Pw-for-the-BMC
# probe ARGS... — runs bmc_probe against the stub; sets OUT (its JSON line) and RC.
probe() {
  RC=0
  OUT=$("$PROBE" --driver redfish --address "https://127.0.0.1:$PORT" --user admin \
    --timeout-ms 5000 --retries 0 "$@" 2>"$WORK/probe.err") || RC=$?
}

start_stub bmc
probe --ca-file site-ca.pem status
expect_eq "$RC:$(jq -r .state <<<"$OUT")" "0:off" "status over verified TLS"
probe --ca-file site-ca.pem power on
expect_eq "$RC:$(jq -r '[.steps[].detail] | join(",")' <<<"$OUT")" \
  "0:PowerState off,ResetType=On,PowerState on after ResetType=On" "power on over verified TLS"
grep -q "^POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset auth=yes" requests.log && ok ||
  fail "the reset was posted to the advertised target with credentials"

probe --ca-file other-ca.pem status
expect_eq "$RC:$(jq -r .code <<<"$OUT")" "1:unavailable" "a certificate from another CA is refused"
jq -r .message <<<"$OUT" | grep -q "certificate is not trusted" && ok ||
  fail "the refusal says why: $OUT"

probe status
expect_eq "$RC:$(jq -r .code <<<"$OUT")" "1:invalid" "https with neither a CA file nor insecure"
jq -r .message <<<"$OUT" | grep -q "insecure" && ok || fail "the error names the choice: $OUT"

start_stub elsewhere
probe --ca-file site-ca.pem status
expect_eq "$RC:$(jq -r .code <<<"$OUT")" "1:unavailable" "a site certificate for another host is refused"
probe --insecure status
expect_eq "$RC:$(jq -r .state <<<"$OUT")" "0:off" "insecure skips verification (explicitly)"

start_stub impostor
before=$(wc -l <requests.log)
probe --ca-file site-ca.pem status
expect_eq "$RC:$(jq -r .code <<<"$OUT")" "1:unavailable" "an impostor with the right name is refused"
expect_eq "$(wc -l <requests.log)" "$before" "no request reached the impostor"

start_stub bmc
KILN_BMC_PASSWORD=wrong-password-123 probe --ca-file site-ca.pem power cycle
expect_eq "$RC:$(jq -r .code <<<"$OUT")" "1:unauthorized" "refused credentials are unauthorized"
grep -q "wrong-password-123" <<<"$OUT$(cat "$WORK/probe.err")" && fail "the password was printed: $OUT" || ok
jq -r .message <<<"$OUT" | grep -q "Invalid credentials" && ok || fail "the BMC's message is quoted: $OUT"

finish
