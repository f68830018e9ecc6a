#!/usr/bin/python3
"""bmc_qmp.py — the machine behind kiln's lab BMC emulators (redfish_bmc.py, ipmi_bmc.py).

Not run by itself: both emulators import it. It holds

  * QmpClient: a QEMU Machine Protocol client (unix socket, greeting + qmp_capabilities,
    commands matched to their replies by "id", asynchronous events kept in order).
  * QmpBackend / SimBackend: the two ways to be "the machine". QmpBackend drives a real QEMU
    started with `-S -no-shutdown -qmp unix:SOCK,server=on,wait=off`, NIC `-device ...,id=net0`
    and disk `-device ...,id=disk0` (deploy/lab/lab.sh lab_vm_start_managed). SimBackend keeps
    the power state in memory (integration tests, simulated fleets without QEMU).
  * Chassis: what a BMC knows about its machine, shared by both protocols so Redfish and IPMI
    behave alike: power state, the boot source override (Disabled|Once|Continuous, target,
    UEFI|Legacy), fault injection, counters and an action log with times (the emulators'
    introspection: /_emulator/state, --state-file).

Mapping onto QEMU (QEMU 7.2, Debian 12):
  PowerState      query-status: "running" -> On; anything else (prelaunch, paused, shutdown) -> Off.
  On              system_reset, wait for its RESET event, cont. Every power-on is a cold start
                  from the firmware, never a resume of a stopped CPU.
  ForceOff        stop (the next On resets first, see above).
  ForceRestart    system_reset (+ cont when it was off).
  GracefulShutdown system_powerdown: an ACPI power-button press. The guest decides; a guest that
                  ignores it (no OS, a hung OS) stays On, as on real hardware. With -no-shutdown
                  a guest poweroff leaves QEMU alive in status "shutdown", i.e. Off.
  Boot override   `qom-set /machine/peripheral/net0 bootindex 0` puts the NIC before the disk.
                  QEMU rebuilds the firmware's "bootorder" fw_cfg file at every reset (SeaBIOS
                  and OVMF read it at boot), so the change takes effect at the next reset,
                  whoever causes it (the BMC, or the guest's own reboot, as on real hardware).
                  A Once override is consumed by the boot it starts (it reads back Disabled/None
                  from then on), but the original bootindex is put back only --boot-settle
                  seconds (default 10) after that boot's RESET event: firmware resets the
                  machine itself while starting (SeaBIOS after a warm reset does, twice; every
                  reset rebuilds the bootorder file), so restoring at the first RESET would
                  hand the firmware's own reset the disk-first order again. Guest resets inside
                  that window are the same boot; any BMC power action applies a pending restore
                  first. Hdd puts the disk first the same way (disk0 bootindex 0).

What is not modelled: boot sources other than Pxe/Hdd, BIOS setup, virtual media, power
supplies, sensors, more than one system. The guest's ACPI behaviour is QEMU's.
"""

import json
import os
import socket
import sys
import threading
import time

# Boot targets the emulators accept (Redfish names). None = no override.
BOOT_TARGETS = ["None", "Pxe", "Hdd"]
BOOT_ENABLED = ["Disabled", "Once", "Continuous"]
BOOT_MODES = ["UEFI", "Legacy"]


def log(prog, msg):
    sys.stderr.write("%s %s: %s\n" % (time.strftime("%H:%M:%S"), prog, msg))
    sys.stderr.flush()


class QmpError(Exception):
    pass


