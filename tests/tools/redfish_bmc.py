#!/usr/bin/python3
"""redfish_bmc.py — a Redfish BMC emulator for ONE ComputerSystem, for kiln's lab and tests.

Usage:
  redfish_bmc.py --listen 127.0.0.1:8000 --user admin --password-file F (--qmp SOCK | --sim)
                 [--cert C --key K] [--system-id 1] [--reset-types On,ForceOff,...]
                 [--restart-when-off on|refuse] [--reset-status 204|200|202]
                 [--patch-status 204|200] [--require-if-match] [--fault NAME=N ...]
                 [--ready-file F]
  The password may also come from --password or $REDFISH_BMC_PASSWORD. --listen port 0 picks
  a free port; the ready file (and stdout) then gets "http(s)://host:port".

What it models (DMTF DSP0266 / ComputerSystem schema; python3 stdlib only):
  /redfish                          {"v1": "/redfish/v1/"}                     (no auth)
  /redfish/v1                       ServiceRoot: Systems, SessionService, Managers,
                                    Links.Sessions                              (no auth)
  /redfish/v1/Systems               collection with one member (Id from --system-id)
  /redfish/v1/Systems/<id>          GET: PowerState On|Off, Boot {BootSourceOverrideEnabled
                                    Disabled|Once|Continuous, BootSourceOverrideTarget
                                    None|Pxe|Hdd (+ @Redfish.AllowableValues),
                                    BootSourceOverrideMode UEFI|Legacy}, Actions with
                                    #ComputerSystem.Reset (target, ResetType@Redfish.
                                    AllowableValues), ETag header = @odata.etag.
                                    PATCH {"Boot": {...}}: If-Match checked (412 when stale,
                                    428 without one under --require-if-match); 400 with
                                    @Message.ExtendedInfo on a bad value or a read-only or
                                    unknown property; 204 (or 200 + the resource).
  .../Actions/ComputerSystem.Reset  POST {"ResetType": T}: 204 (or --reset-status); 400
                                    ActionParameterValueNotInList for a type not offered;
                                    409 for ForceRestart when off under --restart-when-off
                                    refuse (default "on": ForceRestart of an off system powers
                                    it on, as most BMCs do).
  /redfish/v1/SessionService[/Sessions]  POST Sessions {"UserName","Password"} -> 201,
                                    X-Auth-Token + Location; DELETE Sessions/<id> -> 204.
  /redfish/v1/Managers[/BMC]        a minimal manager.
  Auth: HTTP Basic or X-Auth-Token; 401 with WWW-Authenticate otherwise. Other methods on a
  resource: 405 with Allow.
  Semantics: a Once override applies to the next boot (a BMC reset or the guest's own reboot)
  and then reads back Disabled/None; GracefulShutdown asks the guest (QMP system_powerdown;
  under --sim the guest complies at once) and a guest that ignores it stays On;
  GracefulRestart is a reset like ForceRestart (QEMU has no ACPI "reboot" request); PowerCycle
  of an off system powers it on. The machine behind it is bmc_qmp.py's (see there for the
  QEMU mapping).

Control endpoint for tests (same port, NO auth, never for production; not under /redfish):
  GET  /_emulator/state   {"power_state", "boot", "next_boot_first", "faults", "counts",
                           "boots": [{t, cause, first, override, override_dropped}],
                           "log": [{t, action, detail}]}
  GET  /_emulator/faults  the fault settings
  POST /_emulator/faults  JSON object, merged: counts are "the next N", true = until cleared,
                          0/false clears:
     ignore_override  a boot-override PATCH answers 204 and changes nothing (read-back shows it)
     stale_etag       the next N PATCHes carrying If-Match get 412
     error_500        the next N Redfish requests get 500 (with an error body)
     delay_ms         every Redfish reply is delayed this long (not a count)
     drop_override    accepted and reads back as set, but the next boot ignores it (and the
                      override is consumed): the real-world "accepted then ignored" quirk
  POST /_emulator/guest   {"action": "poweroff"|"reboot"} — the guest OS powers itself off or
                          reboots (--sim; under --qmp the real guest does that).
  Flags --fault NAME=N set the same at start.

Logs every request (method, path, status) to stderr; never a password or a token.
Not modelled: more than one system, tasks (202 carries no task monitor), BIOS settings,
virtual media, EventService, @Redfish.Settings apply-times, accounts.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bmc_qmp  # noqa: E402

PROG = "redfish_bmc"
ALL_RESETS = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"]


def msg_info(msg_id, message, args=(), resolution=""):
    return {"@odata.type": "#Message.v1_1_1.Message",
            "MessageId": "Base.1.8." + msg_id, "Message": message,
            "MessageArgs": list(args), "Severity": "Warning", "MessageSeverity": "Warning",
            "Resolution": resolution}


def error_body(msg_id, message, args=(), extended=None):
    return {"error": {"code": "Base.1.8." + msg_id, "message": message,
                      "@Message.ExtendedInfo": extended or [msg_info(msg_id, message, args)]}}


class Emulator:
    def __init__(self, args, chassis, password):
        self.args = args
        self.chassis = chassis
        self.user = args.user
        self.password = password
        self.sid = args.system_id
        self.reset_types = args.reset_types
        self.sessions = {}  # id -> token
        self.lock = threading.Lock()
        self.uuid = "92384634-2938-2342-8820-489239905423"

    def system_path(self):
        return "/redfish/v1/Systems/" + self.sid

    def system(self):
        ch = self.chassis
        enabled, target, mode = ch.override()
        power = ch.power_state()
        body = {
            "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
            "@odata.id": self.system_path(),
            "Id": self.sid, "Name": "kiln lab machine", "SystemType": "Physical",
            "Manufacturer": "kiln", "Model": "lab-%s" % ch.backend.name, "UUID": self.uuid,
            "PowerState": power,
            "Status": {"State": "Enabled", "Health": "OK"},
            "Boot": {
                "BootSourceOverrideEnabled": enabled,
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(bmc_qmp.BOOT_TARGETS),
                "BootSourceOverrideMode": mode,
                "BootSourceOverrideMode@Redfish.AllowableValues": list(bmc_qmp.BOOT_MODES),
            },
            "Actions": {"#ComputerSystem.Reset": {
                "target": self.system_path() + "/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": list(self.reset_types)}},
            "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/BMC"}]},
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        body["@odata.etag"] = '"%s"' % digest
        return body


class Handler(BaseHTTPRequestHandler):
    server_version = "kiln-redfish-bmc/1"
    protocol_version = "HTTP/1.1"
    emu = None  # set in main

    def log_message(self, fmt, *a):  # the default logs to stderr with the client address
        pass

    # --- plumbing --------------------------------------------------------------------------
    def reply(self, status, body=None, headers=None):
        if self.path.startswith("/redfish") and self.emu.chassis.faults.get("delay_ms"):
            time.sleep(self.emu.chassis.faults["delay_ms"] / 1000.0)
        data = b"" if body is None else json.dumps(body, indent=1).encode()
        self.send_response(status)
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json; charset=utf-8")
        hdrs.setdefault("OData-Version", "4.0")
        if self.headers.get("Connection", "").lower() == "close" or self.request_version != "HTTP/1.1":
            # Say so: a client that sees no "Connection: close" may reuse the socket we close.
            hdrs["Connection"] = "close"
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)
        bmc_qmp.log(PROG, "%s %s %d" % (self.command, self.path, status))

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            v = json.loads(raw)
        except ValueError:
            raise BadRequest("MalformedJSON", "The request body submitted was malformed JSON and could not be parsed.")
        if not isinstance(v, dict):
            raise BadRequest("MalformedJSON", "The request body must be a JSON object.")
        return v

    def authorized(self):
        emu = self.emu
        token = self.headers.get("X-Auth-Token")
        if token:
            with emu.lock:
                return any(secrets.compare_digest(token, t) for t in emu.sessions.values())
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return False
            return secrets.compare_digest(user, emu.user) and secrets.compare_digest(pw, emu.password)
        return False

    def unauthorized(self):
        self.reply(401, error_body("InsufficientPrivilege", "Authentication is required (HTTP Basic or X-Auth-Token)."),
                   {"WWW-Authenticate": 'Basic realm="kiln-lab-bmc"'})

    def not_found(self):
        self.reply(404, error_body("ResourceMissingAtURI", "The resource at the URI %s was not found." % self.path, [self.path]))

    def not_allowed(self, allow):
        self.reply(405, error_body("OperationNotAllowed", "The method %s is not allowed on %s." % (self.command, self.path)),
                   {"Allow": allow})

    # --- dispatch --------------------------------------------------------------------------
    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PUT(self):
        self.handle_any("PUT")

    def handle_any(self, method):
        path = self.path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            if path.startswith("/_emulator/"):
                return self.control(method, path)
            ch = self.emu.chassis
            with ch.lock:
                ch.counts["requests"] += 1
            if ch.take_fault("error_500"):
                # Drain the body so the connection stays usable.
                try:
                    self.body()
                except BadRequest:
                    pass
                return self.reply(500, error_body("InternalError", "The request failed due to an internal service error (injected)."))
            return self.redfish(method, path)
        except BadRequest as e:
            self.reply(400, error_body(e.msg_id, e.message, e.args_, e.extended))
        except bmc_qmp.Fault as e:
            if e.kind == "refused":
                self.reply(409, error_body("ResourceInUse", e.message))
            elif e.kind == "invalid":
                self.reply(400, error_body("PropertyValueNotInList", e.message))
            else:
                self.reply(500, error_body("InternalError", e.message))
        except bmc_qmp.QmpError as e:
            self.reply(500, error_body("InternalError", "The machine did not respond: %s" % e))

    def redfish(self, method, path):
        emu = self.emu
        public = {"/redfish", "/redfish/v1", "/redfish/v1/odata", "/redfish/v1/$metadata"}
        if path == "/redfish/v1/SessionService/Sessions" and method == "POST":
            return self.create_session()
        if path not in public and not self.authorized():
            return self.unauthorized()
        sysp = emu.system_path()
        if path == "/redfish":
            return self.get_only(method, {"v1": "/redfish/v1/"})
        if path == "/redfish/v1":
            return self.get_only(method, {
                "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "@odata.id": "/redfish/v1/",
                "Id": "RootService", "Name": "kiln lab Redfish service", "RedfishVersion": "1.11.0",
                "UUID": emu.uuid,
                "Systems": {"@odata.id": "/redfish/v1/Systems"},
                "Managers": {"@odata.id": "/redfish/v1/Managers"},
                "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}})
        if path == "/redfish/v1/Systems":
            return self.get_only(method, self.collection("#ComputerSystemCollection.ComputerSystemCollection",
                                                         path, "Computer System Collection", [sysp]))
        if path == "/redfish/v1/Managers":
            return self.get_only(method, self.collection("#ManagerCollection.ManagerCollection", path,
                                                         "Manager Collection", ["/redfish/v1/Managers/BMC"]))
        if path == "/redfish/v1/Managers/BMC":
            return self.get_only(method, {"@odata.type": "#Manager.v1_10_0.Manager", "@odata.id": path,
                                          "Id": "BMC", "Name": "kiln lab BMC", "ManagerType": "BMC",
                                          "Links": {"ManagerForServers": [{"@odata.id": sysp}]}})
        if path == "/redfish/v1/SessionService":
            return self.get_only(method, {"@odata.type": "#SessionService.v1_1_8.SessionService",
                                          "@odata.id": path, "Id": "SessionService", "Name": "Session Service",
                                          "ServiceEnabled": True, "SessionTimeout": 1800,
                                          "Sessions": {"@odata.id": path + "/Sessions"}})
        if path == "/redfish/v1/SessionService/Sessions":
            with emu.lock:
                ids = sorted(emu.sessions)
            if method != "GET":
                return self.not_allowed("GET, POST")
            return self.reply(200, self.collection("#SessionCollection.SessionCollection", path, "Sessions",
                                                   [path + "/" + i for i in ids]))
        if path.startswith("/redfish/v1/SessionService/Sessions/"):
            sid = path.rsplit("/", 1)[1]
            with emu.lock:
                exists = sid in emu.sessions
                if exists and method == "DELETE":
                    del emu.sessions[sid]
            if not exists:
                return self.not_found()
            if method == "DELETE":
                return self.reply(204)
            if method != "GET":
                return self.not_allowed("GET, DELETE")
            return self.reply(200, self.session_body(sid))
        if path == sysp:
            if method == "GET":
                body = emu.system()
                return self.reply(200, body, {"ETag": body["@odata.etag"]})
            if method == "PATCH":
                return self.patch_system()
            return self.not_allowed("GET, PATCH")
        if path == sysp + "/Actions/ComputerSystem.Reset":
            if method != "POST":
                return self.not_allowed("POST")
            return self.reset()
        return self.not_found()

    def get_only(self, method, body):
        if method != "GET":
            return self.not_allowed("GET")
        return self.reply(200, body)

    @staticmethod
    def collection(odata_type, path, name, members):
        return {"@odata.type": odata_type, "@odata.id": path, "Name": name,
                "Members@odata.count": len(members), "Members": [{"@odata.id": m} for m in members]}

    def session_body(self, sid):
        return {"@odata.type": "#Session.v1_3_0.Session",
                "@odata.id": "/redfish/v1/SessionService/Sessions/" + sid,
                "Id": sid, "Name": "User Session", "UserName": self.emu.user}

    # --- operations ------------------------------------------------------------------------
    def create_session(self):
        b = self.body()
        user, pw = b.get("UserName"), b.get("Password")
        if not isinstance(user, str) or not isinstance(pw, str):
            raise BadRequest("PropertyMissing", "UserName and Password are required.", ["UserName"])
        if not (secrets.compare_digest(user, self.emu.user) and secrets.compare_digest(pw, self.emu.password)):
            bmc_qmp.log(PROG, "session refused for user %r" % user)
            return self.unauthorized()
        sid = secrets.token_hex(8)
        token = secrets.token_hex(24)
        with self.emu.lock:
            self.emu.sessions[sid] = token
        loc = "/redfish/v1/SessionService/Sessions/" + sid
        return self.reply(201, self.session_body(sid), {"X-Auth-Token": token, "Location": loc})

    def patch_system(self):
        emu, ch = self.emu, self.emu.chassis
        b = self.body()
        with ch.lock:
            current = emu.system()
            if_match = self.headers.get("If-Match")
            if if_match is None and emu.args.require_if_match:
                return self.reply(428, error_body("PreconditionRequired",
                                                  "This service requires an If-Match header on PATCH."))
            if if_match is not None:
                tags = [t.strip() for t in if_match.split(",")]
                tags = [t[2:] if t.startswith("W/") else t for t in tags]
                if ch.take_fault("stale_etag") or ("*" not in tags and current["@odata.etag"] not in tags):
                    return self.reply(412, error_body("PreconditionFailed",
                                                      "The ETag supplied did not match the ETag required to change this resource."))
            problems = []
            for k in b:
                if k != "Boot":
                    problems.append(msg_info("PropertyNotWritable" if k in current else "PropertyUnknown",
                                             "The property %s is %s." % (k, "read-only" if k in current else "not known"), [k]))
            boot = b.get("Boot", {})
            if not isinstance(boot, dict):
                problems.append(msg_info("PropertyValueTypeError", "Boot must be an object.", ["Boot"]))
                boot = {}
            allowed = {"BootSourceOverrideTarget": bmc_qmp.BOOT_TARGETS,
                       "BootSourceOverrideEnabled": bmc_qmp.BOOT_ENABLED,
                       "BootSourceOverrideMode": bmc_qmp.BOOT_MODES}
            for k, v in boot.items():
                if k not in allowed:
                    problems.append(msg_info("PropertyUnknown", "The property Boot/%s is not known or not writable." % k, [k]))
                elif v not in allowed[k]:
                    problems.append(msg_info("PropertyValueNotInList",
                                             "The value %s for the property %s is not in the list of acceptable values." % (json.dumps(v), k),
                                             [json.dumps(v), k]))
            if problems:
                raise BadRequest("GeneralError", "The PATCH was not applied: %d problem(s)." % len(problems), extended=problems)
            if boot:
                ch.set_override(boot.get("BootSourceOverrideTarget"), boot.get("BootSourceOverrideEnabled"),
                                boot.get("BootSourceOverrideMode"))
            else:
                with ch.lock:
                    ch.counts["patches"] += 1
            after = emu.system()
        if emu.args.patch_status == 200:
            return self.reply(200, after, {"ETag": after["@odata.etag"]})
        return self.reply(204, None, {"ETag": after["@odata.etag"]})

    def reset(self):
        b = self.body()
        kind = b.get("ResetType")
        if kind is None:
            raise BadRequest("ActionParameterMissing", "The action ComputerSystem.Reset requires the parameter ResetType.",
                             ["ComputerSystem.Reset", "ResetType"])
        if kind not in self.emu.reset_types:
            raise BadRequest("ActionParameterValueNotInList",
                             "The value %s for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values."
                             % json.dumps(kind), [json.dumps(kind), "ResetType", "ComputerSystem.Reset"])
        self.emu.chassis.reset(kind)
        status = self.emu.args.reset_status
        if status == 200:
            return self.reply(200, {"@Message.ExtendedInfo": [msg_info("Success", "Successfully Completed Request")]})
        return self.reply(status)

    # --- control endpoint ------------------------------------------------------------------
    def control(self, method, path):
        ch = self.emu.chassis
        if path == "/_emulator/state" and method == "GET":
            return self.reply(200, ch.state())
        if path == "/_emulator/faults":
            if method == "GET":
                return self.reply(200, ch.faults)
            if method == "POST":
                ch.set_faults(self.body())
                return self.reply(200, ch.faults)
            return self.not_allowed("GET, POST")
        if path == "/_emulator/guest" and method == "POST":
            action = self.body().get("action")
            be = ch.backend
            if not isinstance(be, bmc_qmp.SimBackend):
                return self.reply(409, {"error": "guest actions are the real guest's under --qmp"})
            with ch.lock:
                if action == "poweroff":
                    if be.on:
                        be.powerdown()
                elif action == "reboot":
                    if be.on:
                        be.reset_to("guest reboot")
                else:
                    return self.reply(400, {"error": "action must be poweroff or reboot"})
            return self.reply(200, ch.state())
        return self.not_found()


class Server(ThreadingHTTPServer):
    """With TLS, the handshake happens in the connection's own thread: a client that never
    completes it (or fails it) must not stall the accept loop."""

    daemon_threads = True
    tls = None  # ssl.SSLContext

    def finish_request(self, request, client_address):
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                bmc_qmp.log(PROG, "TLS handshake with %s failed: %s" % (client_address[0], e))
                request.close()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)
        # shutdown_request() closes the raw socket; the TLS one is closed with it.


class BadRequest(Exception):
    def __init__(self, msg_id, message, args=(), extended=None):
        super().__init__(message)
        self.msg_id, self.message, self.args_, self.extended = msg_id, message, list(args), extended


def parse_fault(s):
    k, _, v = s.partition("=")
    v = v.strip().lower()
    if v in ("", "true", "yes"):
        return k, -1
    if v in ("false", "no"):
        return k, 0
    return k, int(v)


def main():
    ap = argparse.ArgumentParser(description="Redfish BMC emulator (one system) over QMP or simulated.")
    ap.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: a free one)")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password")
    ap.add_argument("--password-file")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--qmp", help="QEMU QMP unix socket")
    g.add_argument("--sim", action="store_true", help="simulated machine in memory")
    ap.add_argument("--sim-on", action="store_true", help="--sim: start powered on")
    ap.add_argument("--net-id", default="net0")
    ap.add_argument("--disk-id", default="disk0")
    ap.add_argument("--boot-settle", type=float, default=10.0,
                    help="--qmp: seconds after a boot starts before a consumed override's boot order is restored")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--system-id", default="1")
    ap.add_argument("--reset-types", default=",".join(ALL_RESETS))
    ap.add_argument("--restart-when-off", choices=["on", "refuse"], default="on")
    ap.add_argument("--reset-status", type=int, choices=[200, 202, 204], default=204)
    ap.add_argument("--patch-status", type=int, choices=[200, 204], default=204)
    ap.add_argument("--require-if-match", action="store_true")
    ap.add_argument("--fault", action="append", default=[], help="NAME=N (see the header)")
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    args.reset_types = [t for t in args.reset_types.split(",") if t]
    for t in args.reset_types:
        if t not in ALL_RESETS:
            ap.error("unknown reset type %s (known: %s)" % (t, ",".join(ALL_RESETS)))
    password = bmc_qmp.read_password(args.password, args.password_file, "REDFISH_BMC_PASSWORD")

    chassis = bmc_qmp.Chassis(bmc_qmp.make_backend(args), PROG, restart_when_off=args.restart_when_off)
    if args.fault:
        chassis.set_faults(dict(parse_fault(f) for f in args.fault))
    Handler.emu = Emulator(args, chassis, password)

    host, _, port = args.listen.rpartition(":")
    srv = Server((host.strip("[]"), int(port)), Handler)
    scheme = "http"
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        srv.tls = ctx
        scheme = "https"
    url = "%s://%s:%d" % (scheme, host, srv.server_address[1])
    bmc_qmp.log(PROG, "serving %s (system %s, backend %s)" % (url, args.system_id, chassis.backend.name))
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(url + "\n")
        os.rename(tmp, args.ready_file)
    print(url, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
