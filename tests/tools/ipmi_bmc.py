#!/usr/bin/python3
"""ipmi_bmc.py — an IPMI 2.0 (RMCP+, what `ipmitool -I lanplus` speaks) BMC emulator for kiln's
lab and tests, on Debian's python3-pyghmi (pyghmi.ipmi.bmc.Bmc, the base of virtualbmc).

Usage:
  ipmi_bmc.py --listen 127.0.0.1:6230 --user admin --password-file F (--qmp SOCK | --sim)
              [--state-file F] [--ready-file F] [--bootflag-timeout 60]
              [--cycle-when-off refuse|on] [--fault NAME=N ...] [--faults-file F]
  The password may also come from --password or $IPMI_BMC_PASSWORD. Port 0 picks a free UDP
  port; the ready file (and stdout) then gets "host:port".

What it models (chassis commands, IPMI v2.0 section 28):
  Get Chassis Status            power on/off (ipmitool power status)
  Chassis Control               0 off (ForceOff), 1 on, 2 cycle (PowerCycle), 3 hard reset
                                (ForceRestart), 5 soft off (ACPI power button). Cycle or reset
                                of a powered-off chassis answers 0xD5 "not supported in present
                                state" as the spec allows and most BMCs do (--cycle-when-off on:
                                power it on instead).
  Set/Get System Boot Options   parameter 5 (boot flags) in full, which pyghmi's Bmc does not do
                                (it ignores the persistent and EFI bits and always answers
                                "valid, one-time, legacy"): byte 1 bit 7 valid, bit 6 persistent
                                (else next boot only), bit 5 EFI; byte 2 bits 5:2 the device
                                (0 none, 1 PXE, 2 disk; others answer 0xCC). Parameters 0, 3, 4
                                are accepted and ignored (as pyghmi does). A one-time flag is
                                consumed by the next boot (valid bit clears). As the spec says,
                                a valid flag no boot used lapses after --bootflag-timeout
                                seconds (60; 0: never).
  Get Device ID                 (pyghmi's)
  `ipmitool chassis bootdev pxe options=efiboot` -> Pxe, Once, UEFI on the shared Chassis
  (bmc_qmp.py), so a boot really goes to the network first, once.

Introspection for tests: --state-file F is rewritten (atomically) as JSON on every change, the
same document as redfish_bmc.py's GET /_emulator/state.
Faults: --fault NAME=N at start, or a --faults-file JSON object re-read when it changes:
  ignore_override  Set Boot Options answers success and changes nothing
  drop_override    accepted and reads back as set, but the next boot ignores it
  error_500        the next N chassis commands answer completion code 0xFF (unspecified error)
  delay_ms         every command is answered this late (ipmitool retransmits after ~1 s)
  stale_etag       (no meaning in IPMI; ignored)
Logs every command (netfn/command, completion code) to stderr; never the password.
Not modelled: SOL (no console), sensors, SEL, users/channels commands, Kg keys, IPMI 1.5.
"""

import argparse
import json
import os
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bmc_qmp  # noqa: E402

import pyghmi.ipmi.bmc as pbmc  # noqa: E402

PROG = "ipmi_bmc"
DEVICES = {0: "None", 1: "Pxe", 2: "Hdd"}
DEVICE_CODES = {v: k for k, v in DEVICES.items()}
COMMANDS = {(0, 1): "get_chassis_status", (0, 2): "chassis_control", (0, 8): "set_boot_options",
            (0, 9): "get_boot_options", (6, 1): "get_device_id"}