class QmpClient:
    """One QMP connection. Thread-safe: commands from several threads are matched by id."""

    def __init__(self, path, timeout=10.0, on_event=None, connect_timeout=None):
        self.path = path
        self.timeout = timeout
        self.on_event = on_event  # called from a dispatcher thread, never the reader
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + (connect_timeout or timeout)
        while True:  # QEMU may still be creating the socket
            try:
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise QmpError("cannot connect to QMP socket %s" % path)
                time.sleep(0.1)
        self._file = self._sock.makefile("rb")
        greeting = json.loads(self._file.readline() or b"{}")
        if "QMP" not in greeting:
            raise QmpError("not a QMP greeting: %r" % greeting)
        self._lock = threading.Condition()
        self._next_id = 1
        self._replies = {}
        self._events = []  # (seq, event dict), seq increasing
        self._event_seq = 0
        self._closed = False
        self._dispatch = []
        self._dispatch_cv = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._dispatcher, daemon=True).start()
        self.command("qmp_capabilities")

    def _reader(self):
        while True:
            try:
                line = self._file.readline()
            except OSError:
                line = b""
            if not line:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                with self._dispatch_cv:
                    self._dispatch.append(None)
                    self._dispatch_cv.notify()
                return
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "event" in msg:
                with self._lock:
                    self._event_seq += 1
                    self._events.append((self._event_seq, msg))
                    del self._events[:-200]
                    self._lock.notify_all()
                with self._dispatch_cv:
                    self._dispatch.append(msg)
                    self._dispatch_cv.notify()
            elif "id" in msg:
                with self._lock:
                    self._replies[msg["id"]] = msg
                    self._lock.notify_all()

    def _dispatcher(self):
        while True:
            with self._dispatch_cv:
                while not self._dispatch:
                    self._dispatch_cv.wait()
                msg = self._dispatch.pop(0)
            if msg is None:
                return
            if self.on_event:
                try:
                    self.on_event(msg)
                except Exception as e:  # an event handler must not kill the connection
                    log("bmc_qmp", "event handler failed: %r" % e)

    def closed(self):
        with self._lock:
            return self._closed

    def event_seq(self):
        with self._lock:
            return self._event_seq

    def wait_event(self, name, after_seq, timeout=None):
        """The first event `name` with seq > after_seq (waits, bounded)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._lock:
            while True:
                for seq, ev in self._events:
                    if seq > after_seq and ev.get("event") == name:
                        return ev
                if self._closed:
                    raise QmpError("QMP connection closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QmpError("no %s event from QEMU" % name)
                self._lock.wait(left)

    def command(self, name, **args):
        with self._lock:
            if self._closed:
                raise QmpError("QMP connection closed")
            cid = self._next_id
            self._next_id += 1
        msg = {"execute": name, "id": cid}
        if args:
            msg["arguments"] = args
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while cid not in self._replies:
                if self._closed:
                    raise QmpError("QMP connection closed during %s" % name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QmpError("QEMU did not answer %s" % name)
                self._lock.wait(left)
            reply = self._replies.pop(cid)
        if "error" in reply:
            raise QmpError("%s: %s" % (name, reply["error"].get("desc", reply["error"])))
        return reply.get("return")


class SimBackend:
    """A machine that exists only in memory: power on/off, boots recorded by the Chassis."""

    name = "sim"

    def __init__(self, powered_on=False):
        self.on = powered_on
        self.chassis = None  # set by Chassis
        self.first = "disk"  # what the next boot tries first

    def power_state(self):
        return "On" if self.on else "Off"

    def set_first(self, first):
        self.first = first

    def after_boot(self):
        self.set_first(self.chassis._first_for())

    def reset_to(self, cause):
        self.on = True
        self.chassis._booted(cause, self.first)

    def off(self):
        self.on = False

    def powerdown(self):
        # A cooperative guest: it shuts down at once.
        self.on = False
        self.chassis._record("guest_poweroff", "the simulated guest shut down")


class QmpBackend:
    """A QEMU machine over QMP (see the module comment for the mapping)."""

    name = "qmp"

    def __init__(self, path, net_id="net0", disk_id="disk0", timeout=10.0, settle=10.0):
        self.chassis = None
        self.net_path = "/machine/peripheral/" + net_id
        self.disk_path = "/machine/peripheral/" + disk_id
        self._pending_cause = None
        self.path = path
        self.timeout = timeout
        self.settle = settle
        self._settle_until = 0
        self._timer = None
        self._timer_lock = threading.Lock()
        self._connect()

    def _connect(self, connect_timeout=None):
        self.qmp = QmpClient(self.path, timeout=self.timeout, on_event=self._event,
                             connect_timeout=connect_timeout)
        self.net_index = self.qmp.command("qom-get", path=self.net_path, property="bootindex")
        self.disk_index = self.qmp.command("qom-get", path=self.disk_path, property="bootindex")
        self.first = "disk" if self.disk_index < self.net_index else "network"
        self.default_first = self.first
        self.cur = {"net": self.net_index, "disk": self.disk_index}

    def _ensure(self):
        """A QEMU that was stopped and started again (same socket path): reconnect once."""
        if not self.qmp.closed():
            return
        try:
            self._connect(connect_timeout=2.0)
        except (QmpError, OSError, ValueError) as e:
            raise QmpError("no QEMU on %s: %s" % (self.path, e))
        if self.chassis:
            self.chassis._record("qmp_reconnected", self.path)
            # A new QEMU has its own boot order: an override still set applies to it.
            self.set_first(self.chassis._first_for())

    def power_state(self):
        self._ensure()
        st = self.qmp.command("query-status")
        return "On" if st.get("status") == "running" else "Off"

    def set_first(self, first):
        """Makes the next reset boot `first` ("network" or "disk") first: QEMU rebuilds the
        firmware's bootorder file from the bootindex properties at every reset."""
        self._ensure()
        want = {"net": self.net_index, "disk": self.disk_index}
        if first != self.default_first:
            want["net" if first == "network" else "disk"] = 0
        paths = {"net": self.net_path, "disk": self.disk_path}
        # Values back to the original first, then the 0: bootindex values must stay unique.
        for k in sorted(want, key=lambda k: want[k] == 0):
            if self.cur[k] != want[k]:
                self.qmp.command("qom-set", path=paths[k], property="bootindex", value=want[k])
                self.cur[k] = want[k]
        self.first = first

    def after_boot(self):
        """A boot started: the boot order the chassis wants now (an override consumed) is put
        back only after `settle` seconds, because firmware resets the machine during its own
        start (SeaBIOS after a warm reset does) and each reset rebuilds the bootorder file."""
        with self._timer_lock:
            if self._timer:
                self._timer.cancel()
            self._timer = threading.Timer(self.settle, self._settled)
            self._timer.daemon = True
            self._timer.start()

    def _settled(self):
        with self.chassis.lock:
            with self._timer_lock:
                self._timer = None
                self._settle_until = 0
            try:
                self.set_first(self.chassis._first_for())
            except Exception as e:
                log(self.chassis.prog, "restoring the boot order failed: %r" % e)

    def reset_to(self, cause):
        # A boot order restore still waiting for the last boot to settle is due now: this
        # reset starts a new boot.
        with self._timer_lock:
            pending, self._timer = self._timer, None
        if pending:
            pending.cancel()
            self.set_first(self.chassis._first_for())
        self._ensure()
        seq = self.qmp.event_seq()
        self._pending_cause = cause
        self.qmp.command("system_reset")
        self.qmp.wait_event("RESET", seq)
        if self.qmp.command("query-status").get("status") != "running":
            self.qmp.command("cont")

    def off(self):
        self._ensure()
        self.qmp.command("stop")

    def powerdown(self):
        self._ensure()
        self.qmp.command("system_powerdown")

    def _event(self, ev):
        name = ev.get("event")
        data = ev.get("data") or {}
        if name == "RESET":
            cause = self._pending_cause or ("guest reboot" if data.get("guest") else "reset")
            self._pending_cause = None
            now = time.monotonic()
            if data.get("guest") and now < self._settle_until:
                # The firmware resetting during its own start: the same boot.
                self.chassis._record("firmware_reset", "part of the boot that started last")
                return
            self._settle_until = now + self.settle
            self.chassis._booted(cause, self.first)
        elif name == "SHUTDOWN":
            self.chassis._record("guest_poweroff", "reason=%s" % data.get("reason"))
        elif name == "POWERDOWN":
            self.chassis._record("acpi_powerdown", "power button pressed")


