"""The simulator's fleet: a set of MicroPython devices, an emulated ZigBee
radio, the gateway and the service, all as real processes on this machine.
`python -m sim` (sim/__main__.py) runs one through a scenario:

    python -m sim [--devices 5] [--loss 0.0] [--latency 5] [--seed 1]
                  [--duration 20] [--mode psk|cert] [--suite NAME]
                  [--scenario NAME] [--report report.json] [--html report.html]

Every device is a separate MicroPython unix-port process running the real
firmware entry point (firmware/main.py) with the boards/unix configuration;
only its configuration says that its XBee is an emulated one on a TCP port.
The radio (`python -m sim.radio`), the service (`python -m host_tools.service`)
and the gateway (`python -m host_tools.gateway run`) run through their CLIs.
The simulator plays the person who pairs devices: it opens the gateway's
join window and confirms each request whose code matches the one the device
printed.  See sim/scenarios.py for the scenarios and their verdicts.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from atls.ota.agent import RESET_EXIT  # a device process that exits so wants a reboot
from host_tools.toolchain import FIRMWARE, ROOT, micropython_binary
from sim.device_state import DeviceState


def _wait_file(path, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.stat().st_size:
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        if proc.poll() is not None:
            raise RuntimeError("%s exited early (code %s)" % (what, proc.returncode))
        time.sleep(0.05)
    raise RuntimeError("%s did not start within %d s" % (what, timeout))


class Fleet:
    def __init__(
        self,
        devices=5,
        loss=0.0,
        latency_ms=5.0,
        seed=1,
        mode="psk",
        suite=None,
        workdir=None,
        period_ms=1000,
        count=None,
        mtu=None,
        ee=1,
        quiet=False,
        evil=None,
        capture=False,
    ):
        self.n = devices
        self.service_app = "sim.sim_app:RecordingEchoApp"  # sim.mqtt_check sets its own
        self.service_env = {}
        self.loss = loss
        self.latency_ms = latency_ms
        self.seed = seed
        self.mode = mode
        self.suite = suite
        self.period_ms = period_ms
        self.count = count
        self.ee = ee
        self.mtu = mtu
        self.quiet = quiet
        self.evil = evil
        self.capture = capture
        self.dir = Path(workdir or (ROOT / "build" / "sim" / ("run-%d" % seed)))
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.procs = {}
        self.logs = {}
        self.devices = {}
        self.device_procs = {}
        self.radio_state = None
        self.service_addr = None
        self.creds = {}
        self.wrong_psk = set()
        self.started = time.time()
        self.events = []
        self.triggers = []  # [device, event kind, callback]: run once, from the reader
        # what a scenario adds to the configuration files (sim/ota_run.py)
        self.service_extra = {}  # keys of service.json
        self.device_extra = {}  # keys of every device.json

    def note(self, what, **kw):
        self.events.append(dict({"t": round(time.time() - self.started, 2), "event": what}, **kw))

    # -- processes ------------------------------------------------------------------
    def spawn(self, name, cmd, cwd=None, env=None, stdout=None):
        """Start process `name` in its own session, logging to <name>.log."""
        log = open(self.dir / (name + ".log"), "a")
        self.logs[name] = log
        p = subprocess.Popen(
            cmd,
            cwd=cwd or ROOT,
            env=env,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        self.procs[name] = p
        return p

    def stop_proc(self, name, sig=signal.SIGTERM):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    def start_radio(self):
        state = self.dir / "radio.json"
        cmd = [
            sys.executable,
            "-m",
            "sim.radio",
            "--devices",
            str(self.n),
            "--loss",
            str(self.loss),
            "--latency-ms",
            str(self.latency_ms),
            "--seed",
            str(self.seed),
            "--ee",
            str(self.ee),
            "--coordinator-ap",
            "2",
            "--state-file",
            str(state),
            "--stats-file",
            str(self.dir / "radio-stats.json"),
        ]
        p = self.spawn("radio", cmd)
        self.radio_state = _wait_file(state, p, "radio")
        self.note("radio_up", devices=self.n, loss=self.loss)

    def make_credentials(self):
        from host_tools import pki

        reg = {"devices": {}}
        if self.mode == "cert":
            ca = pki.make_ca("Sim Service CA")
            server = pki.make_cert("service.sim", issuer=ca)
            dev_ca = pki.make_ca("Sim Device CA")
            (self.dir / "server.pem").write_bytes(pki.pem(server.cert))
            (self.dir / "server.key").write_bytes(pki.pem(server.key))
            os.chmod(self.dir / "server.key", 0o600)
            (self.dir / "device-ca.pem").write_bytes(pki.pem(dev_ca.cert))
            reg["device_ca"] = "device-ca.pem"
            self.creds["ca"] = pki.der(ca.cert).hex()
            self.creds["dev_ca"] = dev_ca
        for i in range(self.n):
            name = "dev-%02d" % (i + 1)
            if self.mode == "cert":
                leaf = pki.make_cert(name, issuer=self.creds["dev_ca"], client=True)
                # registered by fingerprint: the service accepts no other certificate
                reg["devices"][name] = {
                    "cert_sha256": hashlib.sha256(pki.der(leaf.cert)).hexdigest()
                }
                self.creds[name] = {
                    "cert": pki.der(leaf.cert).hex(),
                    "key": leaf.key.private_numbers().private_value.to_bytes(32, "big").hex(),
                }
            else:
                psk = os.urandom(32)
                reg["devices"][name] = {"psk": psk.hex()}
                if name in self.wrong_psk:
                    psk = os.urandom(32)  # the device holds a PSK the service never saw
                self.creds[name] = {"psk": psk.hex()}
        (self.dir / "devices.json").write_text(json.dumps(reg))
        os.chmod(self.dir / "devices.json", 0o600)

    def start_service(self):
        mtu = self.mtu or self.radio_state["np"]
        cfg = {
            "listen": "127.0.0.1:0",
            "registry": "devices.json",
            "link": dict(
                {"mtu": mtu, "rto_ms": 500, "rto_max_ms": 4000, "handshake_timeout_ms": 60000},
                **getattr(self, "service_link", {}),  # issue 16: slower timers for emulated Picos
            ),
            "limits": {"idle_timeout_s": 600},
            "app": self.service_app,
        }
        cfg.update(self.service_extra)
        if self.mode == "cert":
            cfg.update(cert="server.pem", key="server.key")
        (self.dir / "service.json").write_text(json.dumps(cfg))
        ready = self.dir / "service.ready"
        if ready.exists():
            ready.unlink()
        env = dict(os.environ, ATLS_SIM_RECORD=str(self.dir / "deliveries.jsonl"))
        env.update(self.service_env)
        listen = "127.0.0.1:%d" % self.service_addr[1] if self.service_addr else None
        cmd = [
            sys.executable,
            "-m",
            "host_tools.service",
            "--config",
            str(self.dir / "service.json"),
            "--stats",
            str(self.dir / "service-stats.json"),
            "--ready-file",
            str(ready),
        ] + (["--listen", listen] if listen else [])
        p = self.spawn("service", cmd, env=env)
        deadline = time.time() + 20
        while not (ready.exists() and ready.read_text().strip()):
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError("service did not start (see %s)" % (self.dir / "service.log"))
            time.sleep(0.05)
        host, port = ready.read_text().strip().rsplit(":", 1)
        self.service_addr = (host, int(port))
        self.note("service_up", port=int(port))

    def start_gateway(self):
        # AP=2 (escaped) on the coordinator: a damaged frame can never make the
        # decoder lock onto frame-shaped bytes inside a payload
        cfg = {
            "serial": self.radio_state["coordinator"]["pty"],
            "escaped": True,
            "services": {"default": "%s:%d" % self.service_addr},
            "state_dir": "gateway-state",
            "limits": {"max_payload": self.radio_state["np"], "rate_per_s": 100, "rate_burst": 200},
        }
        if self.capture:
            cfg["capture"] = "gateway-capture.bin"
        (self.dir / "gateway.json").write_text(json.dumps(cfg))
        ready = self.dir / "gateway.ready"
        if ready.exists():
            ready.unlink()
        mod = "sim.evil_gateway" if self.evil else "host_tools.gateway"
        cmd = [
            sys.executable,
            "-m",
            mod,
            "run",
            "--config",
            str(self.dir / "gateway.json"),
            "--ready-file",
            str(ready),
        ]
        env = dict(os.environ)
        if self.evil:
            env["ATLS_EVIL"] = json.dumps(dict(self.evil, seed=self.seed))
        p = self.spawn("gateway", cmd, env=env)
        deadline = time.time() + 20
        while not ready.exists():
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError("gateway did not start (see %s)" % (self.dir / "gateway.log"))
            time.sleep(0.05)
        self.note("gateway_up")

    def gateway(self, req):
        from host_tools.gateway import Config, control

        return control(Config(self.dir / "gateway.json"), req)

    def device_dir(self, name):
        return self.dir / "devices" / name

    def prepare_device(self, i):
        name = "dev-%02d" % (i + 1)
        d = self.device_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "boards" / "unix" / "board_config.json", d / "board_config.json")
        mod = self.radio_state["devices"][i]
        tls = dict(self.creds[name])
        if self.mode == "cert":
            tls["ca"] = self.creds["ca"]
            tls["server_name"] = "service.sim"
        if self.suite:
            tls["suites"] = [self.suite]
        dev = {
            "device_id": name,
            "service": "default",
            "tls": tls,
            "link": {
                "type": "xbee",
                "xbee": {"tcp": "127.0.0.1:%d" % mod["port"]},
                "rto_ms": 500,
                "rto_max_ms": 4000,
                "handshake_timeout_ms": 30000,
                "retry_ms": 500,
                "retry_max_ms": 4000,
            },
            "app": {"period_ms": self.period_ms, "count": self.count, "stats_ms": 1000},
        }
        dev.update(self.device_extra)
        (d / "device.json").write_text(json.dumps(dev))
        os.chmod(d / "device.json", 0o600)
        self.devices.setdefault(name, DeviceState(name))
        return name

    def start_device(self, name):
        d = self.device_dir(name)
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(FIRMWARE))
        p = self.spawn(
            name,
            [micropython_binary(), str(FIRMWARE / "main.py")],
            cwd=d,
            env=env,
            stdout=subprocess.PIPE,
        )
        st = self.devices[name]
        t = threading.Thread(target=self._read_device, args=(name, p, st), daemon=True)
        t.start()
        self.device_procs[name] = p
        return p

    def _read_device(self, name, p, st):
        log = self.logs[name]
        for line in p.stdout:
            log.write(line)
            if line.startswith("ATLS "):
                try:
                    ev = json.loads(line[5:])
                except ValueError:
                    continue
                st.feed(ev)
                for trig in list(self.triggers):
                    if trig[0] == name and trig[1] == ev.get("ev"):
                        self.triggers.remove(trig)
                        trig[2]()
        log.flush()
        try:
            rc = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        if rc == RESET_EXIT and self.device_procs.get(name) is p:
            # the firmware asked for a reboot (atls.ota.agent: an update switched,
            # or a version on trial did not confirm): power-cycle it
            self.note("device_reset", device=name)
            self.start_device(name)
        elif rc not in (None, 0, -15, -9):
            st.feed({"ev": "crash", "error": "exit %s" % p.returncode})

    def on_device_event(self, name, kind, callback):
        """Run callback() once, as soon as `name` prints event `kind`."""
        self.triggers.append([name, kind, callback])

    def reboot_device(self, name, down_s=0.5):
        """Power-cycle a device: kill its process (all RAM state lost) and start
        it again; its XBee module stays joined, its files stay."""
        self.stop_proc(name, signal.SIGKILL)
        self.note("device_reboot", device=name)
        time.sleep(down_s)
        self.start_device(name)

    def restart(self, what, down_s=1.0):
        self.note("%s_restart" % what)
        self.stop_proc(what)
        time.sleep(down_s)
        if what == "service":
            self.start_service()
        elif what == "gateway":
            self.start_gateway()

    # -- pairing (the simulator plays the person) ------------------------------------------
    def pair_all(self, names, timeout=60):
        self.gateway({"cmd": "open_join", "seconds": timeout})
        self.note("join_window_open")
        deadline = time.time() + timeout
        todo = set(names)
        while todo and time.time() < deadline:
            shown = {st.code: n for n, st in self.devices.items() if st.code and n in todo}
            for p in self.gateway({"cmd": "pending"})["pending"]:
                if p["confirmed"]:
                    continue
                name = shown.get(p["code"])
                ok = name is not None and p["device"] == name
                self.gateway(
                    {"cmd": "confirm", "addr64": p["addr64"], "code": p["code"], "accept": ok}
                )
                self.note("pair_confirm" if ok else "pair_refuse", device=p["device"])
            for n in list(todo):
                st = self.devices[n]
                if st.paired or st.status in ("handshaking", "up", "failed"):
                    todo.discard(n)
            time.sleep(0.2)
        self.gateway({"cmd": "close_join"})
        return not todo

    # -- running ----------------------------------------------------------------------------
    def start(self, wrong_psk=()):
        self.wrong_psk = set(wrong_psk)
        self.start_radio()
        self.make_credentials()
        self.start_service()
        self.start_gateway()
        names = [self.prepare_device(i) for i in range(self.n)]
        for name in names:
            self.start_device(name)
        return names

    def wait(self, cond, timeout, live=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if live:
                live()
            if cond():
                return True
            time.sleep(0.25)
        return cond()

    def settle(self, live=None, seconds=2.5):
        """Give the stats files (written every second) time to catch up."""
        self.wait(lambda: False, seconds, live)

    def collect(self):
        def load(p):
            try:
                return json.loads((self.dir / p).read_text())
            except (OSError, ValueError):
                return {}

        radio = load("radio-stats.json")
        service = load("service-stats.json")
        gateway = load("gateway-state/stats.json")
        deliveries = []
        path = self.dir / "deliveries.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    deliveries.append(json.loads(line))
                except ValueError:
                    pass
        return radio, service, gateway, deliveries

    def shutdown(self):
        for name in list(self.device_procs):
            self.stop_proc(name)
        for name in ("gateway", "service", "radio"):
            time.sleep(0.2 if name == "gateway" else 0)
            self.stop_proc(name)
        for log in self.logs.values():
            try:
                log.close()
            except Exception:
                pass