class KilnBmc(pbmc.Bmc):
    def __init__(self, authdata, port, address, chassis, args):
        super().__init__(authdata, port=port, address=address)
        # pyghmi routes a client's packets to its session by self.port: with port 0 (a free
        # port, for tests) that must be the port really bound.
        self.port = self.serversocket.getsockname()[1]
        self.chassis = chassis
        self.args = args
        self._faults_mtime = None

    # --- power -----------------------------------------------------------------------------
    def get_power_state(self):
        return "on" if self.chassis.power_state() == "On" else "off"

    def power_on(self):
        self.chassis.reset("On")

    def power_off(self):
        self.chassis.reset("ForceOff")

    def power_cycle(self):
        if self.chassis.power_state() == "Off":
            if self.args.cycle_when_off == "refuse":
                self.chassis._record("refused", "power cycle: the chassis is off (0xD5)")
                return 0xD5
            return self.chassis.reset("On")
        self.chassis.reset("PowerCycle")

    def power_reset(self):
        if self.chassis.power_state() == "Off":
            if self.args.cycle_when_off == "refuse":
                self.chassis._record("refused", "power reset: the chassis is off (0xD5)")
                return 0xD5
            return self.chassis.reset("On")
        self.chassis.reset("ForceRestart")

    def power_shutdown(self):
        self.chassis.reset("GracefulShutdown")

    def pulse_diag(self):
        raise NotImplementedError

    def cold_reset(self):
        return 0  # the BMC "restarts": nothing to do

    # --- boot flags (parameter 5), in full -------------------------------------------------
    def get_system_boot_options(self, request, session):
        param = request["data"][0] & 0x7F
        if param != 5:
            if param in (0, 3, 4):
                return session.send_ipmi_response(data=[1, param] + {0: [0], 3: [0], 4: [0, 0]}[param])
            return session.send_ipmi_response(code=0x80)  # parameter not supported
        enabled, target, mode = self.chassis.override()
        b1 = 0
        if enabled != "Disabled":
            b1 |= 0x80
            if enabled == "Continuous":
                b1 |= 0x40
        if mode == "UEFI":
            b1 |= 0x20
        b2 = (DEVICE_CODES.get(target, 0) << 2) if enabled != "Disabled" else 0
        return session.send_ipmi_response(data=[1, 5, b1, b2, 0, 0, 0])

    def set_system_boot_options(self, request, session):
        data = request["data"]
        param = data[0] & 0x7F
        if param in (0, 3, 4):
            return session.send_ipmi_response()
        if param != 5:
            return session.send_ipmi_response(code=0x80)
        if len(data) < 3:
            return session.send_ipmi_response(code=0xC7)  # request data length invalid
        b1, b2 = data[1], data[2]
        device = (b2 >> 2) & 0x0F
        if device not in DEVICES:
            self.chassis._record("refused", "boot device selector %d is not modelled (0xCC)" % device)
            return session.send_ipmi_response(code=0xCC)
        valid = bool(b1 & 0x80)
        target = DEVICES[device] if valid else "None"
        enabled = "Disabled" if not valid or device == 0 else ("Continuous" if b1 & 0x40 else "Once")
        mode = "UEFI" if b1 & 0x20 else "Legacy"
        self.chassis.set_override(target, enabled, mode)
        return session.send_ipmi_response()

    # --- every request ---------------------------------------------------------------------
    def handle_raw_request(self, request, session):
        self._reload_faults()
        ch = self.chassis
        name = COMMANDS.get((request["netfn"], request["command"]),
                            "netfn=0x%x cmd=0x%x" % (request["netfn"], request["command"]))
        with ch.lock:
            ch.counts["requests"] += 1
        delay = ch.faults.get("delay_ms", 0)
        if delay:
            time.sleep(delay / 1000.0)
        if request["netfn"] == 0 and ch.take_fault("error_500"):
            bmc_qmp.log(PROG, "%s -> 0xff (injected)" % name)
            return session.send_ipmi_response(code=0xFF)
        sent = []
        orig = session.send_ipmi_response

        def record(data=(), code=0):
            sent.append(code)
            return orig(data=data, code=code)
        session.send_ipmi_response = record
        try:
            try:
                super().handle_raw_request(request, session)
            except bmc_qmp.QmpError as e:
                bmc_qmp.log(PROG, "%s: the machine did not respond: %s" % (name, e))
                if not sent:
                    record(code=0xFF)
        finally:
            session.send_ipmi_response = orig
        bmc_qmp.log(PROG, "%s -> 0x%02x" % (name, sent[0] if sent else 0xFF))

    def _reload_faults(self):
        f = self.args.faults_file
        if not f:
            return
        try:
            m = os.stat(f).st_mtime_ns
        except FileNotFoundError:
            return
        if m == self._faults_mtime:
            return
        self._faults_mtime = m
        try:
            with open(f) as fh:
                changes = json.load(fh)
            changes.pop("stale_etag", None)
            self.chassis.set_faults(changes)
        except (ValueError, bmc_qmp.Fault) as e:
            bmc_qmp.log(PROG, "faults file %s ignored: %s" % (f, e))


def main():
    ap = argparse.ArgumentParser(description="IPMI (lanplus) BMC emulator over QMP or simulated.")
    ap.add_argument("--listen", default="127.0.0.1:6230", help="HOST:PORT (UDP; port 0: a free one)")
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
    ap.add_argument("--bootflag-timeout", type=float, default=60.0)
    ap.add_argument("--cycle-when-off", choices=["refuse", "on"], default="refuse")
    ap.add_argument("--state-file")
    ap.add_argument("--ready-file")
    ap.add_argument("--fault", action="append", default=[])
    ap.add_argument("--faults-file")
    args = ap.parse_args()
    password = bmc_qmp.read_password(args.password, args.password_file, "IPMI_BMC_PASSWORD")

    def write_state():
        if not args.state_file:
            return
        tmp = args.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(chassis.state(), f, indent=1)
        os.replace(tmp, args.state_file)

    chassis = bmc_qmp.Chassis(bmc_qmp.make_backend(args), PROG, restart_when_off="on", on_change=write_state)
    chassis.override_timeout = args.bootflag_timeout
    if args.fault:
        faults = {}
        for f in args.fault:
            k, _, v = f.partition("=")
            v = v.strip().lower()
            faults[k] = -1 if v in ("", "true") else 0 if v == "false" else int(v)
        chassis.set_faults(faults)

    host, _, port = args.listen.rpartition(":")
    bmc = KilnBmc({args.user: password}, int(port), host.strip("[]"), chassis, args)
    bound = bmc.serversocket.getsockname()
    where = "%s:%d" % (host, bound[1])
    bmc_qmp.log(PROG, "serving IPMI lanplus on udp %s (backend %s)" % (where, chassis.backend.name))
    write_state()
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(where + "\n")
        os.rename(tmp, args.ready_file)
    print(where, flush=True)
    try:
        bmc.listen()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