class Fault(Exception):
    """An answer the protocol layer turns into its own error (HTTP status / IPMI code)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind  # "refused" | "invalid" | "backend"
        self.message = message


class Chassis:
    """The BMC's view of its one machine, shared by the Redfish and IPMI front ends."""

    def __init__(self, backend, prog, restart_when_off="on", on_change=None):
        self.backend = backend
        backend.chassis = self
        self.prog = prog
        self.restart_when_off = restart_when_off  # "on" | "refuse"
        self.on_change = on_change
        self.lock = threading.RLock()
        self.t0 = time.time()
        self.enabled = "Disabled"
        self.target = "None"
        self.mode = "UEFI"
        self.override_set_at = None  # time.monotonic() of the last change
        self.override_timeout = 0  # IPMI: seconds after which an unused Once override lapses
        self.generation = 1  # bumps on every visible change (Redfish ETag)
        # Fault injection; counts are "next N", -1 = until cleared.
        self.faults = {"ignore_override": 0, "drop_override": 0, "stale_etag": 0,
                       "error_500": 0, "delay_ms": 0}
        self.counts = {"resets": 0, "patches": 0, "boots": 0, "power_on": 0, "power_off": 0,
                       "graceful_shutdown": 0, "requests": 0, "faults_fired": 0}
        self.log = []
        self.boots = []

    # --- records ---------------------------------------------------------------------------
    def _record(self, action, detail=""):
        with self.lock:
            self.log.append({"t": round(time.time(), 3), "action": action, "detail": detail})
            del self.log[:-500]
            self.generation += 1
        log(self.prog, "%s %s" % (action, detail))
        self._changed()

    def _changed(self):
        if self.on_change:
            try:
                self.on_change()
            except Exception as e:
                log(self.prog, "state hook failed: %r" % e)

    def _booted(self, cause, first):
        """A boot started (power-on or reset). Applies and consumes a Once override."""
        with self.lock:
            self.counts["boots"] += 1
            override = "%s %s %s" % (self.target, self.enabled, self.mode) \
                if self.enabled != "Disabled" else "none"
            dropped = bool(getattr(self, "_dropped", False))
            self.boots.append({"t": round(time.time(), 3), "cause": cause, "first": first,
                               "override": override, "override_dropped": dropped,
                               "mode": self.mode})
            del self.boots[:-200]
            if self.enabled == "Once":
                self.enabled = "Disabled"
                self.target = "None"
                self._dropped = False
            self.backend.after_boot()
            self.generation += 1
        self._record("boot", "cause=%s first=%s override=%s%s" % (
            cause, first, override, " (dropped by fault drop_override)" if dropped else ""))

    def _first_for(self):
        if getattr(self, "_dropped", False) or self.enabled == "Disabled":
            return "disk" if getattr(self.backend, "default_first", "disk") == "disk" else "network"
        return {"Pxe": "network", "Hdd": "disk"}.get(self.target, "disk")

    def take_fault(self, name):
        """True when fault `name` fires now (and counts it down)."""
        with self.lock:
            n = self.faults.get(name, 0)
            if not n:
                return False
            if n > 0:
                self.faults[name] = n - 1
            self.counts["faults_fired"] += 1
        self._record("fault", name)
        return True

    def set_faults(self, changes):
        with self.lock:
            for k, v in changes.items():
                if k not in self.faults:
                    raise Fault("invalid", "unknown fault %r (known: %s)" % (k, ", ".join(sorted(self.faults))))
                if isinstance(v, bool):
                    v = -1 if v else 0
                if not isinstance(v, int):
                    raise Fault("invalid", "fault %s wants an integer or a boolean" % k)
                self.faults[k] = v
        self._record("faults", json.dumps(changes, sort_keys=True))

    # --- power -----------------------------------------------------------------------------
    def power_state(self):
        return self.backend.power_state()

    def reset(self, kind):
        """Redfish ResetType semantics (IPMI maps onto these)."""
        with self.lock:
            state = self.backend.power_state()
            self.counts["resets"] += 1
            self._record("reset", "ResetType=%s (was %s)" % (kind, state))
            if kind == "On":
                if state == "Off":
                    self.counts["power_on"] += 1
                    self.backend.reset_to("power on")
            elif kind == "ForceOff":
                if state == "On":
                    self.counts["power_off"] += 1
                    self.backend.off()
            elif kind == "GracefulShutdown":
                if state == "On":
                    self.counts["graceful_shutdown"] += 1
                    self.backend.powerdown()
            elif kind in ("ForceRestart", "GracefulRestart"):
                if state == "Off" and self.restart_when_off == "refuse":
                    raise Fault("refused", "the system is powered off; %s needs it on" % kind)
                if state == "Off":
                    self.counts["power_on"] += 1
                self.backend.reset_to(kind.lower())
            elif kind == "PowerCycle":
                if state == "On":
                    self.backend.off()
                self.counts["power_on"] += 1
                self.backend.reset_to("power cycle")
            else:
                raise Fault("invalid", "unsupported reset type %s" % kind)
        self._changed()

    # --- boot override ---------------------------------------------------------------------
    def set_override(self, target=None, enabled=None, mode=None):
        """Sets the boot source override (any of the three). Honors ignore_override and
        drop_override. Values are checked by the caller."""
        with self.lock:
            self.counts["patches"] += 1
            if self.take_fault("ignore_override"):
                self._record("override_ignored",
                             "target=%s enabled=%s mode=%s" % (target, enabled, mode))
                return
            if target is not None:
                self.target = target
            if enabled is not None:
                self.enabled = enabled
            if mode is not None:
                self.mode = mode
            if self.target == "None":
                self.enabled = "Disabled"
            self.override_set_at = time.monotonic()
            self._dropped = False
            if self.enabled != "Disabled" and self.take_fault("drop_override"):
                self._dropped = True  # reads back as set; the next boot ignores it
            self.generation += 1
            try:
                self.backend.set_first(self._first_for())
            except Exception as e:
                raise Fault("backend", "could not change the boot order: %s" % e)
        self._record("override", "target=%s enabled=%s mode=%s" % (self.target, self.enabled, self.mode))

    def override(self):
        """(enabled, target, mode) as a read-back shows it now."""
        with self.lock:
            if (self.enabled == "Once" and self.override_timeout > 0
                    and self.override_set_at is not None
                    and time.monotonic() - self.override_set_at > self.override_timeout):
                self.enabled, self.target = "Disabled", "None"
                self._dropped = False
                try:
                    self.backend.set_first(self._first_for())
                except Exception as e:
                    log(self.prog, "restoring the boot order failed: %r" % e)
                self._record("override_expired", "unused for %ds" % self.override_timeout)
            return self.enabled, self.target, self.mode

    # --- introspection ---------------------------------------------------------------------
    def state(self):
        enabled, target, mode = self.override()
        try:
            power = self.backend.power_state()
        except Exception as e:
            power = "Unknown (%s)" % e
        with self.lock:
            return {
                "backend": self.backend.name,
                "power_state": power,
                "boot": {"BootSourceOverrideEnabled": enabled, "BootSourceOverrideTarget": target,
                         "BootSourceOverrideMode": mode},
                "next_boot_first": self._first_for(),
                "faults": dict(self.faults),
                "counts": dict(self.counts),
                "boots": list(self.boots),
                "log": list(self.log),
            }


def read_password(args_password, password_file, env_name):
    """The password from --password, --password-file or $env_name (in that order)."""
    if args_password:
        return args_password
    if password_file:
        with open(password_file) as f:
            return f.read().rstrip("\n")
    if os.environ.get(env_name):
        return os.environ[env_name]
    raise SystemExit("a password is needed: --password, --password-file or $%s" % env_name)


def make_backend(args):
    if args.qmp:
        return QmpBackend(args.qmp, net_id=args.net_id, disk_id=args.disk_id, settle=args.boot_settle)
    return SimBackend(powered_on=getattr(args, "sim_on", False))
